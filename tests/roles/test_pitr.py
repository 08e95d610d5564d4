"""Proxy-ITR (RFC 6832): Map-Requests with the p bit, the PITR's RLOCs as
ITR-RLOCs and Source-EID AFI 0; the aggregates stay in the data plane as
send-Map-Request entries; the announcement follows the Map-Resolvers' health."""
import ipaddress

import pytest

from lispctl.mapping.types import EidPrefix, MapAction, Rloc
from lispctl.roles.base import Announce, InstallMapping, MissEvent, RemoveMapping
from lispctl.wire import NO_ADDRESS, MapReply, MapRequest, decode_control, eid_record

from roles_helpers import A, ep, installs, make, only_send, sends

P = EidPrefix.parse
MR1, MR2 = "198.51.100.10", "198.51.100.11"

PITR = f"""
instance = "pxtr"
roles = ["pitr"]
[interfaces]
rloc-facing = ["core0"]
[pitr]
eid-prefixes = ["10.1.0.0/16", "fd00:1::/48"]
internet-facing = ["inet0"]
health-interval = 1.0
health-timeout = 2.5
[[map-resolver]]
address = "{MR1}"
[[map-resolver]]
address = "{MR2}"
"""


@pytest.fixture
def pitr():
    _, roles = make(PITR, core0=["192.0.2.5", "2001:db8::5"])
    return roles["pitr"]


def announces(effects):
    return [e for e in effects if isinstance(e, Announce)]


def answer(role, send, now, nonce=None):
    ecm = decode_control(send.payload)
    n = ecm.message.nonce if nonce is None else nonce
    rec = eid_record(EidPrefix(0, ipaddress.ip_network(send.dst.addr)), (), ttl=15, act=0)
    return role.handle(MapReply(n, (rec,)).encode(), send.dst, ep("192.0.2.5"), now)


def test_start_installs_aggregates_as_send_map_request(pitr):
    eff = installs(pitr.tick(0.0))
    assert eff == [InstallMapping(P(p), (), MapAction.SEND_MAP_REQUEST, e.ttl_s)
                   for p, e in zip(("10.1.0.0/16", "fd00:1::/48"), eff)]
    assert announces(eff) == []


def test_map_request_p_bit_source_eid_afi_0_own_rlocs(pitr):
    pitr.tick(0.0)
    s, ecm = only_send(pitr.on_miss(MissEvent(P("10.1.2.3/32"), A("203.0.113.7")), 0.1))
    req = ecm.message
    assert isinstance(req, MapRequest) and req.pitr
    assert req.source_eid == NO_ADDRESS                      # not the legacy host's address
    assert set(req.itr_rlocs) == {A("192.0.2.5"), A("2001:db8::5")}
    assert ecm.inner_src == A("192.0.2.5") and s.dst.addr == A(MR1)


def test_miss_outside_aggregates_ignored(pitr):
    pitr.tick(0.0)
    assert pitr.on_miss(MissEvent(P("10.2.0.1/32"), A("203.0.113.7")), 0.1) == []
    assert pitr.counters["miss_outside_aggregates"] == 1


def test_expiry_of_an_answer_for_the_aggregate_restores_it(pitr):
    pitr.tick(0.0)
    _, ecm = only_send(pitr.on_miss(MissEvent(P("10.1.2.3/32"), A("203.0.113.7")), 0.1))
    rec = eid_record(P("10.1.0.0/16"), (Rloc(A("192.0.2.77"), 1, 100),), ttl=1)
    eff = pitr.handle(MapReply(ecm.message.nonce, (rec,)).encode(), ep(MR1), ep("192.0.2.5"), 0.2)
    assert installs(eff)[0].rlocs == (Rloc(A("192.0.2.77"), 1, 100),)
    eff = pitr.tick(61.0)
    assert not [e for e in eff if isinstance(e, RemoveMapping)]
    restored = installs(eff)[0]
    assert restored == InstallMapping(P("10.1.0.0/16"), (), MapAction.SEND_MAP_REQUEST, restored.ttl_s)


def test_announced_while_a_resolver_answers_withdrawn_when_none_does(pitr):
    pitr.tick(0.0)
    probes = sends(pitr.tick(0.0))
    assert {s.dst.addr for s in probes} == {A(MR1), A(MR2)}
    for s in probes:
        ecm = decode_control(s.payload)
        assert ecm.message.pitr and ecm.message.source_eid == NO_ADDRESS
        assert ecm.message.records[0].eid == s.dst.addr    # asks the MR about itself
    assert not pitr.announced
    eff = answer(pitr, probes[1], 0.05)
    assert announces(eff) == [Announce((P("10.1.0.0/16"), P("fd00:1::/48")), True)]
    assert answer(pitr, probes[0], 0.06) == []                     # already announced
    # one resolver keeps answering: stays announced
    t = 0.06
    for _ in range(5):
        t = pitr.next_deadline()
        probes = sends(pitr.tick(t))
        assert announces(answer(pitr, probes[0], t + 0.01)) == []
    # every resolver silent: withdrawn within health-timeout of the last answer
    last = t + 0.01
    withdrawn = None
    while withdrawn is None:
        t = pitr.next_deadline()
        assert t <= last + 2.5 + 0.01
        eff = pitr.tick(t)
        if announces(eff):
            withdrawn = t
            assert announces(eff) == [Announce((P("10.1.0.0/16"), P("fd00:1::/48")), False)]
    assert withdrawn - last <= 2.6 and not pitr.snapshot()["pitr"]["announced"]
    # an answer again: re-announced
    probes = sends(pitr.tick(pitr.next_deadline()))
    assert announces(answer(pitr, probes[0], withdrawn + 1.5))[0].up


def test_unknown_nonce_does_not_count_as_health(pitr):
    pitr.tick(0.0)
    probes = sends(pitr.tick(0.0))
    assert announces(answer(pitr, probes[0], 0.1, nonce=12345)) == []
    assert not pitr.announced


def test_config_rejects_pitr_with_xtr_and_iid_aggregates():
    from lispctl.config import ConfigError, loads
    with pytest.raises(ConfigError, match="cannot be combined"):
        loads(PITR.replace('roles = ["pitr"]', 'roles = ["pitr", "itr"]'))
    with pytest.raises(ConfigError, match="instance IDs"):
        loads(PITR.replace('"10.1.0.0/16", "fd00', '"[5]10.1.0.0/16", "fd00'))
    with pytest.raises(ConfigError, match="also eid-facing"):
        loads(PITR.replace('rloc-facing = ["core0"]', 'rloc-facing = ["core0"]\neid-facing = ["inet0"]'))
    # one uplink for both: allowed (the ETR program hands non-LISP packets to the ITR)
    cfg = loads(PITR.replace('internet-facing = ["inet0"]', 'internet-facing = ["core0"]'))
    _, roles = make(PITR.replace('internet-facing = ["inet0"]', 'internet-facing = ["core0"]'), core0=["192.0.2.5"])
    from lispctl.roles import datapath_plan
    plan = datapath_plan(cfg, list(roles.items()))
    assert plan.eid_interfaces == ("core0",) and plan.rloc_interfaces == ("core0",) and plan.proxy_itr
    with pytest.raises(ConfigError, match="only used by the petr role"):
        loads(PITR + '\n[petr]\naccept-eids = ["10.1.0.0/16"]\n')


def test_resolutions_bounded_against_internet_sources():
    text = PITR.replace("health-timeout = 2.5", "health-timeout = 2.5\nmax-pending = 5\nmap-request-rate = 10")
    _, roles = make(text, core0=["192.0.2.5"])
    pitr = roles["pitr"]
    pitr.tick(0.0)
    sent = sum(len(sends(pitr.on_miss(MissEvent(P(f"10.1.0.{i}/32"), A("203.0.113.7")), 0.5)))
               for i in range(1, 50))
    assert sent == 5 and len(pitr.pending) == 5
    assert pitr.counters["miss_pending_full"] == 44
    # rate: a fresh role with room for many pending, 10 new resolutions per second
    text = PITR.replace("health-timeout = 2.5", "health-timeout = 2.5\nmap-request-rate = 10")
    _, roles = make(text, core0=["192.0.2.5"])
    pitr = roles["pitr"]
    pitr.tick(0.0)
    sent = sum(len(sends(pitr.on_miss(MissEvent(P(f"10.1.1.{i}/32"), A("203.0.113.7")), 5.0)))
               for i in range(1, 50))
    assert sent == 10 and pitr.counters["miss_rate_limited_global"] == 39
    sent = sum(len(sends(pitr.on_miss(MissEvent(P(f"10.1.2.{i}/32"), A("203.0.113.7")), 5.5)))
               for i in range(1, 50))
    assert sent == 5                                  # half a second refills five tokens

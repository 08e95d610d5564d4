"""Issue 9.1: a captured Map-Register re-sent from another address must not
add a registrant, move Map-Requests, earn a Map-Notify or change a mapping.
Registrations are bound to what the MAC covers (xTR-ID, the record's RLOCs),
replaced messages are remembered, and nothing goes to an unauthenticated
source address."""
import pytest

from lispctl.wire import EncapsulatedControlMessage, MapNotify, decode_control

from roles_helpers import MSMR, ep, make, only_send, sends
from test_ms import P, ecm_request, register, registered

MS_ADDR = ep("198.51.100.10")
SITE1 = ep("192.0.2.1")                 # the real xTR, registering from its RLOC
ATTACKER = ep("203.0.113.66", 4342)


def _ms():
    return make(MSMR.format(roles='["ms"]'))[1]["ms"]


def _registrants(ms, prefix="10.1.0.0/16"):
    regs = ms.registered.get(P(prefix)) or {}
    return sorted(regs)


def _forward_target(ms, now):
    s, fwd = only_send(ms.handle(ecm_request().encode(), ep("198.51.100.20"), MS_ADDR, now))
    assert isinstance(fwd, EncapsulatedControlMessage) and fwd.to_etr
    return s.dst


@pytest.mark.parametrize("xtr_id", [None, 0xAB12])
def test_replayed_register_from_attacker_changes_nothing(xtr_id):
    ms = _ms()
    raw = register(rlocs=("192.0.2.1",), nonce=0x5151, xtr_id=xtr_id)
    s, notify = only_send(ms.handle(raw, SITE1, MS_ADDR, 0.0))
    assert s.dst == SITE1 and isinstance(notify, MapNotify)
    before = registered(ms), _registrants(ms)
    for t in range(1, 11):                    # the captured bytes, every second
        eff = ms.handle(raw, ATTACKER, MS_ADDR, float(t))
        assert all(x.dst.addr != ATTACKER.addr for x in sends(eff))
    assert (registered(ms), _registrants(ms)) == before
    assert _forward_target(ms, 11.0) == ep("192.0.2.1", 4342)
    (site,) = [x for x in ms.snapshot()["sites"] if x["name"] == "site-a"]
    (reg,) = site["eid_prefixes"][0]["registrations"]
    assert reg["source"] == "192.0.2.1" and reg["etr"] == "192.0.2.1"


def test_forwarding_goes_to_an_rloc_even_when_the_first_register_came_from_elsewhere():
    # e.g. the MS restarted and the attacker's replay arrived first
    ms = _ms()
    raw = register(rlocs=("192.0.2.1",), nonce=7)
    s, _ = only_send(ms.handle(raw, ATTACKER, MS_ADDR, 0.0))
    assert s.dst == ep("192.0.2.1", 4342)            # the notify to the registrant's RLOC
    assert _forward_target(ms, 1.0) == ep("192.0.2.1", 4342)
    # the real xTR's next message (new nonce) from its RLOC: still one registrant
    only_send(ms.handle(register(rlocs=("192.0.2.1",), nonce=8), SITE1, MS_ADDR, 2.0))
    assert _registrants(ms) == ["192.0.2.1"]


def test_replay_of_an_older_message_cannot_bring_back_old_locators():
    ms = _ms()
    old = register(rlocs=("192.0.2.1", "192.0.2.9"), nonce=1)
    ms.handle(old, SITE1, MS_ADDR, 0.0)
    ms.handle(register(rlocs=("192.0.2.1",), nonce=2), SITE1, MS_ADDR, 60.0)   # moved away from .9
    assert registered(ms) == {"10.1.0.0/16": ["192.0.2.1"]}
    for src in (ATTACKER, SITE1):                # from anywhere, even the spoofed RLOC
        assert sends(ms.handle(old, src, MS_ADDR, 61.0)) == []
    assert registered(ms) == {"10.1.0.0/16": ["192.0.2.1"]}
    assert ms.counters["map_register_replayed"] == 2


def test_replay_after_deregistration_does_not_register_again():
    ms = _ms()
    raw = register(nonce=1)
    ms.handle(raw, SITE1, MS_ADDR, 0.0)
    ms.handle(register(ttl=0, nonce=2), SITE1, MS_ADDR, 10.0)
    assert registered(ms) == {}
    assert sends(ms.handle(raw, ATTACKER, MS_ADDR, 11.0)) == []
    assert registered(ms) == {}


def test_replays_do_not_keep_a_silent_site_with_fresh_nonces_alive():
    ms = _ms()
    ms.handle(register(nonce=1), SITE1, MS_ADDR, 0.0)
    last = register(nonce=2)
    ms.handle(last, SITE1, MS_ADDR, 60.0)               # the site then goes silent
    for t in range(61, 400, 10):
        ms.handle(last, ATTACKER, MS_ADDR, float(t))
        ms.tick(float(t))
    assert registered(ms) == {}
    assert ms.counters["registration_expired"] == 1


def test_an_etr_reusing_its_nonce_keeps_its_registration_and_the_replayer_gets_nothing():
    # interop: some ETRs send nonce 0 on every refresh (RFC 9301: the nonce of
    # a Map-Register need not be used); the identical bytes are a refresh
    ms = _ms()
    raw = register(nonce=0)
    for t in range(0, 600, 60):
        s, _ = only_send(ms.handle(raw, SITE1, MS_ADDR, float(t)))
        assert s.dst == SITE1
        eff = ms.handle(raw, ATTACKER, MS_ADDR, float(t) + 1)
        assert all(x.dst.addr != ATTACKER.addr for x in sends(eff))
        ms.tick(float(t) + 1)
    assert registered(ms) == {"10.1.0.0/16": ["192.0.2.1"]}
    assert _registrants(ms) == ["192.0.2.1"]


def test_xtr_without_xtr_id_changing_its_rlocs_replaces_its_registration():
    ms = _ms()
    ms.handle(register(rlocs=("192.0.2.1", "192.0.2.7"), nonce=1), SITE1, MS_ADDR, 0.0)
    ms.handle(register(rlocs=("192.0.2.1", "192.0.2.8"), nonce=2), SITE1, MS_ADDR, 5.0)
    assert registered(ms) == {"10.1.0.0/16": ["192.0.2.1", "192.0.2.8"]}
    ms.tick(184.9)
    assert registered(ms) == {"10.1.0.0/16": ["192.0.2.1", "192.0.2.8"]}
    ms.tick(185.0)                                   # the moved entry kept a live expiry
    assert registered(ms) == {}


def test_notify_of_a_register_from_an_rloc_keeps_its_ephemeral_port():
    s, notify = only_send(_ms().handle(register(rlocs=("192.0.2.1",)), ep("192.0.2.1", 61000), MS_ADDR, 0.0))
    assert s.dst == ep("192.0.2.1", 61000)


def test_lispers_style_refreshes_same_nonce_new_ephemeral_port_each_time():
    # lispers.net (tests fixture lispers-xtr.pcapng, seen on the wire): the
    # same nonce and records every minute, each time from a new ephemeral
    # port of its RLOC; each refresh is answered at the port it came from
    ms = _ms()
    raw = register(rlocs=("192.0.2.1",), nonce=0x01DFDFDFDDCCBBAA)
    for t, port in ((0.0, 38686), (44.0, 58816), (104.0, 40001)):
        s, notify = only_send(ms.handle(raw, ep("192.0.2.1", port), MS_ADDR, t))
        assert s.dst == ep("192.0.2.1", port) and notify.nonce == 0x01DFDFDFDDCCBBAA
    ms.tick(104.0 + 179.0)
    assert registered(ms) == {"10.1.0.0/16": ["192.0.2.1"]}
    assert ms.counters["map_register_ok"] == 3 and ms.counters["map_register_replayed"] == 0


def _two_family_register(nonce=1):
    from lispctl.mapping.types import Rloc
    from lispctl.wire import ALG_HMAC_SHA256, MapRegister, eid_record, sign
    from roles_helpers import A
    recs = (eid_record(P("10.2.0.0/16"), (Rloc(A("203.0.113.2")), Rloc(A("203.0.113.66"))), authoritative=True),
            eid_record(P("2001:db8:b::/48"), (Rloc(A("2001:db8:2::2")),), authoritative=True))
    return sign(MapRegister(nonce, recs, key_id=1, alg_id=ALG_HMAC_SHA256, want_map_notify=True), "secret-b")


@pytest.mark.parametrize("src,etr", [("203.0.113.66", "203.0.113.66"),     # from one of its RLOCs
                                     ("198.51.100.7", "203.0.113.2")])     # elsewhere: its best IPv4 RLOC
def test_ipv6_eids_on_ipv6_rlocs_registered_over_ipv4_are_forwarded_over_ipv4(src, etr):
    # an IPv4-only Map-Server (the probe lab): the message is authenticated as
    # a whole, so its IPv4 RLOCs reach the ETR of its IPv6 EIDs too
    ms = _ms()
    s, _ = only_send(ms.handle(_two_family_register(), ep(src, 4342), MS_ADDR, 0.0))
    assert s.dst.addr == ep(etr).addr
    req = ecm_request("2001:db8:b::5/128", itr="2001:db8:9::1")
    s, fwd = only_send(ms.handle(req.encode(), ep("198.51.100.20"), MS_ADDR, 1.0))
    assert s.dst == ep(etr, 4342) and fwd.to_etr

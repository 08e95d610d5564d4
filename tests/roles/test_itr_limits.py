"""ITR defects found against real peers and under load (issues 8 and 9):
what a miss asks for, Map-Request rate limits, TTL 0, unusable locators,
an IPv6-only ITR behind an IPv4 Map-Resolver."""
import ipaddress

import pytest

from lispctl.mapping.types import EidPrefix, MapAction, Rloc
from lispctl.roles.base import MissEvent, RemoveMapping
from lispctl.wire import (EncapsulatedControlMessage, LocatorRecord, MapReply, MapRequest, eid_record,
                          record_prefix, request_record, rloc_to_locator)
from lispctl.wire.addresses import DistinguishedName

from roles_helpers import XTR, A, ep, installs, make, only_send, sends, xtr_text

P = EidPrefix.parse
ITR_EP = ep("192.0.2.1")


def miss(dst, src="10.1.0.7"):
    return MissEvent(EidPrefix(0, ipaddress.ip_network(dst)), A(src))


@pytest.fixture
def itr(xtr):
    role = xtr[1]["itr"]
    role.start(0.0)
    return role


def requests(effects):
    out = []
    for s in sends(effects):
        from lispctl.wire import decode_control
        m = decode_control(s.payload)
        if isinstance(m, EncapsulatedControlMessage):
            out.append(m.message)
    return out


def answer(itr, req, records, now):
    return itr.handle(MapReply(req.nonce, tuple(records)).encode(), ep("198.51.100.10"), ITR_EP, now)


def test_miss_in_send_map_request_entry_asks_for_the_destination(itr):
    """8.4: a negative send-map-request prefix is cached; a packet to an
    address inside it must ask for that address, so a site registered later
    inside the negative prefix is learnt."""
    (req,) = requests(itr.on_miss(miss("10.100.7.7/32"), 1.0))
    answer(itr, req, [eid_record(P("10.100.0.0/16"), (), ttl=1, act=int(MapAction.SEND_MAP_REQUEST))], 1.1)
    assert itr.cache.get(P("10.100.0.0/16")).action is MapAction.SEND_MAP_REQUEST
    (req2,) = requests(itr.on_miss(miss("10.100.1.5/32"), 5.0))
    assert [record_prefix(r) for r in req2.records] == [P("10.100.1.5/32")]
    answer(itr, req2, [eid_record(P("10.100.1.0/24"), (rloc_to_locator(Rloc(A("203.0.113.9"))),))], 5.1)
    assert itr.cache.get(P("10.100.1.0/24")).rlocs == (Rloc(A("203.0.113.9")),)


def test_ttl_zero_record_removes_cached_entry(itr):
    """8.11: TTL 0 = do not cache; what we hold for that prefix goes."""
    (req,) = requests(itr.on_miss(miss("10.2.3.4/32"), 1.0))
    answer(itr, req, [eid_record(P("10.2.0.0/16"), (rloc_to_locator(Rloc(A("203.0.113.2"))),))], 1.1)
    assert itr.cache.get(P("10.2.0.0/16")) is not None
    # an SMR makes us ask again; the answer now says TTL 0
    smr = MapRequest(9, (request_record(P("10.2.0.0/16")),), (A("203.0.113.2"),), smr=True)
    (req2,) = requests(itr.handle(smr.encode(), ep("203.0.113.2"), ITR_EP, 5.0))
    eff = answer(itr, req2, [eid_record(P("10.2.0.0/16"), (rloc_to_locator(Rloc(A("203.0.113.2"))),), ttl=0)],
                 5.1)
    assert RemoveMapping(P("10.2.0.0/16")) in eff and itr.cache.get(P("10.2.0.0/16")) is None
    assert not installs(eff)


def test_one_unusable_locator_keeps_the_others(itr):
    """8.12: a non-IP locator (here a distinguished name) is skipped, not the record."""
    (req,) = requests(itr.on_miss(miss("10.2.3.4/32"), 1.0))
    locs = (LocatorRecord(DistinguishedName("not-an-ip")), rloc_to_locator(Rloc(A("203.0.113.2"))))
    eff = answer(itr, req, [eid_record(P("10.2.0.0/16"), locs)], 1.1)
    (inst,) = installs(eff)
    assert inst.eid == P("10.2.0.0/16") and [r.address for r in inst.rlocs] == [A("203.0.113.2")]
    assert itr.counters["map_reply_locator_skipped"] == 1


def test_one_map_request_per_destination_per_second_smr_included(itr):
    """9.4: 36 SMRs within 40 ms used to cause 36 re-requests."""
    (req,) = requests(itr.on_miss(miss("10.2.3.4/32"), 1.0))
    answer(itr, req, [eid_record(P("10.2.0.0/16"), (rloc_to_locator(Rloc(A("203.0.113.2"))),))], 1.01)
    sent = []
    for i in range(36):
        now = 2.0 + i * 0.001
        smr = MapRequest(100 + i, (request_record(P("10.2.0.0/16")),), (A("203.0.113.2"),), smr=True)
        reqs = requests(itr.handle(smr.encode(), ep("203.0.113.2"), ITR_EP, now))
        sent += reqs
        for r in reqs:        # answered at once, so "pending" alone would not hold them back
            answer(itr, r, [eid_record(P("10.2.0.0/16"), (rloc_to_locator(Rloc(A("203.0.113.2"))),))], now)
    # one at once, one (for all the others) when the second is over
    assert len(sent) == 1 and itr.counters["smr_deferred"] == 1 and itr.counters["smr_rate_limited"] == 34
    assert itr.next_deadline() == pytest.approx(3.0)
    assert len(requests(itr.tick(2.5))) == 0
    assert len(requests(itr.tick(3.0))) == 1


def test_overall_map_request_rate_is_capped_and_drops_are_counted():
    """9.4: a miss storm to many destinations sends at most map-request-rate
    per second; the rest is dropped and counted, not queued."""
    cfg, roles = make(XTR.format(alg="hmac-sha256") + "[itr]\nmap-request-rate = 50\n", wan1=["192.0.2.2"])
    itr = roles["itr"]
    itr.start(0.0)
    sent_at = []
    now = 1.0
    for i in range(20000):                       # 10,000 misses/s for 2 s
        now = 1.0 + i / 10000
        for t in [itr.next_deadline()] if itr.next_deadline() is not None and itr.next_deadline() <= now else []:
            sent_at += [t] * len(requests(itr.tick(now)))
        sent_at += [now] * len(requests(itr.on_miss(miss(str(ipaddress.ip_address(0x0A640000 + i)) + "/32"),
                                                    now)))
    in_window = [t for t in sent_at if 1.0 <= t < 3.0]
    assert 50 <= len(in_window) <= 50 + 2 * 50          # burst of one second + 50/s for 2 s
    assert itr.counters["miss_dropped_overall_limit"] >= 19000
    assert len(itr.pending) <= 150


def test_ipv6_only_itr_uses_ipv4_map_resolver():
    """8.6: an ITR whose RLOCs are all IPv6 still asks an IPv4 Map-Resolver:
    the ECM goes over IPv4 (the kernel picks the outer source) and carries the
    IPv6 ITR-RLOCs."""
    text = xtr_text("v6", "10.1.0.0/16", "k", "198.51.100.10")
    cfg, roles = make(text, wan0=["2001:db8::1"])
    itr = roles["itr"]
    itr.start(0.0)
    s, ecm = only_send(itr.on_miss(miss("10.2.3.4/32"), 1.0))
    assert s.dst == ep("198.51.100.10") and s.src is None
    assert list(ecm.message.itr_rlocs) == [A("2001:db8::1")]
    # inner header: same family on both ends (the host EID that missed -> the EID asked for)
    assert ecm.inner_src == A("10.1.0.7") and ecm.inner_dst == A("10.2.3.4")
    assert itr.counters["map_request_no_rloc"] == 0


def fill(itr, n, now):
    """n destinations learnt one after another (10.50.i.0/24 -> 203.0.113.2)."""
    for i in range(n):
        (req,) = requests(itr.on_miss(miss(f"10.50.{i}.1/32"), now + i * 1.0))
        answer(itr, req, [eid_record(P(f"10.50.{i}.0/24"), (rloc_to_locator(Rloc(A("203.0.113.2"))),))],
               now + i * 1.0 + 0.01)


def test_full_map_cache_evicts_least_recently_used():
    """9.5: a freshly resolved destination is always installed; the least
    recently used dynamic entry makes room, static entries never do."""
    text = XTR.format(alg="hmac-sha256") + """
[[map-cache]]
eid-prefix = "10.60.0.0/16"
[[map-cache.locator]]
address = "203.0.113.60"
"""
    _, roles = make(text, wan1=["192.0.2.2"])
    itr = roles["itr"]
    itr.start(0.0)
    itr.capacity = 4                              # 1 static + 3 dynamic
    fill(itr, 3, 1.0)
    itr.on_used([P("10.50.0.0/24")], 10.0)        # 10.50.0.0/24 used: 10.50.1.0/24 is now the LRU
    (req,) = requests(itr.on_miss(miss("10.50.9.1/32"), 11.0))
    eff = answer(itr, req, [eid_record(P("10.50.9.0/24"), (rloc_to_locator(Rloc(A("203.0.113.2"))),))], 11.1)
    assert RemoveMapping(P("10.50.1.0/24")) in eff
    assert eff.index(RemoveMapping(P("10.50.1.0/24"))) < eff.index(installs(eff)[0])
    assert installs(eff)[0].eid == P("10.50.9.0/24")
    assert len(itr.cache) == 4 and itr.cache.get(P("10.60.0.0/16")) is not None
    assert itr.counters["evicted_lru"] == 1
    logs = [e for e in eff if type(e).__name__ == "Log" and "evicted" in e.text]
    assert len(logs) == 1


def test_full_family_evicts_its_own_least_recently_used():
    """Each address family has maps of its own (datapath.max-mappings each):
    when IPv4's are full, the oldest IPv4 entry goes, not an older IPv6 one."""
    _, roles = make(XTR.format(alg="hmac-sha256"), wan1=["192.0.2.2"])
    itr = roles["itr"]
    itr.start(0.0)
    itr.capacity, itr.family_capacity = 100, {4: 3, 6: 3}
    (req,) = requests(itr.on_miss(miss("2001:db8:50::1/128", "fd00::7"), 0.5))
    answer(itr, req, [eid_record(P("2001:db8:50::/48"), (rloc_to_locator(Rloc(A("203.0.113.2"))),))], 0.6)
    fill(itr, 3, 1.0)
    assert (itr.cache.count(4), itr.cache.count(6)) == (3, 1)
    (req,) = requests(itr.on_miss(miss("10.50.9.1/32"), 11.0))
    eff = answer(itr, req, [eid_record(P("10.50.9.0/24"), (rloc_to_locator(Rloc(A("203.0.113.2"))),))], 11.1)
    assert [e for e in eff if isinstance(e, RemoveMapping)] == [RemoveMapping(P("10.50.0.0/24"))]
    assert itr.cache.get(P("2001:db8:50::/48")) is not None
    assert (itr.cache.count(4), itr.cache.count(6)) == (3, 1) and itr.counters["evicted_lru"] == 1


def test_static_entries_beyond_capacity_are_refused(tmp_path):
    """9.5: the config is refused when its static entries exceed what the data plane holds."""
    from lispctl.daemon.build import MapCacheTooSmall, _limit_map_cache
    from lispctl.daemon.device import Device
    text = XTR.format(alg="hmac-sha256") + "".join(f"""
[[map-cache]]
eid-prefix = "10.60.{i}.0/24"
[[map-cache.locator]]
address = "203.0.113.60"
""" for i in range(5))
    _, roles = make(text, wan1=["192.0.2.2"])

    class Loaded:                                 # what Datapath.capacity reports
        capacity = 4

        def family_capacity(self, version):
            return 1024
    with pytest.raises(MapCacheTooSmall, match="5 static"):
        _limit_map_cache(Device(instance="t", roles=list(roles.items())), Loaded())
    Loaded.capacity = 5
    _limit_map_cache(Device(instance="t", roles=list(roles.items())), Loaded())
    assert roles["itr"].capacity == 5 and roles["itr"].family_capacity == {4: 1024, 6: 1024}


def test_adopted_entries_beyond_the_rate_are_queued_not_dropped():
    """After a restart the daemon re-resolves every inherited entry (a miss
    without source): beyond map-request-rate they wait for tokens, since no
    packet will report them again (the inherited entries still forward)."""
    _, roles = make(XTR.format(alg="hmac-sha256") + "[itr]\nmap-request-rate = 10\n", wan1=["192.0.2.2"])
    itr = roles["itr"]
    itr.start(0.0)
    sent = 0
    for i in range(30):
        sent += len(requests(itr.on_miss(MissEvent(P(f"10.70.{i}.0/32"), None), 1.0)))
    assert sent == 10 and len(itr.pending) == 30 and itr.counters["miss_dropped_overall_limit"] == 0
    now = 1.0
    while sent < 30 and now < 10.0:
        now = itr.next_deadline()
        sent += len(requests(itr.tick(now)))
    assert sent >= 30 and now <= 3.5                      # 10 per second

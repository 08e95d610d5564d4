"""ITR: misses become ECM'd Map-Requests; replies are nonce-checked and installed;
TTL expiry, refresh of used entries, give-up, static entries, SMR handling."""
import ipaddress

import pytest

from lispctl.mapping.types import EidPrefix, MapAction, Rloc
from lispctl.roles.base import InstallMapping, MissEvent, RemoveMapping
from lispctl.wire import (EncapsulatedControlMessage, MapReply, MapRequest, eid_record, record_prefix,
                          request_record)

from roles_helpers import XTR, A, ep, installs, make, only_send, removes, sends

MR = ep("198.51.100.10")
P = EidPrefix.parse


def miss(dst="10.2.3.4", src="10.1.0.7", iid=0):
    return MissEvent(EidPrefix(iid, ipaddress.ip_network(dst)), A(src))


@pytest.fixture
def itr(xtr):
    role = xtr[1]["itr"]
    role.start(0.0)
    return role


def ask(itr, now=1.0, **kw):
    s, ecm = only_send(itr.on_miss(miss(**kw), now))
    assert isinstance(ecm, EncapsulatedControlMessage) and isinstance(ecm.message, MapRequest)
    return s, ecm


def test_miss_sends_ecm_map_request_to_mr(itr):
    s, ecm = ask(itr)
    assert s.dst == MR
    assert ecm.inner_src == A("192.0.2.1") and ecm.inner_dst == A("10.2.3.4")
    assert ecm.inner_dport == 4342 and ecm.inner_sport == 4342 and not ecm.to_etr
    req = ecm.message
    assert list(req.itr_rlocs) == [A("192.0.2.1"), A("192.0.2.2")]
    assert req.source_eid == A("10.1.0.7")
    assert [record_prefix(r) for r in req.records] == [P("10.2.3.4/32")]
    assert not req.smr and not req.smr_invoked and not req.probe


def test_rate_limited_with_backoff_then_give_up(itr):
    _, first = ask(itr, now=1.0)
    assert sends(itr.on_miss(miss(), 1.2)) == []          # same destination: suppressed
    assert itr.counters["miss_rate_limited"] == 1
    times, nonces = [], {first.message.nonce}
    while True:
        now = itr.next_deadline()
        eff = itr.tick(now)
        if installs(eff):
            break
        s, ecm = only_send(eff)
        times.append(now)
        nonces.add(ecm.message.nonce)
    assert times == [2.0, 4.0, 8.0, 16.0]                  # 1 s, doubling (4 retries)
    assert len(nonces) == 5                                 # a fresh nonce each time
    assert now == 32.0
    (inst,) = installs(eff)
    # miss-action defaults to drop: hold the destination down for 60 s
    assert inst == InstallMapping(P("10.2.3.4/32"), (), MapAction.DROP, 60.0)
    assert sends(itr.on_miss(miss(), 40.0)) == []
    assert removes(itr.tick(92.0)) == [RemoveMapping(P("10.2.3.4/32"))]
    assert len(sends(itr.on_miss(miss(), 93.0))) == 1       # asks again after the hold-down


def reply_for(req: MapRequest, prefix="10.2.0.0/16", rlocs=("203.0.113.20",), ttl=10, nonce=None, act=0):
    locs = tuple(Rloc(A(a), 1, 100) for a in rlocs)
    return MapReply(req.nonce if nonce is None else nonce,
                    (eid_record(P(prefix), locs, ttl=ttl, act=act),)).encode()


def test_reply_with_wrong_nonce_ignored_right_nonce_installed(itr):
    _, ecm = ask(itr)
    eff = itr.handle(reply_for(ecm.message, nonce=ecm.message.nonce ^ 0xFF), MR, ep("192.0.2.1"), 1.1)
    assert installs(eff) == [] and itr.counters["map_reply_unknown_nonce"] == 1
    eff = itr.handle(reply_for(ecm.message), ep("203.0.113.20"), ep("192.0.2.1"), 1.2)
    assert installs(eff) == [InstallMapping(P("10.2.0.0/16"), (Rloc(A("203.0.113.20"), 1, 100),),
                                            MapAction.NO_ACTION, 600.0)]
    assert itr.pending == {} and itr.next_deadline() is not None
    # a replay of the same reply is no longer expected
    assert installs(itr.handle(reply_for(ecm.message), MR, ep("192.0.2.1"), 1.3)) == []


def test_record_not_covering_request_rejected(itr):
    _, ecm = ask(itr)
    eff = itr.handle(reply_for(ecm.message, prefix="10.3.0.0/16"), MR, ep("192.0.2.1"), 1.1)
    assert installs(eff) == [] and itr.counters["map_reply_record_not_asked"] == 1
    assert P("10.2.3.4/32") in itr.pending             # still waiting for a real answer
    eff = itr.handle(reply_for(ecm.message, prefix="10.2.0.0/16"), MR, ep("192.0.2.1"), 1.2)
    assert [i.eid for i in installs(eff)] == [P("10.2.0.0/16")]


def test_ttl_expiry_removes_unused_entry(itr):
    _, ecm = ask(itr)
    itr.handle(reply_for(ecm.message, ttl=1), MR, ep("192.0.2.1"), 2.0)
    # refresh point passes without usage: nothing sent; the entry then expires
    assert sends(itr.tick(32.0)) == []
    assert itr.next_deadline() == 62.0
    assert removes(itr.tick(62.0)) == [RemoveMapping(P("10.2.0.0/16"))]
    assert itr.cache.get(P("10.2.0.0/16")) is None


def test_used_entry_refreshed_before_expiry(itr):
    _, ecm = ask(itr)
    itr.handle(reply_for(ecm.message, ttl=10), MR, ep("192.0.2.1"), 2.0)   # expires at 602
    assert itr.on_used([P("10.2.0.0/16")], 300.0) == []
    assert itr.next_deadline() == 572.0                                    # 30 s before expiry
    s, ecm2 = only_send(itr.tick(572.0))
    assert record_prefix(ecm2.message.records[0]) == P("10.2.0.0/16")
    eff = itr.handle(reply_for(ecm2.message, rlocs=("203.0.113.21",)), MR, ep("192.0.2.1"), 573.0)
    assert installs(eff)[0].rlocs == (Rloc(A("203.0.113.21"), 1, 100),)
    assert removes(itr.tick(602.0)) == []                                   # refreshed, still there
    assert itr.cache.get(P("10.2.0.0/16")).expires_at == 1173.0


def test_usage_reported_after_refresh_point_triggers_refresh(itr):
    _, ecm = ask(itr)
    itr.handle(reply_for(ecm.message, ttl=10), MR, ep("192.0.2.1"), 2.0)
    assert sends(itr.tick(572.0)) == []               # idle at the refresh point
    s, ecm2 = only_send(itr.on_used([P("10.2.0.0/16")], 580.0))
    assert record_prefix(ecm2.message.records[0]) == P("10.2.0.0/16")


def test_negative_reply_installed_with_action(itr):
    _, ecm = ask(itr, dst="192.0.2.77")
    eff = itr.handle(reply_for(ecm.message, prefix="192.0.0.0/8", rlocs=(), ttl=15,
                               act=int(MapAction.NATIVELY_FORWARD)), MR, ep("192.0.2.1"), 1.5)
    assert installs(eff) == [InstallMapping(P("192.0.0.0/8"), (), MapAction.NATIVELY_FORWARD, 900.0)]
    # another destination inside the negative prefix is answered from the cache
    assert sends(itr.on_miss(miss(dst="192.0.2.99"), 2.0)) == []
    assert itr.counters["miss_just_installed"] == 1       # reported before the install landed
    assert sends(itr.on_miss(miss(dst="192.0.2.99"), 3.0)) == []
    assert itr.counters["miss_reinstalled"] == 1


def test_static_entries_installed_at_start_and_never_expire():
    text = XTR.format(alg="hmac-sha1") + ('[[map-cache]]\neid-prefix = "10.99.0.0/16"\n'
                                          '[[map-cache.locator]]\naddress = "203.0.113.99"\n'
                                          '[[map-cache]]\neid-prefix = "10.98.0.0/16"\naction = "drop"\n')
    _, roles = make(text)
    itr = roles["itr"]
    assert itr.next_deadline() <= 0
    eff = itr.tick(5.0)
    got = {i.eid: (i.rlocs, i.action) for i in installs(eff)}
    assert got == {P("10.99.0.0/16"): ((Rloc(A("203.0.113.99")),), MapAction.NO_ACTION),
                   P("10.98.0.0/16"): ((), MapAction.DROP)}
    assert all(i.ttl_s > 1e9 for i in installs(eff))
    assert itr.next_deadline() is None
    assert removes(itr.tick(1e9)) == []


def test_give_up_with_petr_maps_to_petr():
    text = XTR.format(alg="hmac-sha1") + '[[proxy-etr]]\naddress = "203.0.113.1"\n'
    _, roles = make(text)
    itr = roles["itr"]
    itr.start(0.0)
    itr.on_miss(miss(), 1.0)
    eff = []
    while not installs(eff):
        eff = itr.tick(itr.next_deadline())
    assert installs(eff) == [InstallMapping(P("10.2.3.4/32"), (Rloc(A("203.0.113.1")),), MapAction.NO_ACTION, 60.0)]


def smr(prefix="10.2.0.0/16", nonce=77):
    return MapRequest(nonce, (request_record(P(prefix)),), (A("203.0.113.20"),), source_eid=A("10.2.0.1"),
                      smr=True, map_reply_record=eid_record(P(prefix), (Rloc(A("198.51.100.66")),)))


def test_smr_triggers_rate_limited_requery_through_mr(itr):
    _, ecm = ask(itr)
    itr.handle(reply_for(ecm.message), MR, ep("192.0.2.1"), 1.2)
    s, ecm2 = only_send(itr.handle(smr().encode(), ep("203.0.113.20", 4342), ep("192.0.2.1"), 50.0))
    assert s.dst == MR                                    # through the mapping system, not the SMR sender
    assert ecm2.message.smr_invoked and not ecm2.message.smr
    assert record_prefix(ecm2.message.records[0]) == P("10.2.0.0/16")
    # the SMR's own (claimed) mapping is never installed
    assert itr.cache.get(P("10.2.0.0/16")).rlocs == (Rloc(A("203.0.113.20"), 1, 100),)
    # a second SMR while the re-query is outstanding sends nothing now: one
    # re-query follows when the second since the last one is over
    assert sends(itr.handle(smr(nonce=78).encode(), ep("203.0.113.20"), ep("192.0.2.1"), 50.2)) == []
    assert itr.counters["smr_deferred"] == 1
    eff = itr.handle(reply_for(ecm2.message, rlocs=("203.0.113.30",)), MR, ep("192.0.2.1"), 50.5)
    assert installs(eff)[0].rlocs == (Rloc(A("203.0.113.30"), 1, 100),)
    assert itr.next_deadline() == 51.0
    s, ecm3 = only_send(itr.tick(51.0))
    assert ecm3.message.smr_invoked and record_prefix(ecm3.message.records[0]) == P("10.2.0.0/16")


def test_smr_for_uncached_prefix_ignored(itr):
    assert sends(itr.handle(smr().encode(), ep("203.0.113.20"), ep("192.0.2.1"), 5.0)) == []
    assert itr.counters["smr_not_cached"] == 1


def test_snapshot_is_jsonable(itr):
    import json
    _, ecm = ask(itr)
    itr.handle(reply_for(ecm.message), MR, ep("192.0.2.1"), 1.2)
    snap = json.loads(json.dumps(itr.snapshot()))
    assert snap["map_cache"][0]["eid"] == "10.2.0.0/16" and snap["counters"]["installed"] == 1

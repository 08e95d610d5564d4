"""Map-Server: authentication, Map-Notify, merging, expiry, forwarding vs proxy-reply."""

import pytest

from lispctl.mapping.types import EidPrefix, Rloc
from lispctl.wire import (ALG_HMAC_SHA1, ALG_HMAC_SHA256, EncapsulatedControlMessage, MapNotify,
                          MapNotifyAck, MapRegister, MapReply, MapRequest, eid_record, record_prefix,
                          request_record, sign, verify)

from roles_helpers import MSMR, A, ep, make, only_send, sends

P = EidPrefix.parse
XTR1, XTR2 = ep("192.0.2.1", 4342), ep("192.0.2.2", 4342)


def register(prefix="10.1.0.0/16", rlocs=("192.0.2.1",), key="secret-a", key_id=1, alg=ALG_HMAC_SHA256,
             nonce=1, notify=True, proxy=False, xtr_id=None, ttl=1440, security=False, more=()):
    """more: prefixes of further records, with the same locators and TTL."""
    recs = tuple(eid_record(P(p), tuple(Rloc(A(a)) for a in rlocs), ttl=ttl, authoritative=True)
                 for p in (prefix, *more))
    msg = MapRegister(nonce, recs, key_id=key_id, alg_id=alg, want_map_notify=notify, proxy_reply=proxy,
                      security=security, xtr_id=xtr_id, site_id=0 if xtr_id is not None else None)
    return sign(msg, key)


@pytest.fixture
def ms():
    return make(MSMR.format(roles='["ms"]'))[1]["ms"]


def registered(ms):
    return {str(e): sorted(str(l.address) for l in ms.merged_record(e, regs).locators)
            for e, regs in ms.registered.items()}


@pytest.mark.parametrize("alg", [ALG_HMAC_SHA1, ALG_HMAC_SHA256])
def test_good_register_gets_signed_notify_same_nonce(ms, alg):
    s, notify = only_send(ms.handle(register(alg=alg, nonce=0x1234), XTR1, ep("198.51.100.10"), 0.0))
    assert isinstance(notify, MapNotify) and notify.nonce == 0x1234 and s.dst == XTR1
    assert notify.alg_id == alg and verify(s.payload, "secret-a")
    assert [record_prefix(r) for r in notify.records] == [P("10.1.0.0/16")]
    assert registered(ms) == {"10.1.0.0/16": ["192.0.2.1"]}


def test_notify_goes_to_source_port(ms):
    s, _ = only_send(ms.handle(register(), ep("192.0.2.1", 61000), ep("198.51.100.10"), 0.0))
    assert s.dst == ep("192.0.2.1", 61000)


def test_no_notify_unless_asked(ms):
    assert sends(ms.handle(register(notify=False), XTR1, ep("198.51.100.10"), 0.0)) == []
    assert registered(ms) == {"10.1.0.0/16": ["192.0.2.1"]}


@pytest.mark.parametrize("kw", [dict(key="wrong"), dict(key_id=2), dict(key="secret-b"),
                                dict(prefix="10.9.0.0/16"), dict(prefix="10.0.0.0/8")])
def test_bad_register_silent_and_changes_nothing(ms, kw):
    ms.handle(register(rlocs=("192.0.2.1",)), XTR1, ep("198.51.100.10"), 0.0)
    before = registered(ms)
    eff = ms.handle(register(rlocs=("192.0.2.66",), nonce=9, **kw), XTR2, ep("198.51.100.10"), 1.0)
    assert sends(eff) == []
    assert registered(ms) == before
    assert ms.counters["map_register_bad_auth"] + ms.counters["map_register_bad_prefix"] == 1


def test_second_site_key_id(ms):
    s, _ = only_send(ms.handle(register("10.2.0.0/16", key="secret-b7", key_id=7), XTR1, ep("198.51.100.10"), 0))
    assert verify(s.payload, "secret-b7")
    assert sends(ms.handle(register("10.2.0.0/16", key="secret-b", key_id=7), XTR1, ep("198.51.100.10"), 0)) == []


def test_more_specifics_only_when_accepted(ms):
    assert len(sends(ms.handle(register("10.1.4.0/24"), XTR1, ep("198.51.100.10"), 0))) == 1
    assert sends(ms.handle(register("10.2.4.0/24", key="secret-b"), XTR1, ep("198.51.100.10"), 0)) == []
    assert set(registered(ms)) == {"10.1.4.0/24"}


def test_repeated_nonce_accepted(ms):
    for t in (0.0, 60.0, 120.0):
        assert len(sends(ms.handle(register(nonce=42), XTR1, ep("198.51.100.10"), t))) == 1
    assert ms.counters["map_register_ok"] == 3


def test_merge_two_xtrs_by_source_and_by_xtr_id(ms):
    ms.handle(register(rlocs=("192.0.2.1",)), XTR1, ep("198.51.100.10"), 0.0)
    ms.handle(register(rlocs=("192.0.2.2",)), XTR2, ep("198.51.100.10"), 1.0)
    assert registered(ms) == {"10.1.0.0/16": ["192.0.2.1", "192.0.2.2"]}
    # the same xTR-ID from a new source address replaces, not adds
    ms.handle(register(rlocs=("192.0.2.3",), xtr_id=0xAA), ep("192.0.2.3"), ep("198.51.100.10"), 2.0)
    ms.handle(register(rlocs=("192.0.2.4",), xtr_id=0xAA), ep("192.0.2.4"), ep("198.51.100.10"), 3.0)
    assert registered(ms) == {"10.1.0.0/16": ["192.0.2.1", "192.0.2.2", "192.0.2.4"]}


def test_registrations_expire_after_180s_without_refresh(ms):
    ms.handle(register(rlocs=("192.0.2.1",)), XTR1, ep("198.51.100.10"), 0.0)
    ms.handle(register(rlocs=("192.0.2.2",)), XTR2, ep("198.51.100.10"), 100.0)
    assert ms.next_deadline() == 180.0
    ms.tick(179.9)
    assert registered(ms) == {"10.1.0.0/16": ["192.0.2.1", "192.0.2.2"]}
    ms.tick(180.0)
    assert registered(ms) == {"10.1.0.0/16": ["192.0.2.2"]}
    ms.tick(280.0)
    assert registered(ms) == {} and ms.next_deadline() is None
    assert ms.snapshot()["sites"][0]["eid_prefixes"][0]["registered"] is False


def test_deregister_with_ttl_zero(ms):
    ms.handle(register(), XTR1, ep("198.51.100.10"), 0.0)
    ms.handle(register(ttl=0, nonce=2), XTR1, ep("198.51.100.10"), 1.0)
    assert registered(ms) == {}


def test_notify_ack_accepted_and_ignored(ms):
    ack = sign(MapNotifyAck(5, (), key_id=1, alg_id=ALG_HMAC_SHA256), "secret-a")
    assert ms.handle(ack, XTR1, ep("198.51.100.10"), 0.0) == []
    assert ms.counters["map_notify_ack_rx"] == 1


def ecm_request(eid="10.1.2.3/32", sport=50123, itr="203.0.113.5"):
    req = MapRequest(0x77, (request_record(P(eid)),), (A(itr),), source_eid=A("10.9.0.1"))
    return EncapsulatedControlMessage(req, A(itr), A(eid.split("/")[0]), sport, 4342)


def test_forwards_to_registered_etr_with_e_bit(ms):
    ms.handle(register(rlocs=("192.0.2.1",)), ep("192.0.2.1", 4342), ep("198.51.100.10"), 0.0)
    ecm = ecm_request()
    s, fwd = only_send(ms.handle(ecm.encode(), ep("198.51.100.20"), ep("198.51.100.10"), 1.0))
    assert s.dst == ep("192.0.2.1", 4342)
    assert isinstance(fwd, EncapsulatedControlMessage) and fwd.to_etr
    assert fwd.message == ecm.message and fwd.inner_sport == 50123 and fwd.inner_src == A("203.0.113.5")


@pytest.mark.parametrize("how", ["register-bit", "site-config"])
def test_proxy_reply_answers_at_inner_source_port(ms, how):
    if how == "register-bit":
        data = register(rlocs=("192.0.2.1", "192.0.2.2"), proxy=True)
        want, eid = "10.1.0.0/16", "10.1.2.3/32"
    else:
        data = register("10.2.0.0/16", rlocs=("192.0.2.1", "192.0.2.2"), key="secret-b")
        want, eid = "10.2.0.0/16", "10.2.2.3/32"
    ms.handle(data, XTR1, ep("198.51.100.10"), 0.0)
    s, reply = only_send(ms.handle(ecm_request(eid).encode(), ep("203.0.113.5"), ep("198.51.100.10"), 1.0))
    assert isinstance(reply, MapReply) and reply.nonce == 0x77
    assert s.dst == ep("203.0.113.5", 50123)
    (rec,) = reply.records
    assert record_prefix(rec) == P(want) and not rec.authoritative
    assert sorted(str(l.address) for l in rec.locators) == ["192.0.2.1", "192.0.2.2"]


def test_standalone_ms_negative_for_unregistered(ms):
    s, reply = only_send(ms.handle(ecm_request().encode(), ep("203.0.113.5"), ep("198.51.100.10"), 1.0))
    (rec,) = reply.records
    assert record_prefix(rec) == P("10.1.0.0/16") and rec.locators == () and rec.ttl == 1 and rec.act == 2


def test_snapshot_lists_registrations(ms):
    import json
    ms.handle(register(xtr_id=0xBEEF), XTR1, ep("198.51.100.10"), 0.0)
    ms.handle(register(key="bad", nonce=3), XTR1, ep("198.51.100.10"), 1.0)
    snap = json.loads(json.dumps(ms.snapshot()))
    site = snap["sites"][0]
    assert site["name"] == "site-a" and site["bad_auth"] == 1 and site["registers"] == 1
    (reg,) = site["eid_prefixes"][0]["registrations"]
    assert reg["registrant"] == f"{0xBEEF:032x}" and reg["rlocs"][0]["address"] == "192.0.2.1"
    assert snap["counters"]["map_register_bad_auth"] == 1


def test_same_expiry_time_for_both_families(ms):
    ms.handle(register("10.2.0.0/16", key="secret-b"), XTR1, ep("198.51.100.10"), 0.0)
    ms.handle(register("2001:db8:b::/48", rlocs=("2001:db8::1",), key="secret-b"), XTR1, ep("198.51.100.10"), 0.0)
    ms.handle(register("10.2.0.0/16", key="secret-b", nonce=5), XTR1, ep("198.51.100.10"), 0.0)
    assert ms.next_deadline() == 180.0
    ms.tick(180.0)
    assert registered(ms) == {}

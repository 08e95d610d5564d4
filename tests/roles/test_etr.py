"""ETR: registration cycle, Map-Notify checks, answering Map-Requests and probes, SMRs."""
import dataclasses

import pytest

from lispctl.mapping.types import EidPrefix
from lispctl.wire import (ALG_HMAC_SHA1, ALG_HMAC_SHA256, NO_ADDRESS, EncapsulatedControlMessage, MapNotify,
                          MapNotifyAck, MapRegister, MapReply, MapRequest, RequestRecord, decode_control,
                          record_prefix, request_record, sign, verify)

from roles_helpers import XTR, A, ep, make, only_send, sends

MS = ep("198.51.100.10")
ITR = A("203.0.113.5")


def register_at(etr, now):
    s, msg = only_send(etr.tick(now))
    assert isinstance(msg, MapRegister) and s.dst == MS
    return s, msg


@pytest.mark.parametrize("alg,alg_id,mac_len", [("hmac-sha1", ALG_HMAC_SHA1, 20),
                                                  ("hmac-sha256", ALG_HMAC_SHA256, 32)])
def test_register_at_start_signed_full_mac(alg, alg_id, mac_len):
    _, roles = make(XTR.format(alg=alg), wan1=["192.0.2.2"])
    etr = roles["etr"]
    assert etr.next_deadline() <= 0
    s, msg = register_at(etr, 1000.0)
    assert msg.want_map_notify and msg.key_id == 1 and msg.alg_id == alg_id
    assert len(msg.auth_data) == mac_len
    assert verify(s.payload, "secret-a") and not verify(s.payload, "secret-b")
    (rec,) = msg.records
    assert record_prefix(rec) == EidPrefix.parse("10.1.0.0/16") and rec.authoritative
    assert [(str(l.address), l.priority, l.weight, l.reachable, l.local) for l in rec.locators] == [
        ("192.0.2.1", 1, 60, True, True), ("192.0.2.2", 2, 40, True, True)]


def notify_for(reg: MapRegister, key="secret-a", **change):
    n = MapNotify(reg.nonce, reg.records, key_id=reg.key_id, alg_id=reg.alg_id)
    return sign(dataclasses.replace(n, **change), key)


def test_good_notify_then_every_60s_with_fresh_nonces(xtr):
    etr = xtr[1]["etr"]
    _, reg = register_at(etr, 0.0)
    assert sends(etr.handle(notify_for(reg), MS, ep("192.0.2.1"), 0.2)) == []
    assert etr.next_deadline() == 60.0
    assert etr.tick(59.9) == []
    _, reg2 = register_at(etr, 60.0)
    assert reg2.nonce != reg.nonce
    etr.handle(notify_for(reg2), MS, ep("192.0.2.1"), 60.1)
    assert etr.next_deadline() == 120.0
    assert etr.snapshot()["map_servers"][0]["registered"] is True


@pytest.mark.parametrize("bad", ["wrong-key", "wrong-nonce", "truncated-mac"])
def test_bad_notify_ignored_and_retries_back_off(xtr, bad):
    etr = xtr[1]["etr"]
    _, reg = register_at(etr, 0.0)
    if bad == "wrong-key":
        data = notify_for(reg, key="secret-b")
    elif bad == "wrong-nonce":
        data = notify_for(reg, nonce=reg.nonce ^ 1)
    else:
        good = notify_for(reg)
        data = decode_control(good)
        data = dataclasses.replace(data, alg_id=ALG_HMAC_SHA1, auth_data=data.auth_data[:20]).encode()
    effects = etr.handle(data, MS, ep("192.0.2.1"), 0.5)
    if bad == "wrong-nonce":
        # authentic but for no register of ours: acknowledged as unsolicited,
        # it does not confirm our registration
        assert etr.counters["map_notify_unsolicited"] == 1
        assert isinstance(only_send(effects)[1], MapNotifyAck)
    else:
        assert etr.counters["map_notify_bad"] == 1 and sends(effects) == []
    assert etr.counters["map_notify_rx"] == 0
    assert etr.snapshot()["map_servers"][0]["registered"] is False
    # no Map-Notify: retry after 2 s, then 4, 8, 16, 32, then every 60
    times, now = [], 0.0
    while len(times) < 7:
        now = etr.next_deadline()
        register_at(etr, now)
        times.append(now)
    assert times == [2.0, 6.0, 14.0, 30.0, 62.0, 122.0, 182.0]


def test_late_notify_for_previous_nonce_still_counts(xtr):
    etr = xtr[1]["etr"]
    _, reg1 = register_at(etr, 0.0)
    _, reg2 = register_at(etr, 2.0)
    etr.handle(notify_for(reg1), MS, ep("192.0.2.1"), 2.5)
    assert etr.counters["map_notify_rx"] == 1 and etr.next_deadline() == 62.0


def test_unsolicited_notify_acked_only_when_authentic(xtr):
    etr = xtr[1]["etr"]
    _, reg = register_at(etr, 0.0)
    unsolicited = notify_for(reg, nonce=12345)
    s, ack = only_send(etr.handle(unsolicited, MS, ep("192.0.2.1"), 1.0))
    assert isinstance(ack, MapNotifyAck) and ack.nonce == 12345 and verify(s.payload, "secret-a")
    assert sends(etr.handle(notify_for(reg, key="nope", nonce=999), MS, ep("192.0.2.1"), 1.0)) == []


def request(eid="10.1.2.3/32", probe=False, itr=(ITR,), nonce=0xABCDEF, record=None):
    rec = record if record is not None else request_record(EidPrefix.parse(eid))
    return MapRequest(nonce, (rec,), tuple(itr), source_eid=A("10.9.0.1"), probe=probe)


def test_answers_direct_request_at_source_port(xtr):
    etr = xtr[1]["etr"]
    s, reply = only_send(etr.handle(request().encode(), ep("203.0.113.5", 40001), ep("192.0.2.1"), 5.0))
    assert isinstance(reply, MapReply) and reply.nonce == 0xABCDEF and not reply.probe
    assert s.dst == ep("203.0.113.5", 40001)
    (rec,) = reply.records
    assert record_prefix(rec) == EidPrefix.parse("10.1.0.0/16")
    assert rec.ttl == 1440 and rec.authoritative
    assert [(str(l.address), l.priority, l.weight, l.reachable) for l in rec.locators] == [
        ("192.0.2.1", 1, 60, True), ("192.0.2.2", 2, 40, True)]


def test_peer_driven_log_lines_carry_a_kind(xtr):
    """Issue 9.6: a peer decides how many Map-Replies and bad Map-Notifies we
    log, so each line names its kind and peer and the daemon summarises them."""
    from lispctl.roles.base import Log
    etr = xtr[1]["etr"]
    logs = [e for e in etr.handle(request().encode(), ep("203.0.113.5", 40001), ep("192.0.2.1"), 5.0)
            if isinstance(e, Log)]
    assert [(l.kind, str(l.peer)) for l in logs] == [("map-reply", "203.0.113.5")]
    _, reg = register_at(etr, 0.0)
    logs = [e for e in etr.handle(notify_for(reg, key="nope", nonce=999), MS, ep("192.0.2.1"), 1.0)
            if isinstance(e, Log)]
    assert [l.kind for l in logs] == ["map-notify-bad"]


def test_request_for_foreign_eid_ignored(xtr):
    etr = xtr[1]["etr"]
    assert sends(etr.handle(request("10.7.0.1/32").encode(), ep("203.0.113.5"), ep("192.0.2.1"), 5.0)) == []
    assert etr.counters["map_request_not_ours"] == 1


@pytest.mark.parametrize("to_etr", [True, False])
def test_answers_forwarded_ecm_at_inner_source_port(xtr, to_etr):
    etr = xtr[1]["etr"]
    req = request(itr=(A("203.0.113.5"), A("2001:db8::5")))
    ecm = EncapsulatedControlMessage(req, A("203.0.113.5"), A("10.1.2.3"), 61234, 4342, to_etr=to_etr)
    s, reply = only_send(etr.handle(ecm.encode(), MS, ep("192.0.2.1"), 5.0))
    assert s.dst == ep("203.0.113.5", 61234)         # ITR-RLOC[0], the inner source port
    assert reply.nonce == req.nonce
    assert etr.counters["map_request_forwarded_rx"] == 1


def test_plain_ecm_left_to_colocated_mr():
    _, roles = make(XTR.format(alg="hmac-sha1").replace('roles = ["xtr"]', 'roles = ["xtr", "mr"]')
                    + '[[mr.map-server]]\naddress = "198.51.100.10"\neid-prefix = ["10.0.0.0/8"]\n',
                    wan1=["192.0.2.2"])
    etr = roles["etr"]
    ecm = EncapsulatedControlMessage(request(), ITR, A("10.1.2.3"), 61234, 4342)
    assert sends(etr.handle(ecm.encode(), MS, ep("192.0.2.1"), 5.0)) == []
    ecm = dataclasses.replace(ecm, to_etr=True)
    assert len(sends(etr.handle(ecm.encode(), MS, ep("192.0.2.1"), 5.0))) == 1


def test_rloc_probe_with_wildcard_target(xtr):
    etr = xtr[1]["etr"]
    probe = request(probe=True, record=RequestRecord(NO_ADDRESS, 0))
    s, reply = only_send(etr.handle(probe.encode(), ep("203.0.113.5", 53111), ep("192.0.2.2"), 5.0))
    assert reply.probe and reply.nonce == probe.nonce
    assert s.dst == ep("203.0.113.5", 53111) and s.src == ep("192.0.2.2")
    (rec,) = reply.records
    assert record_prefix(rec) == EidPrefix.parse("10.1.0.0/16")
    assert {str(l.address): l.probed for l in rec.locators} == {"192.0.2.1": False, "192.0.2.2": True}
    assert etr.counters["rloc_probe_reply_tx"] == 1


def test_smr_targets_and_content(xtr):
    etr = xtr[1]["etr"]
    register_at(etr, 0.0)
    etr.handle(request().encode(), ep("203.0.113.5"), ep("192.0.2.1"), 10.0)
    etr.handle(request(itr=(A("203.0.113.6"),)).encode(), ep("203.0.113.6"), ep("192.0.2.1"), 500.0)
    effects = etr.set_interface_addresses("wan1", [A("192.0.2.9")], 950.0)
    smrs = [(s.dst, m) for s in sends(effects) for m in [decode_control(s.payload)] if isinstance(m, MapRequest)]
    assert [d for d, _ in smrs] == [ep("203.0.113.6")]          # 203.0.113.5 is stale by now
    _, smr = smrs[0]
    assert smr.smr and not smr.probe
    # RFC 9301 6.1 / OOR: Source-EID = our changed prefix, record = the ITR's
    # EID (the Source-EID of its request)
    assert smr.source_eid == A("10.1.0.0")
    assert record_prefix(smr.records[0]) == EidPrefix.parse("10.9.0.1/32")
    assert A("192.0.2.9") in smr.itr_rlocs
    # no change, no SMR and no register
    assert etr.set_interface_addresses("wan1", [A("192.0.2.9")], 951.0) == []

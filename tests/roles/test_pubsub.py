"""Publish/subscribe (RFC 9437): an ITR subscribes through the MR/MS, the ETR
moves, the MS pushes a signed Map-Notify, the ITR installs the new RLOC at
once and acknowledges; forged, unsolicited and replayed notifications; the
MS retransmits until acked; fallback to SMR when the MS does not do pubsub."""
import dataclasses

from lispctl.config import loads
from lispctl.mapping.types import EidPrefix, MapAction, Rloc
from lispctl.wire import (EncapsulatedControlMessage, MapNotify, MapNotifyAck, MapRegister, MapReply,
                          MapRequest, decode_control, eid_record, record_prefix, sign, verify)

from roles_helpers import MSMR, A, ep, installs, make, only_send, sends, xtr_text
from test_system import MS_ADDR, Net

P = EidPrefix.parse
XTR_ID_A = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
XTR_ID_B = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"


def ms_text(pubsub=True):
    text = MSMR.format(roles='["ms", "mr"]').replace('name = "site-b"\n', 'name = "site-b"\nsite-id = 2\n')
    return text + f"[ms]\npubsub = {str(pubsub).lower()}\n"


def xtr(name, eid, key, xtr_id, site_id, subscribe, smr=True):
    return xtr_text(name, eid, key, MS_ADDR,
                    resolver=f'subscribe = {str(subscribe).lower()}\nkey-id = 1\nkey = "{key}"\n',
                    tail=f'[etr]\nxtr-id = "{xtr_id}"\nsite-id = {site_id}\nsmr = {str(smr).lower()}\n')


def build(pubsub=True, smr=False):
    net = Net()
    _, ms = net.add("ms", ms_text(pubsub), [MS_ADDR], 1)
    _, a = net.add("a", xtr("a", "10.1.0.0/16", "secret-a", XTR_ID_A, 1, False, smr=smr), ["192.0.2.1"], 2)
    _, b = net.add("b", xtr("b", "10.2.0.0/16", "secret-b", XTR_ID_B, 2, True), ["203.0.113.2"], 3)
    net.run(until=5.0, t0=0.0)
    return net, dict(ms), dict(a), dict(b)


def move_a(net, a, now):
    net.devices[A("192.0.2.9")] = net.devices.pop(A("192.0.2.1"))
    net.apply("a", a["etr"].set_interface_addresses("wan0", [A("192.0.2.9")], now), now, A("192.0.2.9"))


def test_subscribe_then_change_is_pushed_and_installed_at_once():
    net, ms, a, b = build()
    net.miss("b", "10.1.7.7/32", "10.2.0.5", 10.0)
    net.run(until=15.0, t0=10.0)
    assert net.installed["b"][P("10.1.0.0/16")].rlocs == (Rloc(A("192.0.2.1")),)
    (sub,) = ms["ms"].snapshot()["subscriptions"]
    assert sub["eid"] == "10.1.0.0/16" and sub["xtr_id"] == XTR_ID_B and sub["itr"] == "203.0.113.2"
    assert sub["acked"] == 1 and not sub["unacked"]        # the confirming Map-Notify was acked
    assert b["itr"].counters["pubsub_notify_rx"] == 1

    move_a(net, a, 20.0)
    net.run(until=20.05, t0=20.0)
    # pushed by the MS, not asked: b has the new RLOC within a few datagrams of the move
    got = net.installed["b"][P("10.1.0.0/16")]
    assert got.rlocs == (Rloc(A("192.0.2.9")),) and got.action is MapAction.NO_ACTION
    assert b["itr"].counters["pubsub_notify_rx"] == 2 and b["itr"].counters["smr_rx"] == 0
    assert a["etr"].counters["smr_tx"] == 0
    notifies = [(s, d) for tm, s, d, t in net.log if t == 4 and tm >= 20.0]
    assert (MS_ADDR, "203.0.113.2") in notifies
    acks = [(s, d) for tm, s, d, t in net.log if t == 5 and tm >= 20.0]
    assert acks == [("203.0.113.2", MS_ADDR)]
    assert ms["ms"].outgoing == {}                           # nothing left to retransmit
    # b's ETR saw the notification too and left it alone
    assert b["etr"].counters["map_notify_not_ours"] == 2 and b["etr"].counters["map_notify_bad"] == 0
    # a later refresh with an unchanged mapping pushes nothing
    before = ms["ms"].counters["pubsub_notify_tx"]
    net.run(until=200.0, t0=20.05)
    assert ms["ms"].counters["pubsub_notify_tx"] == before


def test_map_request_carries_n_and_i_bits():
    net, ms, a, b = build()
    eff = b["itr"].on_miss(__import__("lispctl.roles.base", fromlist=["MissEvent"]).MissEvent(
        P("10.1.7.7/32"), A("10.2.0.5")), 10.0)
    _, ecm = only_send(eff)
    req = ecm.message
    assert req.notification_requested and req.xtr_id == int(XTR_ID_B, 16) and req.site_id == 2


def test_fallback_to_smr_when_map_server_does_not_subscribe():
    net, ms, a, b = build(pubsub=False, smr=True)
    net.miss("b", "10.1.7.7/32", "10.2.0.5", 10.0)
    net.run(until=15.0, t0=10.0)
    assert ms["ms"].snapshot()["subscriptions"] == [] and ms["ms"].counters["subscribe_disabled"] == 1
    move_a(net, a, 20.0)
    net.run(until=25.0, t0=20.0)
    assert net.installed["b"][P("10.1.0.0/16")].rlocs == (Rloc(A("192.0.2.9")),)
    assert b["itr"].counters["smr_rx"] == 1 and b["itr"].counters.get("pubsub_notify_rx", 0) == 0


# ---------------------------------------------------------------- ITR unit checks

ITR_TEXT = xtr("b", "10.2.0.0/16", "secret-b", XTR_ID_B, 2, True).replace('interface = "wan0"',
                                                                         'address = "203.0.113.2"')
MS = ep(MS_ADDR)


def subscribed_itr():
    _, roles = make(ITR_TEXT)
    itr = roles["itr"]
    itr.start(0.0)
    from lispctl.roles.base import MissEvent
    _, ecm = only_send(itr.on_miss(MissEvent(P("10.1.7.7/32"), A("10.2.0.5")), 1.0))
    return itr, ecm.message


def notify(nonce, rloc="192.0.2.9", key="secret-b", key_id=1, xtr_id=int(XTR_ID_B, 16), prefix="10.1.0.0/16"):
    rec = eid_record(P(prefix), (Rloc(A(rloc)),), ttl=10)
    return sign(MapNotify(nonce, (rec,), key_id=key_id, alg_id=2, xtr_id=xtr_id, site_id=2), key)


def test_itr_accepts_only_authentic_notifications_of_its_subscriptions():
    itr, req = subscribed_itr()
    me = ep("203.0.113.2")
    for bad, counter in [(notify(req.nonce, key="secret-a"), "pubsub_notify_bad_auth"),
                         (notify(req.nonce, key_id=7), "pubsub_notify_bad_auth"),
                         (notify(req.nonce ^ (1 << 63)), "pubsub_notify_unsolicited"),
                         (notify(req.nonce, xtr_id=int(XTR_ID_A, 16)), "pubsub_notify_wrong_xtr_id")]:
        eff = itr.handle(bad, MS, me, 1.5)
        assert eff and installs(eff) == [] and sends(eff) == [], counter
        assert itr.counters[counter] >= 1
    # the genuine confirmation: installed and acked, signed with the same key
    eff = itr.handle(notify(req.nonce), MS, me, 1.6)
    assert [(i.eid, i.rlocs, i.ttl_s) for i in installs(eff)] == [(P("10.1.0.0/16"), (Rloc(A("192.0.2.9")),), 600.0)]
    s, ack = only_send(eff)
    assert isinstance(ack, MapNotifyAck) and ack.nonce == req.nonce and s.dst == MS
    assert verify(s.payload, "secret-b")
    # a retransmission (our ack was lost) is acked again, not installed again
    eff = itr.handle(notify(req.nonce), MS, me, 2.0)
    assert installs(eff) == [] and len(sends(eff)) == 1 and itr.counters["pubsub_notify_duplicate"] == 1
    # the next publication has nonce + 1
    eff = itr.handle(notify(req.nonce + 1, rloc="192.0.2.10"), MS, me, 30.0)
    assert installs(eff)[0].rlocs == (Rloc(A("192.0.2.10")),)
    # a record that does not cover what we subscribed to is never installed
    eff = itr.handle(notify(req.nonce + 2, prefix="10.3.0.0/16"), MS, me, 31.0)
    assert installs(eff) == [] and itr.counters["pubsub_notify_record_not_asked"] == 1


def test_itr_renews_subscription_with_next_nonce():
    itr, req = subscribed_itr()
    itr.handle(notify(req.nonce), MS, ep("203.0.113.2"), 1.2)
    itr.handle(notify(req.nonce + 1), MS, ep("203.0.113.2"), 5.0)
    assert itr.on_used([P("10.1.0.0/16")], 100.0) == []
    s, ecm = only_send(itr.tick(itr.next_deadline()))           # refresh before the TTL ends
    renewal = ecm.message
    assert renewal.notification_requested and record_prefix(renewal.records[0]) == P("10.1.0.0/16")
    # RFC 9437 section 5: the renewal uses the last nonce plus one, and replaces
    # the old subscription (the Map-Server keeps only the newest one)
    assert renewal.nonce == req.nonce + 2
    assert list(itr.subs) == [renewal.nonce]
    assert installs(itr.handle(notify(req.nonce + 1, rloc="192.0.2.66"), MS, ep("203.0.113.2"), 571.0)) == []
    eff = itr.handle(notify(renewal.nonce), MS, ep("203.0.113.2"), 571.1)
    assert installs(eff)[0].rlocs == (Rloc(A("192.0.2.9")),)


# ---------------------------------------------------------------- MS unit checks

def ms_with_registration(now=0.0):
    cfg, roles = make(ms_text())
    ms = roles["ms"]
    reg = MapRegister(5, (eid_record(P("10.1.0.0/16"), (Rloc(A("192.0.2.1")),), ttl=10),), key_id=1, alg_id=2,
                      want_map_notify=False, xtr_id=int(XTR_ID_A, 16), site_id=1)
    assert ms.handle(sign(reg, "secret-a"), ep("192.0.2.1"), MS, now) is not None
    return ms, roles["mr"], reg


def subscribe(mr, site_id=2, nonce=1000, now=1.0):
    req = MapRequest(nonce, (__import__("lispctl.wire", fromlist=["request_record"]).request_record(
                         P("10.1.7.7/32"), notify=True),),
                     (A("203.0.113.2"),), xtr_id=int(XTR_ID_B, 16), site_id=site_id)
    ecm = EncapsulatedControlMessage(req, A("203.0.113.2"), A("10.1.7.7"))
    return mr.handle(ecm.encode(), ep("203.0.113.2"), MS, now)


def test_ms_refuses_subscription_of_unknown_site():
    ms, mr, _ = ms_with_registration()
    eff = subscribe(mr, site_id=99)
    assert [type(decode_control(s.payload)).__name__ for s in sends(eff)] == ["EncapsulatedControlMessage"]
    assert ms.subs == {} and ms.counters["subscribe_unknown_site"] == 1


def test_ms_retransmits_publication_until_acked_then_gives_up():
    ms, mr, reg = ms_with_registration()
    eff = subscribe(mr)
    notes = [(s, decode_control(s.payload)) for s in sends(eff)]
    confirm = [(s, m) for s, m in notes if isinstance(m, MapNotify)]
    assert len(confirm) == 1
    s, m = confirm[0]
    assert s.dst == ep("203.0.113.2") and m.nonce == 1000 and verify(s.payload, "secret-b")
    assert m.xtr_id == int(XTR_ID_B, 16) and [record_prefix(r) for r in m.records] == [P("10.1.0.0/16")]
    # never acked: retransmitted after 1, 2 and 4 s, then given up
    times = []
    while ms.outgoing:
        now = ms.next_deadline()
        for x in sends(ms.tick(now)):
            assert x.payload == s.payload
            times.append(now)
    assert times == [2.0, 4.0, 8.0] and ms.counters["pubsub_notify_gave_up"] == 1
    # a change is published with nonce + 1; a forged ack does not stop it, a good one does
    moved = dataclasses.replace(reg, records=(eid_record(P("10.1.0.0/16"), (Rloc(A("192.0.2.9")),), ttl=10),))
    eff = ms.handle(sign(moved, "secret-a"), ep("192.0.2.9"), MS, 20.0)
    (pub,) = [decode_control(x.payload) for x in sends(eff)]
    assert isinstance(pub, MapNotify) and pub.nonce == 1001
    assert [str(l.address) for l in pub.records[0].locators] == ["192.0.2.9"]
    ack = MapNotifyAck(1001, pub.records, key_id=1, alg_id=2)
    ms.handle(sign(ack, "wrong"), ep("203.0.113.2"), MS, 20.1)
    assert ms.outgoing and ms.counters["pubsub_notify_ack_bad_auth"] == 1
    ms.handle(sign(ack, "secret-b"), ep("203.0.113.2"), MS, 20.2)
    assert ms.outgoing == {} and ms.snapshot()["subscriptions"][0]["acked"] == 1
    # the subscription lasts the mapping's TTL (10 min) unless renewed
    ms.tick(1.0 + 600.0)
    assert ms.subs == {} and ms.counters["subscription_expired"] == 1


def test_ms_subscription_to_unregistered_prefix_notified_on_registration():
    cfg, roles = make(ms_text())
    ms, mr = roles["ms"], roles["mr"]
    eff = subscribe(mr)                                   # nothing registered: negative reply
    (reply,) = [decode_control(s.payload) for s in sends(eff)]
    assert isinstance(reply, MapReply) and not reply.records[0].locators
    assert len(ms.subs) == 1
    reg = MapRegister(5, (eid_record(P("10.1.0.0/16"), (Rloc(A("192.0.2.1")),), ttl=10),), key_id=1, alg_id=2)
    eff = ms.handle(sign(reg, "secret-a"), ep("192.0.2.1"), MS, 2.0)
    pubs = [(s.dst, decode_control(s.payload)) for s in sends(eff)]
    assert [(d, m.nonce) for d, m in pubs if isinstance(m, MapNotify)] == [(ep("203.0.113.2"), 1001)]

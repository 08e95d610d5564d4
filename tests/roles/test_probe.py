"""RLOC probing: P-bit Map-Requests to each map-cache locator from our RLOC of
its family; unanswered probes mark it unreachable (re-installed with
reachable False), an answer brings it back; late and foreign replies."""
import pytest

from lispctl.mapping.types import EidPrefix, Rloc
from lispctl.roles.base import MissEvent
from lispctl.wire import MapReply, MapRequest, decode_control, eid_record, record_prefix

from roles_helpers import XTR, A, ep, installs, make, only_send, sends

P = EidPrefix.parse
MR = ep("198.51.100.10")
R1, R2 = A("203.0.113.20"), A("203.0.113.21")
PROBING = "\n[itr]\nrloc-probe-interval = 10\nrloc-probe-timeout = 2\nrloc-probe-retries = 3\n"


def itr_with_entry(extra=PROBING, rlocs=(R1, R2)):
    _, roles = make(XTR.format(alg="hmac-sha256") + extra, wan1=["192.0.2.2"])
    itr = roles["itr"]
    itr.start(0.0)
    _, ecm = only_send(itr.on_miss(MissEvent(P("10.2.3.4/32"), A("10.1.0.7")), 1.0))
    rec = eid_record(P("10.2.0.0/16"), tuple(Rloc(a, 1, 50) for a in rlocs), ttl=60)
    itr.handle(MapReply(ecm.message.nonce, (rec,)).encode(), MR, ep("192.0.2.1"), 1.1)
    assert itr.next_deadline() <= 1.1 or not itr.prober.enabled   # new locators: probed at once
    return itr, itr.tick(1.1)


def probes(effects):
    out = {}
    for s in sends(effects):
        m = decode_control(s.payload)
        assert isinstance(m, MapRequest) and m.probe
        out[s.dst.addr] = (s, m)
    return out


def answer(itr, probe, now, frm):
    rec = eid_record(P("10.2.0.0/16"), (Rloc(frm, 1, 50),), ttl=60)
    return itr.handle(MapReply(probe.nonce, (rec,), probe=True).encode(), ep(str(frm)), ep("192.0.2.1"), now)


def test_probes_sent_directly_from_our_rloc_to_each_locator():
    itr, eff = itr_with_entry()
    sent = probes(eff)
    assert set(sent) == {R1, R2}
    s, m = sent[R1]
    assert s.dst.port == 4342 and s.src.addr == A("192.0.2.1") and s.src.port == 4342
    assert m.itr_rlocs[0] == A("192.0.2.1") and [record_prefix(r) for r in m.records] == [P("10.2.0.0/16")]
    assert sent[R1][1].nonce != sent[R2][1].nonce


def test_unanswered_probes_mark_unreachable_and_answer_brings_back():
    itr, eff = itr_with_entry()
    sent = probes(eff)
    assert installs(answer(itr, sent[R1][1], 1.15, R1)) == []       # R1 answers: nothing changes
    snap = {p["address"]: p for p in itr.snapshot()["rloc_probes"]}
    assert snap[str(R1)]["rtt_ms"] == pytest.approx(50.0) and snap[str(R2)]["rtt_ms"] is None
    # R2 stays silent: lost at +2 s and retried at once, three times
    times, down = [], None
    while down is None:
        now = itr.next_deadline()
        eff = itr.tick(now)
        if installs(eff):
            down = installs(eff)
        for addr, (s, m) in probes(eff).items():
            times.append((now, str(addr)))
            if addr == R1:
                answer(itr, m, now + 0.01, R1)
    assert [t for t in times if t[1] == str(R2)] == [(3.1, str(R2)), (5.1, str(R2))]
    assert now == pytest.approx(7.1)
    (inst,) = down
    assert inst.eid == P("10.2.0.0/16")
    assert inst.rlocs == (Rloc(R1, 1, 50, True), Rloc(R2, 1, 50, False))
    assert itr.counters["rloc_unreachable"] == 1
    # while down, R2 is probed at the normal interval; an answer restores it
    eff = itr.tick(itr.next_deadline())
    r2 = probes(eff).get(R2)
    while r2 is None:
        for addr, (s, m) in probes(eff).items():
            answer(itr, m, itr._now + 0.01, addr)
        eff = itr.tick(itr.next_deadline())
        r2 = probes(eff).get(R2)
    eff = answer(itr, r2[1], itr._now + 0.02, R2)
    (inst,) = installs(eff)
    assert inst.rlocs == (Rloc(R1, 1, 50, True), Rloc(R2, 1, 50, True))
    assert itr.counters["rloc_reachable_again"] == 1


def test_refreshed_entry_keeps_probe_verdict_and_probe_replies_never_install():
    itr, eff = itr_with_entry()
    st = itr.prober.states[R2]
    st.reachable = False                                    # as if probing had decided
    itr.on_used([P("10.2.0.0/16")], 3500.0)
    (s,) = [s for s in sends(itr.tick(3571.1)) if s.dst == MR]
    ecm = decode_control(s.payload)
    rec = eid_record(P("10.2.0.0/16"), (Rloc(R1, 1, 50), Rloc(R2, 1, 50)), ttl=60)
    eff = itr.handle(MapReply(ecm.message.nonce, (rec,)).encode(), MR, ep("192.0.2.1"), 3571.0)
    assert installs(eff)[0].rlocs == (Rloc(R1, 1, 50), Rloc(R2, 1, 50, False))
    # a probe reply with an unknown nonce is neither a probe answer nor a Map-Reply we wait for
    bogus = MapReply(12345, (rec,), probe=True).encode()
    assert installs(itr.handle(bogus, ep(str(R1)), ep("192.0.2.1"), 3572.0)) == []
    assert itr.counters["map_reply_unknown_nonce"] == 1


def test_locator_without_local_rloc_of_its_family_not_probed():
    itr, eff = itr_with_entry(rlocs=(A("2001:db8::20"),))
    assert probes(eff) == {} and itr.counters["rloc_probe_no_source"] == 1


def test_probing_off_by_default_and_state_forgotten_with_entry():
    itr, eff = itr_with_entry(extra="")
    assert probes(eff) == {} and itr.prober.states == {}
    itr2, _ = itr_with_entry()
    assert set(itr2.prober.states) == {R1, R2}
    itr2.tick(1.1 + 3600)                                   # the entry expires
    assert itr2.prober.states == {} and itr2.prober.by_nonce == {}

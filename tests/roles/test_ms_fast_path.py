"""Issue 14.2: the Map-Server's refresh fast path (MapServerRole.refresh).

A refresh of a registration with the same record, flags, key and source and
a new nonce is answered without decoding, dispatch or effects; everything
else is left to handle(). Whatever the sequence of messages, a Map-Server
that offers each to refresh() first must answer with the same bytes, to the
same place, and end in the same state with the same counters as one that
only uses handle()."""
import hashlib
import hmac

import pytest
from hypothesis import HealthCheck, event, given, settings, strategies as st

from lispctl.roles.base import Send
from lispctl.roles.ms import _REGISTRATION_FIELDS
from lispctl.wire import ALG_HMAC_SHA1, ALG_HMAC_SHA256, MapNotify, verify
from lispctl.wire.auth import hmac_digest, hmac_pads, hmac_with

from roles_helpers import MSMR, ep, make, only_send, sends
from test_ms import P, register, registered

MS_ADDR = ep("198.51.100.10")
XTR = ep("192.0.2.1", 4342)
TIMEOUT = 180.0


def _ms():
    return make(MSMR.format(roles='["ms"]'))[1]["ms"]


class Journal(list):
    """The shared ring of a shard (daemon/msworkers.py Journal), as a list."""
    def add(self, fp: int) -> None:
        self.append(fp)


def _worker():
    """A Map-Register worker's role (daemon/msworkers.py worker_role)."""
    ms = _ms()
    ms.report = []
    ms.journal = Journal()
    return ms


def _restarted(ms):
    """The worker that replaces ms after it died: the same journal, restored
    (daemon/msworkers.py _serve_worker); nothing else of ms."""
    n = _worker()
    n.journal = ms.journal
    n.restore(list(ms.journal))
    for a, b in zip(n.sites, ms.sites):
        a.superseded_max = b.superseded_max
    return n


def offer(ms, data, src, now):
    """What the daemon does: the fast path first, else handle()."""
    reply = ms.refresh(data, src, now)
    if reply is not None:
        return [Send(reply, src)], True
    return ms.handle(data, src, MS_ADDR, now), False


def run_until(ms, t):
    """The daemon's timer: a tick at every deadline the role gives, up to t."""
    while (d := ms.next_deadline()) is not None and d <= t:
        ms.tick(d)


def state(ms):
    regs = {(str(e), name): tuple(getattr(r, f) for f in _REGISTRATION_FIELDS)
            for e, rs in ms.registered.items() for name, r in rs.items()}
    sites = [(s.registers, s.bad_auth, bytes(s.superseded) if isinstance(s.superseded, bytearray)
              else dict(s.superseded or {})) for s in ms.sites]
    return regs, sites, dict(ms.counters), ms.next_deadline(), taken(ms)


def taken(ms):
    """A worker's report since last taken (what the main process is sent),
    and its journal; None, None outside a worker."""
    if ms.report is None:
        return None, None
    out, ms.report = ms.report, []
    return ([(str(e), name, r and tuple(getattr(r, f) for f in _REGISTRATION_FIELDS)) for e, name, r in out],
            list(ms.journal))


def test_a_refresh_takes_the_fast_path_and_answers_as_handle_does():
    fast, slow = _ms(), _ms()
    for ms in (fast, slow):
        ms.handle(register(nonce=1, xtr_id=0xAA), XTR, MS_ADDR, 0.0)
    raw = register(nonce=2, xtr_id=0xAA)
    effects, took = offer(fast, raw, XTR, 60.0)
    assert took
    assert effects == slow.handle(raw, XTR, MS_ADDR, 60.0)
    s, notify = only_send(effects)
    assert isinstance(notify, MapNotify) and notify.nonce == 2 and notify.xtr_id == 0xAA
    assert verify(s.payload, "secret-a")
    assert state(fast) == state(slow)
    (reg,) = fast.registered.get(P("10.1.0.0/16")).values()
    assert (reg.nonce, reg.last_seen, reg.expires_at, reg.nonces_vary) == (2, 60.0, 60.0 + TIMEOUT, True)
    assert fast.counters["map_register_ok"] == 2 and fast.counters["map_notify_tx"] == 2


def test_replays_and_repeats_are_refused_by_the_fast_path():
    ms = _ms()
    first = register(nonce=1, xtr_id=0xAA)
    second = register(nonce=2, xtr_id=0xAA)
    ms.handle(first, XTR, MS_ADDR, 0.0)
    assert offer(ms, second, XTR, 10.0)[1]
    # the superseded message, from anywhere: refused, handle() counts the replay
    assert ms.refresh(first, XTR, 20.0) is None
    assert sends(ms.handle(first, XTR, MS_ADDR, 20.0)) == []
    assert ms.counters["map_register_replayed"] == 1
    # the latest message again (identical bytes): not a refresh either
    assert ms.refresh(second, XTR, 30.0) is None
    (reg,) = ms.registered.get(P("10.1.0.0/16")).values()
    assert (reg.nonce, reg.last_seen) == (2, 10.0)


def test_bad_mac_other_source_and_changes_are_left_to_handle():
    ms = _ms()
    ms.handle(register(nonce=1, xtr_id=0xAA), XTR, MS_ADDR, 0.0)
    forged = bytearray(register(nonce=2, xtr_id=0xAA))
    forged[20] ^= 1
    assert ms.refresh(bytes(forged), XTR, 1.0) is None
    assert ms.refresh(register(nonce=3, xtr_id=0xAA), ep("203.0.113.9"), 2.0) is None     # not its RLOC
    assert ms.refresh(register(nonce=4, xtr_id=0xAA, ttl=10), XTR, 3.0) is None           # another record
    assert ms.refresh(register(nonce=5, xtr_id=0xAA, notify=False), XTR, 4.0) is None     # M bit off
    assert ms.counters == {"map_register_rx": 1, "map_register_ok": 1, "map_notify_tx": 1}
    # handle() changes the record: a refresh of the old bytes is not fast any more
    ms.handle(register(nonce=6, xtr_id=0xAA, rlocs=("192.0.2.1", "192.0.2.9")), XTR, MS_ADDR, 5.0)
    assert ms.refresh(register(nonce=7, xtr_id=0xAA), XTR, 6.0) is None


def test_a_lisp_sec_capable_refresh_takes_the_fast_path_and_a_changed_s_bit_does_not():
    """Every lispctl ETR sets S (it signs LISP-SEC replies): its refreshes
    are the common case. S cleared (or set) again is another first word:
    handle() records it."""
    fast, slow = _ms(), _ms()
    for ms in (fast, slow):
        ms.handle(register(nonce=1, security=True), XTR, MS_ADDR, 0.0)
    raw = register(nonce=2, security=True)
    effects, took = offer(fast, raw, XTR, 10.0)
    assert took and effects == slow.handle(raw, XTR, MS_ADDR, 10.0)
    assert state(fast) == state(slow)
    (reg,) = fast.registered.get(P("10.1.0.0/16")).values()
    assert reg.lisp_sec and reg.nonce == 2
    assert fast.refresh(register(nonce=3, security=False), XTR, 20.0) is None
    fast.handle(register(nonce=3, security=False), XTR, MS_ADDR, 20.0)
    assert not reg.lisp_sec and offer(fast, register(nonce=4, security=False), XTR, 30.0)[1]
    assert fast.refresh(register(nonce=5, security=True), XTR, 40.0) is None


def test_a_refresh_of_several_records_takes_the_fast_path():
    """A dual-stack ETR registers its IPv4 and IPv6 EIDs in one message (so
    does lispctl's): its refreshes are as common as one record's."""
    fast, slow = _ms(), _ms()
    two = dict(prefix="10.2.0.0/16", more=("2001:db8:b::/48",), key="secret-b", security=True)
    for ms in (fast, slow):
        ms.handle(register(nonce=1, **two), XTR, MS_ADDR, 0.0)
    for nonce in (2, 3):
        raw = register(nonce=nonce, **two)
        effects, took = offer(fast, raw, XTR, 10.0 * nonce)
        assert took and effects == slow.handle(raw, XTR, MS_ADDR, 10.0 * nonce)
        assert state(fast) == state(slow)
    s, notify = only_send(effects)
    assert isinstance(notify, MapNotify) and len(notify.records) == 2 and verify(s.payload, "secret-b")
    for eid in ("10.2.0.0/16", "2001:db8:b::/48"):
        (reg,) = fast.registered.get(P(eid)).values()
        assert (reg.nonce, reg.last_seen) == (3, 30.0)
    # one of its records refreshed by another message: the next refresh is handle()'s
    one = register(nonce=4, key="secret-b", prefix="2001:db8:b::/48", security=True)
    for ms in (fast, slow):
        ms.handle(one, XTR, MS_ADDR, 40.0)
    raw = register(nonce=5, **two)
    assert fast.refresh(raw, XTR, 50.0) is None
    assert fast.handle(raw, XTR, MS_ADDR, 50.0) == slow.handle(raw, XTR, MS_ADDR, 50.0)
    assert state(fast) == state(slow)


def test_a_map_register_worker_takes_the_fast_path_and_journals_and_reports_as_handle_does():
    fast, slow = _worker(), _worker()
    assert fast.fast_path() == (3, fast.refresh)
    for ms in (fast, slow):
        ms.handle(register(nonce=1, xtr_id=0xAA), XTR, MS_ADDR, 0.0)
    assert state(fast) == state(slow)
    for t, nonce in ((60.0, 2), (80.0, 3)):
        raw = register(nonce=nonce, xtr_id=0xAA)
        effects, took = offer(fast, raw, XTR, t)
        assert took and effects == slow.handle(raw, XTR, MS_ADDR, t)
        assert state(fast) == state(slow)
    # the first message (marked); then, at the first new nonce, that message
    # again (now superseded); and each latest one (its repeat is a replay)
    assert [e & 1 for e in fast.journal] == [1, 0, 0, 0]
    # nothing reported for these refreshes (state took the reports: none);
    # once the main process's copy (expiring at 180) is within half the
    # timeout of expiring, it is reported again with the current expiry
    for ms in (fast, slow):
        run_until(ms, 90.0)
    f = state(fast)
    assert f == state(slow)
    [(_, _, reg)] = f[-1][0]
    assert reg[_REGISTRATION_FIELDS.index("expires_at")] == 80.0 + TIMEOUT
    # no refresh by the time the next report is due (170): nothing reported
    # then; the refresh after it (a lost one in between) is reported by refresh too
    for ms in (fast, slow):
        run_until(ms, 200.0)
    assert state(fast) == state(slow)
    raw = register(nonce=4, xtr_id=0xAA)
    effects, took = offer(fast, raw, XTR, 200.0)
    assert took and effects == slow.handle(raw, XTR, MS_ADDR, 200.0)
    f = state(fast)
    assert f == state(slow)
    assert [r[_REGISTRATION_FIELDS.index("expires_at")] for _, _, r in f[-1][0]] == [200.0 + TIMEOUT]


def test_the_fast_path_of_a_worker_after_a_dead_one_refuses_what_the_dead_one_accepted():
    w = _worker()
    sent = [register(nonce=n, xtr_id=0xAA) for n in (1, 2, 3)]
    w.handle(sent[0], XTR, MS_ADDR, 0.0)
    assert offer(w, sent[1], XTR, 1.0)[1] and offer(w, sent[2], XTR, 2.0)[1]     # written by the fast path
    n = _restarted(w)
    n.handle(register(nonce=4, xtr_id=0xAA), XTR, MS_ADDR, 3.0)
    assert offer(n, register(nonce=5, xtr_id=0xAA), XTR, 4.0)[1]
    for m in sent:
        assert n.refresh(m, XTR, 5.0) is None
        assert sends(n.handle(m, XTR, MS_ADDR, 5.0)) == []
    assert n.counters["map_register_replayed"] == 3


def test_expiry_is_on_time_when_fast_refreshes_stop():
    """Refreshes move the expiry in place; the heap entry is re-filed only
    when it comes due, so the deadline the daemon is given may be early,
    never late, and the registration expires exactly a timeout after its
    last refresh."""
    ms = _ms()
    ms.handle(register(nonce=0), XTR, MS_ADDR, 0.0)
    ticks = 0
    for i in range(1, 60):                       # every 10 s until 590 s
        while (d := ms.next_deadline()) is not None and d <= 10.0 * i:
            ms.tick(d)
            ticks += 1
        assert offer(ms, register(nonce=i), XTR, 10.0 * i)[1]
        assert ms.next_deadline() <= 10.0 * i + TIMEOUT
    assert len(ms._expiry) == 1 and ticks <= 4
    last = 590.0
    run_until(ms, last + TIMEOUT - 0.001)
    assert registered(ms) == {"10.1.0.0/16": ["192.0.2.1"]}
    assert ms.next_deadline() == last + TIMEOUT
    ms.tick(last + TIMEOUT)
    assert registered(ms) == {} and ms.counters["registration_expired"] == 1


# -- fast path == slow path, for arbitrary sequences --------------------------------
SOURCES = (XTR, ep("192.0.2.1", 61000), ep("203.0.113.5", 4342))
RECORDS = (dict(rlocs=("192.0.2.1",)), dict(rlocs=("192.0.2.1", "192.0.2.9")), dict(rlocs=("192.0.2.1",), ttl=10),
           dict(rlocs=("192.0.2.1",), ttl=0), dict(rlocs=("192.0.2.1",), proxy=True))
SITES = (dict(prefix="10.1.0.0/16", key="secret-a"), dict(prefix="10.2.0.0/16", key="secret-b"),
         dict(prefix="10.2.0.0/16", key="secret-b7", key_id=7), dict(prefix="10.1.0.0/24", key="secret-a"),
         # several records in one message (a dual-stack ETR; a site's prefix and a more specific one)
         dict(prefix="10.2.0.0/16", key="secret-b", more=("2001:db8:b::/48",)),
         dict(prefix="2001:db8:b::/48", key="secret-b", more=("10.2.0.0/16",)),
         dict(prefix="10.1.0.0/16", key="secret-a", more=("10.1.0.0/24",)))

message = st.fixed_dictionaries({
    "site": st.sampled_from(range(len(SITES))), "xtr_id": st.sampled_from((None, 0xAA, 0xBB)),
    "record": st.sampled_from((0, 0, 0, 1, 2, 3, 4)), "nonce": st.integers(0, 3) | st.none(),
    "src": st.sampled_from((0, 0, 0, 1, 2)), "notify": st.sampled_from((True, True, True, False)),
    "alg": st.sampled_from((ALG_HMAC_SHA256, ALG_HMAC_SHA1)),
    "security": st.booleans(),                              # S: LISP-SEC capable (every lispctl ETR)
})
index = st.integers(0, 200)
op = st.one_of(
    st.tuples(st.just("send"), message),
    st.tuples(st.just("refresh"), index),                   # an earlier one's parameters, a fresh nonce
    st.tuples(st.just("refresh"), index),
    st.tuples(st.just("forge"), message),                   # its MAC corrupted
    st.tuples(st.just("replay"), index, st.sampled_from(range(len(SOURCES)))),   # the very bytes of one
    st.tuples(st.just("wait"), st.floats(0.0, 250.0)),
    st.tuples(st.just("restart")),                          # a worker dies, another takes over its shard
)


@pytest.mark.parametrize("worker", [False, True], ids=["single", "worker"])
@pytest.mark.parametrize("replay_list", [4096, 4])
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(op, min_size=2, max_size=40))
def test_fast_and_slow_path_agree(replay_list, worker, ops):
    """replay_list: how many superseded MACs a site remembers: 4,096 (a dict,
    few sites) or 4 (the ring of many sites, short enough to forget).
    worker: as a Map-Register worker, whose journal and reports to the main
    process (state) must be the same too, and which may die and be replaced
    by one that restores the journal."""
    fast, slow = (_worker(), _worker()) if worker else (_ms(), _ms())
    for site in fast.sites + slow.sites:
        site.superseded_max = replay_list
    now, fresh, sent, params, hits, several = 0.0, 1000, [], [], 0, 0
    for o in ops:
        now += 1.0
        if o[0] == "restart":
            if worker:
                fast, slow = _restarted(fast), _restarted(slow)
                assert state(fast) == state(slow)
            continue
        if o[0] == "wait":
            now += o[1]
            run_until(fast, now)
            run_until(slow, now)
            assert state(fast) == state(slow)
            continue
        if o[0] == "replay":
            if not sent:
                continue
            data, src = sent[o[1] % len(sent)], SOURCES[o[2]]
        else:
            if o[0] == "refresh":
                if not params:
                    continue
                m = dict(params[o[1] % len(params)], nonce=None)
            else:
                m = o[1]
                params.append(m)
            if m["nonce"] is None:
                fresh += 1
            site = SITES[m["site"]]
            data = register(prefix=site["prefix"], more=site.get("more", ()), key=site["key"],
                            key_id=site.get("key_id", 1), alg=m["alg"],
                            nonce=fresh if m["nonce"] is None else m["nonce"], notify=m["notify"],
                            xtr_id=m["xtr_id"], security=m["security"], **RECORDS[m["record"]])
            if o[0] == "forge":
                data = data[:20] + bytes([data[20] ^ 0x40]) + data[21:]
            src = SOURCES[m["src"]]
            sent.append(data)
        run_until(fast, now)
        run_until(slow, now)
        got, took = offer(fast, data, src, now)
        hits += took
        several += took and data[3] > 1
        assert got == slow.handle(data, src, MS_ADDR, now)
        assert state(fast) == state(slow)
    event(f"fast path taken: {'yes' if hits else 'no'}")
    event(f"fast path taken for several records: {'yes' if several else 'no'}")


# -- HMAC from hashlib ------------------------------------------------------------------
@given(st.binary(max_size=200), st.binary(max_size=300), st.sampled_from(("sha1", "sha256")))
def test_hmac_digest_is_hmac(key, msg, digest):
    assert hmac_digest(key, msg, digest) == hmac.digest(key, msg, digest)
    pads = hmac_pads(key, digest)
    assert hmac_with(digest, pads, msg) == hmac.new(key, msg, getattr(hashlib, digest)).digest()

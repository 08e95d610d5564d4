"""The Map-Server role as a Map-Register worker and as the main process's
union (`[ms] workers`, daemon/msworkers.py), sans-IO: what a worker reports,
when it reports a registration again, how the union expires what a worker
reported, and the journal that keeps replays refused after a worker dies."""
import pickle

from lispctl.wire import MapNotify

from roles_helpers import MSMR, ep, make, only_send, sends
from test_ms import P, ecm_request, register, registered

MS_ADDR = ep("198.51.100.10")
SITE1 = ep("192.0.2.1")
T = 180.0                       # [ms] registration-timeout (default)


class Journal(list):
    def add(self, fp: int) -> None:
        self.append(fp)


def _worker():
    ms = make(MSMR.format(roles='["ms"]'))[1]["ms"]
    ms.report = []
    ms.journal = Journal()
    return ms


def _main():
    return make(MSMR.format(roles='["ms"]'))[1]["ms"]


def _take(ms):
    """What the daemon sends the main process: the report, through pickle."""
    out, ms.report = ms.report, []
    return pickle.loads(pickle.dumps(out))


def test_a_worker_reports_new_and_changed_registrations_but_not_plain_refreshes():
    w = _worker()
    only_send(w.handle(register(nonce=1), SITE1, MS_ADDR, 0.0))
    [(eid, registrant, reg)] = _take(w)
    assert eid == P("10.1.0.0/16") and registrant == "192.0.2.1" and reg.expires_at == T
    for t in range(1, 5):                          # same records, new nonce: nothing to say
        only_send(w.handle(register(nonce=1 + t), SITE1, MS_ADDR, float(t)))
        assert _take(w) == []
    w.handle(register(rlocs=("192.0.2.1", "192.0.2.9"), nonce=9, xtr_id=None), SITE1, MS_ADDR, 5.0)
    changes = _take(w)
    # another RLOC set is another registrant (no xTR-ID): the old name goes, the new one comes
    assert [(str(e), r, x is not None) for e, r, x in changes] == [
        ("10.1.0.0/16", "192.0.2.1", False), ("10.1.0.0/16", "192.0.2.1,192.0.2.9", True)]
    w.handle(register(rlocs=("192.0.2.1", "192.0.2.9"), nonce=10, ttl=0), SITE1, MS_ADDR, 6.0)
    assert [(r, x) for _, r, x in _take(w)] == [("192.0.2.1,192.0.2.9", None)]


def test_a_refreshed_registration_is_reported_again_before_the_main_copy_expires():
    w = _worker()
    w.handle(register(nonce=1, xtr_id=5), SITE1, MS_ADDR, 0.0)
    _take(w)
    w.handle(register(nonce=2, xtr_id=5), SITE1, MS_ADDR, 60.0)      # expires here at 240, the main copy at 180
    assert _take(w) == [] and w.next_deadline() == T / 2
    w.tick(T / 2)
    [(_, _, reg)] = _take(w)
    assert reg.expires_at == 60.0 + T
    # not refreshed since: nothing more until it expires, then its removal
    assert w.next_deadline() == 60.0 + T / 2
    w.tick(60.0 + T / 2)
    assert _take(w) == []
    w.tick(60.0 + T)
    assert [x for _, _, x in _take(w)] == [None]


def test_the_union_answers_for_worker_registrations_and_expires_them_at_the_reported_time():
    w, main = _worker(), _main()
    w.handle(register(nonce=1, xtr_id=5), SITE1, MS_ADDR, 0.0)
    main.merge(0, _take(w), 0.0)
    assert registered(main) == {"10.1.0.0/16": ["192.0.2.1"]}
    s, fwd = only_send(main.handle(ecm_request().encode(), ep("198.51.100.20"), MS_ADDR, 1.0))
    assert s.dst == ep("192.0.2.1", 4342)
    # another worker cannot remove it; its own can
    main.merge(1, [(P("10.1.0.0/16"), f"{5:032x}", None)], 2.0)
    assert registered(main)
    # the worker died: it stays until the expiry last reported, then goes
    main.tick(T - 1)
    assert registered(main)
    main.tick(T)
    assert registered(main) == {} and main.counters["union_registration_expired"] == 1
    assert main.counters["registration_expired"] == 0


def test_a_worker_removal_removes_at_once():
    w, main = _worker(), _main()
    w.handle(register(nonce=1, xtr_id=5), SITE1, MS_ADDR, 0.0)
    main.merge(0, _take(w), 0.0)
    w.handle(register(nonce=2, xtr_id=5, ttl=0), SITE1, MS_ADDR, 1.0)
    main.merge(0, _take(w), 1.0)
    assert registered(main) == {}


def test_a_worker_after_a_dead_one_refuses_what_the_dead_one_would_have():
    w = _worker()
    m1, m2 = register(nonce=1, xtr_id=5), register(nonce=2, xtr_id=5)
    w.handle(m1, SITE1, MS_ADDR, 0.0)
    w.handle(m2, SITE1, MS_ADDR, 1.0)               # the ETR varies its nonce: m1 superseded
    # m1 as a first message, then as superseded; m2, its latest
    assert [e & 1 for e in w.journal] == [1, 0, 0]
    # a new worker of the same shard: fresh tables, the journal restored
    n = _worker()
    n.restore(w.journal)
    for m in (m1, m2):
        assert sends(n.handle(m, SITE1, MS_ADDR, 2.0)) == []
    assert n.counters["map_register_replayed"] == 2 and n.registered.get(P("10.1.0.0/16")) is None
    # the ETR's next message registers it
    s, notify = only_send(n.handle(register(nonce=3, xtr_id=5), SITE1, MS_ADDR, 3.0))
    assert isinstance(notify, MapNotify)


def test_an_etr_that_reuses_its_nonce_keeps_refreshing_after_a_restart():
    w = _worker()
    m = register(nonce=0, xtr_id=5)
    for t in range(3):
        w.handle(m, SITE1, MS_ADDR, float(t))
    assert [e & 1 for e in w.journal] == [1]       # only as the first message of its registration
    n = _worker()
    n.restore(w.journal)
    for t in range(3):
        only_send(n.handle(m, SITE1, MS_ADDR, 5.0 + t))
    assert n.counters["map_register_ok"] == 3 and n.counters["map_register_replayed"] == 0


def test_a_first_message_replayed_after_the_registrant_moved_on_in_the_new_worker_is_refused():
    w = _worker()
    m1 = register(rlocs=("192.0.2.1", "192.0.2.7"), nonce=1, xtr_id=5)
    w.handle(m1, SITE1, MS_ADDR, 0.0)             # the worker dies before the registrant's second message
    n = _worker()
    n.restore(w.journal)
    only_send(n.handle(register(nonce=2, xtr_id=5), SITE1, MS_ADDR, 60.0))
    assert sends(n.handle(m1, SITE1, MS_ADDR, 61.0)) == []
    assert n.counters["map_register_replayed"] == 1
    assert [str(l.address) for l in n.registered.get(P("10.1.0.0/16"))[f"{5:032x}"].record.locators] \
        == ["192.0.2.1"]


def test_the_union_publishes_what_a_worker_changed_to_subscribers():
    from lispctl.wire import EncapsulatedControlMessage, MapRequest, decode_control, request_record, verify
    from roles_helpers import A
    text = MSMR.format(roles='["ms"]').replace('name = "site-b"\n', 'name = "site-b"\nsite-id = 2\n')
    main = make(text)[1]["ms"]
    w = _worker()
    w.handle(register(nonce=1, xtr_id=5), SITE1, MS_ADDR, 0.0)
    main.merge(0, _take(w), 0.0)
    # an ITR of site-b subscribes to 10.1.0.0/16: answered (forwarded) and confirmed
    req = MapRequest(0x99, (request_record(P("10.1.2.3/32"), notify=True),), (A("203.0.113.2"),),
                     source_eid=A("10.2.0.1"), xtr_id=0xBB, site_id=2)
    ecm = EncapsulatedControlMessage(req, A("203.0.113.2"), A("10.1.2.3"), 4342, 4342)
    main.handle(ecm.encode(), ep("203.0.113.2"), MS_ADDR, 1.0)
    assert main.counters["subscription_accepted"] == 1
    # the worker sees the ETR move: the main process pushes the new mapping
    w.handle(register(rlocs=("192.0.2.9",), nonce=2, xtr_id=5), ep("192.0.2.9"), MS_ADDR, 2.0)
    pushed = [s for s in sends(main.merge(0, _take(w), 2.0)) if s.dst.addr == A("203.0.113.2")]
    assert len(pushed) == 1
    notify = decode_control(pushed[0].payload)
    assert isinstance(notify, MapNotify) and verify(pushed[0].payload, "secret-b")
    assert [str(l.address) for l in notify.records[0].locators] == ["192.0.2.9"]


def _refresh_every_minute(w, main, until, skip=()):
    """The ETR refreshes every 60 s (a new nonce each time; none at the
    times in skip: lost); the worker's timers run when due and what it
    reports is merged into the union at once."""
    t, nonce = 0.0, 1
    while t <= until:
        due = w.next_deadline()
        if due is not None and due <= t:
            w.tick(due)
            main.merge(0, _take(w), due)
            continue
        if t not in skip:
            w.handle(register(nonce=nonce, xtr_id=5), SITE1, MS_ADDR, t)
            main.merge(0, _take(w), t)
        nonce += 1
        t += 60.0


def test_a_registration_reported_again_is_updated_in_place_in_the_union():
    """Each report is a new (unpickled) object: the union keeps one per
    registration and one expiry entry, not one per report until it expires."""
    w, main = _worker(), _main()
    _refresh_every_minute(w, main, 600.0)
    (reg,) = main.registered.get(P("10.1.0.0/16")).values()
    assert reg.origin == 0 and reg.expires_at >= 600.0 + T / 2
    assert len(main._expiry) == 1


def test_a_refresh_after_a_lost_one_is_still_reported_to_the_union():
    """The refresh at 120 s is lost: when the report came due (at 150 s) there
    was nothing new; the one at 180 s extends the worker's copy past the
    union's (expiring at 240 s) and must reach it."""
    w, main = _worker(), _main()
    _refresh_every_minute(w, main, 600.0, skip=(120.0,))
    main.tick(600.0)
    assert registered(main) == {"10.1.0.0/16": ["192.0.2.1"]}
    assert main.counters["union_registration_expired"] == 0

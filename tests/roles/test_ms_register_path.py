"""The Map-Server's Map-Register path under refreshes: registrations are
updated in place, the expiry heap keeps one entry per registration (re-filed
lazily: the deadline the role gives may be early, never late), and
registrations expire on time across refreshes, de-registrations and
re-registrations."""
from lispctl.wire import MapNotify, decode_control, verify

from roles_helpers import MSMR, ep, make, only_send, sends
from test_ms import P, XTR1, XTR2, register, registered

MS_ADDR = ep("198.51.100.10")


def _ms():
    return make(MSMR.format(roles='["ms"]'))[1]["ms"]


def run_until(ms, t):
    """What the daemon does until t: a tick at every deadline the role gives."""
    ticks = 0
    while (d := ms.next_deadline()) is not None and d <= t:
        ms.tick(d)
        ticks += 1
        assert ticks < 1000
    return ticks


def test_refreshes_keep_one_expiry_entry_and_expire_on_time():
    ms = _ms()
    ticks = 0
    for i in range(500):                         # an xTR refreshing every 10 s for 5000 s
        ticks += run_until(ms, 10.0 * i)
        s, notify = only_send(ms.handle(register(nonce=i), XTR1, MS_ADDR, 10.0 * i))
        assert notify.nonce == i and verify(s.payload, "secret-a")
        assert ms.next_deadline() <= 10.0 * i + 180.0        # never late
    assert len(ms._expiry) == 1
    assert ticks <= 500 * 10 / 170 + 1           # re-filed about once per timeout, not per refresh
    assert ms.counters["map_register_ok"] == 500
    run_until(ms, 4990.0 + 179.9)
    ms.tick(4990.0 + 179.9)
    assert registered(ms) == {"10.1.0.0/16": ["192.0.2.1"]}
    assert ms.next_deadline() == 4990.0 + 180.0
    ms.tick(4990.0 + 180.0)
    assert registered(ms) == {} and ms.next_deadline() is None and ms._expiry == []


def test_refresh_keeps_first_seen_and_takes_new_locators():
    ms = _ms()
    ms.handle(register(rlocs=("192.0.2.1",)), XTR1, MS_ADDR, 0.0)
    ms.handle(register(rlocs=("192.0.2.9",), nonce=2), XTR1, MS_ADDR, 50.0)
    (reg,) = ms.snapshot()["sites"][0]["eid_prefixes"][0]["registrations"]
    assert reg["rlocs"][0]["address"] == "192.0.2.9"
    assert reg["registered_for_s"] == 50.0 and reg["expires_in_s"] == 180.0


def test_deregister_then_register_again_expires_on_the_new_time_only():
    ms = _ms()
    ms.handle(register(), XTR1, MS_ADDR, 0.0)
    ms.handle(register(ttl=0, nonce=2), XTR1, MS_ADDR, 10.0)
    assert registered(ms) == {}
    assert ms.next_deadline() == 180.0               # its entry, dropped then
    ms.handle(register(nonce=3), XTR1, MS_ADDR, 100.0)
    ms.tick(180.0)
    assert registered(ms) == {"10.1.0.0/16": ["192.0.2.1"]}
    assert ms.next_deadline() == 280.0               # not the first registration's 180
    ms.tick(280.0)
    assert registered(ms) == {}


def test_two_registrants_expire_independently_under_interleaved_refreshes():
    ms = _ms()
    for t in range(0, 300, 30):                 # XTR1 refreshes until 270, XTR2 stops at 0
        ms.handle(register(rlocs=("192.0.2.1",), nonce=t), XTR1, MS_ADDR, float(t))
        if t == 0:
            ms.handle(register(rlocs=("192.0.2.2",), nonce=t + 1), XTR2, MS_ADDR, 0.0)
    assert ms.next_deadline() == 180.0
    ms.tick(180.0)
    assert registered(ms) == {"10.1.0.0/16": ["192.0.2.1"]}
    assert ms.next_deadline() == 270.0 + 180.0


def test_identical_register_bytes_from_another_source_are_the_same_registrant():
    # The decode memo keys on the record bytes: the very same bytes from
    # another address are the same registrant (bound to its RLOCs, not to the
    # source), its Map-Notify goes to its RLOC; other records are another
    # registrant; a changed key still fails.
    ms = _ms()
    raw = register(rlocs=("192.0.2.1",))
    only_send(ms.handle(raw, XTR1, MS_ADDR, 0.0))
    s, _ = only_send(ms.handle(bytes(bytearray(raw)), XTR2, MS_ADDR, 1.0))
    assert s.dst == ep("192.0.2.1", 4342)
    only_send(ms.handle(register(rlocs=("192.0.2.2",)), XTR2, MS_ADDR, 1.0))
    regs = ms.registered.get(P("10.1.0.0/16"))
    assert sorted(regs) == ["192.0.2.1", "192.0.2.2"]
    assert sends(ms.handle(register(rlocs=("192.0.2.1",), key="wrong"), XTR1, MS_ADDR, 2.0)) == []
    assert ms.counters["map_register_bad_auth"] == 1


def test_notify_echoes_register_with_xtr_id():
    ms = _ms()
    raw = register(xtr_id=0xBEEF, nonce=77)
    s, notify = only_send(ms.handle(raw, XTR1, MS_ADDR, 0.0))
    reg = decode_control(raw)
    assert isinstance(notify, MapNotify)
    assert (notify.nonce, notify.records, notify.xtr_id, notify.site_id) == (77, reg.records, 0xBEEF, 0)
    assert verify(s.payload, "secret-a")

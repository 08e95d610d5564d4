"""Issue 14.2: the Map-Server for many sites. A refresh of known records is
not decoded again (_Shape) but still authenticated, answered and bound like
any Map-Register; the replay memo stays bounded in total however many sites
are configured; Map-Notifies and MAC checks are right past the keyed-HMAC
cache (more sites than it holds)."""
import dataclasses

from lispctl.roles import ms as ms_mod
from lispctl.wire import ALG_HMAC_SHA1, ALG_HMAC_SHA256, MapNotify, decode_control, sign, verify
from lispctl.wire import auth

from roles_helpers import MSMR, ep, make, only_send, sends
from test_ms import register, registered

MS_ADDR = ep("198.51.100.10")
XTR = ep("192.0.2.1", 40000)


def _ms(text=MSMR.format(roles='["ms"]')):
    return make(text)[1]["ms"]


def _sites_config(n):
    lines = ['instance = "many"', 'roles = ["ms"]']
    for i in range(n):
        lines += ["[[site]]", f'name = "s{i}"', f'keys = {{ 1 = "key-{i}" }}', "[[site.eid-prefix]]",
                  f'prefix = "10.{i // 256}.{i % 256}.0/24"']
    return "\n".join(lines) + "\n"


def test_refresh_of_a_known_shape_is_still_authenticated():
    ms = _ms()
    only_send(ms.handle(register(nonce=1, xtr_id=0xAA), XTR, MS_ADDR, 0.0))
    assert len(ms._shapes) == 1
    # same record bytes (the shape), a MAC under another key: refused, no notify
    forged = register(nonce=2, xtr_id=0xAA, key="not-the-key")
    assert forged[48:] in ms._shapes
    assert sends(ms.handle(forged, XTR, MS_ADDR, 1.0)) == []
    assert ms.counters["map_register_bad_auth"] == 1
    # and with the right key: refreshed and answered with a notify that verifies
    s, notify = only_send(ms.handle(register(nonce=3, xtr_id=0xAA), XTR, MS_ADDR, 2.0))
    assert isinstance(notify, MapNotify) and notify.nonce == 3 and verify(s.payload, "secret-a")
    assert ms.counters["map_register_ok"] == 2
    (reg,) = ms.registered.get(next(iter(ms.registered.items()))[0]).values()
    assert reg.nonce == 3 and reg.expires_at == 182.0


def test_unauthenticated_messages_leave_no_shape():
    ms = _ms()
    ms.handle(register(nonce=1, key="not-the-key"), XTR, MS_ADDR, 0.0)
    assert ms._shapes == {} and registered(ms) == {}


def test_a_known_shape_with_other_flags_is_decoded_again():
    ms = _ms()
    only_send(ms.handle(register(nonce=1, notify=True), XTR, MS_ADDR, 0.0))
    # same bytes after the MAC, M bit clear: no Map-Notify (the first word differs)
    assert sends(ms.handle(register(nonce=2, notify=False), XTR, MS_ADDR, 1.0)) == []
    assert ms.counters["map_register_ok"] == 2


def test_replay_of_a_superseded_message_is_refused_on_the_fast_path():
    ms = _ms()
    first = register(nonce=1, xtr_id=0xAA)
    only_send(ms.handle(first, XTR, MS_ADDR, 0.0))
    only_send(ms.handle(register(nonce=2, xtr_id=0xAA), XTR, MS_ADDR, 10.0))
    assert first[48:] in ms._shapes                 # the replay takes the fast path
    assert sends(ms.handle(first, ep("203.0.113.66"), MS_ADDR, 20.0)) == []
    assert ms.counters["map_register_replayed"] == 1
    (reg,) = next(iter(ms.registered.items()))[1].values()
    assert reg.nonce == 2


def test_replay_memo_is_bounded_in_total_across_sites():
    assert ms_mod.superseded_per_site(200) == 4096
    assert ms_mod.superseded_per_site(100_000) == 16
    assert ms_mod.superseded_per_site(10_000) * 10_000 <= 1 << 20
    ms = _ms(_sites_config(300))
    site = ms.sites[0]
    assert site.superseded_max == (1 << 20) // 300
    site.superseded_max = 4                          # as with 262,144 sites
    msgs = [register(prefix="10.0.0.0/24", key="key-0", nonce=n, xtr_id=0xAB) for n in range(10)]
    for t, raw in enumerate(msgs):
        only_send(ms.handle(raw, XTR, MS_ADDR, float(t)))
    assert ms_mod.superseded_count(site) == 4
    assert type(site.superseded) is bytearray       # few per site: 8 bytes each
    # the last 4 superseded messages (nonces 5-8) are refused, older ones are not remembered
    for raw in msgs[5:9]:
        assert sends(ms.handle(raw, XTR, MS_ADDR, 20.0)) == []
    assert ms.counters["map_register_replayed"] == 4


def test_many_sites_past_the_keyed_hmac_cache():
    """More site keys than auth keeps keyed HMACs for: MACs are computed with
    one hashlib call, and still right (verify, Map-Notify, refusal)."""
    n = auth._KEYED_MAX + 50
    ms = _ms(_sites_config(n))
    for i in range(n):
        raw = register(prefix=f"10.{i // 256}.{i % 256}.0/24", key=f"key-{i}", nonce=i, xtr_id=i,
                       alg=ALG_HMAC_SHA1 if i % 2 else ALG_HMAC_SHA256)
        s, notify = only_send(ms.handle(raw, XTR, MS_ADDR, 0.0))
        assert verify(s.payload, f"key-{i}") and notify.nonce == i
    assert len(auth._KEYED_BY_ARG) >= auth._KEYED_MAX
    assert auth._digest_name(ALG_HMAC_SHA256, b"key-never-seen") == "sha256"
    bad = register(prefix="10.0.1.0/24", key="key-1064", nonce=7, xtr_id=1)
    assert sends(ms.handle(bad, XTR, MS_ADDR, 1.0)) == []          # another site's key
    assert ms.counters["map_register_ok"] == n and ms.counters["map_register_bad_auth"] == 1


def test_map_notify_from_equals_signing_the_notify_past_the_cache():
    for i in range(auth._KEYED_MAX + 1):            # fill the keyed-HMAC cache
        auth.compute_mac(ALG_HMAC_SHA256, f"fill-{i}", b"x" * 20)
    key = "a-key-past-the-cache"
    for alg in (ALG_HMAC_SHA1, ALG_HMAC_SHA256):
        raw = register(key=key, alg=alg, nonce=5, xtr_id=0x77)
        reg = decode_control(raw)
        want = sign(MapNotify(reg.nonce, reg.records, key_id=reg.key_id, alg_id=reg.alg_id,
                              xtr_id=reg.xtr_id, site_id=reg.site_id), key)
        assert auth.map_notify_for(raw, reg, key) == want
        assert verify(want, key) and not verify(want, key + "x")
        assert verify(raw, key.encode()) and not verify(dataclasses.replace(reg, nonce=6).encode(), key)


def test_superseded_ring_matches_whole_entries_only():
    site = ms_mod._Site(_ms().sites[0].cfg, superseded_max=4)
    a, b = bytes(range(1, 33)), bytes(range(101, 133))
    ms_mod._supersede(site, a)
    ms_mod._supersede(site, b)
    assert ms_mod._replayed(site.superseded, a) and ms_mod._replayed(site.superseded, b)
    straddling = a[4:8] + b[:4] + bytes(24)     # its first 8 bytes span the two entries
    assert not ms_mod._replayed(site.superseded, straddling)
    assert not ms_mod._replayed(site.superseded, bytes(32))

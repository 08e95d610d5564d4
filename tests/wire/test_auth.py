"""HMAC known answers (RFC 2202, RFC 4231) and Map-Register signing/verification."""
import hashlib
import hmac

import pytest

from lispctl import wire as w
from lispctl.wire import auth

# (key, data, HMAC-SHA-1 per RFC 2202, HMAC-SHA-256 per RFC 4231) where both RFCs share the test case
RFC2202 = [
    (b"\x0b" * 20, b"Hi There", "b617318655057264e28bc0b6fb378c8ef146be00"),
    (b"Jefe", b"what do ya want for nothing?", "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"),
    (b"\xaa" * 20, b"\xdd" * 50, "125d7342b9ac11cd91a39af48aa17b4f63f175d3"),
    (bytes(range(1, 26)), b"\xcd" * 50, "4c9007f4026250c6bc8414f9bf50c86c2d7235da"),
    (b"\xaa" * 80, b"Test Using Larger Than Block-Size Key - Hash Key First",
     "aa4ae5e15272d00e95705637ce8a3b55ed402112"),
]
RFC4231 = [
    (b"\x0b" * 20, b"Hi There", "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"),
    (b"Jefe", b"what do ya want for nothing?", "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"),
    (b"\xaa" * 20, b"\xdd" * 50, "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"),
    (bytes(range(1, 26)), b"\xcd" * 50, "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b"),
    (b"\xaa" * 131, b"Test Using Larger Than Block-Size Key - Hash Key First",
     "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"),
]


@pytest.mark.parametrize("key,data,mac", RFC2202)
def test_rfc2202_hmac_sha1(key, data, mac):
    assert auth.compute_mac(w.ALG_HMAC_SHA1, key, data).hex() == mac


@pytest.mark.parametrize("key,data,mac", RFC4231)
def test_rfc4231_hmac_sha256(key, data, mac):
    assert auth.compute_mac(w.ALG_HMAC_SHA256, key, data).hex() == mac


def test_str_key_is_utf8():
    assert auth.compute_mac(1, "Jefe", RFC2202[1][1]).hex() == RFC2202[1][2]


# A Map-Register written out from the RFC 9301 5.6 layout, auth data zeroed:
# type 3, M bit, 1 record; nonce; key ID 7; alg 1 or 2; record 10.1.1.0/24 with one RLOC 192.0.2.1.
def zeroed_register(alg: int, alen: int) -> bytes:
    return bytes.fromhex(
        "30000101" "0102030405060708" f"07{alg:02x}{alen:04x}") + bytes(alen) + bytes.fromhex(
        "000005a0" "01" "18" "1000" "0000" "0001" "0a010100"
        "0164ff00" "0001" "0001" "c0000201")


def register(alg: int) -> w.MapRegister:
    rec = w.EidRecord(w.decode_address(bytes.fromhex("00010a010100"))[0], 24,
                      (w.LocatorRecord(w.decode_address(bytes.fromhex("0001c0000201"))[0], 1, 100, 255, 0),),
                      1440, 0, True)
    return w.MapRegister(0x0102030405060708, (rec,), key_id=7, alg_id=alg, want_map_notify=True)


@pytest.mark.parametrize("alg,digest,alen", [(1, hashlib.sha1, 20), (2, hashlib.sha256, 32)])
def test_signed_register_matches_independent_hmac(alg, digest, alen):
    key = b"lisp-site-key"
    zeroed = zeroed_register(alg, alen)
    expected = hmac.new(key, zeroed, digest).digest()
    assert len(expected) == alen
    raw = w.sign(register(alg), key)
    assert raw == zeroed[:16] + expected + zeroed[16 + alen:]
    assert w.signed(register(alg), key).encode() == raw
    assert w.verify(raw, key)
    assert w.verify(raw, key.decode())
    assert w.auth_fields(raw) == (7, alg, expected)


@pytest.mark.parametrize("alg", [1, 2])
def test_tampering_and_wrong_key_fail(alg):
    raw = w.sign(register(alg), "k1")
    assert w.verify(raw, "k1")
    assert not w.verify(raw, "k2")
    for i in list(range(0, 12)) + list(range(16 + w.AUTH_DATA_LENGTHS[alg], len(raw))):
        bad = bytearray(raw)
        bad[i] ^= 0x01
        assert not w.verify(bytes(bad), "k1"), i
    bad = bytearray(raw)
    bad[20] ^= 0x80                     # inside the MAC
    assert not w.verify(bytes(bad), "k1")
    assert not w.verify(raw + b"\x00", "k1")
    assert not w.verify(raw[:-1], "k1")


@pytest.mark.parametrize("alg,short", [(1, 12), (1, 16), (2, 16), (2, 12)])
def test_truncated_mac_rejected(alg, short):
    key = b"k"
    full = w.sign(register(alg), key)
    alen = w.AUTH_DATA_LENGTHS[alg]
    mac = full[16:16 + alen]
    # what a peer using "-96"/"-128" truncation would send: shorter MAC, length field to match
    trunc = full[:14] + short.to_bytes(2, "big") + mac[:short] + full[16 + alen:]
    assert not w.verify(trunc, key)
    with pytest.raises(w.MalformedMessage, match="auth data length"):
        w.decode_control(trunc)


def test_algorithm_zero_and_other_types():
    raw = w.sign(register(0), "k")
    assert w.decode_control(raw).auth_data == b""
    assert not w.verify(raw, "k")      # no MAC is never "verified"
    assert not w.verify(w.MapReply(1, ()).encode(), "k")
    assert not w.verify(b"", "k")
    assert w.auth_fields(w.MapReply(1, ()).encode()) is None
    # an algorithm the caller does not accept
    assert not w.verify(w.sign(register(1), "k"), "k", alg_ids=(2,))


@pytest.mark.parametrize("msg", [
    w.MapNotify(5, (), 1, 2),
    w.MapNotifyAck(6, (), 1, 1),
    w.InfoRequest(7, w.NO_ADDRESS, 0, 1, 1, ttl=1440),
])
def test_other_authenticated_types(msg):
    raw = w.sign(msg, "secret")
    assert w.verify(raw, "secret") and not w.verify(raw, "Secret")
    assert w.decode_control(raw) == w.signed(msg, "secret")


def test_ms_rtr_auth_round_trip_and_refusals():
    """add_ms_rtr_auth / strip_ms_rtr_auth (docs/nat.md, "Security"): R bit,
    MS-RTR Key ID = algorithm (key ID 0), the MAC over the whole notify; the
    stripped notify is byte for byte the site-signed one."""
    from lispctl.wire import ALG_HMAC_SHA1, ALG_HMAC_SHA256, MapNotify, decode_control, sign, verify
    from lispctl.wire.auth import add_ms_rtr_auth, strip_ms_rtr_auth
    notify = sign(MapNotify(0x1234, (), 1, ALG_HMAC_SHA256, xtr_id=7, site_id=0), "site")
    for alg, n in ((ALG_HMAC_SHA1, 20), (ALG_HMAC_SHA256, 32)):
        raw = add_ms_rtr_auth(notify, "msrtr", alg)
        m = decode_control(raw)
        assert m.rtr and m.ms_rtr_key_id == alg and len(m.ms_rtr_auth_data) == n
        assert strip_ms_rtr_auth(raw, "msrtr") == notify and verify(notify, "site")
        assert strip_ms_rtr_auth(raw, "other") is None
        flipped = raw[:20] + bytes([raw[20] ^ 1]) + raw[21:]               # a byte the MAC covers
        assert strip_ms_rtr_auth(flipped, "msrtr") is None
    assert strip_ms_rtr_auth(notify, "msrtr") is None                       # no R bit
    assert strip_ms_rtr_auth(raw + b"x", "msrtr") is None                   # trailing bytes
    assert strip_ms_rtr_auth(b"\x40", "msrtr") is None                      # malformed
    keyed1 = bytearray(add_ms_rtr_auth(notify, "msrtr"))
    keyed1[-36] = 1                                                          # key ID 1: not ours
    assert strip_ms_rtr_auth(bytes(keyed1), "msrtr") is None

"""LISP-SEC wire codec and cryptography (RFC 9303): layouts, round trips,
golden bytes, the ECM S-bit AD, and the HMAC/KDF/key-wrap checks."""
from __future__ import annotations

import dataclasses
import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lispctl import wire as w
from lispctl.wire import lispsec as ls

V4 = ipaddress.IPv4Address
NONCE = 0x1122334455667788
OTK = bytes(range(16))


def _ecm(auth: bytes = b"", security: bool = True) -> w.EncapsulatedControlMessage:
    req = w.MapRequest(NONCE, (w.RequestRecord(V4("10.1.0.0"), 24),), (V4("192.0.2.1"),))
    return w.EncapsulatedControlMessage(req, V4("192.0.2.1"), V4("10.1.0.1"), security=security, auth=auth)


def test_itr_ecm_ad_golden_layout():
    ad = ls.EcmAuthData(ls.HMAC_SHA256_128, 7, ls.WRAP_NULL_128, bytes(8), OTK, ls.EidAd(ls.KDF_HKDF_SHA256))
    raw = ad.encode()
    # type 1, unassigned, requested HMAC 2 | OTK length 24, key ID 7, wrap 1 | preamble | OTK | EID-AD len 4, KDF 2
    assert raw == bytes.fromhex("01000002" "00180701") + bytes(8) + OTK + bytes.fromhex("00040002")
    assert ls.decode_ecm_ad(raw) == (ad, len(raw))


def test_ms_eid_ad_golden_layout():
    ead = ls.EidAd(ls.KDF_HKDF_SHA256, ls.HMAC_SHA256_128, (ls.EidAdPrefix(V4("10.1.0.0"), 24),),
                   etr_cant_sign=True, hmac=b"\xaa" * 16)
    raw = ead.encode()
    # length 4+4+(4+4)+16 = 32 | KDF 2 | count 1, E bit, HMAC ID 2 | 0, mask 24, AFI 1, 10.1.0.0 | HMAC
    assert raw == bytes.fromhex("00200002" "01800002" "00180001" "0a010000") + b"\xaa" * 16
    assert ls.decode_eid_ad(raw, 0, len(raw)) == (ead, len(raw))


def test_map_reply_ad_golden_layout():
    ead = ls.EidAd(2, 2, (ls.EidAdPrefix(V4("10.1.0.0"), 24),), hmac=b"\x01" * 16)
    ad = ls.MapReplyAuthData(ead, ls.HMAC_SHA256_128, b"\x02" * 16)
    raw = ad.encode()
    assert raw[:4] == bytes.fromhex("01000000")
    assert raw[4:36] == ead.encode()
    assert raw[36:40] == bytes.fromhex("00140002")          # PKT-AD length 20, PKT HMAC ID 2
    assert ls.decode_map_reply_ad(raw) == ad


def test_otk_length_28_accepted():
    ad = ls.EcmAuthData(2, 1, 2, bytes(8), OTK, ls.EidAd(2), otk_length=28)
    raw = ad.encode()
    assert raw[4:6] == b"\x00\x1c"
    assert ls.decode_ecm_ad(raw)[0] == ad


def test_ecm_with_ad_round_trips_and_keeps_inner_message():
    ad = ls.EcmAuthData(2, 1, 2, bytes(8), OTK, ls.EidAd(2)).encode()
    ecm = _ecm(ad)
    raw = ecm.encode()
    assert raw[4:4 + len(ad)] == ad and raw[4 + len(ad)] >> 4 == 4
    back = w.decode_control(raw)
    assert back == ecm and back.message.nonce == NONCE


def test_ecm_s_bit_without_ad_still_decodes():
    ecm = _ecm(b"")
    assert w.decode_control(ecm.encode()) == ecm


@pytest.mark.parametrize("cut", [5, 20, 36, 40])
def test_truncated_ad_is_malformed(cut):
    raw = _ecm(ls.EcmAuthData(2, 1, 2, bytes(8), OTK, ls.EidAd(2)).encode()).encode()
    with pytest.raises(w.MalformedMessage):
        w.decode_control(raw[:cut])


def test_bad_lengths_are_malformed():
    good = ls.EcmAuthData(2, 1, 2, bytes(8), OTK, ls.EidAd(2)).encode()
    bad_otk = good[:4] + b"\x00\x10" + good[6:]
    with pytest.raises(w.MalformedMessage):
        ls.decode_ecm_ad(bad_otk)
    bad_eid = good[:32] + b"\x00\x06\x00\x02"
    with pytest.raises(w.MalformedMessage):
        ls.decode_ecm_ad(bad_eid)
    ad = ls.MapReplyAuthData(ls.EidAd(2, 2, (), hmac=b"\x01" * 16), 2, b"\x02" * 16).encode()
    with pytest.raises(w.MalformedMessage):
        ls.decode_map_reply_ad(ad + b"\x00")                  # bytes after the PKT HMAC
    with pytest.raises(w.MalformedMessage):
        ls.decode_map_reply_ad(b"\x02" + ad[1:])               # unknown AD type


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120))
def test_decoders_raise_only_malformed(data):
    for fn in (lambda b: ls.decode_ecm_ad(b), ls.decode_map_reply_ad,
               lambda b: w.decode_control(bytes([0x88, 0, 0, 0]) + b)):
        try:
            fn(data)
        except w.MalformedMessage:
            pass


# ---------------------------------------------------------------- crypto

def test_aes_key_wrap_round_trip_and_integrity():
    pre, field = ls.wrap_otk(ls.WRAP_AES_128_HKDF_SHA256, b"itr-mr-secret", NONCE, OTK)
    assert len(pre) == 8 and len(field) == 16 and field != OTK
    assert ls.unwrap_otk(2, b"itr-mr-secret", NONCE, pre, field) == OTK
    assert ls.unwrap_otk(2, b"wrong", NONCE, pre, field) is None           # IV check fails
    assert ls.unwrap_otk(2, b"itr-mr-secret", NONCE + 1, pre, field) is None  # key bound to the nonce
    flipped = bytes([field[0] ^ 1]) + field[1:]
    assert ls.unwrap_otk(2, b"itr-mr-secret", NONCE, pre, flipped) is None
    assert ls.unwrap_otk(99, b"itr-mr-secret", NONCE, pre, field) is None


def test_per_message_key_follows_rfc3394_and_hkdf():
    # Independent computation: HKDF-SHA256(nonce + "OTK-Key-Wrap" + PSK) then RFC 3394.
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF
    from cryptography.hazmat.primitives.keywrap import aes_key_wrap
    kek = HKDF(hashes.SHA256(), 16, None, b"").derive(NONCE.to_bytes(8, "big") + b"OTK-Key-Wrap" + b"k")
    assert b"".join(ls.wrap_otk(2, b"k", NONCE, OTK)) == aes_key_wrap(kek, OTK)


def test_rfc3394_vector():
    # RFC 3394 4.1: 128-bit KEK wraps 128-bit key data.
    from cryptography.hazmat.primitives.keywrap import aes_key_wrap
    kek = bytes.fromhex("000102030405060708090A0B0C0D0E0F")
    data = bytes.fromhex("00112233445566778899AABBCCDDEEFF")
    assert aes_key_wrap(kek, data).hex().upper() == "1FA68B0A8112B447AEF34BD8FB5A7B829D3E862371D2CFE5"


def test_hkdf_rfc5869_case1():
    ikm = bytes.fromhex("0b" * 22)
    salt = bytes.fromhex("000102030405060708090a0b0c")
    info = bytes.fromhex("f0f1f2f3f4f5f6f7f8f9")
    assert ls.hkdf(ls.KDF_HKDF_SHA256, ikm, 42, salt, info).hex() == (
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865")


def test_ms_otk_derivation_and_kdf_ids():
    a = ls.derive_ms_otk(ls.KDF_HKDF_SHA256, OTK)
    b = ls.derive_ms_otk(ls.KDF_HKDF_SHA1_128, OTK)
    assert len(a) == len(b) == 16 and a != b and a != OTK
    with pytest.raises(ValueError):
        ls.derive_ms_otk(9, OTK)


def test_eid_ad_hmac_detects_any_change():
    ead = ls.EidAd(2, 0, (ls.EidAdPrefix(V4("10.1.0.0"), 24),))
    signed = ls.eid_ad_signed(ead, ls.HMAC_SHA256_128, OTK)
    assert len(signed.hmac) == 16 and ls.eid_ad_valid(signed, OTK)
    assert not ls.eid_ad_valid(signed, bytes(16))
    wider = dataclasses.replace(signed, prefixes=(ls.EidAdPrefix(V4("10.0.0.0"), 8),))
    assert not ls.eid_ad_valid(wider, OTK)
    assert not ls.eid_ad_valid(dataclasses.replace(signed, etr_cant_sign=True), OTK)
    assert not ls.eid_ad_valid(dataclasses.replace(signed, kdf_id=1), OTK)
    assert not ls.eid_ad_valid(dataclasses.replace(signed, hmac=signed.hmac[:8]), OTK)
    # the full 32-byte output is accepted too
    zeroed = dataclasses.replace(signed, hmac=bytes(32))
    from cryptography.hazmat.primitives import hashes, hmac
    m = hmac.HMAC(OTK, hashes.SHA256()); m.update(zeroed.encode())
    assert ls.eid_ad_valid(dataclasses.replace(signed, hmac=m.finalize()), OTK)


def test_map_reply_signature():
    rec = w.eid_record(w.to_eid_prefix(V4("10.1.0.0"), 24),
                       (w.LocatorRecord(V4("198.51.100.7"), 1, 100, 255, 0, False, False, True),), ttl=10)
    unsigned = w.MapReply(NONCE, (rec,)).encode()
    ead = ls.eid_ad_signed(ls.EidAd(2, 0, (ls.EidAdPrefix(V4("10.1.0.0"), 24),)), 2, OTK)
    ms_otk = ls.derive_ms_otk(2, OTK)
    raw = ls.sign_map_reply(unsigned, ead, ls.HMAC_SHA256_128, ms_otk)
    reply = w.decode_control(raw)
    assert reply.security and reply.records == (rec,)
    ad = ls.decode_map_reply_ad(reply.trailer)
    assert ad.eid_ad == ead and len(ad.pkt_hmac) == 16
    assert ls.map_reply_pkt_valid(raw, ad, ms_otk)
    assert not ls.map_reply_pkt_valid(raw, ad, OTK)
    # a changed locator byte breaks it
    i = raw.index(V4("198.51.100.7").packed)
    forged = raw[:i] + V4("203.0.113.66").packed + raw[i + 4:]
    assert not ls.map_reply_pkt_valid(forged, ls.decode_map_reply_ad(w.decode_control(forged).trailer), ms_otk)


# ---------------------------------------------------------------- decode output and tshark

def _signed_pair():
    otk = OTK
    ad = ls.EcmAuthData(2, 1, 2, *ls.wrap_otk(2, b"k", NONCE, otk), ls.EidAd(2))
    ecm = _ecm(ad.encode())
    rec = w.eid_record(w.to_eid_prefix(V4("10.1.0.0"), 24),
                       (w.LocatorRecord(V4("198.51.100.7"), 1, 100, 255, 0, False, False, True),), ttl=10)
    ead = ls.eid_ad_signed(ls.EidAd(2, 0, (ls.EidAdPrefix(V4("10.1.0.0"), 24),)), 2, otk)
    reply = ls.sign_map_reply(w.MapReply(NONCE, (rec,)).encode(), ead, 2, ls.derive_ms_otk(2, otk))
    return ecm, reply


def test_decode_json_shows_lisp_sec_data():
    from lispctl.wire_json import message
    ecm, reply = _signed_pair()
    j = message(w.decode_control(ecm.encode()))
    assert j["flags"]["S"] and j["lisp_sec"]["key_id"] == 1 and j["lisp_sec"]["otk_wrapping_id"] == 2
    assert j["lisp_sec"]["eid_ad"] == {"kdf_id": 2}
    j = message(w.decode_control(reply))
    assert j["lisp_sec"]["pkt_hmac_id"] == 2 and len(j["lisp_sec"]["pkt_hmac"]) == 32
    assert j["lisp_sec"]["eid_ad"]["records"][0]["eid_prefix"] == "10.1.0.0/24" and "trailing_bytes" not in j


def test_tshark_reads_the_signed_map_reply_records(tmp_path):
    """tshark 4.0 does not dissect LISP-SEC data; it must still read the
    header (S bit) and records of a signed Map-Reply exactly, and the S bit
    of a protected ECM."""
    import json
    import shutil
    import subprocess
    from tests.conftest import unavailable
    from lispctl.capture import PcapWriter
    tshark = shutil.which("tshark")
    if not tshark:
        unavailable("tshark is not installed (Debian package tshark)")
    ecm, reply = _signed_pair()
    path = tmp_path / "sec.pcap"
    with open(path, "wb") as f:
        pw = PcapWriter(f)
        pw.write_udp("192.0.2.1", "198.51.100.2", 4342, 4342, ecm.encode())
        pw.write_udp("198.51.100.2", "192.0.2.1", 4342, 4342, reply)
    r = subprocess.run([tshark, "-r", str(path), "-T", "json", "--no-duplicate-keys"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    frames = [p["_source"]["layers"] for p in json.loads(r.stdout)]
    text = json.dumps(frames)
    assert "_ws.malformed" not in text
    lisp0, lisp1 = frames[0]["lisp"], frames[1]["lisp"]
    assert json.dumps(lisp0).count('"lisp.ecm.flags.sec": "1"') == 1
    assert json.dumps(lisp1).count('"lisp.mrep.flags.sec": "1"') == 1
    assert "198.51.100.7" in json.dumps(lisp1) and "10.1.0.0" in json.dumps(lisp1)


# ---------------------------------------------------------------- generated round trips

from .strategies import eid_and_mask, u8, u16  # noqa: E402

_eid_ads = st.one_of(
    st.builds(ls.EidAd, u16),                                   # the ITR's 4-byte form
    st.builds(ls.EidAd, u16, u16,
              st.lists(eid_and_mask().map(lambda em: ls.EidAdPrefix(*em)), max_size=4).map(tuple),
              st.booleans(), st.binary(min_size=1, max_size=40), st.integers(0, 0x7F)))


@settings(max_examples=300, deadline=None)
@given(_eid_ads, u16, u8, u8, st.binary(min_size=8, max_size=8), st.binary(min_size=16, max_size=16),
       st.sampled_from([24, 28]), u8)
def test_ecm_ad_round_trips(ead, req, key_id, wrap_id, pre, otk, otk_len, unassigned):
    ad = ls.EcmAuthData(req, key_id, wrap_id, pre, otk, ead, 1, unassigned, otk_len)
    raw = ad.encode()
    assert ls.decode_ecm_ad(raw) == (ad, len(raw))
    ecm = _ecm(raw)
    assert w.decode_control(ecm.encode()) == ecm


@settings(max_examples=300, deadline=None)
@given(_eid_ads, u16, st.binary(min_size=1, max_size=40), st.integers(0, (1 << 24) - 1))
def test_map_reply_ad_round_trips(ead, hmac_id, mac, unassigned):
    ad = ls.MapReplyAuthData(ead, hmac_id, mac, 1, unassigned)
    assert ls.decode_map_reply_ad(ad.encode()) == ad


def test_auth_without_s_bit_is_refused_on_encode():
    with pytest.raises(ValueError):
        _ecm(ls.EcmAuthData(2, 1, 2, bytes(8), OTK, ls.EidAd(2)).encode(), security=False).encode()

"""Algorithm 3, HMAC-SHA-256-128+HKDF-SHA256 (RFC 9301 5.6): a per-message
key per-msg-key = HKDF-SHA256(nonce + PSK, salt = "<type> Authentication")."""
from __future__ import annotations

import dataclasses

import pytest
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from lispctl import wire as w
from lispctl.wire.auth import map_notify_for

from .test_auth import register

ALG3 = w.ALG_HMAC_SHA256_HKDF


def _independent(raw_zeroed: bytes, psk: bytes, salt: bytes) -> bytes:
    k = HKDF(hashes.SHA256(), 32, salt, b"").derive(raw_zeroed[4:12] + psk)
    m = hmac.HMAC(k, hashes.SHA256())
    m.update(raw_zeroed)
    return m.finalize()


def test_register_mac_matches_independent_computation():
    msg = register(ALG3)
    raw = w.sign(msg, "site-key")
    zeroed = dataclasses.replace(msg, auth_data=bytes(32)).encode()
    assert raw[16:48] == _independent(zeroed, b"site-key", b"Map-Register Authentication")
    assert w.verify(raw, "site-key") and not w.verify(raw, "other")
    assert w.decode_control(raw).alg_id == ALG3


def test_per_message_key_depends_on_nonce_and_type():
    a = w.sign(register(ALG3), "k")
    b = w.sign(dataclasses.replace(register(ALG3), nonce=register(ALG3).nonce + 1), "k")
    assert a[16:48] != b[16:48]
    # the same bytes under algorithm 2 give a different MAC (a plain HMAC)
    assert w.sign(register(2), "k")[16:48] != a[16:48]
    # a Map-Register MAC does not verify as algorithm 2
    assert not w.verify(a, "k", alg_ids=(w.ALG_HMAC_SHA256,))


def test_notify_and_ack_salts():
    notify = w.MapNotify(9, register(ALG3).records, key_id=7, alg_id=ALG3)
    raw = w.sign(notify, "k")
    zeroed = dataclasses.replace(notify, auth_data=bytes(32)).encode()
    assert raw[16:48] == _independent(zeroed, b"k", b"Map-Notify Authentication")
    ack = w.MapNotifyAck(9, (), key_id=7, alg_id=ALG3)
    raw = w.sign(ack, "k")
    assert raw[16:48] == _independent(dataclasses.replace(ack, auth_data=bytes(32)).encode(), b"k",
                                      b"Map-Notify-Ack Authentication")
    assert w.verify(raw, "k")


def test_map_notify_for_uses_the_notify_salt():
    raw = w.sign(register(ALG3), "k")
    reg = w.decode_control(raw)
    want = w.sign(w.MapNotify(reg.nonce, reg.records, key_id=reg.key_id, alg_id=ALG3), "k")
    assert map_notify_for(raw, reg, "k") == want


def test_info_has_no_salt_so_algorithm_3_is_refused():
    info = w.InfoRequest(7, w.NO_ADDRESS, 0, 1, ALG3, ttl=1440, auth_data=bytes(32))
    with pytest.raises(ValueError):
        w.sign(info, "k")
    assert not w.verify(info.encode(), "k")

"""Map-Server fast paths in lispctl.wire: RegisterMemo must decode exactly
like decode_control (also on a memo hit), and map_notify_for must produce the
Map-Notify that signing MapNotify(register's fields) produces."""
from __future__ import annotations

import dataclasses
import random

import pytest
from hypothesis import given, settings

from lispctl import wire as w
from lispctl.wire.auth import map_notify_for
from lispctl.wire.regmemo import RegisterMemo

from . import samples
from .strategies import map_registers

KEY = "fast-path-key"


def _slow_notify(reg: w.MapRegister) -> bytes:
    return w.sign(w.MapNotify(reg.nonce, reg.records, key_id=reg.key_id, alg_id=reg.alg_id,
                              xtr_id=reg.xtr_id, site_id=reg.site_id), KEY)


def _decode_or_error(fn, raw):
    try:
        return fn(raw)
    except w.MalformedMessage as exc:
        return ("error", exc.reason, exc.offset)


@settings(max_examples=300, deadline=None)
@given(map_registers())
def test_memo_decodes_like_decode_control_on_miss_and_hit(reg):
    raw = reg.encode()
    memo = RegisterMemo()
    want = w.decode_control(raw)
    assert memo(raw) == want                       # miss
    assert memo(raw) == want                       # hit
    # same records, another nonce/MAC: a hit that must carry the new header fields
    other = w.sign(w.MapRegister(reg.nonce ^ 1, reg.records, reg.key_id, reg.alg_id, reg.auth_data,
                                 reg.proxy_reply, reg.security, reg.want_map_notify, reg.xtr_id, reg.site_id,
                                 reg.reserved, reg.trailer), KEY)
    assert memo(other) == w.decode_control(other)


@settings(max_examples=300, deadline=None)
@given(map_registers())
def test_map_notify_for_equals_signing_the_notify(reg):
    raw = reg.encode()
    decoded = w.decode_control(raw)
    assert map_notify_for(raw, decoded, KEY) == _slow_notify(decoded)


def _mutations(rng: random.Random, raw: bytes, n: int):
    for _ in range(n):
        b = bytearray(raw)
        kind = rng.randrange(3)
        if kind == 0 and b:
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        elif kind == 1:
            del b[rng.randrange(len(b) + 1):]
        else:
            b += bytes(rng.randrange(256) for _ in range(rng.randrange(1, 9)))
        yield bytes(b)


@pytest.mark.parametrize("seed", range(4))
def test_memo_and_notify_on_mutated_registers(seed):
    """Bytes a peer may really send (bit flips, truncation, junk after the
    records): the memo gives decode_control's result or its very error, before
    and after the bytes were seen; a notify built from the raw bytes carries
    the same Map-Notify as the re-encoded one and verifies."""
    rng = random.Random(seed)
    memo = RegisterMemo(max_entries=64)
    regs = [m for m in samples.messages() if isinstance(m, w.MapRegister)]
    for reg in regs:
        for raw in _mutations(rng, reg.encode(), 400):
            want = _decode_or_error(w.decode_control, raw)
            assert _decode_or_error(memo, raw) == want
            assert _decode_or_error(memo, raw) == want
            if isinstance(want, w.MapRegister):
                fast = map_notify_for(raw, want, KEY)
                slow = _slow_notify(want)
                # equal apart from the MAC: records are echoed as received, and a
                # few encodings (bits we do not keep) re-encode differently
                assert (dataclasses.replace(w.decode_control(fast), auth_data=b"")
                        == dataclasses.replace(w.decode_control(slow), auth_data=b""))
                if want.alg_id != w.ALG_NONE:
                    assert w.verify(fast, KEY)


def test_memo_is_bounded():
    memo = RegisterMemo(max_entries=8)
    base = samples.messages()[3]
    for n in range(50):
        memo(w.MapRegister(n, base.records, 1, 1, bytes(20), xtr_id=n, site_id=1).encode())
    assert len(memo._memo) <= 8

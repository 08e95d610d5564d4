"""Change-Priority Message codec (lispctl.wire.cpm): layout, round trips,
MAC, only MalformedMessage escapes, and tshark neither crashes on it nor
takes it for a standard LISP message."""
from __future__ import annotations

import random
from ipaddress import IPv4Address as V4, IPv6Address as V6

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lispctl import wire as w
from lispctl.capture import PcapWriter

from . import strategies as ws
from .test_tshark_oracle import OUTER, problems, run_tshark, tshark  # noqa: F401 (fixture)

KEY = "hypervisor-key"


@st.composite
def cpms(draw, signed=True):
    eid, ml = draw(ws.eid_and_mask())
    corr = tuple(draw(st.lists(st.one_of(ws.ips, ws.iid_eids), max_size=6)))
    alg = draw(st.sampled_from([w.ALG_HMAC_SHA1, w.ALG_HMAC_SHA256]))
    return w.ChangePriority(eid, ml, draw(ws.u8), draw(ws.u64), draw(ws.u64), corr, draw(ws.u16), alg,
                            draw(st.binary(min_size=w.AUTH_DATA_LENGTHS[alg], max_size=w.AUTH_DATA_LENGTHS[alg])))


def test_golden_layout():
    m = w.ChangePriority(V4("10.9.0.5"), 32, 1, 0x0102030405060708, 0x1112131415161718,
                         (V4("10.1.0.2"), V6("2001:db8::1")), key_id=7)
    raw = w.sign_cpm(m, KEY)
    assert raw[:32].hex() == ("ffff0100"            # type 15, sub-type 4095, version 1, reserved
                              "00070020"            # key ID 7, auth data length 32
                              "02010020"            # alg 2, priority 1, reserved, mask-len 32
                              "00020000"            # 2 correspondents, reserved
                              "0102030405060708" "1112131415161718")
    assert raw[32:38].hex() == "00010a090005"                        # EID AFI 1
    assert raw[38:44].hex() == "00010a010002"
    assert raw[44:62].hex() == "000220010db8" + "00" * 11 + "01"
    assert len(raw) == 62 + 32
    assert raw[62:] == w.compute_mac(2, KEY, raw[:62])
    assert w.is_cpm(raw)
    assert w.decode_control(raw) == w.SharedExtension(4095, raw[2:])   # type-15 dispatch keeps it opaque


@settings(max_examples=300, deadline=None)
@given(cpms())
def test_roundtrip(m):
    raw = m.encode()
    assert w.decode_cpm(raw) == m
    assert w.decode_cpm(bytearray(raw)) == m


@settings(max_examples=100, deadline=None)
@given(cpms(), st.binary(min_size=1, max_size=16))
def test_mac_covers_every_byte(m, key):
    raw = w.sign_cpm(m, key)
    d = w.decode_cpm(raw)
    assert w.verify_cpm(raw, d, key)
    assert not w.verify_cpm(raw, d, key + b"x")
    i = random.Random(len(raw)).randrange(len(raw) - len(d.auth_data))
    bad = bytearray(raw)
    bad[i] ^= 0x01
    try:
        d2 = w.decode_cpm(bytes(bad))
    except w.MalformedMessage:
        return
    assert not w.verify_cpm(bytes(bad), d2, key)


def test_decoder_rejects():
    good = w.sign_cpm(w.ChangePriority(V4("10.9.0.5"), 32, 1, 1, 2, (V4("10.1.0.2"),)), KEY)
    cases = {
        "truncated": good[:20],
        "other sub-type": b"\xff\xfe" + good[2:],
        "version 2": good[:2] + b"\x02" + good[3:],
        "auth length": good[:6] + b"\x00\x14" + good[8:],           # 20 with algorithm 2
        "algorithm 9": good[:8] + b"\x09" + good[9:],
        "count too high": good[:12] + b"\x00\x05" + good[14:],
        "junk before MAC": good[:-32] + b"\x00" + good[-32:],
        "MAC cut": good[:-1],
    }
    for name, raw in cases.items():
        with pytest.raises(w.MalformedMessage):
            w.decode_cpm(raw)
            pytest.fail(name)
    unsigned = w.ChangePriority(V4("10.9.0.5"), 32, 1, 1, 2, alg_id=0)
    d = w.decode_cpm(unsigned.encode())
    assert not w.verify_cpm(unsigned.encode(), d, KEY)      # algorithm 0 is never valid


def test_fuzz_only_malformed():
    rng = random.Random(4095)
    seeds = [w.sign_cpm(w.ChangePriority(V4("10.9.0.5"), 32, 1, 1, 2, (V4("10.1.0.2"), V6("::1"))), KEY),
             w.sign_cpm(w.ChangePriority(w.InstanceId(5, V6("2001:db8::")), 64, 9, 3, 4, alg_id=1), KEY)]
    ok = 0
    for _ in range(20000):
        b = bytearray(rng.choice(seeds))
        op = rng.randrange(4)
        if op == 0:
            del b[rng.randrange(len(b) + 1):]
        elif op == 1:
            for _ in range(rng.randrange(1, 4)):
                b[rng.randrange(len(b))] = rng.getrandbits(8)
        elif op == 2:
            b += rng.randbytes(rng.randrange(1, 20))
        else:
            i = rng.randrange(len(b) - 1)
            b[i:i + 2] = rng.choice([b"\x00\x00", b"\xff\xff", b"\x40\x03", b"\x00\x02", b"\x00\x20"])
        try:
            m = w.decode_cpm(bytes(b))
        except w.MalformedMessage as e:
            assert e.reason and -1 <= e.offset <= len(b)
            continue
        ok += 1
        assert w.decode_cpm(m.encode()) == m
    assert ok > 100      # mutations that stay valid are re-encoded exactly


def test_tshark_neither_crashes_nor_misdissects(tshark, tmp_path):  # noqa: F811
    """tshark 4.0 has no dissector for type 15: it must show the type, the
    rest as data, and no malformed mark or warning - not a Map-Request or any
    other standard message read out of our bytes."""
    msgs = [w.sign_cpm(w.ChangePriority(V4("10.9.0.5"), 32, 1, 1700000000000, 5, (V4("10.1.0.2"),)), KEY),
            w.sign_cpm(w.ChangePriority(w.InstanceId(77, V6("2001:db8::5")), 128, 255, 0, 0,
                                        tuple(V6(f"2001:db8::{i:x}") for i in range(1, 40)), alg_id=1), KEY)]
    gen = random.Random(7)
    for _ in range(20):
        corr = tuple(V4(gen.getrandbits(32)) for _ in range(gen.randrange(8)))
        msgs.append(w.sign_cpm(w.ChangePriority(V4(gen.getrandbits(32)), gen.randrange(33), gen.randrange(256),
                                                gen.getrandbits(64), gen.getrandbits(64), corr), KEY))
    path = tmp_path / "cpm.pcap"
    with open(path, "wb") as f:
        pw = PcapWriter(f)
        for raw in msgs:
            pw.write_udp(*OUTER, 4342, 4342, raw)
    frames = run_tshark(tshark, path)
    assert len(frames) == len(msgs)
    for raw, layers in zip(msgs, frames):
        assert not problems(layers), problems(layers)
        lisp = layers["lisp"]
        assert lisp == {"lisp.type": "15"}, lisp       # nothing read as a standard field
        assert layers["data"]["data.len"] == str(len(raw))

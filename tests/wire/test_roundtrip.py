"""Property: decode(encode(m)) == m and encode(decode(b)) == b for every message type."""
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lispctl import wire as w

from . import strategies as ws

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def roundtrip(m):
    b = w.encode(m)
    d = w.decode_control(b)
    assert d == m
    assert type(d) is type(m)
    assert w.encode(d) == b
    assert m.encode() == b


@SETTINGS
@given(ws.map_requests())
def test_map_request(m):
    roundtrip(m)


@SETTINGS
@given(ws.map_replies())
def test_map_reply(m):
    roundtrip(m)


@SETTINGS
@given(ws.map_registers())
def test_map_register(m):
    roundtrip(m)


@SETTINGS
@given(ws.map_notifies)
def test_map_notify(m):
    roundtrip(m)


@SETTINGS
@given(ws.map_notify_acks)
def test_map_notify_ack(m):
    roundtrip(m)


@SETTINGS
@given(ws.map_referrals())
def test_map_referral(m):
    roundtrip(m)


@SETTINGS
@given(ws.info_requests())
def test_info_request(m):
    roundtrip(m)


@SETTINGS
@given(ws.info_replies())
def test_info_reply(m):
    roundtrip(m)


@SETTINGS
@given(ws.shared_extensions)
def test_shared_extension(m):
    roundtrip(m)


@SETTINGS
@given(ws.ecms())
def test_ecm(m):
    roundtrip(m)
    assert w.decode_ecm_message(m.encode()) == m


@SETTINGS
@given(ws.addresses)
def test_address(a):
    b = w.encode_address(a)
    d, end = w.decode_address(b)
    assert d == a and end == len(b)
    assert w.encode_address(d) == b
    # decoding in the middle of a buffer, bounded by `end`
    d2, end2 = w.decode_address(b"\xff" * 3 + b + b"\xee", 3, 3 + len(b))
    assert d2 == a and end2 == 3 + len(b)


@SETTINGS
@given(ws.data_headers())
def test_data_header(h):
    b = h.encode()
    assert len(b) == 8
    assert w.decode_data_header(b + b"payload") == h


@SETTINGS
@given(st.binary(min_size=8, max_size=8))
def test_data_header_any_bytes_roundtrip(b):
    # all 2^64 headers are valid: the decoder must never lose a bit
    assert w.decode_data_header(b).encode() == b

"""Specific decoding rules: strictness, interop liberalities, LCAF handling,
ECM inner headers, conversions to the shared vocabulary."""
import struct
from ipaddress import IPv4Address as V4, IPv6Address as V6, ip_network

import pytest

from lispctl import wire as w
from lispctl.mapping.types import EidPrefix, Rloc
from lispctl.wire.ecm import checksum

from . import samples

A, C = samples.A, samples.C


def malformed(b: bytes, fn=w.decode_control) -> w.MalformedMessage:
    with pytest.raises(w.MalformedMessage) as ei:
        fn(b)
    return ei.value


# ---------------------------------------------------------------- errors

def test_error_text_and_fields():
    raw = samples.messages()[3].encode()          # Map-Register with locators
    e = malformed(raw[:70])
    assert e.reason.startswith("truncated")
    assert str(e) == f"{e.reason} at offset {e.offset}"
    assert isinstance(e, ValueError) and 16 <= e.offset <= 70


def test_truncated_locator_message():
    rec = w.EidRecord(V4("10.0.0.0"), 8, (w.LocatorRecord(A),))
    raw = w.MapReply(1, (rec,)).encode()
    e = malformed(raw[:-5])
    assert str(e) == "truncated locator record at offset 28"


def test_unknown_type_and_empty():
    assert "unknown message type 9" in str(malformed(b"\x90" + bytes(20)))
    assert malformed(b"").reason == "empty message"


def test_unknown_afi():
    e = malformed(bytes.fromhex("1234"), w.decode_address)
    assert e.reason == "unknown AFI 4660" and e.offset == 0


def test_accepts_bytearray_and_memoryview():
    raw = samples.encodings()[0]
    assert w.decode_control(bytearray(raw)) == w.decode_control(memoryview(raw)) == w.decode_control(raw)


# ---------------------------------------------------------------- LCAF

def nest_iid(depth: int) -> bytes:
    b = w.encode_address(A)
    for _ in range(depth):
        b = w.encode_address(w.InstanceId(1, w.decode_address(b)[0]))
    return b


def test_lcaf_depth_bound():
    w.decode_address(nest_iid(w.MAX_LCAF_DEPTH))
    assert "nested deeper" in malformed(nest_iid(w.MAX_LCAF_DEPTH + 1), w.decode_address).reason


def test_hostile_deep_nesting_is_malformed_not_recursion():
    # 5000 nested LCAF headers claiming to contain each other
    b = b""
    for i in range(5000):
        b = b"\x40\x03\x00\x00\x01\x00" + struct.pack("!H", len(b)) + b
    malformed(b[:65000], w.decode_address)


def test_unknown_lcaf_kept_byte_for_byte():
    b = bytes.fromhex("4003" "a5" "5a" "63" "77" "0005" "0102030405")
    a, end = w.decode_address(b)
    assert a == w.UnknownLcaf(0x63, bytes.fromhex("0102030405"), flags=0x5A, rsvd1=0xA5, rsvd2=0x77)
    assert end == len(b) and w.encode_address(a) == b


def test_known_lcaf_with_leftover_body_is_malformed():
    good = w.encode_address(w.InstanceId(3, A))
    bad = good[:6] + struct.pack("!H", len(good) - 8 + 2) + good[8:] + b"\x00\x00"
    assert "unparsed" in malformed(bad, w.decode_address).reason


def test_lcaf_length_beyond_data():
    good = w.encode_address(w.InstanceId(3, A))
    bad = good[:6] + struct.pack("!H", 200) + good[8:]
    assert "exceeds" in malformed(bad, w.decode_address).reason


def test_every_lcaf_type_round_trips():
    for a in samples.LCAFS:
        b = w.encode_address(a)
        assert w.decode_address(b) == (a, len(b))


def test_distinguished_name():
    b = bytes.fromhex("0011") + b"site-1.example\x00"
    assert w.decode_address(b) == (w.DistinguishedName("site-1.example"), len(b))
    assert "NUL" in malformed(b[:-1], w.decode_address).reason
    assert "UTF-8" in malformed(bytes.fromhex("0011ff00"), w.decode_address).reason


def test_json_lcaf_b_bit_and_optional_address():
    a = w.JsonData(b"\x00\x01", True, None)
    b = w.encode_address(a)
    assert b[4] == 14 and b[5] == 1      # type 14, B bit in Rsvd2
    assert w.decode_address(b)[0] == a


def test_elp_flags():
    b = w.encode_address(w.ExplicitLocatorPath((w.ElpHop(A, lookup=True, strict=True),)))
    assert b[8:10] == b"\x00\x05"


# ---------------------------------------------------------------- records

def test_mask_length_checked_for_ip_eids():
    raw = bytearray(w.MapReply(1, (w.EidRecord(V4("10.0.0.0"), 8),)).encode())
    raw[12 + 5] = 33
    assert "too long for IPv4" in malformed(bytes(raw)).reason


def test_record_fields_all_kept():
    rec = w.EidRecord(V4("10.0.0.0"), 8, (w.LocatorRecord(A, 1, 2, 3, 4, True, True, False, 0x1ABC),),
                      w.TTL_INFINITE, 5, True, 0xABC, 0x123, 0x9)
    m = w.MapReply(1, (rec,))
    assert w.decode_control(m.encode()) == m


def test_encode_rejects_out_of_range():
    with pytest.raises(ValueError):
        w.EidRecord(V4("10.0.0.0"), 8, act=8).encode()
    with pytest.raises(ValueError):
        w.LocatorRecord(A, priority=256).encode()
    with pytest.raises(ValueError):
        w.MapRequest(1, (), ()).encode()           # needs at least one ITR-RLOC
    with pytest.raises(ValueError):
        w.MapRegister(1 << 64, ()).encode()
    with pytest.raises(ValueError):
        w.MapReply(1, (), reserved=0x80000000).encode()


# ---------------------------------------------------------------- interop liberalities

def test_notify_with_xtr_id_but_no_i_bit():
    base = w.MapNotify(5, samples.RECORDS[:1], 1, 1, bytes(20))
    raw = base.encode() + bytes(range(24))
    m = w.decode_control(raw)
    assert m.xtr_id is None and m.trailer == bytes(range(24)) and m.records == base.records
    assert m.encode() == raw


def test_notify_r_bit_ms_rtr_authentication():
    # draft-ietf-lisp-nat-traversal: MS-RTR Key ID, length, data after the xTR-ID/site-ID
    m = w.MapNotify(5, samples.RECORDS[:1], 1, 1, bytes(20), True, 7, 8, trailer=b"\xee",
                    ms_rtr_key_id=0x0102, ms_rtr_auth_data=b"mac!")
    raw = m.encode()
    assert raw[-33:] == (7).to_bytes(16, "big") + (8).to_bytes(8, "big") + bytes.fromhex("01020004") + b"mac!\xee"
    assert w.decode_control(raw) == m
    assert "MS-RTR" in malformed(raw[:-4]).reason             # declared length beyond the message
    assert "MS-RTR" in malformed(raw[:-33 + 24 + 3]).reason    # header cut short
    bare = w.MapNotify(5, (), rtr=True)                        # R without the MS-RTR fields: accepted
    assert w.decode_control(bare.encode()) == bare
    with pytest.raises(ValueError):
        w.MapNotify(5, (), ms_rtr_key_id=1).encode()           # MS-RTR fields need R
    with pytest.raises(ValueError):
        w.MapNotify(5, (), rtr=True, trailer=b"x").encode()    # would decode as MS-RTR fields
    with pytest.raises(ValueError):
        w.MapNotify(5, (), rtr=True, ms_rtr_key_id=1 << 16).encode()


def test_register_r_bit_is_a_flag_not_reserved():
    raw = w.MapRegister(1, (), rtr=True).encode()
    assert struct.unpack_from("!I", raw)[0] == 0x31000000     # Wireshark lisp.mreg.flags.rtr
    m = w.decode_control(raw)
    assert m.rtr and m.reserved == 0 and m.encode() == raw
    with pytest.raises(ValueError):
        w.MapRegister(1, (), reserved=0x01000000).encode()


def test_notify_ack_without_records():
    raw = w.MapNotifyAck(77, (), 1, 2, bytes(32)).encode()
    m = w.decode_control(raw)
    assert type(m) is w.MapNotifyAck and m.records == () and m.nonce == 77


def test_rloc_probe_with_afi0_target():
    req = w.MapRequest(9, (w.RequestRecord(w.NO_ADDRESS, 0),), (A,), probe=True)
    assert w.decode_control(req.encode()) == req


def test_reserved_bits_kept():
    raw = bytearray(w.MapRegister(1, ()).encode())
    raw[1] |= 0x40                     # a bit lispers.net uses, reserved in RFC 9301
    m = w.decode_control(bytes(raw))
    assert m.reserved == 0x00400000 and m.encode() == bytes(raw)


def test_request_i_and_n_bits():
    """RFC 9437 section 4: I is bit 11 of the header (0x00100000); N is the
    top bit of each EID-record's reserved byte (IANA Map-Request-Record bit 0),
    not a header bit; xTR-ID (128) and site-ID (64) follow the records."""
    rec = w.RequestRecord(w.decode_address(bytes.fromhex("00010a000000"))[0], 8, w.REQUEST_RECORD_N)
    m = w.MapRequest(1, (rec,), (A,), xtr_id=(1 << 127) | 5, site_id=77)
    raw = m.encode()
    assert struct.unpack_from("!I", raw)[0] & 0x00180000 == 0x00100000
    assert m.notification_requested and raw[12 + 2 + 6] == 0x80        # after source EID, ITR-RLOC
    assert raw[-24:] == ((1 << 127) | 5).to_bytes(16, "big") + (77).to_bytes(8, "big")
    assert w.decode_control(raw) == m


def test_request_header_bit_0x00080000_is_reserved():
    """lispctl used to put N in the header; RFC 9437 has it in the records."""
    raw = bytearray(w.MapRequest(1, (), (A,)).encode())
    raw[1] |= 0x08
    m = w.decode_control(bytes(raw))
    assert not m.notification_requested and m.reserved == 0x00080000 and m.encode() == bytes(raw)


def test_request_bare_xtr_id_and_truncated_xtr_id():
    """lispers.net: I set, a 128-bit xTR-ID and no site-ID. Fewer than 16
    bytes after I: a plain Map-Request (the bytes kept as trailer)."""
    full = w.MapRequest(1, (), (A,), xtr_id=0xABC, site_id=None).encode()
    assert len(full) == len(w.MapRequest(1, (), (A,)).encode()) + 16
    m = w.decode_control(full)
    assert m.xtr_id == 0xABC and m.site_id is None and m.encode() == full
    cut = w.decode_control(full[:-3])
    assert cut.xtr_id is None and cut.trailer == full[-16:-3] and not cut.notification_requested


def test_register_xtr_id_truncated():
    raw = w.MapRegister(1, (), xtr_id=1, site_id=2).encode()
    assert "xTR-ID" in malformed(raw[:-1]).reason


# ---------------------------------------------------------------- ECM

def test_ecm_ipv4_inner_headers_valid():
    inner = w.MapRequest(1, (w.RequestRecord(V4("10.2.0.0"), 16),), (A,))
    e = w.EncapsulatedControlMessage(inner, V4("10.1.1.1"), V4("10.2.2.2"), 50000, 4342, to_ms=True, ttl=32)
    raw = e.encode()
    assert raw[:4] == b"\x81\x00\x00\x00"
    ip = raw[4:24]
    assert ip[0] == 0x45 and checksum(ip) == 0
    assert struct.unpack("!H", ip[2:4])[0] == len(raw) - 4
    sport, dport, ulen, ucs = struct.unpack("!HHHH", raw[24:32])
    assert (sport, dport, ulen, ucs) == (50000, 4342, len(raw) - 24, 0)
    d = w.decode_control(raw)
    assert (d.inner_src, d.inner_dst, d.inner_sport, d.inner_dport) == (V4("10.1.1.1"), V4("10.2.2.2"), 50000, 4342)
    assert d.message == inner and d.to_ms and not d.to_etr


def test_ecm_ipv6_udp_checksum_computed():
    e = w.EncapsulatedControlMessage(w.MapRegister(1, ()), C, V6("2001:db8::9"), 4342, 4342)
    raw = e.encode()
    src, dst = raw[12:28], raw[28:44]
    udp = raw[44:]
    pseudo = src + dst + struct.pack("!I3xB", len(udp), 17)
    assert struct.unpack("!H", udp[6:8])[0] != 0
    assert checksum(pseudo + udp) == 0


def test_ecm_ipv4_optional_udp_checksum():
    e = w.EncapsulatedControlMessage(w.MapRegister(1, ()), A, V4("192.0.2.9"), udp_checksum=True)
    raw = e.encode()
    udp = raw[24:]
    pseudo = raw[16:24] + struct.pack("!BBH", 0, 17, len(udp))
    assert checksum(pseudo + udp) == 0
    assert w.decode_control(raw) == e


def test_ecm_rejects_nested_fragmented_and_non_udp():
    inner = samples.messages()[-2]
    raw = bytearray(w.EncapsulatedControlMessage(w.MapReply(1, ()), A, A).encode())
    nested = bytes(raw[:32]) + inner.encode()
    assert "nested" in malformed(nested).reason
    frag = bytearray(raw)
    frag[10] = 0x20                    # MF
    assert "fragment" in malformed(bytes(frag)).reason
    tcp = bytearray(raw)
    tcp[13] = 6
    assert "not UDP" in malformed(bytes(tcp)).reason
    short = bytearray(raw)
    short[28:30] = b"\x00\x09"         # UDP length disagrees with IP
    assert "UDP length" in malformed(bytes(short)).reason


def test_ecm_inner_error_offsets_are_absolute():
    raw = w.EncapsulatedControlMessage(w.MapReply(1, (w.EidRecord(A, 32),)), A, A).encode()
    bad = bytearray(raw)
    bad[32 + 12 + 5] = 40              # inner record mask length
    bad = bytes(bad)
    e = malformed(bad)
    assert e.offset == 32 + 12 + 5


# ---------------------------------------------------------------- data header

def test_data_header_n_and_v_means_nonce():
    h = w.decode_data_header(bytes.fromhex("90abcdef00000001"))
    assert h.nonce_present and h.map_version and h.nonce == 0xABCDEF and h.source_map_version == 0
    h = w.decode_data_header(bytes.fromhex("10abc123" "00000001"))
    assert (h.source_map_version, h.dest_map_version) == (0xABC, 0x123)
    assert malformed(bytes(7), w.decode_data_header).reason.startswith("truncated data header")


# ---------------------------------------------------------------- conversions

def test_eid_prefix_conversions():
    p = EidPrefix.parse("[5]10.1.0.0/16")
    addr, ml = w.from_eid_prefix(p)
    assert addr == w.InstanceId(5, V4("10.1.0.0")) and ml == 16
    assert w.to_eid_prefix(addr, ml) == p
    p0 = EidPrefix.parse("2001:db8:1::/48")
    assert w.from_eid_prefix(p0) == (V6("2001:db8:1::"), 48)
    assert w.from_eid_prefix(p0, iid_lcaf=True) == (w.InstanceId(0, V6("2001:db8:1::")), 48)
    with pytest.raises(ValueError):
        w.from_eid_prefix(p, iid_lcaf=False)
    # host bits sent by sloppy peers are cleared
    assert w.to_eid_prefix(V4("10.1.2.3"), 16) == EidPrefix(0, ip_network("10.1.0.0/16"))
    assert w.to_eid_prefix(V4("10.1.2.3"), 0) == EidPrefix(0, ip_network("0.0.0.0/0"))
    for bad in [(w.InstanceId(1 << 24, A), 8), (A, 33), (w.NO_ADDRESS, 0), (w.DistinguishedName("x"), 0)]:
        with pytest.raises(w.MalformedMessage):
            w.to_eid_prefix(*bad)


def test_record_and_rloc_conversions():
    p = EidPrefix.parse("[7]fd00::/8")
    rec = w.eid_record(p, [Rloc(A, 1, 60), w.LocatorRecord(C, 2, 40, reachable=False)], ttl=10, act=0)
    assert w.record_prefix(rec) == p
    assert [w.locator_to_rloc(l) for l in rec.locators] == [Rloc(A, 1, 60, True), Rloc(C, 2, 40, False)]
    assert w.rloc_to_locator(Rloc(A, 3, 30, False), local=True) == w.LocatorRecord(A, 3, 30, 255, 0, True, False,
                                                                                   False)
    with pytest.raises(w.MalformedMessage):
        w.locator_to_rloc(w.LocatorRecord(w.AfiList((A, C))))
    assert w.record_prefix(w.request_record(p)) == p

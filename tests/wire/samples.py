"""A fixed, varied set of valid messages (every type, every LCAF) used as
seeds for mutation fuzzing and by other tests needing realistic bytes."""
from __future__ import annotations

from ipaddress import IPv4Address as V4, IPv6Address as V6

from lispctl import wire as w

A = V4("192.0.2.1")
B = V4("198.51.100.7")
C = V6("2001:db8::1")
EID4 = V4("10.1.0.0")
EID6 = V6("fd00:1::")

LCAFS = [
    w.AfiList((A, C)),
    w.InstanceId(7, EID4, 8),
    w.NatTraversal(4342, 61000, V4("203.0.113.5"), A, V4("10.0.0.2"), (B, C)),
    w.ExplicitLocatorPath((w.ElpHop(A, True, False, True), w.ElpHop(C, False, True, False))),
    w.SourceDestKey(V4("10.2.0.0"), EID4, 16, 16),
    w.ReplicationList((w.ReplicationEntry(A, 1), w.ReplicationEntry(C, 2))),
    w.JsonData(b'{"k": 1}', False, A),
    w.JsonData(b"\x01\x02", True, None),
    w.KeyValue(w.DistinguishedName("name"), A),
    w.UnknownLcaf(5, b"\x00" * 12, 1, 2, 3),
    w.InstanceId(3, w.AfiList((w.InstanceId(1, w.KeyValue(A, w.MacAddress(b"\x02\x00\x00\x00\x00\x01"))),))),
]

LOCS = (w.LocatorRecord(A, 1, 100, 255, 0, True, False, True),
        w.LocatorRecord(C, 2, 50, 1, 1, False, True, False),
        w.LocatorRecord(LCAFS[3]))

RECORDS = (
    w.EidRecord(EID4, 16, LOCS[:2], 1440, 0, True, 7),
    w.EidRecord(w.InstanceId(5, EID6), 48, LOCS, w.TTL_INFINITE, 2),
    w.EidRecord(w.NO_ADDRESS, 0, (), 15, 3),
)


def messages() -> list:
    req = w.MapRequest(0x0123456789ABCDEF, (w.RequestRecord(EID4, 24), w.RequestRecord(w.InstanceId(5, EID6), 64)),
                       (A, C), EID4, smr=True, map_reply_record=RECORDS[0], xtr_id=1 << 100, site_id=3)
    plain = [
        req,
        w.MapRequest(1, (w.RequestRecord(w.NO_ADDRESS, 0),), (A,), probe=True),
        w.MapReply(2, RECORDS, probe=True),
        w.MapRegister(3, RECORDS[:2], 1, 1, bytes(20), want_map_notify=True, xtr_id=9, site_id=1),
        w.MapRegister(4, (RECORDS[0],), 2, 2, bytes(32)),
        w.MapNotify(5, RECORDS[:1], 1, 1, bytes(20), trailer=bytes(24)),
        w.MapNotifyAck(6, (), 1, 2, bytes(32)),
        w.MapReferral(7, (w.ReferralRecord(EID4, 8, LOCS[:1], 60, 1, True, True, 0,
                                           (w.Signature(1, 2, 3, 4, 5, b"sig"),)),)),
        w.InfoRequest(8, EID4, 16, 1, 1, bytes(20), 1440),
        w.InfoReply(9, EID4, 16, LCAFS[2], 1, 1, bytes(20), 1440),
        w.SharedExtension(1, b"opaque"),
        w.MapReply(10, tuple(w.EidRecord(l, 0, LOCS[:1]) for l in LCAFS)),
    ]
    ecms = [
        w.EncapsulatedControlMessage(req, V4("10.1.2.3"), V4("10.9.9.9"), 61000, 4342, to_ms=True),
        w.EncapsulatedControlMessage(plain[3], C, V6("2001:db8::2"), 4342, 4342, security=True),
    ]
    return plain + ecms


def encodings() -> list[bytes]:
    return [m.encode() for m in messages()]


def address_encodings() -> list[bytes]:
    return [w.encode_address(a) for a in LCAFS + [A, C, w.NO_ADDRESS, w.DistinguishedName("x.example")]]


def data_headers() -> list[bytes]:
    return [w.DataHeader(True, True, True, False, True, 0, 0xABCDEF, instance_id=5, lsb=3).encode(),
            w.DataHeader(False, False, False, True, False, 1, 0, 12, 34, 0, 0xFFFFFFFF).encode()]

"""Hand-written vectors from the RFC layouts (not produced by our encoder)."""
from ipaddress import IPv4Address as V4, IPv6Address as V6

from lispctl import wire as w
from lispctl.mapping.types import EidPrefix

# RFC 9301 5.6 Map-Register: M bit, 1 record, key ID 1, alg 1 (20-byte auth, zeros here)
REGISTER_HEX = (
    "30000101"                              # type 3, P=S=I=0, M=1, record count 1
    "0102030405060708"                      # nonce
    "01" "01" "0014"                        # key ID 1, algorithm 1, auth length 20
    + "00" * 20 +                           # auth data
    "000005a0"                              # record TTL 1440 minutes
    "02" "18" "1000" "0000"                 # 2 locators, /24, ACT 0 + A, rsvd/version 0
    "0001" "0a010100"                       # EID 10.1.1.0
    "0164ff00" "0005" "0001" "c0000201"     # prio 1 weight 100, mprio 255/0, L+R, 192.0.2.1
    "0232ff00" "0001" "0002" "20010db8000000000000000000000002"  # prio 2 weight 50, R, 2001:db8::2
)

# RFC 9301 5.2 Map-Request: s bit (SMR-invoked), IRC 0, 2 records (one in instance 5 via LCAF)
REQUEST_HEX = (
    "10400002"                              # type 1, s=1, IRC 0, record count 2
    "a1b2c3d4e5f60718"                      # nonce
    "0001" "0a010105"                       # source EID 10.1.1.5
    "0001" "c0000201"                       # ITR-RLOC 192.0.2.1
    "00" "20" "0001" "0a020202"             # record: /32 10.2.2.2
    "00" "18" "4003" "00" "00" "02" "00" "000a" "00000005" "0001" "0a020200"  # [5] 10.2.2.0/24
)

# RFC 9300 5.3 data header: N and I set, nonce 0x123456, IID 0xabcd, LSBs 0x03
DATA_HEX = "88123456" "00abcd03"

# RFC 9301 5.4 Map-Reply, negative: P=0, 1 record, TTL 15, 0 locators, /8 ACT 2 (send-Map-Request)
REPLY_HEX = "20000001" "00000000000000ff" "0000000f" "00" "08" "4000" "0000" "0001" "0a000000"


def test_map_register_golden():
    b = bytes.fromhex(REGISTER_HEX)
    m = w.decode_control(b)
    assert m == w.MapRegister(
        0x0102030405060708,
        (w.EidRecord(V4("10.1.1.0"), 24, (
            w.LocatorRecord(V4("192.0.2.1"), 1, 100, 255, 0, local=True, reachable=True),
            w.LocatorRecord(V6("2001:db8::2"), 2, 50, 255, 0, reachable=True)), 1440, 0, True),),
        key_id=1, alg_id=1, auth_data=bytes(20), want_map_notify=True)
    assert m.encode() == b


def test_map_request_golden():
    b = bytes.fromhex(REQUEST_HEX)
    m = w.MapRequest(0xA1B2C3D4E5F60718,
                     (w.RequestRecord(V4("10.2.2.2"), 32), w.RequestRecord(w.InstanceId(5, V4("10.2.2.0")), 24)),
                     (V4("192.0.2.1"),), V4("10.1.1.5"), smr_invoked=True)
    assert m.encode() == b
    assert w.decode_control(b) == m
    assert [w.record_prefix(r) for r in m.records] == [EidPrefix.parse("10.2.2.2/32"),
                                                       EidPrefix.parse("[5]10.2.2.0/24")]


def test_data_header_golden():
    h = w.DataHeader(nonce_present=True, instance_id_present=True, nonce=0x123456, instance_id=0xABCD, lsb=3)
    assert h.encode().hex() == DATA_HEX
    assert w.decode_data_header(bytes.fromhex(DATA_HEX)) == h


def test_negative_map_reply_golden():
    m = w.MapReply(0xFF, (w.EidRecord(V4("10.0.0.0"), 8, (), 15, act=2),))
    assert m.encode().hex() == REPLY_HEX
    assert w.decode_control(bytes.fromhex(REPLY_HEX)) == m

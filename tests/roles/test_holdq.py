"""Packets held while a destination resolves (roles/holdq.py)."""
import ipaddress

from lispctl.mapping.types import EidPrefix, Rloc
from lispctl.roles.holdq import HoldQueue, choose_locator, encapsulate, resolution_timeout
from lispctl.wire.data import decode_data_header

ip = ipaddress.ip_address
E = EidPrefix.parse


def pkt(dst: str, n: int = 0, size: int = 100) -> bytes:
    """An IPv4/UDP packet (only the fields holdq reads matter)."""
    d = ip(dst).packed
    hdr = bytes([0x45, 0]) + size.to_bytes(2, "big") + bytes([0, 0, 0, 0, 64, 17, 0, 0]) + ip("10.1.0.10").packed + d
    return hdr + (n.to_bytes(4, "big") * ((size - 20) // 4 + 1))[: size - 20]


def test_released_in_order_when_the_mapping_is_installed():
    q = HoldQueue(max_age_s=3.0)
    assert q.hold(0, ip("10.2.0.1"), pkt("10.2.0.1", 1), 0.0)
    assert q.hold(0, ip("10.2.0.1"), pkt("10.2.0.1", 2), 0.1)
    assert q.hold(0, ip("10.3.0.1"), pkt("10.3.0.1", 3), 0.1)
    assert q.hold(7, ip("10.2.0.2"), pkt("10.2.0.2", 4), 0.1)     # other instance
    out = q.release(E("10.2.0.0/16"), True, 0.5)
    assert [p for _, p in out] == [pkt("10.2.0.1", 1), pkt("10.2.0.1", 2)]
    assert [t for t, _ in out] == [0.0, 0.1]
    assert len(q) == 2 and q.counters["released"] == 2
    assert q.release(E("10.2.0.0/16"), True, 0.5) == []            # sent once only


def test_negative_mapping_discards():
    q = HoldQueue()
    q.hold(0, ip("10.2.0.1"), pkt("10.2.0.1"), 0.0)
    assert q.release(E("10.2.0.0/16"), False, 0.5) == []
    assert len(q) == 0 and q.counters["discarded_negative"] == 1


def test_nothing_is_held_past_the_resolution_timeout():
    q = HoldQueue(max_age_s=2.0)
    for i in range(10):
        q.hold(0, ip(f"10.2.0.{i + 1}"), pkt(f"10.2.0.{i + 1}"), i * 0.1)
    assert q.next_deadline() == 2.0
    assert q.expire(1.99) == 0 and len(q) == 10
    assert q.expire(2.45) == 5
    assert q.expire(2.95) == 5
    assert len(q) == 0 and q.bytes == 0 and q.next_deadline() is None
    assert q.release(E("10.2.0.0/16"), True, 3.0) == []            # expired ones are gone


def test_bounds_hold_under_a_flood_of_distinct_destinations():
    q = HoldQueue(per_destination=4, max_packets=64, max_bytes=32 * 1024, max_age_s=3.0)
    now, body = 0.0, pkt("10.0.0.1", size=600)
    for i in range(20_000):
        now = i * 5e-5                                            # 20,000 misses in 1 s
        if i % 5000 == 4999:
            q.release(E(f"10.0.{i // 256 - 1}.0/24"), True, now)  # some resolve meanwhile
        q.hold(0, ipaddress.IPv4Address(0x0A000000 + i), body, now)
        assert len(q) <= 64 and q.bytes <= 32 * 1024 and len(q._order) <= 2 * 64
    assert len(q) == 32 * 1024 // 600                              # the byte bound bit first
    assert q.counters["dropped_full"] == 20_000 - q.counters["held"]
    # one destination cannot take more than its share
    q2 = HoldQueue(per_destination=4)
    assert sum(q2.hold(0, ip("10.9.0.1"), pkt("10.9.0.1"), 0.0) for _ in range(10)) == 4
    assert q2.counters["dropped_destination_full"] == 6
    # and when the flood stops, everything leaves within the timeout
    assert q.next_deadline() <= now + 3.0
    q.expire(now + 3.0)
    assert len(q) == 0 and q.bytes == 0 and not q._dests and q.next_deadline() is None
    # mixed families in one queue (the FIFO never compares addresses)
    q3 = HoldQueue(max_packets=2)
    q3.hold(0, ip("10.9.0.1"), b"x", 0.0)
    q3.hold(0, ip("fd00::1"), b"y", 0.0)
    q3.release(E("10.9.0.0/16"), True, 0.0)
    q3.hold(0, ip("10.9.0.1"), b"x", 0.0)
    q3.hold(0, ip("10.9.0.2"), b"x", 0.0)
    q3._compact()
    assert len(q3._order) == 2


def test_resolution_timeout_follows_the_backoff():
    assert resolution_timeout(1.0, 2.0, 30.0, 4) == 1 + 2 + 4 + 8 + 16
    assert resolution_timeout(1.0, 2.0, 3.0, 3) == 1 + 2 + 3 + 3


def test_encapsulate_writes_the_data_planes_header():
    p = pkt("10.2.0.1")
    dst, payload = encapsulate(p, 5, (Rloc(ip("192.0.2.2")),), 0x123456)
    assert dst == ip("192.0.2.2") and payload[8:] == p
    h = decode_data_header(payload[:8])
    assert h.nonce_present and h.nonce == 0x123456 and h.instance_id_present and h.instance_id == 5
    assert h.lsb_enabled and h.lsb == 1
    dst, payload = encapsulate(p, 0, (Rloc(ip("192.0.2.2")),), 1)
    assert not decode_data_header(payload[:8]).instance_id_present


def test_locator_choice_follows_priority_and_reachability():
    rl = (Rloc(ip("192.0.2.2"), priority=2), Rloc(ip("192.0.2.3"), priority=1),
          Rloc(ip("192.0.2.4"), priority=1, reachable=False))
    assert {choose_locator(rl, pkt(f"10.2.0.{i}")).address for i in range(1, 50)} == {ip("192.0.2.3")}
    assert choose_locator((Rloc(ip("192.0.2.2"), priority=255),), pkt("10.2.0.1")) is None
    assert encapsulate(pkt("10.2.0.1"), 0, (), 1) is None

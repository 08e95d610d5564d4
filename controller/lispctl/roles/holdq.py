"""Packets held while their destination resolves (sans-IO).

The data plane cannot queue: when a miss would drop a packet (miss action
drop, no Proxy-ETR), it copies the packet (from its IP header, up to
LISP_MISS_PKT_MAX bytes) into the miss event. The daemon holds it here until
the destination's mapping is installed, then sends it encapsulated toward
the mapping's locator (`encapsulate`), or natively for a natively-forward
negative mapping; a negative mapping that drops, or no mapping within
`max_age_s` (the ITR's resolution timeout), means the miss action (drop)
stands and the packet is discarded.

Bounded everywhere, because misses are attacker-driven: at most
`per_destination` packets per (instance, destination), `max_packets` and
`max_bytes` in total, `max_age_s` each. Whatever does not fit is dropped and
counted. Holding and expiring are O(1) per packet (one age for all, so the
oldest packet overall is the first of a FIFO); releasing walks the held
destinations, of which there are at most `max_packets`.
"""
from __future__ import annotations

import ipaddress
import struct
import zlib
from collections import Counter, deque
from dataclasses import dataclass, field

from lispctl.mapping.types import EidPrefix, IPAddress, Rloc
from lispctl.wire.data import DataHeader

LISP_DATA_PORT = 4341
# Locator selection as the data plane does it (lisp_maps.h).
_MAX_LOCATORS, _LEVELS, _SLOTS = 8, 4, 64


@dataclass
class _Dest:
    packets: deque = field(default_factory=deque)     # (held at, packet bytes)


class HoldQueue:
    def __init__(self, *, per_destination: int = 8, max_packets: int = 256,
                 max_bytes: int = 512 * 1024, max_age_s: float = 3.0) -> None:
        self.per_destination = per_destination
        self.max_packets = max_packets
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self._dests: dict[tuple[int, IPAddress], _Dest] = {}
        # (held at, key) of every packet in arrival order; entries of packets
        # released meanwhile are skipped when they come up (and compacted)
        self._order: deque[tuple[float, tuple[int, IPAddress]]] = deque()
        self.packets = 0
        self.bytes = 0
        self.counters: Counter[str] = Counter(dict.fromkeys(
            ("held", "released", "expired", "discarded_negative", "dropped_destination_full",
             "dropped_full"), 0))

    def __len__(self) -> int:
        return self.packets

    def hold(self, iid: int, dst: IPAddress, packet: bytes, now: float) -> bool:
        """Keep `packet` (an IP packet to `dst` in instance `iid`) until
        release() or expiry. False (and counted) when a bound is hit."""
        self.expire(now)
        key = (iid, dst)
        d = self._dests.get(key)
        if d is not None and len(d.packets) >= self.per_destination:
            self.counters["dropped_destination_full"] += 1
            return False
        if self.packets >= self.max_packets or self.bytes + len(packet) > self.max_bytes:
            self.counters["dropped_full"] += 1
            return False
        if d is None:
            d = self._dests[key] = _Dest()
        d.packets.append((now, packet))
        self._order.append((now, key))
        if len(self._order) > 2 * self.max_packets:
            self._compact()
        self.packets += 1
        self.bytes += len(packet)
        self.counters["held"] += 1
        return True

    def release(self, eid: EidPrefix, forward: bool, now: float) -> list[tuple[float, bytes]]:
        """A mapping for `eid` was installed: (held at, packet) for each packet
        it covers, in arrival order per destination, when it forwards them
        (locators, or natively-forward); a negative mapping that drops
        discards them (the miss action, drop, stands)."""
        self.expire(now)
        out: list[tuple[float, bytes]] = []
        for key in [k for k in self._dests if k[0] == eid.iid and k[1].version == eid.prefix.version
                    and k[1] in eid.prefix]:
            d = self._dests.pop(key)
            for held_at, pkt in d.packets:
                self.packets -= 1
                self.bytes -= len(pkt)
                out.append((held_at, pkt))
        if not forward:
            self.counters["discarded_negative"] += len(out)
            return []
        self.counters["released"] += len(out)
        return out

    def expire(self, now: float) -> int:
        """Drop packets held longer than max_age_s; returns how many."""
        cutoff = now - self.max_age_s
        n = 0
        order = self._order
        while order and order[0][0] <= cutoff:
            t, key = order.popleft()
            d = self._dests.get(key)
            if d is None or d.packets[0][0] != t:
                continue                       # released meanwhile
            _, pkt = d.packets.popleft()
            self.packets -= 1
            self.bytes -= len(pkt)
            n += 1
            if not d.packets:
                del self._dests[key]
        self.counters["expired"] += n
        return n

    def _compact(self) -> None:
        self._order = deque(sorted(((t, k) for k, d in self._dests.items() for t, _ in d.packets),
                                  key=lambda e: e[0]))

    def next_deadline(self) -> float | None:
        order = self._order
        while order:
            t, key = order[0]
            d = self._dests.get(key)
            if d is not None and d.packets[0][0] == t:
                return t + self.max_age_s
            order.popleft()                    # released meanwhile
        return None


def resolution_timeout(interval: float, backoff: float, max_interval: float, retries: int) -> float:
    """How long the ITR keeps asking before it gives up: the first request
    and `retries` retries, each waiting `interval` (backed off) for an answer."""
    total, step = 0.0, interval
    for _ in range(retries + 1):
        total += step
        step = min(step * backoff, max_interval)
    return total


def _flow_key(packet: bytes) -> bytes:
    """Addresses, protocol and ports (when there is a first fragment's L4
    header): one flow keeps one locator."""
    if packet[:1] and packet[0] >> 4 == 4 and len(packet) >= 20:
        ihl = (packet[0] & 0xF) * 4
        key = packet[9:10] + packet[12:20]
        frag = struct.unpack_from("!H", packet, 6)[0] & 0x1FFF
        if not frag and packet[9] in (6, 17) and len(packet) >= ihl + 4:
            key += packet[ihl:ihl + 4]
        return key
    if len(packet) >= 40:
        key = packet[6:7] + packet[8:40]
        if packet[6] in (6, 17) and len(packet) >= 44:
            key += packet[40:44]
        return key
    return packet[:40]


def choose_locator(rlocs: tuple[Rloc, ...] | list[Rloc], packet: bytes) -> Rloc | None:
    """The locator for this packet's flow: priority level, then weight, as
    the data plane's slot tables apportion them (locsets.py)."""
    from lispctl.datapath.locsets import build_locator_set
    ls = build_locator_set(rlocs, _MAX_LOCATORS, _LEVELS, _SLOTS)
    if not ls.levels:
        return None
    slot = zlib.crc32(_flow_key(packet)) % _SLOTS
    return ls.locators[ls.levels[0][slot]]


def encapsulate(packet: bytes, iid: int, rlocs, nonce: int) -> tuple[IPAddress, bytes] | None:
    """(outer destination, UDP payload = LISP header + packet) for a held
    packet, or None when the mapping has no usable locator. The header is
    what the data plane writes (RFC 9300 5.3): N with a nonce, L with the
    locator-status bits, I with the instance ID when it is not 0."""
    from lispctl.datapath.locsets import build_locator_set
    rloc = choose_locator(rlocs, packet)
    if rloc is None:
        return None
    lsb = build_locator_set(rlocs, _MAX_LOCATORS, _LEVELS, _SLOTS).lsb
    hdr = DataHeader(nonce_present=True, lsb_enabled=True, instance_id_present=iid != 0,
                     nonce=nonce & 0xFFFFFF, instance_id=iid, lsb=lsb)
    return ipaddress.ip_address(rloc.address), hdr.encode() + packet

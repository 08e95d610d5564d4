"""Helpers shared by the roles: decoding once, nonces, reply addressing, counters."""
from __future__ import annotations

import ipaddress
import random
from collections import Counter
from typing import Callable

from lispctl.mapping.types import IPAddress
from lispctl.roles.base import CONTROL_PORT, Endpoint
from lispctl.wire import MAP_REGISTER, decode_control
from lispctl.wire.regmemo import RegisterMemo

# TTLs we hand to InstallMapping for entries that never expire (static
# map-cache, TTL_INFINITE): finite so the API can print them as JSON.
FOREVER_S = float(0xFFFFFFFF * 60)

NonceSource = Callable[[], int]


def nonce_source(rng: random.Random | None = None) -> NonceSource:
    """64-bit nonces; pass a seeded random.Random in tests, None for the OS RNG."""
    r = rng if rng is not None else random.SystemRandom()
    return lambda: r.getrandbits(64)


class Decoded:
    """The daemon hands the same datagram to every role; decode it once.

    Keeps the last (bytes object, message) pair; identity, not equality, so
    two equal datagrams arriving back to back are still decoded separately
    (cheap) and a memo can never outlive its bytes. Map-Registers go through
    a RegisterMemo: a Map-Server mostly sees refreshes of unchanged records."""
    __slots__ = ("_data", "_msg", "_registers")

    def __init__(self) -> None:
        self._data: bytes | None = None
        self._msg = None
        self._registers = RegisterMemo()

    def __call__(self, data: bytes):
        if data is self._data:
            return self._msg
        if type(data) is bytes and data and data[0] >> 4 == MAP_REGISTER:
            msg = self._registers(data)  # same result (or error) as decode_control
        else:
            msg = decode_control(data)   # raises MalformedMessage
        self._data, self._msg = data, msg
        return msg


decode = Decoded()


def ip_only(addrs) -> list[IPAddress]:
    return [a for a in addrs if isinstance(a, (ipaddress.IPv4Address, ipaddress.IPv6Address))]


def reply_target(itr_rlocs, port: int, prefer: list[IPAddress] | None = None) -> Endpoint | None:
    """Where a Map-Reply goes: an ITR-RLOC (RFC 9301 5.2), preferring one of a
    family we have a local RLOC in, at the port the request came from."""
    ips = ip_only(itr_rlocs)
    if not ips:
        return None
    if prefer:
        fams = {a.version for a in prefer}
        for a in ips:
            if a.version in fams:
                return Endpoint(a, port or CONTROL_PORT)
    return Endpoint(ips[0], port or CONTROL_PORT)


class Counters(Counter):
    def snapshot(self) -> dict:
        return dict(sorted(self.items()))


class TokenBucket:
    """`rate` tokens per second, at most `burst` saved up; starts full."""
    __slots__ = ("rate", "burst", "tokens", "at")

    def __init__(self, rate: float, burst: float, now: float = 0.0) -> None:
        self.rate, self.burst, self.tokens, self.at = rate, max(1.0, burst), max(1.0, burst), now

    def _fill(self, now: float) -> None:
        if now > self.at:
            self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
            self.at = now

    _EPS = 1e-9              # float refills must not leave 0.9999999 tokens forever short

    def take(self, now: float) -> bool:
        self._fill(now)
        if self.tokens >= 1.0 - self._EPS:
            self.tokens = max(0.0, self.tokens - 1.0)
            return True
        return False

    def wait(self, now: float) -> float:
        """Seconds until take() can succeed (0 when it can now)."""
        self._fill(now)
        if self.tokens >= 1.0 - self._EPS:
            return 0.0
        return (1.0 - self.tokens) / self.rate + self._EPS if self.rate > 0 else 3600.0


class SourceLimiter:
    """A token bucket per source address plus one for all sources together.
    At most `max_sources` buckets are kept (the least recently seen goes), so
    an attacker spraying addresses costs memory bounded by max_sources; a
    forgotten source starts again with a full (small) bucket."""

    def __init__(self, per_source: float, per_source_burst: float, total: float, total_burst: float,
                 max_sources: int = 4096) -> None:
        self.per_source, self.per_source_burst = per_source, per_source_burst
        self.total = TokenBucket(total, total_burst)
        self.max_sources = max_sources
        self._buckets: dict = {}

    def allow(self, source, now: float) -> str | None:
        """None when allowed, else why not: "per_source" or "overall"."""
        b = self._buckets.pop(source, None)
        if b is None:
            b = TokenBucket(self.per_source, self.per_source_burst, now)
            if len(self._buckets) >= self.max_sources:
                del self._buckets[next(iter(self._buckets))]     # least recently seen
        self._buckets[source] = b                                  # now the most recent
        if not b.take(now):
            return "per_source"
        if not self.total.take(now):
            b.tokens += 1.0                                        # not this source's fault
            return "overall"
        return None

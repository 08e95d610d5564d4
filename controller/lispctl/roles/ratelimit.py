"""Token buckets for what peers can make us do: one bucket per key (a
requester's address) and one overall, both refilled from the time passed in
(sans-IO). The per-key bucket is asked first, so a flooding source spends only
its own tokens and leaves the overall budget to everyone else."""
from __future__ import annotations

from typing import Hashable

PER_KEY = "per-source"
OVERALL = "overall"


class RateLimiter:
    """allow(key, now) -> None when allowed, else PER_KEY or OVERALL.

    Rates are events per second, each bucket holds `burst_s` seconds' worth;
    a rate of 0 disables that limit. The key table is bounded: when it holds
    max_keys keys it is cleared (spoofed sources cannot grow it; they then
    meet the overall limit)."""
    __slots__ = ("per_key", "overall", "burst_s", "max_keys", "_keys", "_total", "_total_at")

    def __init__(self, per_key: float, overall: float, *, burst_s: float = 1.0, max_keys: int = 4096) -> None:
        self.per_key = per_key
        self.overall = overall
        self.burst_s = burst_s
        self.max_keys = max_keys
        self._keys: dict[Hashable, list[float]] = {}      # key -> [tokens, last refill]
        self._total = overall * burst_s
        self._total_at = float("-inf")

    def allow(self, key: Hashable, now: float) -> str | None:
        rate = self.per_key
        if rate:
            cap = rate * self.burst_s
            b = self._keys.get(key)
            if b is None:
                if len(self._keys) >= self.max_keys:
                    self._keys.clear()
                b = self._keys[key] = [cap, now]
            else:
                tokens = b[0] + (now - b[1]) * rate
                b[0] = cap if tokens > cap else tokens
                b[1] = now
            if b[0] < 1.0:
                return PER_KEY
            b[0] -= 1.0
        rate = self.overall
        if rate:
            cap = rate * self.burst_s
            tokens = self._total + (now - self._total_at) * rate if self._total_at != float("-inf") else cap
            self._total = cap if tokens > cap else tokens
            self._total_at = now
            if self._total < 1.0:
                return OVERALL
            self._total -= 1.0
        return None

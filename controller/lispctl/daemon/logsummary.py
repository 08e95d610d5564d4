"""Log lines a peer can cause, bounded: per event kind, the first event of a
10 s window is logged in full and the rest are counted (per peer address)
and logged as one summary line when the window closes:

    ms: negative-map-reply: 4998 more in the last 10 s, from 203.0.113.66 (4990), 203.0.113.5 (8)

Only above debug; at debug every event is logged as it happens. The daemon
calls offer() per event and flush() when due() has passed (time in, lines
out: no clock, no logger here)."""
from __future__ import annotations

from dataclasses import dataclass, field

WINDOW_S = 10.0
_MAX_PEERS = 64           # peers counted by name per window; the rest as "others"
_SHOWN_PEERS = 5


@dataclass
class _Window:
    ends: float
    count: int = 0
    peers: dict = field(default_factory=dict)
    others: int = 0


class LogSummary:
    def __init__(self, window_s: float = WINDOW_S) -> None:
        self.window_s = window_s
        self._open: dict[tuple[str, str], _Window] = {}       # (role, kind) -> window

    def offer(self, role: str, kind: str, peer, text: str, now: float) -> str | None:
        """The line to log now (the first of its window), or None (counted)."""
        w = self._open.get((role, kind))
        if w is None:
            self._open[(role, kind)] = _Window(now + self.window_s)
            return f"{role}: {text} (more {kind} events summarised every {self.window_s:g} s)"
        w.count += 1
        if peer is not None:
            if peer in w.peers:
                w.peers[peer] += 1
            elif len(w.peers) < _MAX_PEERS:
                w.peers[peer] = 1
            else:
                w.others += 1
        return None

    def due(self) -> float | None:
        return min((w.ends for w in self._open.values()), default=None)

    def flush(self, now: float) -> list[str]:
        """Summaries of the windows that ended by now (closing them)."""
        lines = []
        for key in [k for k, w in self._open.items() if w.ends <= now]:
            w = self._open.pop(key)
            if not w.count:
                continue
            role, kind = key
            top = sorted(w.peers.items(), key=lambda kv: -kv[1])
            who = ", ".join(f"{p} ({n})" for p, n in top[:_SHOWN_PEERS])
            rest = sum(n for _, n in top[_SHOWN_PEERS:]) + w.others
            if rest:
                who += f", others ({rest})"
            lines.append(f"{role}: {kind}: {w.count} more in the last {self.window_s:g} s"
                         + (f", from {who}" if who else ""))
        return lines

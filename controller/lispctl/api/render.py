"""Human output of the CLI: aligned tables from the API's JSON."""
from __future__ import annotations

import json
from typing import Any, Callable, Sequence

Column = tuple[str, Callable[[dict], Any]]


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, dict):
        return " ".join(f"{k}={cell(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(cell(v) for v in value) or "-"
    return str(value)


def table(rows: Sequence[dict], columns: Sequence[Column], empty: str = "(none)") -> str:
    if not rows:
        return empty
    grid = [[h for h, _ in columns]] + [[cell(get(r)) for _, get in columns] for r in rows]
    widths = [max(len(line[i]) for line in grid) for i in range(len(columns))]
    out = []
    for line in grid:
        out.append("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip())
    return "\n".join(out)


def auto_columns(rows: Sequence[dict], first: Sequence[str] = ()) -> list[Column]:
    """Columns for rows whose shape the CLI does not know in advance (role snapshots)."""
    keys: list[str] = [k for k in first if any(k in r for r in rows)]
    for r in rows:
        keys.extend(k for k in r if k not in keys)
    return [(k.upper().replace("_", "-"), _getter(k)) for k in keys]


def _getter(k: str) -> Callable[[dict], Any]:
    return lambda r: r.get(k)


def rlocs_cell(rlocs: list[dict] | None) -> str:
    """'192.0.2.1 p1/w100, 2001:db8::1 p2/w100 (down)'"""
    parts = []
    for r in rlocs or []:
        text = f"{r.get('address')} p{r.get('priority')}/w{r.get('weight')}"
        if r.get("reachable") is False or r.get("state") in ("down", "unreachable"):
            text += " (down)"
        parts.append(text)
    return ", ".join(parts) or "-"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds >= 10 * 365 * 86400:      # static entries carry a "forever" TTL
        return "never"
    s = int(seconds)
    if s >= 86400:
        return f"{s // 86400}d{s % 86400 // 3600:02d}h"
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{seconds:.0f}s" if seconds >= 10 else f"{seconds:.1f}s"


def dump_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=False, default=str)

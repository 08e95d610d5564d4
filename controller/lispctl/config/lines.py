"""Find the line of a key path in TOML text.

tomllib reports no positions for valid documents, yet a person fixing a
config wants "line 12", so we scan the text ourselves. This is not a TOML
parser: it only tracks table headers, array-of-tables indexes and `key =`
lines, which is all an error locator needs. Keys inside inline tables or
multi-line values resolve to the line of the enclosing key.
"""
from __future__ import annotations

import re

Path = tuple[str, ...]

_BARE = re.compile(r"[A-Za-z0-9_-]+")


def _split_key(text: str) -> list[str] | None:
    """'a."b.c".d' -> ['a', 'b.c', 'd']; None when it is not a key."""
    parts: list[str] = []
    i, n = 0, len(text)
    while True:
        while i < n and text[i] in " \t":
            i += 1
        if i >= n:
            return None
        if text[i] in "\"'":
            q = text[i]
            j = text.find(q, i + 1)
            if j < 0:
                return None
            parts.append(text[i + 1:j])
            i = j + 1
        else:
            m = _BARE.match(text, i)
            if not m:
                return None
            parts.append(m.group())
            i = m.end()
        while i < n and text[i] in " \t":
            i += 1
        if i >= n:
            return parts
        if text[i] != ".":
            return None
        i += 1


def _strip_comment(line: str) -> str:
    out, quote = [], None
    for ch in line:
        if quote:
            if ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch == "#":
            break
        out.append(ch)
    return "".join(out)


def _bracket_balance(text: str) -> int:
    depth, quote = 0, None
    for ch in text:
        if quote:
            if ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
    return depth


def key_lines(text: str) -> dict[Path, int]:
    """Map every key path (array indexes as decimal strings) to its 1-based line."""
    lines: dict[Path, int] = {}
    arrays: dict[Path, int] = {}
    current: Path = ()
    pending_depth = 0
    multiline: str | None = None
    for lineno, raw in enumerate(text.splitlines(), start=1):
        if multiline:
            if multiline in raw:
                multiline = None
            continue
        if pending_depth > 0:
            pending_depth += _bracket_balance(_strip_comment(raw))
            continue
        line = _strip_comment(raw).strip()
        if not line:
            continue
        if line.startswith("[[") and line.endswith("]]"):
            comps = _split_key(line[2:-2])
            if comps is None:
                continue
            current = _resolve(comps, arrays, new_array=True)
            lines.setdefault(current, lineno)
            lines.setdefault(current[:-1], lineno)
            continue
        if line.startswith("[") and line.endswith("]"):
            comps = _split_key(line[1:-1])
            if comps is None:
                continue
            current = _resolve(comps, arrays, new_array=False)
            lines.setdefault(current, lineno)
            continue
        key, eq, value = line.partition("=")
        if not eq:
            continue
        comps = _split_key(key)
        if comps is None:
            continue
        path = current + tuple(comps)
        lines.setdefault(path, lineno)
        value = value.strip()
        for q in ('"""', "'''"):
            if value.startswith(q) and value.count(q) == 1:
                multiline = q
        if multiline is None:
            pending_depth = _bracket_balance(value)
    return lines


def _resolve(comps: list[str], arrays: dict[Path, int], new_array: bool) -> Path:
    resolved: list[str] = []
    for i, comp in enumerate(comps):
        resolved.append(comp)
        key = tuple(resolved)
        last = i == len(comps) - 1
        if last and new_array:
            arrays[key] = arrays.get(key, 0) + 1
            # nested arrays restart counting under each new element
            for other in [k for k in arrays if len(k) > len(key) and k[:len(key)] == key]:
                del arrays[other]
            resolved.append(str(arrays[key] - 1))
        elif key in arrays:
            resolved.append(str(arrays[key] - 1))
    return tuple(resolved)


def find_line(lines: dict[Path, int], path: tuple) -> int | None:
    """Line of the longest prefix of `path` that appears in the text."""
    p = tuple(str(x) for x in path)
    while p:
        if p in lines:
            return lines[p]
        p = p[:-1]
    return None

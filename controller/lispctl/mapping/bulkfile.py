"""Map-cache tables in bulk: a text format parsed into compact arrays.

One mapping per line; `#` starts a comment:

    # EID-prefix           locators (ADDR[/PRIORITY[/WEIGHT]]) and/or action
    10.1.0.0/24            192.0.2.1 192.0.2.2/1/50
    [7]2001:db8:1::/48     2001:db8:ff::1
    10.9.0.0/16            drop

No locator needs an action (natively-forward, drop, send-map-request, ...);
locators without one encapsulate (no-action). A million lines must parse in
about a second, so nothing here builds an object per line: EID prefixes go
straight into the data plane's LPM key layout (bytes back to back, see
bpf/lisp_maps.h `struct lisp_key4/6`: prefix length in host order counting
the 32 instance-ID bits, instance ID big-endian, address), and the text after
the prefix (locators + action) is parsed once per distinct text, so a table
whose entries share a few locator sets holds those sets once.
"""
from __future__ import annotations

import ipaddress
import socket
import struct
from array import array
from dataclasses import dataclass, field
from typing import Iterable

from lispctl.mapping.types import EidPrefix, MapAction, Rloc

_ACTIONS = {
    "no-action": MapAction.NO_ACTION,
    "natively-forward": MapAction.NATIVELY_FORWARD,
    "send-map-request": MapAction.SEND_MAP_REQUEST,
    "drop": MapAction.DROP,
    "drop-policy-denied": MapAction.DROP_POLICY_DENIED,
    "drop-auth-failure": MapAction.DROP_AUTH_FAILURE,
}
MAX_IID = (1 << 24) - 1
KEY_SIZE = {4: 12, 6: 24}          # struct lisp_key4 / lisp_key6
_PLEN = struct.Struct("=I")


class BulkFormatError(ValueError):
    """A line that is not a mapping; the message names the line."""


@dataclass
class FamilyRows:
    """One address family of a table: entry i is keys[i*KEY_SIZE:(i+1)*KEY_SIZE],
    locator set groups[i] (an index into BulkTable.locator_sets) and actions[i]
    (the same as BulkTable.actions_of[groups[i]]: a group is the whole text
    after the prefix, locators and action)."""
    version: int
    keys: bytearray = field(default_factory=bytearray)
    groups: array = field(default_factory=lambda: array("I"))
    actions: array = field(default_factory=lambda: array("B"))

    def __len__(self) -> int:
        return len(self.groups)

    def key(self, i: int) -> bytes:
        ks = KEY_SIZE[self.version]
        return bytes(self.keys[i * ks:(i + 1) * ks])


@dataclass
class BulkTable:
    v4: FamilyRows = field(default_factory=lambda: FamilyRows(4))
    v6: FamilyRows = field(default_factory=lambda: FamilyRows(6))
    locator_sets: list[tuple[Rloc, ...]] = field(default_factory=list)
    actions_of: list[int] = field(default_factory=list)     # per locator set: its action

    def __len__(self) -> int:
        return len(self.v4) + len(self.v6)

    def family(self, version: int) -> FamilyRows:
        return self.v4 if version == 4 else self.v6


def key_bytes(eid: EidPrefix) -> bytes:
    """The LPM key of an EID prefix, as the parser writes it."""
    return (_PLEN.pack(32 + eid.prefix.prefixlen) + eid.iid.to_bytes(4, "big")
            + eid.prefix.network_address.packed)


def eid_of_key(key: bytes) -> EidPrefix:
    plen = _PLEN.unpack_from(key)[0] - 32
    return EidPrefix(int.from_bytes(key[4:8], "big"), ipaddress.ip_network((key[8:], plen)))


def _rloc(tok: str) -> Rloc:
    addr, *pw = tok.split("/")
    if len(pw) > 2:
        raise ValueError(f"locator {tok!r}: expected ADDR[/PRIORITY[/WEIGHT]]")
    prio, weight = (int(pw[0]) if pw else 1), (int(pw[1]) if len(pw) > 1 else 100)
    if not (0 <= prio <= 255 and 0 <= weight <= 255):
        raise ValueError(f"locator {tok!r}: priority and weight are 0..255")
    return Rloc(ipaddress.ip_address(addr), prio, weight)


def _tail(text: str) -> tuple[tuple[Rloc, ...], MapAction]:
    rlocs: list[Rloc] = []
    action: MapAction | None = None
    for tok in text.split():
        a = _ACTIONS.get(tok)
        if a is not None:
            if action is not None:
                raise ValueError("more than one action")
            action = a
        else:
            rlocs.append(_rloc(tok))
    if not rlocs and action is None:
        raise ValueError("no locator and no action")
    if not rlocs and action == MapAction.NO_ACTION:
        action = MapAction.NATIVELY_FORWARD          # RFC 9301: no-action without locators
    return tuple(rlocs), MapAction.NO_ACTION if action is None else action


def parse(text: str | bytes | Iterable[str], source: str = "<bulk>") -> BulkTable:
    """Parse a whole table (text, or lines such as an open text file: then
    the file is never held whole); raises BulkFormatError naming the first
    bad line."""
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    lines = text.splitlines() if isinstance(text, str) else text
    table = BulkTable()
    tails: dict[str, tuple[int, int]] = {}        # text after the prefix -> (group, action)
    iids: dict[str, bytes] = {"": bytes(4)}
    # (prefix-length text, iid text) -> key head (prefixlen + iid bytes), host-bit mask, per family
    heads: tuple[dict[tuple[str, str], tuple[bytes, int]], ...] = ({}, {})
    inet_pton, AF_INET, AF_INET6 = socket.inet_pton, socket.AF_INET, socket.AF_INET6
    pack_plen = _PLEN.pack
    k4, g4, a4 = table.v4.keys, table.v4.groups, table.v4.actions
    k6, g6, a6 = table.v6.keys, table.v6.groups, table.v6.actions
    for lineno, line in enumerate(lines, 1):
        if "#" in line:
            line = line[:line.index("#")]
        parts = line.split(None, 1)
        if not parts:
            continue
        try:
            eid = parts[0]
            iid_txt = ""
            if eid[0] == "[":
                iid_txt, _, eid = eid[1:].partition("]")
                iid_b = iids.get(iid_txt)
                if iid_b is None:
                    iid = int(iid_txt)
                    if not 0 <= iid <= MAX_IID:
                        raise ValueError(f"instance ID {iid} is not a 24-bit value")
                    iid_b = iids[iid_txt] = iid.to_bytes(4, "big")
            else:
                iid_b = iids[""]
            addr, slash, plen_txt = eid.partition("/")
            v6 = ":" in addr
            if v6:
                raw, keys, groups, actions = inet_pton(AF_INET6, addr), k6, g6, a6
            else:
                raw, keys, groups, actions = inet_pton(AF_INET, addr), k4, g4, a4
            memo = heads[v6].get((plen_txt, iid_txt))
            if memo is None:
                maxlen = 128 if v6 else 32
                plen = int(plen_txt) if slash else maxlen
                if not 0 <= plen <= maxlen:
                    raise ValueError(f"prefix length {plen} out of range")
                memo = heads[v6][(plen_txt, iid_txt)] = (pack_plen(32 + plen) + iid_b,
                                                         (1 << (maxlen - plen)) - 1)
            head, hostmask = memo
            if hostmask and int.from_bytes(raw, "big") & hostmask:
                raise ValueError(f"{eid} has host bits set")
            tail = parts[1].strip() if len(parts) > 1 else ""
            got = tails.get(tail)
            if got is None:
                rlocs, action = _tail(tail)
                got = tails[tail] = (len(table.locator_sets), int(action))
                table.locator_sets.append(rlocs)
                table.actions_of.append(int(action))
        except (ValueError, OSError) as exc:
            raise BulkFormatError(f"{source}:{lineno}: {exc}") from None
        keys += head
        keys += raw
        groups.append(got[0])
        actions.append(got[1])
    return table


def format_line(eid: EidPrefix, rlocs: tuple[Rloc, ...], action: MapAction = MapAction.NO_ACTION) -> str:
    """One line of the format (generators, tests)."""
    locs = " ".join(str(r.address) if (r.priority, r.weight) == (1, 100)
                    else f"{r.address}/{r.priority}/{r.weight}" for r in rlocs)
    act = "" if rlocs and action == MapAction.NO_ACTION else action.name.lower().replace("_", "-")
    eid_txt = f"[{eid.iid}]{eid.prefix}" if eid.iid else str(eid.prefix)
    return " ".join(p for p in (eid_txt, locs, act) if p)

"""Taking over a data plane a previous daemon left running (killed, or
`lispctl down --keep-datapath`).

The pinned maps survive the old process and its programs stay attached, so
packets keep flowing on the old map-cache. The new daemon's roles start
empty, so what is in BPF is unknown to them. The daemon's choice
(docs/daemon.md, "Restart without dropping traffic"): keep every inherited
entry in BPF, show it in the map-cache view as role "adopted", ask the roles
to resolve it again at once (as if it had missed), and remove it after
ADOPT_GRACE_S unless a role installed the same prefix meanwhile.
"""
from __future__ import annotations

import ipaddress
import logging

from lispctl.mapping.types import EidPrefix, MapAction, Rloc

log = logging.getLogger("lispctl.daemon")

# How long an inherited entry forwards without a role claiming it.
ADOPT_GRACE_S = 60.0
ADOPTED_ROLE = "adopted"


def inherited_mappings(datapath, known) -> dict[EidPrefix, tuple[MapAction, tuple[Rloc, ...]]]:
    """BPF map-cache entries nobody in this process installed: prefix ->
    (action, locators), read back from the pinned maps."""
    mappings = getattr(datapath, "mappings", None)
    if mappings is None:
        return {}
    ids = {eid: mid for eid, mid in mappings().items() if eid not in known}
    if not ids:
        return {}
    actions: dict[int, int] = {}
    for ver in (4, 6):
        for _k, v in datapath.table(f"map_cache{ver}").items():
            actions[int(v.id)] = int(v.action)
    locsets = datapath.table("locsets")
    out = {}
    for eid, mid in ids.items():
        try:
            action = MapAction(actions.get(mid, int(MapAction.NO_ACTION)))
        except ValueError:
            action = MapAction.NO_ACTION
        out[eid] = (action, _locators(locsets, mid))
    return out


def _locators(locsets, mid: int) -> tuple[Rloc, ...]:
    try:
        leaf = locsets[locsets.Key(mid)]
    except KeyError:
        return ()                       # a negative entry
    rlocs = []
    for i in range(int(leaf.count)):
        loc = leaf.loc[i]
        raw = bytes(loc.addr)
        addr = ipaddress.IPv4Address(raw[:4]) if int(loc.family) == 4 else ipaddress.IPv6Address(raw)
        rlocs.append(Rloc(addr, int(loc.priority), int(loc.weight), bool(loc.up), int(loc.port)))
    return tuple(rlocs)


def host_of(eid: EidPrefix) -> EidPrefix:
    """The prefix's first address as a host prefix: what a miss reports."""
    net = eid.prefix
    return EidPrefix(eid.iid, ipaddress.ip_network((net.network_address, net.max_prefixlen)))

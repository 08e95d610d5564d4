"""Sans-IO protocol state machines: bytes and time in, effects out.

    roles = build_roles(cfg, interface_addresses={"wan0": [...]})
    plan = datapath_plan(cfg, roles)

build_roles returns (name, role) pairs in the order the daemon should feed
them. Each role implements lispctl.roles.base.Role; the ITR adds on_miss()
and on_used(), the ETR set_interface_addresses() and set_link_state(). A
mobile node ("mobile-node" role) is an ETR + ITR whose plan has a
MobileNodePlan. See docs/config.md.
"""
from __future__ import annotations

import importlib
import random
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from lispctl.config import Config
from lispctl.mapping.types import EidPrefix, IPAddress, MapAction, Rloc
from lispctl.roles.base import Role
from lispctl.roles.common import nonce_source
from lispctl.roles.local import LocalSite, UplinkSpec, uplink_specs

if TYPE_CHECKING:
    from lispctl.roles.cpm import CpmRole
    from lispctl.roles.ddt import DdtNodeRole
    from lispctl.roles.ddt_resolver import DdtResolverRole
    from lispctl.roles.etr import EtrRole
    from lispctl.roles.itr import ItrRole
    from lispctl.roles.mr import MapResolverRole
    from lispctl.roles.ms import MapServerRole
    from lispctl.roles.petr import PetrRole
    from lispctl.roles.pitr import PitrRole

__all__ = ["CpmRole", "DatapathPlan", "DdtNodeRole", "DdtResolverRole", "EtrRole", "ItrRole", "LocalSite",
           "MapResolverRole", "MapServerRole", "MobileNodePlan", "PetrRole", "PitrRole", "UplinkSpec", "build_roles",
           "datapath_plan", "find_role", "uplink_specs"]

# A role's module is imported when a config enables the role (or when its
# class is asked for by name here): a daemon does not pay for the code of
# roles it does not run (the Map-Server's alone is ~10 ms of every start).
_LAZY = {"CpmRole": "cpm", "DdtNodeRole": "ddt", "DdtResolverRole": "ddt_resolver", "EtrRole": "etr",
         "ItrRole": "itr", "MapResolverRole": "mr", "MapServerRole": "ms", "NatRole": "nat",
         "PetrRole": "petr", "PitrRole": "pitr", "RtrRole": "rtr"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_roles(cfg: Config, *, interface_addresses: Mapping[str, Iterable[IPAddress]] | None = None,
                rng: random.Random | None = None) -> list[tuple[str, Role]]:
    """The roles cfg asks for, as (name, role): "ddt-node", "itr", "etr", "ms",
    "mr" (a DdtResolverRole when [mr.ddt] is set), "pitr", "petr", "cpm" (an
    ETR with [cpm]).

    interface_addresses: addresses of the interfaces named by locators given
    by interface (the daemon reads them; later changes go to
    EtrRole.set_interface_addresses). rng: seeded for tests, None = OS RNG.
    The ITR and ETR of one device share one LocalSite (database and RLOCs).
    """
    nonce = nonce_source(rng)
    out: list[tuple[str, Role]] = []
    site = LocalSite(cfg, interface_addresses) if (cfg.is_itr or cfg.is_etr or cfg.is_pitr
                                                   or cfg.is_petr or rtr_data_plane(cfg)) else None

    def local_site() -> LocalSite:
        assert site is not None          # each role asking for it is one of the above
        return site

    if cfg.is_ms:
        from lispctl.roles.ms import MapServerRole
        ms = MapServerRole(cfg, answer_ecm=not cfg.is_mr)
        out.append(("ms", ms))
    else:
        ms = None
    if cfg.is_ddt_node:
        from lispctl.roles.ddt import DdtNodeRole
        out.append(("ddt-node", DdtNodeRole(cfg)))
    if cfg.is_mr:
        from lispctl.roles.ddt_resolver import DdtResolverRole
        from lispctl.roles.mr import MapResolverRole
        out.append(("mr", DdtResolverRole(cfg) if cfg.mr.ddt is not None else MapResolverRole(cfg, ms)))
    etr: EtrRole | None = None
    itr: ItrRole | None = None
    if cfg.is_etr:
        from lispctl.roles.etr import EtrRole
        etr = EtrRole(cfg, local_site(), nonce, answer_plain_ecm=not cfg.is_mr)
        out.append(("etr", etr))
        if cfg.nat.enabled:
            from lispctl.roles.nat import NatRole
            # from data port 4341 (the role's default, as the draft says): the
            # NAT binding the RTR learns is then the one data uses (docs/nat.md)
            etr.nat = NatRole(cfg, local_site(), nonce)
            etr.nat.etr = etr
            out.append(("nat", etr.nat))
    if cfg.is_itr or rtr_data_plane(cfg):
        from lispctl.roles.itr import ItrRole
    if cfg.is_itr:
        itr = ItrRole(cfg, local_site(), nonce)
        out.append(("itr", itr))
        nat = etr.nat if etr is not None else None     # the "nat" role, if any
        if nat is not None:
            itr.nat, nat.itr = nat, itr
    if cfg.cpm is not None and etr is not None:
        from lispctl.roles.cpm import CpmRole
        # after the ITR: it sees a Map-Reply first (roles/cpm.py). The replay
        # guard compares timestamps with the system clock (time in, like `now`).
        out.append(("cpm", CpmRole(cfg, etr, itr, nonce, wall_clock=lambda _now: time.time())))
    if cfg.is_pitr:
        from lispctl.roles.pitr import PitrRole
        out.append(("pitr", PitrRole(cfg, local_site(), nonce)))
    if cfg.is_petr:
        from lispctl.roles.petr import PetrRole
        out.append(("petr", PetrRole(cfg, local_site())))
    if cfg.is_rtr:
        from lispctl.roles.rtr import RtrRole
        rtr = RtrRole(cfg)
        out.append(("rtr", rtr))
        if rtr_data_plane(cfg) and itr is None and cfg.map_resolver:
            # the RTR re-encapsulates toward destinations it may not know yet:
            # the data plane reports a miss, this ITR resolves it (docs/nat.md)
            itr = ItrRole(cfg, local_site(), nonce)
            itr.rtr, rtr.itr, rtr.site = rtr, itr, local_site()
            out.append(("itr", itr))
    return out


def rtr_data_plane(cfg: Config) -> bool:
    """An RTR with RLOC-facing interfaces carries data (decapsulates and
    re-encapsulates on them); without, it is a control-plane relay only."""
    return cfg.is_rtr and bool(cfg.interfaces.rloc_facing)


def find_role(roles: list[tuple[str, Role]], name: str) -> Role | None:
    return next((r for n, r in roles if n == name), None)


@dataclass(frozen=True)
class MobileNodePlan:
    """What the daemon sets up for a mobile node (lispctl.net.mobile.MobileNode)."""
    eid_device: str                       # MobileNode(ifname=...); Datapath.attach_eid_device
    eids: tuple[IPAddress, ...]           # MobileNode(eids): /32 and /128 on the EID device
    uplinks: tuple[UplinkSpec, ...]       # -> net.watch.LocatorSpec; MobileNode.add_uplink per address
    mtu: int
    eid_table: int
    uplink_table_base: int


@dataclass(frozen=True)
class DatapathPlan:
    """What the daemon puts into the data plane for this device."""
    needed: bool                          # False: MS/MR only, load no BPF
    eid_interfaces: tuple[str, ...]       # attach the ITR (encap) programs here
    rloc_interfaces: tuple[str, ...]      # attach the ETR (decap) programs here
    local_eids: tuple[EidPrefix, ...]     # Datapath.add_local_eid
    local_rlocs: tuple[IPAddress, ...]    # Datapath.add_local_rloc
    miss_action: MapAction                # DROP, NATIVELY_FORWARD, or NO_ACTION with petr
    petr: tuple[Rloc, ...]                # non-empty: encapsulate misses to these
    # Local locators with reachability (link up/down): locator-status bits.
    local_locators: tuple[Rloc, ...] = ()
    # (local EID prefix, its locator-status bits): Datapath.add_local_eid(eid, lsb)
    local_lsb: tuple[tuple[EidPrefix, int], ...] = ()
    mobile_node: MobileNodePlan | None = None   # set: create the EID device, no eid_interfaces
    # RFC 6832. proxy_itr: the ITR programs on eid_interfaces (the Internet-
    # facing ones) touch only map-cache destinations. proxy_etr: decapsulate for
    # any destination; proxy_etr_accept: None (any source) or the sources allowed.
    proxy_itr: bool = False
    proxy_etr: bool = False
    proxy_etr_accept: tuple[EidPrefix, ...] | None = None
    # RTR: decapsulated packets for non-local EIDs go through the map-cache
    # again and are encapsulated toward their locator (Datapath.set_reencap)
    reencap: bool = False


def datapath_plan(cfg: Config, roles: list[tuple[str, Role]]) -> DatapathPlan:
    holder = (find_role(roles, "etr") or find_role(roles, "itr") or find_role(roles, "pitr")
              or find_role(roles, "petr"))
    # the ETR, ITR (and PITR) and PETR share the device's LocalSite
    site: LocalSite | None = getattr(holder, "site", None)
    needed = cfg.is_itr or cfg.is_etr or cfg.is_pitr or cfg.is_petr or rtr_data_plane(cfg)
    ma = cfg.miss_action
    mn = None
    rloc_ifs = list(cfg.interfaces.rloc_facing) if needed else []
    if cfg.is_mobile_node:
        specs = uplink_specs(cfg)
        mn = MobileNodePlan(
            eid_device=cfg.mobile_node.eid_device,
            eids=tuple(e.eid.prefix.network_address for e in cfg.database),
            uplinks=tuple(specs), mtu=cfg.mobile_node.mtu, eid_table=cfg.mobile_node.eid_table,
            uplink_table_base=cfg.mobile_node.uplink_table_base)
        rloc_ifs = list(dict.fromkeys([s.ifname for s in specs] + rloc_ifs))
    eid_ifs = list(cfg.interfaces.eid_facing) if needed else []
    if cfg.pitr is not None and cfg.is_pitr:
        eid_ifs = list(dict.fromkeys(eid_ifs + list(cfg.pitr.internet_facing)))
    accept = cfg.petr.accept_eids
    return DatapathPlan(
        needed=needed,
        eid_interfaces=tuple(eid_ifs),
        rloc_interfaces=tuple(rloc_ifs),
        local_eids=tuple(site.eids()) if site else (),
        local_rlocs=tuple(site.rlocs()) if site else (),
        miss_action={"drop": MapAction.DROP, "natively-forward": MapAction.NATIVELY_FORWARD,
                     "petr": MapAction.NO_ACTION}[ma],
        petr=tuple(l.rloc() for l in cfg.proxy_etr) if ma == "petr" else (),
        local_locators=tuple(site.local_locators()) if site else (),
        local_lsb=tuple(site.locator_status_bits().items()) if site else (),
        mobile_node=mn,
        proxy_itr=cfg.is_pitr,
        proxy_etr=cfg.is_petr,
        proxy_etr_accept=tuple(accept) if accept is not None else None,
        reencap=rtr_data_plane(cfg),
    )

"""Turn a validated Config into a Device: roles, data plane, undo list.

Everything that changes the system (BPF programs attached, maps pinned) is
registered on the Device's undo list right after it succeeds, so a failure
half way through start-up leaves nothing behind.
"""
from __future__ import annotations

import logging
import socket

from lispctl.api.protocol import ApiError
from lispctl.datapath.attach import CHECKSUM_MODES
from lispctl.roles import build_roles, datapath_plan
from lispctl.roles.base import CONTROL_PORT

from .device import Device

log = logging.getLogger("lispctl.daemon")


def _interfaces_to_read(cfg) -> list[str]:
    names = [loc.interface for entry in cfg.database for loc in entry.locator if loc.interface]
    if cfg.is_itr or cfg.is_etr or cfg.is_pitr or cfg.is_petr or cfg.is_rtr:
        names += list(cfg.interfaces.rloc_facing)
    return list(dict.fromkeys(names))


def interface_addresses(names: list[str]) -> dict:
    """Usable global addresses of the named interfaces, as the roles want them."""
    if not names:
        return {}
    from lispctl.net.watch import InterfaceWatcher
    with InterfaceWatcher(track_gateways=False) as w:
        out = {}
        for name in names:
            if w.view.by_name(name) is None:
                log.warning("interface %s does not exist (yet); its locators are empty", name)
            out[name] = [a.address for a in w.view.addresses(name)]
        return out


def _existing(names) -> dict[str, int | None]:
    """ifname -> ifindex, or None for an interface that does not exist."""
    out: dict[str, int | None] = {}
    for n in names:
        try:
            out[n] = socket.if_nametoindex(n)
        except OSError:
            out[n] = None
    return out


def build_device(cfg, *, control_port: int | None = None, config_path=None) -> Device:
    roles = build_roles(cfg, interface_addresses=interface_addresses(_interfaces_to_read(cfg)))
    device = Device(instance=cfg.instance, roles=list(roles),
                    binds=[str(a) for a in cfg.control_addresses],
                    control_port=CONTROL_PORT if control_port is None else control_port,
                    metrics_listen=cfg.metrics.listen, config=cfg, config_path=config_path)
    plan = datapath_plan(cfg, device.roles)
    device.info["rloc_mode"] = cfg.interfaces.rloc_mode
    device.info["eid_mode"] = cfg.interfaces.eid_mode
    device.info["rloc_checksum"] = cfg.interfaces.rloc_checksum
    if not plan.needed:
        return device
    try:
        _setup_datapath(device, plan)
        if plan.proxy_itr and cfg.pitr is not None and cfg.pitr.announce_table:
            _setup_announcer(device, cfg.pitr)
    except BaseException:
        device.teardown()
        raise
    return device


def _setup_datapath(device: Device, plan) -> None:
    from lispctl.datapath import Datapath
    from lispctl.datapath.datapath import DEFAULT_PIN_BASE
    adopted = (DEFAULT_PIN_BASE / device.instance).is_dir()
    cfg = device.config
    dp = Datapath(instance=device.instance,
                  max_mappings=cfg.datapath.max_mappings if cfg is not None else None)
    # close() detaches what this object attached and, with unpin, removes the
    # instance's pinned maps: `down` means the device is gone. A planned
    # restart (`down --keep-datapath`) releases instead: programs stay
    # attached, maps pinned, and the next `up` adopts them.
    device.on_stop("close data plane",
                   lambda: dp.release() if device.keep_datapath else dp.close(unpin=True))
    device.datapath = dp
    device.info["datapath_adopted"] = adopted
    device.info["datapath_compiled"] = dp.compiled     # False: pinned programs reused (prebuilt.py)
    # per interface: may the XDP programs redirect into it, and why (decided at
    # attach, also for RLOC interfaces the watcher attaches later)
    device.info["xdp_redirect"] = dp.xdp_redirects
    device.info["peer_handoff"] = dp.peer_handoffs
    if adopted:
        log.info("data plane %s: adopting the pinned maps and attached programs of a previous "
                 "daemon (programs replaced in place, map-cache kept)", device.instance)
    # Modes first: a program attached before them would treat the first
    # packets as an xTR does (every Internet packet a miss, every LISP packet
    # for a non-local EID a drop).
    dp.set_pitr(plan.proxy_itr)
    dp.set_petr(plan.proxy_etr, plan.proxy_etr_accept)
    dp.set_reencap(plan.reencap)
    if plan.reencap:
        # an RTR has no local EIDs: decapsulate instance 0 for re-encapsulation
        dp.accept_iid(0)
    for ifname in plan.eid_interfaces:
        if ifname in plan.rloc_interfaces:
            dp.set_eid_interface(ifname)      # PITR on one uplink: the ETR hands over
        else:
            dp.attach_eid_interface(ifname, mode=device.info["eid_mode"])
    # An uplink may not exist yet (a USB modem, Wi-Fi coming up later): the
    # interface watcher (daemon/ifwatch.py) attaches it when it appears, and
    # again if it is re-created; it starts from the ifindexes attached here.
    attached = {}
    for ifname, index in _existing(plan.rloc_interfaces).items():
        if index is None:
            log.warning("RLOC interface %s does not exist (yet): attached when it appears", ifname)
            continue
        dp.attach_rloc_interface(ifname, mode=device.info["rloc_mode"],
                                 complete_checksums=CHECKSUM_MODES[device.info["rloc_checksum"]])
        attached[ifname] = index
    device.info["rloc_ifindex"] = attached
    for addr in plan.local_rlocs:
        dp.add_local_rloc(addr)
    lsb = dict(plan.local_lsb)
    for eid in plan.local_eids:
        dp.add_local_eid(eid, lsb.get(eid, 1))
    if adopted:
        _drop_stale_locals(dp, plan)
    dp.set_miss_action(plan.miss_action, plan.petr)
    _limit_map_cache(device, dp)
    _load_tables(device, dp)
    device.info["datapath_plan"] = {
        "eid_interfaces": list(plan.eid_interfaces), "rloc_interfaces": list(plan.rloc_interfaces),
        "local_rlocs": [str(a) for a in plan.local_rlocs], "local_eids": [str(e) for e in plan.local_eids],
        "miss_action": plan.miss_action.name.lower(), "petr": [str(r.address) for r in plan.petr],
        "proxy_itr": plan.proxy_itr, "proxy_etr": plan.proxy_etr, "reencap": plan.reencap,
        "proxy_etr_accept": None if plan.proxy_etr_accept is None else [str(e) for e in plan.proxy_etr_accept]}
    log.info("data plane %s: EID interfaces %s, RLOC interfaces %s, miss action %s",
             device.instance, ",".join(plan.eid_interfaces) or "-",
             ",".join(plan.rloc_interfaces) or "-",
             "petr" if plan.petr else plan.miss_action.name.lower())


class MapCacheTooSmall(Exception):
    """More static [[map-cache]] entries than the data plane holds."""


def _limit_map_cache(device: Device, dp) -> None:
    """Tell the ITR how many map-cache entries the loaded data plane holds
    (it evicts the least recently used dynamic entry beyond that); refuse a
    config whose static entries alone do not fit."""
    from lispctl.roles.itr import ItrRole
    itr = next((r for _, r in device.roles if isinstance(r, ItrRole)), None)   # PitrRole is an ItrRole
    if itr is None:
        return
    capacity = dp.capacity
    static = len(itr.cfg.map_cache)
    if static > capacity:
        raise MapCacheTooSmall(f"{static} static [[map-cache]] entries, but the data plane holds "
                               f"{capacity} mappings (datapath.max-mappings per address family)")
    for v in (4, 6):
        n = sum(1 for e in itr.cfg.map_cache if e.eid_prefix.version == v)
        if n > dp.family_capacity(v):
            raise MapCacheTooSmall(f"{n} static IPv{v} [[map-cache]] entries, but the data plane holds "
                                   f"{dp.family_capacity(v)} (datapath.max-mappings)")
    itr.capacity = capacity
    itr.family_capacity = {4: dp.family_capacity(4), 6: dp.family_capacity(6)}
    device.info["map_cache_capacity"] = capacity


def _load_tables(device: Device, dp) -> None:
    """datapath.map-cache-files, in bulk (daemon/bulk.py); the API loads more."""
    from lispctl.roles.itr import ItrRole

    from .bulk import BulkTables
    itr = next((r for _, r in device.roles if isinstance(r, ItrRole)), None)
    device.bulk = BulkTables(dp, itr, device.info)
    device.info["map_cache_family_capacity"] = {"ipv4": dp.family_capacity(4), "ipv6": dp.family_capacity(6)}
    cfg = device.config
    for path in (cfg.datapath.map_cache_files if cfg is not None else ()):
        try:
            device.bulk.load(path)
        except ApiError as exc:
            raise MapCacheTableError(f"datapath.map-cache-files: {exc}") from None


class MapCacheTableError(Exception):
    """A datapath.map-cache-files table that cannot be loaded."""


def _setup_announcer(device: Device, pcfg) -> None:
    """The PITR's aggregates go into a kernel table a BGP daemon exports
    (lispctl.net.announce); the PitrRole decides when (Announce effects)."""
    from lispctl.net.announce import RouteAnnouncer
    ann = RouteAnnouncer(pcfg.announce_table, pcfg.route_protocol)
    # registered after the data plane's cleanup, so it runs before it: the
    # routes go before the programs that serve them
    device.on_stop("withdraw EID aggregates", ann.close)
    ann.flush_stale()
    device.announcer = ann
    device.info["announce"] = {"table": pcfg.announce_table, "protocol": pcfg.route_protocol}


def _drop_stale_locals(dp, plan) -> None:
    """After adopting pinned maps: local RLOCs and EIDs come from this config
    only (added first above, so the ones that stay never leave)."""
    import ipaddress
    import socket

    from lispctl.mapping.types import EidPrefix
    keep_rlocs = {ipaddress.ip_address(a) for a in plan.local_rlocs}
    for addr in dp.local_rlocs():
        if addr not in keep_rlocs:
            dp.remove_local_rloc(addr)
            log.info("data plane %s: stale local RLOC %s removed", dp.instance, addr)
    keep_eids = set(plan.local_eids)
    for ver, size in ((4, 4), (6, 16)):
        for k in list(dp.table(f"local_eid{ver}").keys()):
            eid = EidPrefix(socket.ntohl(k.iid), ipaddress.ip_network((bytes(k.addr)[:size], k.prefixlen - 32)))
            if eid not in keep_eids:
                dp.remove_local_eid(eid)
                log.info("data plane %s: stale local EID %s removed", dp.instance, eid)

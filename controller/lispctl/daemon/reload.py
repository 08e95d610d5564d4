"""Live reconfiguration: `lispctl reload` (API "reload") and SIGHUP.

The config file is read and validated exactly as `up` does; an invalid file
is refused with the same messages and the running configuration stays. Then
the new configuration is compared with the running one, section by section:

* applied live: `[[database]]` (prefixes added or removed, locators, their
  priority and weight), `[[map-server]]`, `[[map-resolver]]`, `[[map-cache]]`
  (static entries), `[[site]]` and `log-level`. The roles do the protocol work
  (EtrRole.reconfigure: de-register removed prefixes, re-register, SMR;
  ItrRole.reconfigure: resolvers, static entries; MapServerRole.reconfigure:
  sites, keeping the registrations they still accept), the data plane's local
  EIDs and RLOCs follow; new ones are added before the roles' effects run and
  old ones removed after, so traffic to what stays is never dropped.
* refused, with the reason: `instance` and `roles` (another device),
  everything else (interfaces, control addresses, timers, sites, ...), and a
  locator given by an interface the daemon does not follow (not named at
  start), and database changes on a mobile node. A refused reload changes
  nothing: restart for those (`lispctl down`, `lispctl up`).
"""
from __future__ import annotations

import logging
from typing import Any

from lispctl.api.protocol import ApiError
from lispctl.config import Config, ConfigError, load

log = logging.getLogger("lispctl.daemon")

LIVE = ("database", "map_server", "map_resolver", "map_cache", "site", "log_level")


def _key(field: str) -> str:
    return field.replace("_", "-")


def not_live(old: Config, new: Config) -> list[str]:
    """Why `new` cannot replace `old` in a running daemon (empty: it can)."""
    out = []
    if new.instance != old.instance:
        out.append(f"instance: {old.instance!r} -> {new.instance!r}: that is another device; "
                   "stop this one and start the new one")
    if new.roles != old.roles:
        out.append(f"roles: {old.roles} -> {new.roles}: roles cannot change in a running daemon; restart it")
    for name in Config.model_fields:
        if name in LIVE or name in ("instance", "roles"):
            continue
        if getattr(old, name) != getattr(new, name):
            out.append(f"{_key(name)}: changed; it cannot be applied live yet: restart "
                       "(lispctl down, lispctl up)")
    if old.is_mobile_node and old.database != new.database:
        out.append("database: a mobile node's EIDs and uplinks are set up at start: restart")
    followed = {loc.interface for e in old.database for loc in e.locator if loc.interface}
    for i, entry in enumerate(new.database):
        for j, loc in enumerate(entry.locator):
            if loc.interface and loc.interface not in followed:
                out.append(f"database[{i}].locator[{j}].interface: {loc.interface} is not followed by the "
                           "running daemon (not named at start): restart")
    return out


def _changed(old: Config, new: Config) -> list[str]:
    return [_key(n) for n in LIVE if getattr(old, n) != getattr(new, n)]


class Reloader:
    def __init__(self, device: Any, runtime: Any) -> None:
        self.device = device
        self.rt = runtime

    def reload(self) -> dict:
        """Apply the config file again; raises ApiError (nothing changed) when refused."""
        path = self.device.config_path
        old = self.device.config
        if path is None or old is None:
            raise ApiError("this daemon was not started from a config file; nothing to reload")
        try:
            new = load(path)
        except ConfigError as exc:
            raise ApiError(f"invalid configuration, the running one stays:\n{exc}") from None
        refused = not_live(old, new)
        if refused:
            raise ApiError(f"{path}: cannot be applied live, the running configuration stays:\n"
                           + "\n".join(refused))
        changed = _changed(old, new)
        if not changed:
            return {"config": str(path), "changed": []}
        try:
            self._apply(old, new)
        except Exception as exc:
            # a bug, not a configuration problem: say so; the roles may hold part of the new config
            log.exception("applying %s failed half way", path)
            raise ApiError(f"applying {path} failed half way ({type(exc).__name__}: {exc}); "
                           "see the daemon log and restart the device") from None
        self.device.config = new
        pool = getattr(self.rt, "ms_workers", None)
        if pool is not None and ("site" in changed or "log-level" in changed):
            pool.restart(new)              # workers with the new sites (the union kept what they accept)
        log.info("reloaded %s: %s", path, ", ".join(changed))
        return {"config": str(path), "changed": changed}

    def _apply(self, old: Config, new: Config) -> None:
        if new.log_level != old.log_level:
            logging.getLogger().setLevel(new.log_level.upper())
        now = self.rt.now()
        site = next((r.site for _, r in self.rt.roles if hasattr(r, "site")), None)
        dp = self.device.datapath
        old_eids = set(site.eids()) if site is not None else set()
        old_rlocs = set(site.rlocs()) if site is not None else set()
        for name, role in self.rt.roles:
            reconfigure = getattr(role, "reconfigure", None)
            if reconfigure is None:
                continue
            effects = reconfigure(new, now)      # the ETR first: it rebuilds the shared LocalSite
            if dp is not None and site is not None and name == "etr":
                # new local EIDs/RLOCs before the Map-Registers and SMRs announce them
                self._add_locals(dp, site, old_eids, old_rlocs)
            self.rt.apply(name, effects)
        if dp is not None and site is not None:
            for eid in old_eids - set(site.eids()):
                dp.remove_local_eid(eid)
            for addr in old_rlocs - set(site.rlocs()):
                dp.remove_local_rloc(addr)
        self.rt._reschedule()

    @staticmethod
    def _add_locals(dp: Any, site: Any, old_eids: set, old_rlocs: set) -> None:
        for eid in set(site.eids()) - old_eids:
            dp.add_local_eid(eid)
        for addr in set(site.rlocs()) - old_rlocs:
            dp.add_local_rloc(addr)

"""Device configuration: one TOML file per device, validated by pydantic.

    cfg = lispctl.config.load("/etc/lispctl/xtr.toml")

Every problem raises ConfigError, whose message names the file, the line and
the key path, e.g. ``xtr.toml:14: database[0].locator[0].adress: unknown key``.
See docs/config.md for every key.
"""
from __future__ import annotations

import re
try:
    # the parser tomllib was made from, compiled (mypyc): 3x faster on a
    # large config (100,000 [[site]] tables: ~2 s less to `ready`)
    import tomli as tomllib
except ImportError:                     # pragma: no cover - a pure-Python install
    import tomllib  # type: ignore[no-redef]
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from lispctl.config.lines import find_line, key_lines
from lispctl.config.models import (AddressLocator, Config, DatabaseEntry, DatapathConfig, DdtConfig, DdtDelegation, EtrConfig,
                                   InterfacesConfig, ItrConfig, LocatorConfig, MapCacheEntry,
                                   MapResolverConfig, MapServerConfig, MobileNodeConfig, MrConfig,
                                   MrDdtConfig, MrForward, MsConfig, PetrConfig, PitrConfig, SiteConfig,
                                   SiteEidPrefix, action_of)

__all__ = [
    "AddressLocator", "Config", "ConfigError", "ConfigProblem", "DatabaseEntry", "DatapathConfig", "DdtConfig", "DdtDelegation",
    "EtrConfig", "InterfacesConfig", "ItrConfig", "LocatorConfig", "MapCacheEntry", "MapResolverConfig",
    "MapServerConfig", "MobileNodeConfig", "MrConfig", "MrDdtConfig", "MrForward", "MsConfig", "PetrConfig",
    "PitrConfig", "SiteConfig", "SiteEidPrefix",
    "action_of", "load", "loads",
]

IMPLEMENTED_ROLES = {"xtr", "itr", "etr", "ms", "mr", "ddt-node", "mobile-node", "pitr", "petr", "rtr"}


@dataclass(frozen=True)
class ConfigProblem:
    path: str          # dotted key path, e.g. "database[0].eid-prefix"
    line: int | None   # 1-based line in the TOML text, when found
    message: str


class ConfigError(ValueError):
    """A configuration that cannot be used; .problems lists each finding."""

    def __init__(self, source: str, problems: list[ConfigProblem]):
        self.source = source
        self.problems = problems
        super().__init__("\n".join(self._fmt(p) for p in problems))

    def _fmt(self, p: ConfigProblem) -> str:
        where = f"{self.source}:{p.line}" if p.line else self.source
        return f"{where}: {p.path}: {p.message}" if p.path else f"{where}: {p.message}"


def load(path: str | Path) -> Config:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(p), [ConfigProblem("", None, f"cannot read: {exc}")]) from None
    return loads(text, source=str(p))


def loads(text: str, source: str = "<config>") -> Config:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"at line (\d+)", str(exc))
        raise ConfigError(source, [ConfigProblem("", int(m.group(1)) if m else None,
                                                 f"TOML syntax error: {exc}")]) from None
    try:
        cfg = Config.model_validate(data)
    except ValidationError as exc:
        # where each key is: only for the message (a third of a large config's load time)
        lines = key_lines(text)
        problems = []
        for err in exc.errors(include_url=False):
            loc = tuple(err["loc"])
            msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            if err["type"] == "missing":
                msg = "required key is missing"
            problems.append(ConfigProblem(_dotted(loc), find_line(lines, loc), msg))
        raise ConfigError(source, problems) from None
    found = cross_check(cfg)
    if found:
        lines = key_lines(text)
        raise ConfigError(source, [ConfigProblem(_dotted(loc), find_line(lines, loc) or find_line(lines, ("roles",)),
                                                 msg) for loc, msg in found])
    return cfg


def _dotted(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int) or (isinstance(part, str) and part.isdigit() and out):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def cross_check(cfg: Config) -> list[tuple[tuple, str]]:
    """Rules that involve several keys; returns (key path, message) pairs."""
    out: list[tuple[tuple, str]] = []
    for role in cfg.roles:
        if role not in IMPLEMENTED_ROLES:
            out.append((("roles",), f"role {role!r} is not implemented yet"))
    if cfg.is_etr:
        if not cfg.database:
            out.append((("database",), "an ETR (xtr) needs at least one [[database]] entry"))
        if not cfg.map_server:
            out.append((("map-server",), "an ETR (xtr) needs at least one [[map-server]]"))
    elif cfg.database and not cfg.is_itr:
        out.append((("database",), "[[database]] is only used by the xtr/etr roles"))
    if cfg.is_itr:
        if not cfg.map_resolver and not cfg.is_mr:
            out.append((("map-resolver",), "an ITR (xtr) needs at least one [[map-resolver]]"))
        if cfg.miss_action == "petr" and not cfg.proxy_etr:
            out.append((("itr", "miss-action"), "miss-action 'petr' needs [[proxy-etr]]"))
    if cfg.map_server and not cfg.is_etr:
        out.append((("map-server",), "[[map-server]] is only used by the xtr/etr roles"))
    if cfg.is_ms and not cfg.site:
        out.append((("site",), "a Map-Server (ms) needs at least one [[site]]"))
    if cfg.site and not cfg.is_ms:
        out.append((("site",), "[[site]] is only used by the ms role"))
    if cfg.ms.workers > 1:
        if not cfg.is_ms:
            out.append((("ms", "workers"), "[ms] workers is only used by the ms role"))
        elif set(cfg.roles) - {"ms", "mr"}:
            # a forked worker must not share a data plane, its threads or its
            # netlink sessions with the main process
            out.append((("ms", "workers"), "Map-Server workers need a device whose roles are only ms and mr "
                                           f"(this one also has {', '.join(sorted(set(cfg.roles) - {'ms', 'mr'}))}); "
                                           "run the Map-Server as its own instance, or set workers = 1"))
    if cfg.mr.map_server and not cfg.is_mr:
        out.append((("mr", "map-server"), "[[mr.map-server]] is only used by the mr role"))
    if cfg.is_mr and not cfg.is_ms and not cfg.mr.map_server and cfg.mr.ddt is None:
        out.append((("mr", "map-server"),
                    "a Map-Resolver without the ms role needs [[mr.map-server]] to forward to, "
                    "or [mr.ddt] to resolve through a DDT tree"))
    if cfg.mr.ddt is not None and not cfg.is_mr:
        out.append((("mr", "ddt"), "[mr.ddt] is only used by the mr role"))
    if cfg.mr.ddt is not None and cfg.mr.map_server:
        out.append((("mr", "map-server"), "a DDT Map-Resolver ([mr.ddt]) finds Map-Servers through the tree; "
                                          "drop [[mr.map-server]]"))
    if cfg.is_rtr and not cfg.rtr.map_servers:
        out.append((("rtr", "map-servers"), "an RTR (rtr) needs [rtr] map-servers to forward registrations to"))
    if set(cfg.rtr.map_server_keys) - set(cfg.rtr.map_servers):
        out.append((("rtr", "map-server-keys"), "[rtr] map-server-keys names an address not in [rtr] map-servers"))
    if cfg.rtr.map_servers and not cfg.is_rtr:
        out.append((("rtr", "map-servers"), "[rtr] map-servers is only used by the rtr role"))
    if cfg.nat.enabled and not cfg.is_etr:
        out.append((("nat", "enabled"), "[nat] is used by the xtr/etr/mobile-node roles"))
    if cfg.nat.enabled:
        for i, ms in enumerate(cfg.map_server):
            if ms.algorithm == "hmac-sha256-hkdf":
                out.append((("map-server", i, "algorithm"), "hmac-sha256-hkdf cannot sign the Info-Requests "
                            "of [nat] (RFC 9301 gives algorithm 3 no Info-Request key derivation)"))
    if cfg.cpm is not None and not cfg.is_etr:
        out.append((("cpm",), "[cpm] (Change-Priority Messages) is only used by the xtr/etr roles"))
    out += _ddt_checks(cfg)
    if cfg.lisp_sec.itr_keys and not (cfg.is_ms or cfg.is_mr):
        out.append((("lisp-sec", "itr-keys"), "[lisp-sec] itr-keys is only used by the ms and mr roles"))
    # RFC 9303 6.5: the ITR/Map-Resolver keys must be independent of the
    # Map-Server/ETR (Map-Register) keys, or an ETR could overclaim.
    register_keys = {k for s in cfg.site for k in s.keys.values()} | {m.key for m in cfg.map_server}
    if register_keys & set(cfg.lisp_sec.itr_keys.values()):
        out.append((("lisp-sec", "itr-keys"), "must differ from every Map-Register key (RFC 9303 6.5)"))
    for i, mr in enumerate(cfg.map_resolver):
        if mr.lisp_sec_key is not None and mr.lisp_sec_key in register_keys:
            out.append((("map-resolver", i, "lisp-sec-key"),
                        "must differ from every Map-Register key (RFC 9303 6.5)"))

    seen: dict = {}
    for i, entry in enumerate(cfg.database):
        if entry.eid in seen:
            out.append((("database", i, "eid-prefix"), f"{entry.eid} is also database[{seen[entry.eid]}]"))
        seen.setdefault(entry.eid, i)
    names: dict = {}
    owners: dict = {}
    for i, site in enumerate(cfg.site):
        if site.name in names:
            out.append((("site", i, "name"), f"site name {site.name!r} is also site[{names[site.name]}]"))
        names.setdefault(site.name, i)
        for j, sp in enumerate(site.eid_prefix):
            if sp.eid in owners:
                out.append((("site", i, "eid-prefix", j, "prefix"),
                            f"{sp.eid} is already configured in site {owners[sp.eid]!r}"))
            owners.setdefault(sp.eid, site.name)
    for i, ms in enumerate(cfg.map_server):
        if ms.address in {m.address for m in cfg.map_server[:i]}:
            out.append((("map-server", i, "address"), f"{ms.address} is listed twice"))
    if cfg.is_etr and cfg.map_server and all(ms.eid_prefix for ms in cfg.map_server):
        for i, entry in enumerate(cfg.database):
            if not any(entry.eid.iid == p.iid and entry.eid.prefix.version == p.prefix.version
                       and entry.eid.prefix.subnet_of(p.prefix)  # type: ignore[arg-type]  # same version
                       for ms in cfg.map_server for p in ms.eid_prefix):
                out.append((("database", i, "eid-prefix"),
                            f"{entry.eid} is inside no [[map-server]]'s eid-prefix: it would never be registered"))
    out += _pubsub_checks(cfg) + _mobile_node_checks(cfg) + _proxy_checks(cfg)
    return out


def _proxy_checks(cfg: Config) -> list[tuple[tuple, str]]:
    """PITR / PETR (RFC 6832)."""
    out: list[tuple[tuple, str]] = []
    if cfg.is_pitr:
        if cfg.pitr is None:
            out.append((("pitr",), "the pitr role needs a [pitr] section (eid-prefixes, internet-facing)"))
        if cfg.is_itr:
            out.append((("roles",), "pitr runs the ITR program in PITR mode (only EID aggregates): "
                                    "it cannot be combined with xtr, itr or mobile-node"))
        if not cfg.map_resolver and not cfg.is_mr:
            out.append((("map-resolver",), "a PITR needs at least one [[map-resolver]]"))
        if cfg.miss_action == "petr" and not cfg.proxy_etr:
            out.append((("itr", "miss-action"), "miss-action 'petr' needs [[proxy-etr]]"))
    elif cfg.pitr is not None:
        out.append((("pitr",), "[pitr] is only used by the pitr role"))
    if cfg.pitr is not None:
        for i, eid in enumerate(cfg.pitr.eid_prefixes):
            if eid.iid != 0:
                out.append((("pitr", "eid-prefixes", i), f"{eid}: the Internet side has no instance IDs; "
                                                         "aggregates are in instance 0"))
        for name in cfg.pitr.internet_facing:
            if name in cfg.interfaces.eid_facing:
                out.append((("pitr", "internet-facing"), f"{name} is also eid-facing"))
    if (cfg.is_pitr or cfg.is_petr) and not cfg.interfaces.rloc_facing and not cfg.database:
        out.append((("interfaces", "rloc-facing"),
                    "a PITR/PETR needs interfaces.rloc-facing (its RLOCs are their addresses)"))
    if "petr" in cfg.model_fields_set and not cfg.is_petr:
        out.append((("petr",), "[petr] is only used by the petr role"))
    return out


def _ddt_checks(cfg: Config) -> list[tuple[tuple, str]]:
    out: list[tuple[tuple, str]] = []
    if "ddt" in cfg.model_fields_set and not (cfg.is_ddt_node or cfg.is_ms):
        out.append((("ddt",), "[ddt] is only used by the ddt-node and ms roles"))
    if cfg.is_ddt_node and cfg.is_ms:
        out.append((("roles",), "ddt-node and ms cannot share a process (both would answer a DDT Map-Request); "
                                "a Map-Server answers for its sites and ddt.authoritative-prefix by itself"))
    if cfg.is_ddt_node and not (cfg.ddt.authoritative_prefix or cfg.ddt.delegation):
        out.append((("ddt",), "a DDT node needs ddt.authoritative-prefix or [[ddt.delegation]]"))
    if cfg.ddt.ms_peers and not cfg.is_ms:
        out.append((("ddt", "ms-peers"), "ddt.ms-peers is only used by the ms role"))
    if cfg.ddt.delegation and not cfg.is_ddt_node:
        out.append((("ddt", "delegation"), "[[ddt.delegation]] is only used by the ddt-node role"))
    seen: dict = {}
    for i, d in enumerate(cfg.ddt.delegation):
        if d.eid_prefix in seen:
            out.append((("ddt", "delegation", i, "eid-prefix"),
                        f"{d.eid_prefix} is also ddt.delegation[{seen[d.eid_prefix]}]"))
        seen.setdefault(d.eid_prefix, i)
    return out


def _pubsub_checks(cfg: Config) -> list[tuple[tuple, str]]:
    out: list[tuple[tuple, str]] = []
    if cfg.itr.xtr_id and cfg.etr.xtr_id and cfg.itr.xtr_id.lower() != cfg.etr.xtr_id.lower():
        out.append((("itr", "xtr-id"), "differs from etr.xtr-id: one device has one xTR-ID"))
    for i, mr in enumerate(cfg.map_resolver):
        if mr.subscribe and cfg.xtr_id is None:
            out.append((("map-resolver", i, "subscribe"),
                        "subscribing needs an xTR-ID: set itr.xtr-id (or etr.xtr-id), 32 hex digits"))
    ids: dict = {}
    for i, site in enumerate(cfg.site):
        if site.site_id is None:
            continue
        if site.site_id in ids:
            out.append((("site", i, "site-id"), f"site-id {site.site_id} is also site[{ids[site.site_id]}]"))
        ids.setdefault(site.site_id, i)
    return out


def _mobile_node_checks(cfg: Config) -> list[tuple[tuple, str]]:
    out: list[tuple[tuple, str]] = []
    if not cfg.is_mobile_node:
        if "mobile_node" in cfg.model_fields_set:
            out.append((("mobile-node",), "[mobile-node] is only used by the mobile-node role"))
        return out
    others = [r for r in cfg.roles if r != "mobile-node"]
    if others:
        out.append((("roles",), f"mobile-node is a complete xTR on a host; it cannot be combined with "
                                f"{', '.join(repr(r) for r in others)}"))
    if cfg.interfaces.eid_facing:
        out.append((("interfaces", "eid-facing"),
                    "a mobile node's EIDs live on its own EID device (mobile-node.eid-device), "
                    "not on eid-facing interfaces"))
    for i, entry in enumerate(cfg.database):
        p = entry.eid_prefix
        if p.prefixlen != p.max_prefixlen:
            out.append((("database", i, "eid-prefix"),
                        f"a mobile node's EID is one address (/{p.max_prefixlen}), not {p}"))
        for j, loc in enumerate(entry.locator):
            if loc.interface is None:
                out.append((("database", i, "locator", j, "address"),
                            "a mobile node's locators are its uplinks: give 'interface' (and 'family')"))
            elif loc.interface == cfg.mobile_node.eid_device:
                out.append((("database", i, "locator", j, "interface"),
                            f"{loc.interface} is the EID device, not an uplink"))
    if cfg.mobile_node.eid_device in cfg.interfaces.rloc_facing:
        out.append((("interfaces", "rloc-facing"), f"{cfg.mobile_node.eid_device} is the EID device"))
    return out

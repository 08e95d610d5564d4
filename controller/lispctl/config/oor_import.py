"""Convert an OOR (Open Overlay Router) configuration into lispctl's TOML.

    result = convert(text, instance="site-a", eid_facing=["lan0"])
    result.toml      # the device configuration (docs/config.md)
    result.notes     # what could not be converted, each with its line and why

Pure text in, text out: no file, socket or interface is touched (interface
names are only copied). The OOR side follows OOR's documented oor.conf format
(the oor.conf.example of OOR 1.3): operating-mode xTR, MN, MS, RTR (DDT and
DDT-MR are refused). What lispctl cannot express is left out of the TOML and
named in `notes`; the TOML carries a comment where a value was derived rather
than copied. Conversions worth knowing:

* OOR's MS mode answers Map-Requests itself: it becomes roles ms + mr.
* key-type 1 (HMAC-SHA-1-96) is key ID 0 with HMAC-SHA-1 on the wire
  (PROTOCOL-NOTES: what OOR sends), so map-server keys get key-id 0 and
  algorithm hmac-sha1, and sites key ID 0. lisp-site sections sharing one key
  become one [[site]] (the key is what authenticates a registration, and an
  xTR registers all its prefixes in one message).
* OOR's defaults are written out where they differ from lispctl's: record
  TTL 10 minutes, RLOC probing every 30 s when no rloc-probing section is
  given, 3 Map-Request retries.
* rloc-probe-retries counts retries after the first probe; lispctl's counts
  lost probes in a row, so it is one more. rloc-probe-retries-interval (how
  long OOR waits before a retry) becomes rloc-probe-timeout.
"""
from __future__ import annotations

import hashlib
import ipaddress
import json
import re
from dataclasses import dataclass, field

from .confuse import Section, parse

__all__ = ["Conversion", "Note", "OorImportError", "convert"]

MODES = {"xtr": ["xtr"], "mn": ["mobile-node"], "ms": ["ms", "mr"], "rtr": ["rtr"], "ddt": ["ddt-node"],
         "ddt-mr": ["mr"]}

# OOR 1.3 defaults (oor/defs.h) where they matter to the converted behaviour.
OOR_RECORD_TTL_MIN = 10
OOR_MAP_REQUEST_RETRIES = 3
OOR_PROBE_INTERVAL = 30
OOR_PROBE_RETRIES = 2
OOR_PROBE_RETRY_INTERVAL = 5

_ALGORITHMS = {1: "hmac-sha1", 2: "hmac-sha256"}     # RFC 6833 key IDs as OOR uses them


class OorImportError(ValueError):
    """The file cannot be converted at all (syntax, unknown or unsupported mode)."""


@dataclass(frozen=True)
class Note:
    line: int | None
    what: str
    why: str

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line else ""
        return f"{where}{self.what}: {self.why}"


@dataclass
class Conversion:
    toml: str
    roles: list[str]
    notes: list[Note] = field(default_factory=list)


# ------------------------------------------------------------------ TOML out

def _scalar(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(_scalar(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_scalar(x)}" for k, x in v.items()) + " }"
    return json.dumps(str(v), ensure_ascii=False)      # a valid TOML basic string


class _Doc:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def kv(self, key: str, value: object, comment: str = "") -> None:
        self.lines.append(f"{key} = {_scalar(value)}" + (f"   # {comment}" if comment else ""))

    def table(self, header: str, comment: str = "") -> None:
        if self.lines and self.lines[-1] != "":
            self.lines.append("")
        if comment:
            self.lines.append(f"# {comment}")
        self.lines.append(header)

    def comment(self, text: str) -> None:
        self.lines.append(f"# {text}")

    def text(self) -> str:
        return "\n".join(self.lines).rstrip() + "\n"


# ------------------------------------------------------------------ values

class _Reader:
    """Typed access to OOR values; problems become notes, never exceptions."""

    def __init__(self) -> None:
        self.notes: list[Note] = []

    def note(self, line: int | None, what: str, why: str) -> None:
        self.notes.append(Note(line, what, why))

    def string(self, sec: Section, key: str) -> str | None:
        v = sec.get(key)
        if v is None:
            return None
        if v.is_list:
            self.note(v.line, f"{sec.name}.{key}", "expected one value, found a list")
            return None
        return v.text.strip()           # type: ignore[union-attr]

    def integer(self, sec: Section, key: str, lo: int, hi: int) -> int | None:
        text = self.string(sec, key)
        if text is None:
            return None
        try:
            n = int(text, 0)
        except ValueError:
            self.note(sec.get(key).line, f"{sec.name}.{key} = {text}", "not an integer")  # type: ignore[union-attr]
            return None
        if not lo <= n <= hi:
            self.note(sec.get(key).line, f"{sec.name}.{key} = {n}", f"outside {lo}..{hi}")  # type: ignore[union-attr]
            return None
        return n

    def boolean(self, sec: Section, key: str) -> bool | None:
        text = self.string(sec, key)
        if text is None:
            return None
        low = text.lower()
        if low in ("true", "yes", "on", "1"):
            return True
        if low in ("false", "no", "off", "0"):
            return False
        self.note(sec.get(key).line, f"{sec.name}.{key} = {text}", "not a boolean")  # type: ignore[union-attr]
        return None

    def address(self, text: str, line: int, what: str) -> str | None:
        try:
            return str(ipaddress.ip_address(text.strip()))
        except ValueError:
            why = ("a name (FQDN or ELP name): lispctl takes addresses only; resolve it and "
                   "write the address") if re.fullmatch(r"[A-Za-z0-9_.-]+", text.strip()) \
                else "not an IPv4 or IPv6 address"
            self.note(line, f"{what} {text}", why)
            return None

    def prefix(self, sec: Section, key: str = "eid-prefix") -> str | None:
        text = self.string(sec, key)
        if text is None:
            self.note(sec.line, sec.name, f"has no {key}: section skipped")
            return None
        line = sec.get(key).line                      # type: ignore[union-attr]
        try:
            return str(ipaddress.ip_network(text, strict=True))
        except ValueError:
            pass
        try:
            net = ipaddress.ip_network(text, strict=False)
        except ValueError:
            self.note(line, f"{sec.name}.{key} = {text}", "not an IP prefix: section skipped")
            return None
        self.note(line, f"{sec.name}.{key} = {text}", f"has host bits set; converted as {net}")
        return str(net)


# ------------------------------------------------------------------ conversion

def convert(text: str, *, instance: str, eid_facing: list[str] | None = None,
            rloc_facing: list[str] | None = None) -> Conversion:
    """Convert oor.conf text. Raises OorImportError when nothing sensible can
    come out (syntax error, no or unknown operating-mode)."""
    from .confuse import ConfuseError
    try:
        root = parse(text)
    except ConfuseError as exc:
        raise OorImportError(f"not a libConfuse file: {exc}") from None
    r = _Reader()
    mode_v = r.string(root, "operating-mode")
    if mode_v is None:
        raise OorImportError("no operating-mode (xTR, MN, MS, RTR, DDT or DDT-MR)")
    mode = mode_v.lower()
    if mode not in MODES:
        raise OorImportError(f"operating-mode {mode_v}: unknown (OOR knows xTR, MN, MS, RTR, DDT, DDT-MR)")
    roles = MODES[mode]
    conv = _Converter(root, r, mode, instance, list(eid_facing or []), list(rloc_facing or []))
    doc = conv.run(roles)
    return Conversion(doc.text(), roles, r.notes)


# Options each mode reads (OOR ignores the others, so do we, but say so).
_TR_COMMON = {"encapsulation", "rloc-probing", "map-request-retries", "map-resolver",
              "static-map-cache", "rloc-probing-interval"}
_XTR = _TR_COMMON | {"database-mapping", "map-server", "proxy-etr-ipv4", "proxy-etr-ipv6",
                     "nat_traversal_support", "proxy-itrs", "allowed-dst-eids"}
_USED = {
    "xtr": _XTR,
    "mn": _XTR | {"override-dns", "override-dns-primary", "override-dns-secondary"},
    "rtr": _TR_COMMON | {"rtr-ifaces", "rtr-ms-node", "rtr-database-mapping", "rtr-data-iface"},
    "ms": {"control-iface", "lisp-site", "ms-static-registered-site", "ms-rtr-node",
           "ms-rtrs-set", "ms-advertised-rtrs-set"},
    "ddt": {"control-iface", "ddt-auth-site", "ddt-deleg-site"},
    "ddt-mr": {"control-iface", "ddt-root-addresses"},
}
_GENERAL = {"operating-mode", "debug", "log-file", "ipv6-scope", "control-port"}
# Converted by the functions below, per option; everything else used by the
# mode but not here is named as not converted by _unconverted().
_WHY = {
    "log-file": "lispctl logs to stderr (the journal under systemd)",
    "ipv6-scope": None,      # handled in _general
    "control-port": None,
    "nat_traversal_support": None,
    "proxy-itrs": "lispctl's ETR sends SMRs to the ITRs that asked for its mapping, not to a configured "
                  "PITR list",
    "allowed-dst-eids": "lispctl encapsulates every destination that misses the map-cache; filter "
                        "with routes or nftables instead",
    "override-dns": "lispctl does not manage resolv.conf",
    "override-dns-primary": "lispctl does not manage resolv.conf",
    "override-dns-secondary": "lispctl does not manage resolv.conf",
    "rtr-ms-node": None,     # handled in _rtr
    "rtr-database-mapping": "the RTR's own mappings are not supported by lispctl yet",
    "rtr-data-iface": "not supported by lispctl",
    "control-iface": "lispctl binds control-addresses (default every address); set them to this "
                     "interface's addresses to listen on it only",
    "ms-static-registered-site": "lispctl's Map-Server has no static registrations",
    "ms-rtr-node": "NAT traversal (RTRs announced by the Map-Server) is not implemented by lispctl yet",
    "ms-rtrs-set": "NAT traversal (RTRs announced by the Map-Server) is not implemented by lispctl yet",
    "ms-advertised-rtrs-set": "NAT traversal (RTRs announced by the Map-Server) is not implemented by "
                              "lispctl yet",
    "explicit-locator-path": "explicit locator paths (ELP) are not supported by lispctl",
    "replication-list": "replication lists (multicast) are not supported by lispctl",
    "multicast-info": "multicast mappings are not supported by lispctl",
}


class _Converter:
    def __init__(self, root: Section, r: _Reader, mode: str, instance: str,
                 eid_facing: list[str], rloc_facing: list[str]):
        self.root, self.r, self.mode = root, r, mode
        self.instance = instance
        self.eid_facing, self.rloc_facing = eid_facing, rloc_facing
        self.doc = _Doc()

    def run(self, roles: list[str]) -> _Doc:
        d, root = self.doc, self.root
        d.comment(f"Converted from an OOR configuration (operating-mode {self.r.string(root, 'operating-mode')}) "
                  "by `lispctl import-oor`.")
        d.kv("instance", self.instance)
        d.kv("roles", roles)
        debug = self.r.integer(root, "debug", 0, 3)
        d.kv("log-level", "debug" if debug else "info")
        self._general()
        self._unconverted()
        if self.mode in ("xtr", "mn"):
            self._xtr()
        elif self.mode == "rtr":
            self._rtr()
        elif self.mode == "ddt":
            self._ddt_node()
        elif self.mode == "ddt-mr":
            self._ddt_mr()
        else:
            self._ms()
        return d

    # -- what every mode shares
    def _general(self) -> None:
        r, root = self.r, self.root
        port = r.integer(root, "control-port", 0, 65535)
        if port not in (None, 0, 4342):
            r.note(root.get("control-port").line, f"control-port = {port}",   # type: ignore[union-attr]
                   "lispctl's control sockets use UDP 4342")
        scope = r.string(root, "ipv6-scope")
        if scope is not None and scope.lower() == "site":
            r.note(root.get("ipv6-scope").line, "ipv6-scope = SITE",          # type: ignore[union-attr]
                   "lispctl takes global IPv6 addresses of an interface as locators (site-local and "
                   "ULA are global scope in Linux; link-local never)")
        for cfun in [k for k, _ in root.names() if k.endswith("()")]:
            r.note(root.get(cfun).line, cfun, "libConfuse function calls (include) are not followed")  # type: ignore[union-attr]

    def _unconverted(self) -> None:
        used = _USED[self.mode] | _GENERAL
        known = set().union(*_USED.values()) | _GENERAL | set(_WHY)
        seen = set()
        for key, line in self.root.names():
            if key in seen or key.endswith("()"):
                continue
            seen.add(key)
            why = _WHY.get(key)
            if key.startswith("override-dns") and not self.r.boolean(self.root, "override-dns"):
                why = None                  # off: nothing lost
            if key in used:
                if why:
                    self.r.note(line, key, f"not converted: {why}")
            elif key in known:
                self.r.note(line, key, f"not used by OOR in operating-mode {self.mode.upper()}: ignored")
            else:
                self.r.note(line, key, "unknown OOR option: ignored")
        nat = self.r.boolean(self.root, "nat_traversal_support") if "nat_traversal_support" in used else None
        if nat:
            self.r.note(self.root.get("nat_traversal_support").line,     # type: ignore[union-attr]
                        "nat_traversal_support = on", "NAT traversal is not implemented by lispctl yet")

    def _encapsulation(self) -> None:
        enc = self.r.string(self.root, "encapsulation")
        if enc is not None and enc.lower() != "lisp":
            self.r.note(self.root.get("encapsulation").line, f"encapsulation = {enc}",  # type: ignore[union-attr]
                        "lispctl encapsulates in LISP (UDP 4341) only; peers must use LISP too")

    def _map_resolvers(self) -> list[str]:
        v = self.root.get("map-resolver")
        out = []
        for item in (v.items() if v else ()):
            addr = self.r.address(item, v.line, "map-resolver")      # type: ignore[union-attr]
            if addr is not None and addr not in out:
                out.append(addr)
        return out

    def _itr_section(self, probing: bool) -> dict:
        """[itr] keys from the tunnel-router options OOR shares (xTR, MN, RTR)."""
        r, root = self.r, self.root
        itr: dict = {}
        retries = r.integer(root, "map-request-retries", 0, 20)
        itr["map-request-retries"] = retries or OOR_MAP_REQUEST_RETRIES
        if not probing:
            return itr
        secs = root.sections("rloc-probing")
        interval = r.integer(root, "rloc-probing-interval", 0, 1 << 20)   # an old spelling
        if secs:
            rp = secs[-1]
            interval = r.integer(rp, "rloc-probe-interval", 0, 1 << 20)
            retries_p = r.integer(rp, "rloc-probe-retries", 0, 5)
            retry_iv = r.integer(rp, "rloc-probe-retries-interval", 1, 1 << 20)
            interval = 0 if interval is None else interval
            retries_p = OOR_PROBE_RETRIES if retries_p is None else retries_p
            retry_iv = OOR_PROBE_RETRY_INTERVAL if retry_iv is None else retry_iv
        elif interval is None:
            interval, retries_p, retry_iv = OOR_PROBE_INTERVAL, OOR_PROBE_RETRIES, OOR_PROBE_RETRY_INTERVAL
        else:
            retries_p, retry_iv = OOR_PROBE_RETRIES, OOR_PROBE_RETRY_INTERVAL
        itr["rloc-probe-interval"] = float(interval)
        if interval:
            itr["rloc-probe-retries"] = retries_p + 1
            itr["rloc-probe-timeout"] = float(min(retry_iv, interval))
        return itr

    # -- xTR and mobile node
    def _xtr(self) -> None:
        d, r, root = self.doc, self.r, self.root
        mn = self.mode == "mn"
        self._encapsulation()
        databases, rloc_ifaces, ttls = self._databases(mn)
        rloc_facing = list(dict.fromkeys(self.rloc_facing + ([] if mn else rloc_ifaces)))
        if not mn:
            if self.eid_facing or rloc_facing:
                d.table("[interfaces]")
                if self.eid_facing:
                    d.kv("eid-facing", self.eid_facing)
                if rloc_facing:
                    d.kv("rloc-facing", rloc_facing)
            if not self.eid_facing:
                r.note(None, "interfaces.eid-facing",
                       "OOR finds its EID-facing interfaces from the routes of its EID prefixes; lispctl "
                       "attaches its ITR to named interfaces: give --eid-facing IFNAME (without, nothing "
                       "is encapsulated)")
            if any("address" in loc for db in databases for loc in db["locators"]) and not self.rloc_facing:
                r.note(None, "interfaces.rloc-facing",
                       "locators given by rloc-address name no interface: give --rloc-facing IFNAME for the "
                       "interface(s) that carry them (the ETR decapsulates there)")
        elif self.rloc_facing:
            d.table("[interfaces]")
            d.kv("rloc-facing", rloc_facing)
        for db in databases:
            d.table("[[database]]", f"database-mapping at line {db['line']}")
            d.kv("eid-prefix", db["eid"])
            if db["iid"]:
                d.kv("instance-id", db["iid"])
            for loc in db["locators"]:
                d.table("[[database.locator]]")
                for k, v in loc.items():
                    d.kv(k, v)
        for ms in root.sections("map-server"):
            self._map_server(ms)
        for addr in self._map_resolvers():
            d.table("[[map-resolver]]")
            d.kv("address", addr)
        petrs = 0
        for fam in ("proxy-etr-ipv4", "proxy-etr-ipv6"):
            for sec in root.sections(fam):
                text = r.string(sec, "address")
                petr = r.address(text, sec.line, f"{fam}.address") if text else None
                if text is None:
                    r.note(sec.line, fam, "has no address: skipped")
                if petr is None:
                    continue
                d.table("[[proxy-etr]]", f"{fam} at line {sec.line}" +
                        ("; lispctl uses one PETR list for both EID families" if petrs == 0 else ""))
                d.kv("address", petr)
                for k, v in self._pw(sec).items():
                    d.kv(k, v)
                petrs += 1
        self._static_map_cache()
        d.table("[itr]")
        for k, v in self._itr_section(probing=True).items():
            d.kv(k, v)
        if petrs:
            d.kv("miss-action", "petr", "OOR sends packets to unresolved destinations to its PETRs")
        else:
            d.kv("miss-action", "drop", "no proxy-etr: OOR drops packets to unresolved destinations")
        d.table("[etr]")
        ttl = ttls[0] if ttls else OOR_RECORD_TTL_MIN
        if len(set(ttls)) > 1:
            r.note(None, "database-mapping.ttl",
                   f"lispctl has one record TTL for all its prefixes; the first ({ttl} min) is used, "
                   f"not {sorted(set(ttls) - {ttl})}")
        d.kv("record-ttl-minutes", ttl, "" if any(s.get("ttl") for s in root.sections("database-mapping"))
             else "OOR's default")
        if mn:
            d.kv("xtr-id", self._xtr_id(databases),
                 "derived from the instance and EIDs (OOR draws a random one)")

    def _xtr_id(self, databases: list[dict]) -> str:
        seed = self.instance + "|" + "|".join(f"{db['iid']}:{db['eid']}" for db in databases)
        return hashlib.sha256(seed.encode()).hexdigest()[:32]

    def _databases(self, mn: bool) -> tuple[list[dict], list[str], list[int]]:
        r = self.r
        out: list[dict] = []
        ifaces: list[str] = []
        ttls: list[int] = []
        for sec in self.root.sections("database-mapping"):
            eid = r.prefix(sec)
            if eid is None:
                continue
            iid = r.integer(sec, "iid", 0, (1 << 24) - 1) or 0
            ttl = r.integer(sec, "ttl", 0, 0xFFFFFFFF)
            ttls.append(OOR_RECORD_TTL_MIN if ttl is None else ttl)
            locs: list[dict] = []
            for ra in sec.sections("rloc-address"):
                text = r.string(ra, "address")
                if text is None:
                    r.note(ra.line, "rloc-address", "has no address: skipped")
                    continue
                if mn:
                    r.note(ra.line, f"rloc-address {text}",
                           "a lispctl mobile node's locators are its uplinks (rloc-iface), not addresses")
                    continue
                addr = r.address(text, ra.get("address").line, "rloc-address")   # type: ignore[union-attr]
                if addr is None:
                    continue
                if r.boolean(ra, "local") is False:
                    r.note(ra.line, f"rloc-address {addr} local = false",
                           "converted as a locator; lispctl announces it like its own (keep proxy-reply on "
                           "so the Map-Server answers for it)")
                locs.append({"address": addr, **self._pw(ra)})
            for ri in sec.sections("rloc-iface"):
                name = r.string(ri, "interface")
                if not name:
                    r.note(ri.line, "rloc-iface", "has no interface: skipped")
                    continue
                ver = r.integer(ri, "ip_version", 4, 6)
                if ver not in (None, 4, 6):
                    r.note(ri.line, f"rloc-iface ip_version = {ver}", "must be 4 or 6: skipped")
                    continue
                locs.append({"interface": name, "family": "ipv6" if ver == 6 else "ipv4", **self._pw(ri)})
                if name not in ifaces:
                    ifaces.append(name)
            if not locs:
                r.note(sec.line, f"database-mapping {eid}", "no locator could be converted: skipped")
                continue
            out.append({"eid": eid, "iid": iid, "locators": locs, "line": sec.line})
        return out, ifaces, ttls

    def _pw(self, sec: Section) -> dict:
        pri = self.r.integer(sec, "priority", 0, 255)
        wei = self.r.integer(sec, "weight", 0, 255)
        return {"priority": 1 if pri is None else pri, "weight": 100 if wei is None else wei}

    def _map_server(self, sec: Section) -> None:
        r, d = self.r, self.doc
        text = r.string(sec, "address")
        if text is None:
            r.note(sec.line, "map-server", "has no address: skipped")
            return
        addr = r.address(text, sec.get("address").line, "map-server.address")   # type: ignore[union-attr]
        key = r.string(sec, "key")
        kt = r.integer(sec, "key-type", 0, 255)
        alg = _ALGORITHMS.get(1 if kt is None else kt)
        if alg is None:
            r.note(sec.line, f"map-server {text} key-type = {kt}", "only 1 (HMAC-SHA-1) and 2 (HMAC-SHA-256) "
                   "exist: skipped")
            return
        if not key:
            r.note(sec.line, f"map-server {text}", "has no key: skipped")
            return
        if addr is None:
            return
        d.table("[[map-server]]", f"map-server at line {sec.line}; OOR's key-type {kt or 1} is key ID 0 "
                "with this algorithm on the wire")
        d.kv("address", addr)
        d.kv("key", key)
        d.kv("key-id", 0)
        d.kv("algorithm", alg)
        d.kv("proxy-reply", bool(r.boolean(sec, "proxy-reply")))

    def _static_map_cache(self) -> None:
        r, d = self.r, self.doc
        for sec in self.root.sections("static-map-cache"):
            eid = r.prefix(sec)
            if eid is None:
                continue
            iid = r.integer(sec, "iid", 0, (1 << 24) - 1) or 0
            locs = []
            for ra in sec.sections("rloc-address"):
                text = r.string(ra, "address")
                addr = r.address(text, ra.line, "static-map-cache.rloc-address") if text else None
                if addr is not None:
                    locs.append({"address": addr, **self._pw(ra)})
            if not locs:
                r.note(sec.line, f"static-map-cache {eid}", "no locator could be converted: skipped")
                continue
            d.table("[[map-cache]]", f"static-map-cache at line {sec.line}")
            d.kv("eid-prefix", eid)
            if iid:
                d.kv("instance-id", iid)
            for loc in locs:
                d.table("[[map-cache.locator]]")
                for k, v in loc.items():
                    d.kv(k, v)

    # -- RTR
    def _rtr(self) -> None:
        d, r = self.doc, self.r
        self._encapsulation()
        ifaces = []
        for group in self.root.sections("rtr-ifaces"):
            for sec in group.sections("rtr-iface"):
                name = r.string(sec, "iface")
                if name and name not in ifaces:
                    ifaces.append(name)
                if sec.get("priority") or sec.get("weight"):
                    r.note(sec.line, f"rtr-iface {name} priority/weight",
                           "not converted: the RTR role will define its locators")
        if ifaces or self.rloc_facing:
            d.table("[interfaces]")
            d.kv("rloc-facing", list(dict.fromkeys(self.rloc_facing + ifaces)))
        for addr in self._map_resolvers():
            d.table("[[map-resolver]]")
            d.kv("address", addr)
        self._static_map_cache()
        d.table("[itr]")
        for k, v in self._itr_section(probing=True).items():
            d.kv(k, v)
        # the Map-Servers NATed xTRs' registrations may be forwarded to
        servers: list[str] = []
        for sec in self.root.sections("rtr-ms-node"):
            server = r.string(sec, "address")
            if server and server not in servers:
                servers.append(server)
            if sec.get("key"):
                r.note(sec.line, f"rtr-ms-node {server} key",
                       "not converted: lispctl's RTR does not authenticate to the Map-Server (MS-RTR keys)")
        d.table("[rtr]")
        d.kv("map-servers", servers)

    # -- MS (+MR)
    def _ms(self) -> None:
        d, r = self.doc, self.r
        sites: dict[tuple[int, str], dict] = {}
        peers: list[str] = []
        for sec in self.root.sections("lisp-site"):
            eid = r.prefix(sec)
            if eid is None:
                continue
            key = r.string(sec, "key")
            kt = r.integer(sec, "key-type", 0, 255)
            if not key:
                r.note(sec.line, f"lisp-site {eid}", "has no key: skipped")
                continue
            if (1 if kt is None else kt) not in _ALGORITHMS:
                r.note(sec.line, f"lisp-site {eid} key-type = {kt}", "unknown key type: skipped")
                continue
            site = sites.setdefault((kt or 1, key), {"prefixes": [], "line": sec.line})
            pref: dict = {"prefix": eid}
            iid = r.integer(sec, "iid", 0, (1 << 24) - 1) or 0
            if iid:
                pref["instance-id"] = iid
            if r.boolean(sec, "accept-more-specifics"):
                pref["accept-more-specifics"] = True
            if r.boolean(sec, "proxy-reply"):
                pref["proxy-reply"] = True
            if any(p["prefix"] == eid and p.get("instance-id", 0) == iid
                   for s in sites.values() for p in s["prefixes"]):
                r.note(sec.line, f"lisp-site {eid}", "listed twice: the first one is kept")
                continue
            site["prefixes"].append(pref)
            peers_v = sec.get("ddt-ms-peers")
            for item in (peers_v.items() if peers_v else ()):
                addr = r.address(item, peers_v.line, f"lisp-site {eid} ddt-ms-peers")   # type: ignore[union-attr]
                if addr is not None and addr not in peers:
                    peers.append(addr)
            if r.boolean(sec, "ddt-ms-peers-complete") is False:
                r.note(sec.get("ddt-ms-peers-complete").line,                          # type: ignore[union-attr]
                       f"lisp-site {eid} ddt-ms-peers-complete = false",
                       "lispctl announces ddt.ms-peers as the complete set (I bit clear)")
        for n, ((_kt, key), site) in enumerate(sites.items(), 1):
            d.table("[[site]]", f"lisp-site sections sharing one key, from line {site['line']}")
            d.kv("name", f"site-{n}")
            d.kv("description", ", ".join(p["prefix"] for p in site["prefixes"]))
            d.kv("keys", {0: key}, "OOR's key-type 1 is key ID 0 on the wire")
            for pref in site["prefixes"]:
                d.table("[[site.eid-prefix]]")
                for k, v in pref.items():
                    d.kv(k, v)
        if not sites:
            r.note(None, "lisp-site", "no site could be converted; a Map-Server needs at least one")
        if peers:
            d.table("[ddt]", "ddt-ms-peers of the lisp-sites: the other Map-Servers of these sites "
                    "(one list for the whole Map-Server in lispctl)")
            d.kv("ms-peers", peers)

    # -- DDT node and DDT Map-Resolver (RFC 8111)
    def _iid_prefix(self, sec: Section) -> str | None:
        eid = self.r.prefix(sec)
        if eid is None:
            return None
        iid = self.r.integer(sec, "iid", 0, (1 << 24) - 1) or 0
        return f"[{iid}]{eid}" if iid else eid

    def _ddt_node(self) -> None:
        d, r = self.doc, self.r
        auth = [p for p in (self._iid_prefix(sec) for sec in self.root.sections("ddt-auth-site")) if p]
        delegations = []
        for sec in self.root.sections("ddt-deleg-site"):
            eid = self._iid_prefix(sec)
            kind = (r.string(sec, "delegation-type") or "").lower()
            types = {"child_ddt_node": "ddt-node", "map_server_ddt_node": "map-server"}
            if eid is None:
                continue
            if kind not in types:
                r.note(sec.line, f"ddt-deleg-site {eid} delegation-type = {kind or '(none)'}",
                       "must be CHILD_DDT_NODE or MAP_SERVER_DDT_NODE: skipped")
                continue
            nodes_v = sec.get("deleg-nodes")
            nodes = []
            for item in (nodes_v.items() if nodes_v else ()):
                addr = r.address(item, nodes_v.line, f"ddt-deleg-site {eid} deleg-nodes")  # type: ignore[union-attr]
                if addr is not None and addr not in nodes:
                    nodes.append(addr)
            if not nodes:
                r.note(sec.line, f"ddt-deleg-site {eid}", "no deleg-nodes address could be converted: skipped")
                continue
            delegations.append((sec.line, eid, types[kind], nodes[:32]))
        d.table("[ddt]")
        d.kv("authoritative-prefix", auth)
        for line, eid, kind, nodes in delegations:
            d.table("[[ddt.delegation]]", f"ddt-deleg-site at line {line}")
            d.kv("eid-prefix", eid)
            d.kv("type", kind)
            d.kv("address", nodes)

    def _ddt_mr(self) -> None:
        d, r = self.doc, self.r
        v = self.root.get("ddt-root-addresses")
        roots = []
        for item in (v.items() if v else ()):
            addr = r.address(item, v.line, "ddt-root-addresses")       # type: ignore[union-attr]
            if addr is not None and addr not in roots:
                roots.append(addr)
        if not roots:
            r.note(v.line if v else None, "ddt-root-addresses", "no root address could be converted")
        d.table("[mr.ddt]", "a Map-Resolver that resolves through the DDT tree from these roots")
        d.kv("root", roots)

"""Topology files (netns-lab/*.toml) as validated data.

A topology names nodes, the veth links between them (with the addresses of
each end), routes and sysctls per node, and the processes a node runs. It says
nothing about how a run is named: the runner adds a unique per-run prefix to
every namespace, so the same file can be built many times in parallel.
"""
from __future__ import annotations

import ipaddress
import re
import tomllib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

LAB_DIR = Path(__file__).resolve().parents[3] / "netns-lab"

IFNAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
NODE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,19}$")

# Set on every node unless the topology overrides them. DAD off: addresses are
# usable at once instead of after ~2 s of "tentative" state (a lab is a closed
# world, duplicates cannot happen). rp_filter off: LISP-decapsulated and
# VXLAN-decapsulated packets arrive on interfaces that strict reverse-path
# checks would reject on asymmetric paths.
DEFAULT_SYSCTLS: dict[str, str] = {
    "net.ipv6.conf.all.accept_dad": "0",
    "net.ipv6.conf.default.accept_dad": "0",
    "net.ipv6.conf.all.dad_transmits": "0",
    "net.ipv6.conf.default.dad_transmits": "0",
    "net.ipv4.conf.all.rp_filter": "0",
    "net.ipv4.conf.default.rp_filter": "0",
}
FORWARDING_SYSCTLS: dict[str, str] = {
    "net.ipv4.ip_forward": "1",
    "net.ipv6.conf.all.forwarding": "1",
    "net.ipv6.conf.default.forwarding": "1",
}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Route(_Model):
    """`dst` is a prefix or "default" (IPv4) / "default6" (IPv6)."""
    dst: str
    via: str | None = None
    dev: str | None = None
    metric: int | None = None

    @field_validator("dst")
    @classmethod
    def _dst(cls, v: str) -> str:
        if v not in ("default", "default6"):
            ipaddress.ip_network(v, strict=True)
        return v

    @field_validator("via")
    @classmethod
    def _via(cls, v: str | None) -> str | None:
        if v is not None:
            ipaddress.ip_address(v)
        return v

    @model_validator(mode="after")
    def _target(self) -> "Route":
        if self.via is None and self.dev is None:
            raise ValueError(f"route {self.dst}: needs 'via' or 'dev'")
        if self.via is not None and self.dst not in ("default", "default6"):
            if ipaddress.ip_address(self.via).version != ipaddress.ip_network(self.dst).version:
                raise ValueError(f"route {self.dst} via {self.via}: address families differ")
        return self

    @property
    def family(self) -> int:
        if self.dst == "default":
            return 4
        if self.dst == "default6":
            return 6
        return ipaddress.ip_network(self.dst).version


class Process(_Model):
    """A long-running program on a node.

    argv items may use {placeholders}: python, lispctl, ns, node, prefix,
    instance (a per-run name for pinned BPF objects), topodir, rundir, config
    (the node's config file) and any key of `vars` or of the runner's overrides.
    """
    name: str
    argv: list[str]
    ready: str | None = "ready"      # a line on stdout that says it is up (None: do not wait)
    ready_timeout: float = 30.0
    autostart: bool = True
    remount_sys: bool = False        # give it a sysfs of its own namespace (see docs/lab.md)
    vars: dict[str, str] = Field(default_factory=dict)


class Node(_Model):
    role: str = "host"               # free text for people and other runners: host, router, xtr, ms-mr, mn ...
    forwarding: bool = False
    sysctls: dict[str, str | int] = Field(default_factory=dict)
    routes: list[Route] = Field(default_factory=list)
    config: str | None = None        # the node's `lispctl up -c FILE`, relative to the topology file
    processes: list[Process] = Field(default_factory=list)

    def all_sysctls(self) -> dict[str, str]:
        out = dict(DEFAULT_SYSCTLS)
        if self.forwarding:
            out.update(FORWARDING_SYSCTLS)
        out.update({k: str(v) for k, v in self.sysctls.items()})
        return out


class LinkEnd(_Model):
    node: str
    ifname: str
    addresses: list[str] = Field(default_factory=list)
    # ethtool feature name -> on/off, e.g. {"tx-checksum-ip-generic" = false}
    features: dict[str, bool] = Field(default_factory=dict)
    mac: str | None = None

    @field_validator("ifname")
    @classmethod
    def _ifname(cls, v: str) -> str:
        if not IFNAME_RE.match(v):
            raise ValueError(f"interface name {v!r}: 1..15 of [A-Za-z0-9_.-]")
        return v

    @field_validator("addresses")
    @classmethod
    def _addresses(cls, v: list[str]) -> list[str]:
        for a in v:
            ipaddress.ip_interface(a)
            if "/" not in a:
                raise ValueError(f"address {a!r} needs a prefix length")
        return v


class Link(_Model):
    """A veth pair; `a` and `b` are its two ends."""
    a: LinkEnd
    b: LinkEnd
    mtu: int | None = None


class Topology(_Model):
    name: str
    description: str = ""
    nodes: dict[str, Node]
    links: list[Link] = Field(default_factory=list)
    path: Path | None = None         # the file it came from (set by load)

    @model_validator(mode="after")
    def _consistent(self) -> "Topology":
        for n in self.nodes:
            if not NODE_RE.match(n):
                raise ValueError(f"node name {n!r}: a letter then up to 19 of [A-Za-z0-9_-]")
        seen: set[tuple[str, str]] = set()
        for link in self.links:
            for end in (link.a, link.b):
                if end.node not in self.nodes:
                    raise ValueError(f"link end {end.node}:{end.ifname}: no such node")
                if (end.node, end.ifname) in seen or end.ifname == "lo":
                    raise ValueError(f"interface {end.node}:{end.ifname} defined twice")
                seen.add((end.node, end.ifname))
        for name, node in self.nodes.items():
            for r in node.routes:
                if r.dev is not None and (name, r.dev) not in seen:
                    raise ValueError(f"node {name}: route {r.dst} uses unknown dev {r.dev}")
            names = [p.name for p in node.processes]
            if len(set(names)) != len(names):
                raise ValueError(f"node {name}: process names repeat")
        return self

    @property
    def directory(self) -> Path:
        return self.path.parent if self.path else LAB_DIR

    def interfaces(self, node: str) -> list[LinkEnd]:
        return [e for link in self.links for e in (link.a, link.b) if e.node == node]

    def address_of(self, node: str, ifname: str | None = None, version: int = 4) -> str:
        """First address (without prefix length) of that family on a node (or on one of its interfaces)."""
        for end in self.interfaces(node):
            if ifname is not None and end.ifname != ifname:
                continue
            for a in end.addresses:
                ip = ipaddress.ip_interface(a)
                if ip.version == version:
                    return str(ip.ip)
        raise KeyError(f"{node}{':' + ifname if ifname else ''} has no IPv{version} address")


def available() -> list[str]:
    return sorted(p.stem for p in LAB_DIR.glob("*.toml"))


def load(name_or_path: str | Path) -> Topology:
    """A topology by name (netns-lab/NAME.toml) or by path."""
    p = Path(name_or_path)
    if p.suffix != ".toml":
        p = LAB_DIR / f"{name_or_path}.toml"
    if not p.exists():
        raise FileNotFoundError(f"no topology {name_or_path!r} (have: {', '.join(available()) or 'none'})")
    data = tomllib.loads(p.read_text())
    return Topology.model_validate({**data, "path": p.resolve()})


def loads(text: str, path: Path | None = None) -> Topology:
    return Topology.model_validate({**tomllib.loads(text), "path": path})

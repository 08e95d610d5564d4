"""Pydantic models for one device's TOML configuration.

Keys are spelled with hyphens in TOML (`eid-prefix`) and with underscores in
Python (`eid_prefix`). Every model forbids unknown keys, so a typo is an
error instead of a silently ignored setting. Durations are seconds unless the
key name says minutes (TTLs that travel on the wire are in minutes).
"""
# No `from __future__ import annotations`: pydantic would then eval() every
# field annotation from its string (~15 ms of every start).
import ipaddress
import re
from typing import Annotated, Any, Literal

from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field,
                      field_validator, model_validator)
from pydantic.dataclasses import dataclass as pydantic_dataclass

from lispctl.mapping.types import EidPrefix, IPAddress, IPNetwork, MapAction, Rloc


def _hyphen(name: str) -> str:
    return name.replace("_", "-")


class _Model(BaseModel):
    # defer_build: a model's validator is built when first used, which for
    # the sections is as part of Config's (one schema, built once by load());
    # building all 28 at import cost ~40 ms of every `lispctl up`.
    model_config = ConfigDict(extra="forbid", alias_generator=_hyphen,
                              populate_by_name=True, frozen=True, defer_build=True)


def _default(model: type[BaseModel]) -> Any:
    """A section's default: built without validation (its defaults are valid),
    so neither importing this module nor loading a config that leaves the
    section out builds the section's own validator."""
    return Field(default_factory=model.model_construct)


def _network(value: object) -> IPNetwork:
    if isinstance(value, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
        return value
    if not isinstance(value, str):
        raise ValueError("expected a prefix string such as '10.1.0.0/16' or '2001:db8::/32'")
    try:
        return ipaddress.ip_network(value.strip(), strict=True)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a valid IP prefix ({exc})") from None


def _address(value: object) -> IPAddress:
    # pydantic's IPvAnyAddress would do, but importing it (pydantic.networks)
    # pulls in importlib.metadata: ~10 ms of every start
    if isinstance(value, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return value
    try:
        return ipaddress.ip_address(value.strip() if isinstance(value, str) else value)  # type: ignore[arg-type]
    except ValueError:
        raise ValueError("value is not a valid IPv4 or IPv6 address") from None


def _eid_text(value: object) -> EidPrefix:
    """'10.0.0.0/8' or '[5]10.0.0.0/8' (instance ID in brackets)."""
    if isinstance(value, EidPrefix):
        return value
    if not isinstance(value, str):
        raise ValueError("expected an EID prefix string such as '[5]10.0.0.0/8'")
    m = re.fullmatch(r"\s*(?:\[(\d+)\])?\s*(\S+)\s*", value)
    if not m:
        raise ValueError(f"{value!r} is not an EID prefix")
    iid = int(m.group(1) or 0)
    if iid >= 1 << 24:
        raise ValueError(f"instance ID {iid} in {value!r} is not a 24-bit value")
    return EidPrefix(iid, _network(m.group(2)))


Address = Annotated[IPAddress, BeforeValidator(_address)]
Prefix = Annotated[IPNetwork, BeforeValidator(_network)]
EidText = Annotated[EidPrefix, BeforeValidator(_eid_text)]
U8 = Annotated[int, Field(ge=0, le=255)]
InstanceId = Annotated[int, Field(ge=0, lt=1 << 24)]
Seconds = Annotated[float, Field(gt=0)]
Algorithm = Literal["hmac-sha1", "hmac-sha256", "hmac-sha256-hkdf"]
LispSecMode = Literal["off", "on", "required"]
XtrId = Annotated[str, Field(pattern=r"^[0-9a-fA-F]{32}$")]
SiteId = Annotated[int, Field(ge=0, lt=1 << 64)]
IfName = Annotated[str, Field(pattern=r"^[^\s/:]{1,15}$")]

_ACTIONS = {
    "no-action": MapAction.NO_ACTION,
    "natively-forward": MapAction.NATIVELY_FORWARD,
    "send-map-request": MapAction.SEND_MAP_REQUEST,
    "drop": MapAction.DROP,
    "drop-policy-denied": MapAction.DROP_POLICY_DENIED,
    "drop-auth-failure": MapAction.DROP_AUTH_FAILURE,
}
ActionName = Literal["no-action", "natively-forward", "send-map-request", "drop",
                     "drop-policy-denied", "drop-auth-failure"]


def action_of(name: str) -> MapAction:
    return _ACTIONS[name]


def _unique(items: list) -> list:
    seen = set()
    for item in items:
        if item in seen:
            raise ValueError(f"{item} is listed twice")
        seen.add(item)
    return items


# ---------------------------------------------------------------- locators

class LocatorConfig(_Model):
    """A locator by address, or by interface (its addresses, optionally of one family)."""
    address: Address | None = None
    interface: str | None = None
    family: Literal["ipv4", "ipv6"] | None = None
    priority: U8 = 1
    weight: U8 = 100

    @model_validator(mode="after")
    def _one_source(self) -> "LocatorConfig":
        if (self.address is None) == (self.interface is None):
            raise ValueError("give exactly one of 'address' or 'interface'")
        if self.family is not None and self.interface is None:
            raise ValueError("'family' only applies to a locator given by 'interface'")
        return self

    def rloc(self, address: IPAddress | None = None) -> Rloc:
        addr = address if address is not None else self.address
        if addr is None:
            raise ValueError(f"locator on interface {self.interface} has no address yet")
        return Rloc(addr, self.priority, self.weight)

    def matches_family(self, addr: IPAddress) -> bool:
        return self.family is None or (self.family == "ipv4") == (addr.version == 4)


class AddressLocator(_Model):
    """A locator that must be given by address (static map-cache, PETR)."""
    address: Address
    priority: U8 = 1
    weight: U8 = 100

    def rloc(self) -> Rloc:
        return Rloc(self.address, self.priority, self.weight)


# ---------------------------------------------------------------- xTR side

class DatabaseEntry(_Model):
    eid_prefix: Prefix
    instance_id: InstanceId = 0
    locator: list[LocatorConfig] = Field(min_length=1)

    @property
    def eid(self) -> EidPrefix:
        return EidPrefix(self.instance_id, self.eid_prefix)


class MapServerConfig(_Model):
    address: Address
    key: str = Field(min_length=1)
    key_id: U8 = 0
    algorithm: Algorithm = "hmac-sha256"
    want_map_notify: bool = True
    proxy_reply: bool = False
    # Register only the database prefixes inside these (several mapping
    # systems at once; "[5]0.0.0.0/0" + "[5]::/0" = all of instance 5). Empty: all.
    eid_prefix: list[EidText] = []


class MapResolverConfig(_Model):
    address: Address
    # RFC 9437 publish/subscribe: Map-Requests through this resolver carry the
    # I and N bits; the Map-Server pushes changes as Map-Notify signed with
    # this key (a configured PubSubKey, RFC 9437 section 7.1). Without it the
    # ITR relies on SMRs from the remote ETRs.
    subscribe: bool = False
    key: Annotated[str, Field(min_length=1)] | None = None
    key_id: U8 = 0
    # LISP-SEC (RFC 9303, docs/security.md): "on" protects Map-Requests through
    # this resolver with a one-time key wrapped under lisp-sec-key (shared with
    # the resolver, key ID lisp-sec-key-id) and refuses badly signed replies;
    # "required" also refuses unsigned ones.
    lisp_sec: LispSecMode = "off"
    lisp_sec_key: Annotated[str, Field(min_length=1)] | None = None
    lisp_sec_key_id: U8 = 0
    # Resolve only EIDs inside these through this resolver (the most specific
    # scope covering an EID wins; unscoped resolvers serve the rest). Empty: any.
    eid_prefix: list[EidText] = []

    @model_validator(mode="after")
    def _key_for_subscribe(self) -> "MapResolverConfig":
        if self.subscribe and self.key is None:
            raise ValueError("'subscribe = true' needs the 'key' the Map-Server signs notifications with")
        if self.lisp_sec != "off" and self.lisp_sec_key is None:
            raise ValueError(f"'lisp-sec = \"{self.lisp_sec}\"' needs the 'lisp-sec-key' shared with the resolver")
        return self


class MapCacheEntry(_Model):
    """A static map-cache entry: installed at start, never expires."""
    eid_prefix: Prefix
    instance_id: InstanceId = 0
    locator: list[AddressLocator] = []
    action: ActionName | None = None

    @model_validator(mode="after")
    def _positive_or_negative(self) -> "MapCacheEntry":
        if not self.locator and self.action is None:
            raise ValueError("a map-cache entry without locators needs an 'action'")
        return self

    @property
    def eid(self) -> EidPrefix:
        return EidPrefix(self.instance_id, self.eid_prefix)

    @property
    def map_action(self) -> MapAction:
        return action_of(self.action) if self.action else MapAction.NO_ACTION


class DatapathConfig(_Model):
    """The BPF data plane's sizing ([datapath], docs/datapath.md "Map-cache size")."""
    # Map-cache entries per address family (IPv4 and IPv6 each). The maps are
    # created with it (changing it recompiles); kernel memory is taken per
    # entry installed, plus a fixed 32 bytes per id (2 x this) for the hash
    # tables' buckets: 64 MiB at the default.
    max_mappings: Annotated[int, Field(ge=1024, le=1 << 24)] = 1 << 20
    # Map-cache tables installed at start, in bulk (the format of
    # `lispctl map-cache load`); they never expire.
    map_cache_files: Annotated[list[str], AfterValidator(_unique)] = []


class InterfacesConfig(_Model):
    eid_facing: list[str] = []
    rloc_facing: list[str] = []
    # Where the ETR decapsulates: XDP on physical NICs (one frame at a time,
    # before the stack), tc on virtual devices where XDP would defeat GSO.
    rloc_mode: Literal["auto", "tc", "xdp"] = "auto"
    # Where the ITR encapsulates, the same choice: XDP in front of tc on
    # physical NICs (tc keeps GSO super-packets and what XDP passes on).
    eid_mode: Literal["auto", "tc", "xdp"] = "auto"
    # Inner TCP/UDP checksums on the underlay: "complete" switches the tx
    # checksum offload of the RLOC interfaces off, so any ETR (a userspace
    # one too) gets valid packets; "offload" keeps it (super-packets cross
    # veth whole: lispctl ETRs only); "auto": complete on virtual devices.
    rloc_checksum: Literal["auto", "complete", "offload"] = "auto"


class ItrConfig(_Model):
    # What the data plane does with a packet that misses the map-cache while
    # we resolve it; "petr" needs [[proxy-etr]]. Default: petr if configured, else drop.
    miss_action: Literal["drop", "natively-forward", "petr"] | None = None
    map_request_interval: Seconds = 1.0       # first retry after this, per EID prefix
    map_request_backoff: Annotated[float, Field(ge=1.0)] = 2.0
    map_request_max_interval: Seconds = 30.0
    map_request_retries: Annotated[int, Field(ge=0, le=20)] = 4
    # Overall cap on Map-Requests sent (misses, retries, refreshes, SMR-invoked),
    # per second; one per destination per second regardless (RFC 9301 5.3).
    map_request_rate: Annotated[float, Field(gt=0, le=100000)] = 100.0
    # A Map-Resolver with a request unanswered this long is skipped for
    # map-resolver-holddown seconds (the next one of its set is asked first).
    map_resolver_timeout: Seconds = 3.0
    map_resolver_holddown: Seconds = 60.0
    # Negative entry installed when the mapping system never answers.
    unreachable_negative_ttl: Seconds = 60.0
    # Refresh a used entry this many seconds before its TTL runs out.
    refresh_before: Seconds = 30.0
    # ITRs that asked us for our mapping within this window receive SMRs.
    smr_window: Seconds = 900.0
    # RLOC probing (RFC 9300 10.1 / RFC 9301): every interval, one probe per
    # map-cache locator; `rloc-probe-retries` probes lost in a row (each
    # unanswered for `rloc-probe-timeout`, retried at once) mark it unreachable.
    rloc_probe_interval: Annotated[float, Field(ge=0)] = 0.0      # 0: off
    rloc_probe_timeout: Seconds = 2.0
    rloc_probe_retries: Annotated[int, Field(ge=1, le=20)] = 3
    # xTR-ID / site-ID for publish/subscribe (I bit); default: those of [etr].
    xtr_id: XtrId | None = None
    site_id: SiteId | None = None


class EtrConfig(_Model):
    register_interval: Seconds = 60.0
    # First retry when no Map-Notify came; doubles up to register-interval.
    register_retry: Seconds = 2.0
    record_ttl_minutes: Annotated[int, Field(ge=0, le=0xFFFFFFFF)] = 1440
    xtr_id: XtrId | None = None
    site_id: SiteId = 0
    # SMRs to ITRs that asked for our mapping when our locators change: sent at
    # once, then at most one burst per target per smr-min-interval, doubling
    # while changes keep coming (up to smr-max-interval).
    smr: bool = True
    smr_min_interval: Seconds = 0.1
    smr_max_interval: Seconds = 5.0
    # Map-Requests answered (RLOC probes included), per second: per ITR-RLOC
    # answered (bursts of twice that) and overall (RFC 9301 5.3).
    map_reply_rate_per_itr: Annotated[float, Field(gt=0, le=100000)] = 100.0
    map_reply_rate: Annotated[float, Field(gt=0, le=1000000)] = 1000.0


class NatConfig(_Model):
    """[nat]: NAT traversal of an xTR / mobile node (docs/nat.md)."""
    # Send Info-Requests and, for an RLOC found behind a NAT, register and
    # send data through the RTR the Map-Server offers.
    enabled: bool = False
    # Keepalive of a NATed RLOC: an Info-Request to the Map-Server and an
    # ECM'd Map-Register to the RTR, both from port 4341, this often. Below
    # the NAT's UDP binding timeout (Linux conntrack: 30 s unreplied,
    # 120 s once replied; many home NATs: 30-60 s).
    keepalive_interval: Seconds = 20.0
    # First Info-Request retransmission while unanswered; doubles up to
    # keepalive-interval.
    info_retry: Seconds = 1.0


class RtrConfig(_Model):
    """[rtr]: the RTR's control plane (docs/nat.md)."""
    # The only Map-Servers NATed xTRs' registrations are forwarded to (an
    # RTR forwarding anywhere would be a reflector).
    map_servers: list[Address] = []
    # A NATed xTR is forgotten this long after its last confirmed register.
    peer_timeout: Seconds = 180.0
    max_peers: Annotated[int, Field(ge=1, le=1 << 20)] = 4096
    # ECM'd Map-Registers forwarded per second, per source address and in
    # all (token buckets, roles/ratelimit.py; 0 = no limit).
    register_rate_per_source: Annotated[float, Field(ge=0)] = 10.0
    register_rate: Annotated[float, Field(ge=0)] = 1000.0
    # MS-RTR keys by Map-Server address: a Map-Notify from that Map-Server is
    # relayed (and binds a peer) only with a valid MS-RTR MAC (R bit); the
    # same key is in the Map-Server's [ms] rtr-keys (docs/nat.md, "Security").
    map_server_keys: dict[Address, Annotated[str, Field(min_length=1)]] = {}


# ---------------------------------------------------------------- PITR / PETR (RFC 6832)

class PetrConfig(_Model):
    # Inner source EID prefixes this Proxy-ETR forwards for; anything else is
    # dropped and counted (petr_src_denied). Absent: any source, which makes
    # the PETR an open relay for whoever can reach its RLOCs.
    accept_eids: list[EidText] | None = None


class PitrConfig(_Model):
    # The EID aggregates this Proxy-ITR attracts from the Internet (announced
    # through BGP while it can serve them) and encapsulates toward the sites.
    eid_prefixes: Annotated[list[EidText], AfterValidator(_unique)] = Field(min_length=1)
    # Where non-LISP traffic arrives: the ITR program runs on their ingress.
    internet_facing: Annotated[list[IfName], AfterValidator(_unique)] = Field(min_length=1)
    # Kernel routing table the aggregates are installed in (blackhole routes,
    # protocol route-protocol) while the PITR can serve; a BGP daemon exports
    # that table (docs/interworking.md). 0: install nothing.
    announce_table: Annotated[int, Field(ge=0, lt=1 << 31)] = 4343
    route_protocol: Annotated[int, Field(ge=5, le=254)] = 218
    # Each Map-Resolver is asked about its own address (a non-EID: it answers
    # itself) every health-interval; serving = one answered within health-timeout.
    health_interval: Seconds = 1.0
    health_timeout: Seconds = 2.5
    # Anyone on the Internet picks the destinations a PITR resolves: at most
    # this many resolutions at a time, and this many new ones per second
    # (token bucket, burst of one second's worth); the rest are dropped (counted).
    max_pending: Annotated[int, Field(ge=1, le=1 << 20)] = 1024
    map_request_rate: Annotated[float, Field(gt=0)] = 100.0


# ---------------------------------------------------------------- MS / MR side

# The [[site]] tables are validated by pydantic like the rest, but held as
# frozen slotted dataclasses: a Map-Server may have 100,000 of them, and a
# BaseModel instance carries a __dict__ and a set of the fields given (about
# 500 bytes each) where slots take 8 bytes a field.
_SITE_CONFIG = ConfigDict(extra="forbid", alias_generator=_hyphen, populate_by_name=True, defer_build=True)


def _own(value: object) -> object:
    """A copy of a string the TOML parser made: the parser's strings sit
    among its temporary objects, and one kept alive keeps their memory
    pages (with 100,000 sites, about 1 KB a site of free but unreturnable
    memory); a copy made now sits with the other validated objects."""
    return value.encode("utf-8", "surrogatepass").decode("utf-8", "surrogatepass") if type(value) is str else value


OwnStr = Annotated[str, BeforeValidator(_own)]


@pydantic_dataclass(frozen=True, slots=True, config=_SITE_CONFIG)
class SiteEidPrefix:
    prefix: Prefix
    instance_id: InstanceId = 0
    accept_more_specifics: bool = False
    proxy_reply: bool = False

    @property
    def eid(self) -> EidPrefix:
        return EidPrefix(self.instance_id, self.prefix)


@pydantic_dataclass(frozen=True, slots=True, config=_SITE_CONFIG)
class SiteConfig:
    name: Annotated[OwnStr, Field(min_length=1, max_length=64)]
    keys: dict[U8, Annotated[OwnStr, Field(min_length=1)]] = Field(min_length=1)
    eid_prefix: list[SiteEidPrefix] = Field(min_length=1)
    description: str = ""
    # Publish/subscribe: ITRs whose Map-Requests carry this site-ID may
    # subscribe; their Map-Notifies are signed with keys[pubsub-key-id]
    # (default: the lowest key ID).
    site_id: SiteId | None = None
    pubsub_key_id: U8 | None = None

    @model_validator(mode="after")
    def _pubsub_key(self) -> "SiteConfig":
        if self.pubsub_key_id is not None and self.pubsub_key_id not in self.keys:
            raise ValueError(f"pubsub-key-id {self.pubsub_key_id} is not one of the site's keys")
        return self

    @property
    def pubsub_key(self) -> tuple[int, str]:
        kid = self.pubsub_key_id if self.pubsub_key_id is not None else min(self.keys)
        return kid, self.keys[kid]


# Bound of [ms] workers: processes beyond the cores only add context switches;
# 64 keeps the reuseport group (control + request + worker sockets) small.
MS_WORKERS_MAX = 64


class MsConfig(_Model):
    registration_timeout: Seconds = 180.0
    # Map-Register worker processes (docs/daemon.md, "A Map-Server on several
    # cores"); 1: the daemon's own process handles them (no worker).
    workers: Annotated[int, Field(ge=1, le=MS_WORKERS_MAX)] = 1
    # RFC 9437: accept subscriptions (Map-Request N and I bits) and push
    # changes as Map-Notify, retransmitted until a Map-Notify-Ack.
    pubsub: bool = True
    notify_interval: Seconds = 1.0          # first retransmission; doubles
    notify_retries: Annotated[int, Field(ge=0, le=10)] = 3
    # NAT traversal (docs/nat.md): the RTRs an Info-Reply offers to xTRs
    # behind a NAT (those of the xTR's address family).
    rtr_rlocs: list[Address] = []
    # MS-RTR keys by RTR address: a Map-Notify answering a registration with
    # an xTR-ID that such an RTR forwarded carries the R bit and the MS-RTR
    # MAC with this key, so the RTR can tell it from a forged one.
    rtr_keys: dict[Address, Annotated[str, Field(min_length=1)]] = {}


class MrForward(_Model):
    """A remote Map-Server and the EID prefixes it is responsible for."""
    address: Address
    eid_prefix: list[EidText] = Field(min_length=1)


class MrDdtConfig(_Model):
    """[mr.ddt]: resolve iteratively through a DDT tree (RFC 8111 section 7)
    instead of forwarding to [[mr.map-server]]."""
    root: list[Address] = Field(min_length=1)          # the root DDT nodes' RLOCs
    request_timeout: Seconds = 1.0      # wait this long for one node, then ask the next of its set
    max_attempts: Annotated[int, Field(ge=1, le=64)] = 8        # DDT Map-Requests sent per resolution
    max_referrals: Annotated[int, Field(ge=1, le=64)] = 16      # referrals followed per resolution (depth)
    max_pending: Annotated[int, Field(ge=1, le=1 << 20)] = 4096        # resolutions in flight
    referral_cache_size: Annotated[int, Field(ge=1, le=1 << 22)] = 65536


class MrConfig(_Model):
    non_eid_ttl_minutes: Annotated[int, Field(ge=0, le=0xFFFFFFFF)] = 15
    unregistered_ttl_minutes: Annotated[int, Field(ge=0, le=0xFFFFFFFF)] = 1
    unregistered_action: Literal["send-map-request", "drop"] = "send-map-request"
    map_server: list[MrForward] = []
    # ECM'd Map-Requests taken per second (RFC 9301: Map-Resolvers and
    # Map-Servers rate-limit the requests they answer), per requesting address
    # (the outer source) and in total; bursts of one second's worth; 0 = no
    # limit. A Map-Server answering ECMs without the mr role uses them too.
    request_rate_per_source: Annotated[float, Field(ge=0)] = 100.0
    request_rate: Annotated[float, Field(ge=0)] = 5000.0
    ddt: MrDdtConfig | None = None


# ---------------------------------------------------------------- DDT (RFC 8111)

class DdtDelegation(_Model):
    """A more-specific prefix handed to child DDT nodes or to Map-Servers."""
    eid_prefix: EidText
    type: Literal["ddt-node", "map-server"] = "ddt-node"
    address: Annotated[list[Address], AfterValidator(_unique)] = Field(min_length=1, max_length=32)


class DdtConfig(_Model):
    """[ddt]: what a DDT node (role ddt-node) or a DDT Map-Server is authoritative for."""
    authoritative_prefix: list[EidText] = []
    delegation: list[DdtDelegation] = []
    # RFC 8111 section 6.4: TTLs of the referrals we send, in minutes.
    referral_ttl_minutes: Annotated[int, Field(ge=0, le=0xFFFFFFFF)] = 1440
    hole_ttl_minutes: Annotated[int, Field(ge=0, le=0xFFFFFFFF)] = 15
    not_registered_ttl_minutes: Annotated[int, Field(ge=0, le=0xFFFFFFFF)] = 1
    # (ms) the other Map-Servers of the same sites: MS-ACK and MS-NOT-REGISTERED
    # then list this one and these, with the I bit clear (a complete set).
    ms_peers: Annotated[list[Address], AfterValidator(_unique)] = Field(default=[], max_length=31)
    # Map-Referrals sent per second at most (a token bucket of one second);
    # excess requests are counted and dropped.
    max_referral_rate: Annotated[float, Field(gt=0)] = 10000.0


class LispSecConfig(_Model):
    """LISP-SEC on a Map-Resolver / Map-Server: the pre-shared keys of the
    ITRs (by key ID) that unwrap their one-time keys. Must differ from every
    Map-Register key (RFC 9303 6.5: otherwise an ETR could overclaim)."""
    itr_keys: dict[U8, Annotated[str, Field(min_length=1)]] = {}


# ---------------------------------------------------------------- mobile node

class MobileNodeConfig(_Model):
    """The host-side EID device (lispctl.net.mobile.MobileNode)."""
    eid_device: IfName = "lmn0"
    mtu: Annotated[int, Field(ge=1280, le=65535)] = 1444
    eid_table: Annotated[int, Field(ge=1, lt=1 << 31)] = 4341
    uplink_table_base: Annotated[int, Field(ge=1, lt=1 << 31)] = 4342


class CpmConfig(_Model):
    """[cpm]: accept Change-Priority Messages from hypervisors (docs/cpm.md)."""
    # key ID (16 bits, as in the message) -> shared key; HMAC-SHA-256 only
    keys: dict[Annotated[int, Field(ge=0, le=0xFFFF)], Annotated[str, Field(min_length=1)]] = Field(min_length=1)
    max_skew: Seconds = 30.0          # refuse timestamps further than this from our clock
    rate: Annotated[float, Field(ge=0)] = 20.0             # CPMs looked at per second, overall (0: no limit)
    rate_per_source: Annotated[float, Field(ge=0)] = 5.0   # ... and per sending address
    resolve_timeout: Seconds = 5.0    # wait this long for a correspondent's mapping before giving up


# ---------------------------------------------------------------- operations

def parse_listen(text: str) -> tuple[str, int]:
    """'127.0.0.1:9342', '[::1]:9342', ':9342' -> (host, port); host '' is every
    address, IPv4 and IPv6."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r}: expected ADDRESS:PORT, e.g. '127.0.0.1:9342' or '[::1]:9342'")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if host:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"{text!r}: {host!r} is not an IPv4 or IPv6 address") from None
    return host, int(port)


class MetricsConfig(_Model):
    """Prometheus endpoint (docs/metrics.md); off unless `listen` is given."""
    listen: str | None = None

    @field_validator("listen")
    @classmethod
    def _address_port(cls, v: str | None) -> str | None:
        if v is not None:
            parse_listen(v)
        return v


# ---------------------------------------------------------------- device

RoleName = Literal["xtr", "itr", "etr", "ms", "mr", "ddt-node", "rtr", "pitr", "petr", "mobile-node"]


class Config(_Model):
    instance: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
    roles: Annotated[list[RoleName], AfterValidator(_unique)] = Field(min_length=1)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    metrics: MetricsConfig = _default(MetricsConfig)
    control_addresses: list[Address] = Field(
        default_factory=lambda: [ipaddress.ip_address("0.0.0.0"), ipaddress.ip_address("::")],
        min_length=1)
    interfaces: InterfacesConfig = _default(InterfacesConfig)
    datapath: DatapathConfig = _default(DatapathConfig)
    database: list[DatabaseEntry] = []
    map_server: list[MapServerConfig] = []
    map_resolver: list[MapResolverConfig] = []
    proxy_etr: list[AddressLocator] = []
    map_cache: list[MapCacheEntry] = []
    itr: ItrConfig = _default(ItrConfig)
    etr: EtrConfig = _default(EtrConfig)
    ms: MsConfig = _default(MsConfig)
    mr: MrConfig = _default(MrConfig)
    site: list[SiteConfig] = []
    lisp_sec: LispSecConfig = _default(LispSecConfig)
    ddt: DdtConfig = _default(DdtConfig)
    mobile_node: MobileNodeConfig = _default(MobileNodeConfig)
    nat: NatConfig = _default(NatConfig)
    rtr: RtrConfig = _default(RtrConfig)
    pitr: PitrConfig | None = None
    petr: PetrConfig = _default(PetrConfig)
    cpm: CpmConfig | None = None

    @field_validator("control_addresses")
    @classmethod
    def _unique_addresses(cls, v: list) -> list:
        return _unique(v)

    # Role helpers: "xtr" is shorthand for itr + etr.
    @property
    def is_itr(self) -> bool:
        return bool({"xtr", "itr", "mobile-node"} & set(self.roles))

    @property
    def is_etr(self) -> bool:
        return bool({"xtr", "etr", "mobile-node"} & set(self.roles))

    @property
    def is_pitr(self) -> bool:
        return "pitr" in self.roles

    @property
    def is_petr(self) -> bool:
        return "petr" in self.roles

    @property
    def is_mobile_node(self) -> bool:
        return "mobile-node" in self.roles

    @property
    def xtr_id(self) -> int | None:
        """The xTR-ID the ITR puts in subscriptions ([itr], else [etr])."""
        text = self.itr.xtr_id or self.etr.xtr_id
        return int(text, 16) if text else None

    @property
    def site_id(self) -> int:
        return self.itr.site_id if self.itr.site_id is not None else self.etr.site_id

    @property
    def is_ms(self) -> bool:
        return "ms" in self.roles

    @property
    def is_mr(self) -> bool:
        return "mr" in self.roles

    @property
    def is_rtr(self) -> bool:
        return "rtr" in self.roles

    @property
    def is_ddt_node(self) -> bool:
        return "ddt-node" in self.roles

    @property
    def miss_action(self) -> str:
        if self.itr.miss_action is not None:
            return self.itr.miss_action
        return "petr" if self.proxy_etr else "drop"

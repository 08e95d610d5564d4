"""Map-Server: authenticates Map-Registers per site, holds registrations
(merged across the site's xTRs, expiring without refresh), sends Map-Notify
when asked, and resolves ECM'd Map-Requests: forwarded to a registered ETR
(as an ECM with the E bit, RFC 9301 section 5.8/8.2) or answered itself when
the registration asked for proxy-reply.

A Map-Register that fails authentication, uses an unknown key or claims a
prefix outside its site gets no answer and changes nothing; it is counted.
Registrations are bound to what the MAC covers (the xTR-ID, else the record's
RLOCs), never to the packet's source: replays from anywhere add no
registrant, and Map-Notifies and forwarded Map-Requests go only to RLOCs the
message names (docs/ms-security.md).

Publish/subscribe (RFC 9437): an ECM'd Map-Request with the I bit and an
EID-record's N bit
subscribes its xTR-ID to the registered prefix that answers it (or, while
nothing is registered, to the configured site prefix around it). The
subscriber's site-ID selects the [[site]] whose pubsub key signs the
notifications (a configured PubSubKey, RFC 9437 section 7.1; we do not derive
one from LISP-SEC). The subscription is confirmed with a Map-Notify carrying
the current mapping and the request's nonce; every later change of the
merged locator set (a new registration, a locator added, removed or changing
priority/weight/R bit) is pushed as a Map-Notify with the nonce incremented
by one, retransmitted with back-off until the subscriber's Map-Notify-Ack.
A subscription lasts the TTL of the mapping; the ITR renews it by asking again.

LISP-SEC (RFC 9303, lispctl.roles.lispsec): a protected Map-Request is opened
with [lisp-sec] itr-keys and answered per RFC 9303 Table 1: a signed proxy
reply, a forward to an ETR that registered with the S bit (MS-OTK wrapped
under its Map-Register key), or a signed negative reply with ETR-Cant-Sign.
"""
from __future__ import annotations

import array
import bisect
import dataclasses
import heapq
import ipaddress
import itertools
from ipaddress import IPv4Address, IPv6Address
from dataclasses import dataclass
from typing import Any, cast

from lispctl.config import Config, SiteConfig, SiteEidPrefix
from lispctl.mapping.lpm import LpmTable, eid_sort_key, host_prefix, least_specific_uncovered
from lispctl.mapping.types import EidPrefix, IPAddress, MapAction
from lispctl.roles.base import CONTROL_PORT, Effect, Effects, Endpoint, Log
from lispctl.roles.common import Counters, decode, reply_target
from lispctl.roles.ddt import MapServerDdt, is_ddt_request
from lispctl.roles.lispsec import Opened, ms_eid_ad, ms_signed, open_request, to_etr
from lispctl.roles.nat_ms import InfoResponder
from lispctl.roles.ratelimit import PER_KEY, RateLimiter
from lispctl.wire import (ALG_HMAC_SHA256, AUTH_DATA_LENGTHS, ECM, MAP_NOTIFY, MAP_REGISTER,
                          Address, EidRecord, EncapsulatedControlMessage, InfoRequest, InstanceId, LocatorRecord,
                          MalformedMessage, MapNotify, MapNotifyAck, MapRegister, MapReply, MapRequest, RequestRecord,
                          SourceDestKey, UnknownLcaf, eid_record,
                          record_prefix, sign, verify)
from lispctl.wire.auth import (_DIGESTS, _NOTIFY_I, _ZEROS, compare_digest, hmac_pads, hmac_with, map_notify_from,
                               verify_register)
from lispctl.wire.control import _AUTH_HDR, _MREG_M, _MREG_P, _MREG_S
from lispctl.wire.records import decode_eid_records

# Least bound of the memo of decoded Map-Registers (_Shape); cleared when
# full (accept-more-specifics lets a site register many distinct prefixes).
_SHAPES_MIN = 65536
# Per site: how many replaced Map-Register MACs are remembered to refuse
# replays: _SUPERSEDED_MAX, fewer when there are many sites so that all
# together stay under _SUPERSEDED_TOTAL (at least _SUPERSEDED_MIN per site).
_SUPERSEDED_MAX = 4096
_SUPERSEDED_TOTAL = 1 << 20
_SUPERSEDED_MIN = 16
# Up to this many per site (more than 4,096 sites) they are kept as 8-byte
# fingerprints in one bytearray, oldest first (searched by memmem: about
# 200 bytes a site at 16, against 1.3 KB as a dict of ints); more, in a dict.
_SUPERSEDED_RING_MAX = 256
# The expiry heap's entries are re-filed (or dropped) from this long before
# their time on (_expiry_due): the ticks a stale top entry causes come about
# once a second, each taking every entry of that second.
_REFILE_AHEAD = 1.0
# A Map-Register worker reports at most this many registrations again per
# tick: registrations that arrived together come due together (100,000
# after a restart), and each costs the worker a pickle and the main process
# a merge.
_REPORT_BATCH = 1024


# The first word of the Map-Notify answering a one-record Map-Register
# (map_notify_from), by whether it has an xTR-ID (the I bit)
_NOTIFY_HEAD = {has_xtr: ((MAP_NOTIFY << 28) | (_NOTIFY_I if has_xtr else 0) | 1).to_bytes(4, "big")
                for has_xtr in (False, True)}


def superseded_per_site(sites: int) -> int:
    return max(_SUPERSEDED_MIN, min(_SUPERSEDED_MAX, _SUPERSEDED_TOTAL // max(1, sites)))


def _fingerprint(mac: bytes) -> int:
    """What the replay memo keeps of a MAC: its first 64 bits (a 36-byte int
    instead of a 65-byte bytes object plus an OrderedDict node). Nobody
    without the site's key can make a message whose MAC starts like a
    remembered one, and an honest new MAC does so with odds of 2^-64."""
    return int.from_bytes(mac[:8], "big")


@dataclass(slots=True)
class Registration:
    """One xTR's registration of one prefix (slots: a Map-Server holds one per
    site and xTR, 100,000s of them)."""
    registrant: str                  # xTR-ID (hex) or source RLOC
    source: Endpoint                 # where the Map-Register came from
    record: EidRecord
    proxy_reply: bool
    first_seen: float
    last_seen: float
    expires_at: float
    xtr_id: int | None = None
    site_id: int | None = None
    # Where forwarded Map-Requests (and Map-Notifies to a source that is not
    # an RLOC) go: an RLOC of the record, never an unauthenticated address.
    etr: Endpoint | None = None
    mac: bytes = b""                 # authentication data of its latest message
    nonce: int = 0                   # and its nonce
    nonces_vary: bool = False        # seen with two nonces: repeats are replays
    lisp_sec: bool = False           # registered with the S bit (RFC 9303 6.3)
    key_id: int = 0                  # of the key it registered with (wraps its MS-OTK)
    # Map-Server workers (docs/daemon.md, "A Map-Server on several cores"):
    # in the main process, the worker that holds it (-1: this process); in a
    # worker, the expiry the main process was last told
    origin: int = -1
    reported: float = 0.0


_REGISTRATION_FIELDS = tuple(f.name for f in dataclasses.fields(Registration))


@dataclass
class Subscription:
    key: EidPrefix                   # registered (or configured) prefix subscribed to
    asked: EidPrefix                 # what the ITR asked for (inside key)
    xtr_id: int
    site_id: int
    target: Endpoint                 # ITR-RLOC, port 4342
    nonce: int                       # last nonce used towards the subscriber
    key_id: int
    secret: str
    site_name: str
    created: float
    expires_at: float
    notifies: int = 0
    acked: int = 0
    outstanding: tuple[Any, ...] | None = None     # key of its unacknowledged Map-Notify


@dataclass
class _Outgoing:
    sub: Subscription
    payload: bytes
    attempts: int
    next_at: float
    interval: float


# (its IP RLOCs, usable IP RLOCs best first; often the same tuple); tuples,
# not sets: a record has a few RLOCs, and 100,000 sites hold one each
_Rlocs = tuple[tuple[IPAddress, ...], tuple[IPAddress, ...]]


class _Shape:
    """What a Map-Register's first word and the bytes after its MAC (records,
    xTR-ID/site-ID, trailer) decide: everything but the nonce, key ID and MAC.
    A site re-registers with the same records every minute, only the nonce
    and MAC change, so the Map-Server keeps one per distinct such bytes of an
    authenticated message and never decodes a refresh again. A pure function
    of those bytes and the configured sites (dropped on reconfigure)."""
    __slots__ = ("word", "records", "xtr_id", "site_id", "owners", "site", "rlocs_of", "registrants",
                 "body_end", "src_addr", "from_rloc", "etr", "key_id", "key", "fast", "more", "alg_id", "alen")

    def __init__(self, word: int, records: tuple[EidRecord, ...], xtr_id: int | None, site_id: int | None,
                 owners: tuple[list[Any], ...], site: "_Site", rlocs_of: tuple[_Rlocs, ...],
                 trailer_len: int) -> None:
        self.word = word
        self.records = records
        self.xtr_id = xtr_id
        self.site_id = site_id
        self.owners = owners
        self.site = site
        self.rlocs_of = rlocs_of
        xtr = f"{xtr_id:032x}" if xtr_id is not None else None
        # who registers each record: the xTR-ID, else the record's RLOC set
        self.registrants = tuple(xtr or _rloc_name(r[0]) for r in rlocs_of)
        self.body_end = -trailer_len if trailer_len else None     # end of records + xTR-ID/site-ID
        # the last source seen and what follows from it (an ETR registers from one address)
        self.src_addr: IPAddress | None = None
        self.from_rloc = False
        self.etr: Endpoint | None = None
        # the site's key it last authenticated with (its ID, as bytes)
        self.key_id = -1
        self.key: bytes | None = None
        # The registration a refresh of these bytes updates on the fast path
        # (MapServerRole.refresh), with the algorithm and MAC length it was
        # last authenticated with; None when its last message here did not
        # qualify (_fast_ok). more: those of its other records, in order (a
        # dual-stack ETR registers its IPv4 and IPv6 EIDs in one message)
        self.fast: Registration | None = None
        self.more: tuple[Registration, ...] = ()
        self.alg_id = -1
        self.alen = -1

    def source(self, addr: IPAddress) -> tuple[bool, Endpoint | None]:
        """(source is one of the message's RLOCs, the registrant's ETR endpoint).
        The whole message is authenticated: any RLOC of any of its records
        is the registrant's. Its ETR is the source when that is one of them
        (the address we know reaches it), else an RLOC of the source's
        family (an IPv4-only MS with a site's IPv6 EIDs on IPv6 RLOCs)."""
        if addr is not self.src_addr and addr != self.src_addr:
            from_rloc = any(addr in r[0] for r in self.rlocs_of)
            if from_rloc:
                etr: Endpoint | None = Endpoint(addr, CONTROL_PORT)
            else:
                usable = [a for r in self.rlocs_of for a in r[1]]
                best = next((a for a in usable if a.version == addr.version), usable[0] if usable else None)
                etr = Endpoint(best, CONTROL_PORT) if best is not None else None
            self.src_addr, self.from_rloc, self.etr = addr, from_rloc, etr
        return self.from_rloc, self.etr


def _rloc_name(addrs: tuple[IPAddress, ...]) -> str:
    """The name of a registrant without xTR-ID: its RLOC set."""
    if len(addrs) == 1:
        return str(addrs[0])
    return ",".join(sorted({str(a) for a in addrs}, key=lambda t: (":" in t, ipaddress.ip_address(t)))) or "no-rloc"


def _address_key(a: Address) -> tuple[int, int]:
    """Sort/compare key of a locator address: (integer, family) for IP; LCAF
    and other AFIs (accepted in registrations) by their hash, never raising."""
    if isinstance(a, (IPv4Address, IPv6Address)):
        return int(a), a.version
    return hash(a), 0


def _within(a: EidPrefix, b: EidPrefix) -> bool:
    # subnet_of wants one concrete family; the version test guarantees it
    return (a.iid == b.iid and a.prefix.version == b.prefix.version
            and a.prefix.subnet_of(b.prefix))  # type: ignore[arg-type]


class _Prefix:
    """A configured site prefix. The registrations of exactly it are found in
    the registered table; `more` holds those of its more-specifics
    (accept-more-specifics), created with the first."""
    __slots__ = ("site", "cfg", "eid", "more")

    def __init__(self, site: "_Site", cfg: SiteEidPrefix) -> None:
        self.site = site
        self.cfg = cfg
        self.eid = cfg.eid          # one EidPrefix object, shared by its registrations
        self.more: dict[EidPrefix, dict[str, Registration]] | None = None


class _Site:
    """A configured site's state (slots, nothing allocated before it is
    used: a Map-Server may hold 100,000)."""
    __slots__ = ("cfg", "registers", "bad_auth", "superseded", "superseded_max")

    def __init__(self, cfg: SiteConfig, superseded_max: int = _SUPERSEDED_MAX) -> None:
        self.cfg = cfg
        self.registers = 0
        self.bad_auth = 0
        # Fingerprints of the MACs of messages a registrant replaced by one
        # with another nonce (oldest first, at most superseded_max): such
        # bytes arriving again are replays. Created with the first
        # (_supersede, _replayed).
        self.superseded: dict[int, None] | bytearray | None = None
        self.superseded_max = superseded_max

    def key(self, key_id: int) -> bytes | None:
        """Its key with this ID, as bytes (what HMAC takes)."""
        k = self.cfg.keys.get(key_id)
        return None if k is None else k.encode("utf-8")


def _ring_key(mac: bytes) -> bytes:
    """_fingerprint(mac) as the 8 bytes a ring holds."""
    fp = mac[:8]
    return fp if len(fp) == 8 else fp.rjust(8, b"\0")


def _supersede(site: _Site, mac: bytes) -> None:
    superseded = site.superseded
    if superseded is None:
        superseded = site.superseded = bytearray() if site.superseded_max <= _SUPERSEDED_RING_MAX else {}
    if type(superseded) is bytearray:
        if len(superseded) >= 8 * site.superseded_max:
            del superseded[:8]                  # the oldest
        superseded += _ring_key(mac)
        return
    assert type(superseded) is dict
    if len(superseded) >= site.superseded_max:
        # the oldest: a plain dict keeps insertion order; the deleted slots
        # the scan skips are compacted whenever the dict resizes
        del superseded[next(iter(superseded))]
    superseded[_fingerprint(mac)] = None


def _replayed(superseded: dict[int, None] | bytearray, mac: bytes) -> bool:
    """Is mac's fingerprint in a site's superseded list?"""
    if not isinstance(superseded, bytearray):
        return _fingerprint(mac) in superseded
    fp = _ring_key(mac)
    i = superseded.find(fp)
    while i > 0 and i & 7:                      # only whole entries count
        i = superseded.find(fp, i + 1)
    return i >= 0


def superseded_count(site: _Site) -> int:
    s = site.superseded
    return 0 if s is None else len(s) // 8 if type(s) is bytearray else len(s)


class MapServerRole:
    name = "ms"

    def __init__(self, cfg: Config, *, answer_ecm: bool = True) -> None:
        self.cfg = cfg
        # With the MR in the same process the MR calls resolve() itself.
        self.answer_ecm = answer_ecm
        self.sites = [_Site(s, superseded_max=superseded_per_site(len(cfg.site))) for s in cfg.site]
        self.configured: LpmTable[_Prefix] = LpmTable()
        for site in self.sites:
            for sp in site.cfg.eid_prefix:
                self.configured.insert(sp.eid, _Prefix(site, sp))
        self.registered: LpmTable[dict[str, Registration]] = LpmTable()
        # (expires_at, seq, eid, registrant, registration): one entry per
        # Registration object, filed when it is created. A refresh updates the
        # object in place; the entry is re-filed at the new time when it comes
        # to the top (cheaper than a push per Map-Register, and bounded).
        self._expiry: list[tuple[float, int, EidPrefix, str, Registration]] = []
        # bytes after the MAC of an authenticated Map-Register -> its _Shape;
        # bounded (cleared when full) at twice the configured prefixes or more
        self._shapes: dict[bytes, _Shape] = {}
        self._shapes_max = max(_SHAPES_MIN, 2 * len(self.configured))
        self._seq = itertools.count()
        self.subs: dict[tuple[EidPrefix, int], Subscription] = {}
        self._sub_expiry: list[tuple[float, int, tuple[EidPrefix, int]]] = []
        self.outgoing: dict[tuple[int, object], _Outgoing] = {}    # (nonce, ITR address)
        self._site_by_id = {s.cfg.site_id: s for s in self.sites if s.cfg.site_id is not None}
        self.counters = Counters()
        self._now = 0.0
        self.limit = RateLimiter(cfg.mr.request_rate_per_source, cfg.mr.request_rate)
        # what the daemon hands to handle() (its message registry, by type):
        # ECMs too, for DDT Map-Requests even when the MR answers the others
        self.message_types = frozenset({MapRegister.TYPE, MapNotifyAck.TYPE, EncapsulatedControlMessage.TYPE,
                                        InfoRequest.TYPE})
        self.ddt = MapServerDdt(cfg, self)       # DDT Map-Requests (RFC 8111): roles/ddt.py
        self.nat = InfoResponder(self)           # Info-Request -> Info-Reply: roles/nat_ms.py
        # -- as a Map-Register worker (daemon/msworkers.py); all None/empty otherwise:
        # (eid, registrant, Registration or None: gone) for the main process,
        # taken by the daemon after each batch; a refresh that changes nothing
        # appends nothing, but before the main process's copy would expire
        # (within half the registration timeout of it) the registration is
        # reported again with its current expiry (_report_due)
        self.report: list[tuple[EidPrefix, str, Registration | None]] | None = None
        self._report_heap: list[tuple[float, int, EidPrefix, str, Registration]] = []
        # the replay memory that outlives the worker: add(entry) for every
        # MAC a replay of which must be refused, and for the first message
        # of each registration (_journal; daemon/msworkers.py)
        self.journal: Any = None
        # from a previous worker of this shard: the fingerprints it refused
        # replays of, and those of first messages (a replay once the
        # registrant moved on); sorted, searched by bisection, 8 bytes each
        self.restored: Any = ()
        self.restored_first: Any = ()
        # the workers' per-site (registers, bad_auth), added to the snapshot
        self.remote_site_counters: Any = None

    # ------------------------------------------------------------ timers
    def _expiry_due(self, now: float) -> bool:
        """Is the registration of the expiry heap's top entry due (at now)?
        Entries are looked at only from _REFILE_AHEAD before their time: one
        of a removed registration is dropped, one of a refreshed one re-filed
        at its current expiry (a refresh moves expires_at in place: a site
        re-registering every minute is re-filed about once per timeout, not
        once per refresh). So the heap's top time, next_deadline, can be
        earlier than the real next expiry, never later."""
        heap = self._expiry
        horizon = now + _REFILE_AHEAD
        while heap and heap[0][0] <= horizon:
            at, _, eid, registrant, reg = heap[0]
            regs = self.registered.get(eid)
            if regs is None or regs.get(registrant) is not reg:
                heapq.heappop(heap)                  # removed (de-registered, expired, replaced)
            elif reg.expires_at != at:
                heapq.heapreplace(heap, (reg.expires_at, next(self._seq), eid, registrant, reg))
            else:
                return at <= now
        return False

    def _sub_live(self, at: float, key: tuple[EidPrefix, int]) -> bool:
        sub = self.subs.get(key)
        return sub is not None and sub.expires_at == at

    def next_deadline(self) -> float | None:
        # the top entry's time, maybe that of a registration refreshed or
        # removed since: tick re-files or drops it then (_expiry_due)
        best = self._expiry[0][0] if self._expiry else None
        if self._report_heap:
            at = self._report_heap[0][0]
            best = at if best is None or at < best else best
        if self._sub_expiry or self.outgoing:
            while self._sub_expiry and not self._sub_live(self._sub_expiry[0][0], self._sub_expiry[0][2]):
                heapq.heappop(self._sub_expiry)
            times = [best] if best is not None else []
            if self._sub_expiry:
                times.append(self._sub_expiry[0][0])
            if self.outgoing:
                times.append(min(o.next_at for o in self.outgoing.values()))
            best = min(times, default=None)
        return best

    def tick(self, now: float) -> list[Effect]:
        self._now = now
        out = Effects()
        if self._report_heap:
            self._report_due(now)
        while self._expiry_due(now):
            _, _, eid, key, reg = heapq.heappop(self._expiry)
            before = self._locator_view(eid)
            regs = self.registered.get(eid)
            assert regs is not None             # an expiry entry is dropped with its registrations
            del regs[key]
            if reg.nonces_vary and reg.origin < 0:
                # an ETR that varies its nonce never sends these bytes again
                # (in a worker the journal has it already: _apply_record;
                # a worker's registration in the union: its worker refuses them)
                owner = self.configured.longest_covering(eid)
                if owner is not None:
                    _supersede(owner[1].site, reg.mac)
            if reg.origin >= 0:
                # a worker's, not refreshed in time: the worker died (or its
                # notice of the expiry is on its way)
                self.counters["union_registration_expired"] += 1
            else:
                self.counters["registration_expired"] += 1
                out.log(f"registration of {eid} by {key} expired")
                if self.report is not None:
                    self.report.append((eid, key, None))
            if not regs:
                self._forget(eid)
            elif self._locator_view(eid) != before:
                self.publish(eid, now, out)
        while self._sub_expiry and self._sub_expiry[0][0] <= now:
            at, _, sub_key = heapq.heappop(self._sub_expiry)
            if self._sub_live(at, sub_key):
                self._drop_sub(sub_key)
                self.counters["subscription_expired"] += 1
        for okey, o in [(k, o) for k, o in self.outgoing.items() if o.next_at <= now]:
            if o.attempts > self.cfg.ms.notify_retries:
                del self.outgoing[okey]
                o.sub.outstanding = None
                self.counters["pubsub_notify_gave_up"] += 1
                out.log(f"no Map-Notify-Ack from {o.sub.target.addr} for {o.sub.key}")
                continue
            out.send(o.payload, o.sub.target)
            o.attempts += 1
            o.next_at = now + o.interval
            o.interval *= 2
            self.counters["pubsub_notify_retransmit"] += 1
        return out.items

    def _drop_sub(self, key: tuple[EidPrefix, int]) -> None:
        sub = self.subs.pop(key, None)
        if sub is not None and sub.outstanding is not None:
            self.outgoing.pop(sub.outstanding, None)

    def _file(self, owner: _Prefix, eid: EidPrefix, regs: dict[str, Registration]) -> None:
        """The first registration of eid, inside owner."""
        self.registered.insert(eid, regs)
        if eid != owner.eid:
            if owner.more is None:
                owner.more = {}
            owner.more[eid] = regs

    def _forget(self, eid: EidPrefix) -> None:
        self.registered.remove(eid)
        owner = self.configured.longest_covering(eid)
        if owner is not None and owner[1].more:
            owner[1].more.pop(eid, None)

    def _registrations(self, site: _Site) -> list[tuple[EidPrefix, dict[str, Registration]]]:
        """What is registered in a site's prefixes (and their more-specifics)."""
        out = []
        for sp in site.cfg.eid_prefix:
            p = self.configured.get(sp.eid)
            if p is None or p.site is not site:
                continue
            regs = self.registered.get(p.eid)
            if regs:
                out.append((p.eid, regs))
            if p.more:
                out.extend(p.more.items())
        return out

    # ------------------------------------------------------------ datagrams
    def handle(self, data: bytes, src: Endpoint, dst: Endpoint, now: float) -> list[Effect]:
        self._now = now
        if data and data[0] >> 4 == MAP_REGISTER and len(data) >= 16 and type(data) is bytes:
            # A refresh of known records: no decoding (_Shape)
            w, nonce, key_id, alg_id, alen = _AUTH_HDR.unpack_from(data, 0)
            if AUTH_DATA_LENGTHS.get(alg_id) == alen:
                shape = self._shapes.get(data[16 + alen:])
                if shape is not None and shape.word == w:
                    out = Effects()
                    self._register(data, shape, nonce, key_id, alg_id, data[16:16 + alen], src, now, out)
                    return out.items
        if self.answer_ecm and resolver_ecm(data) and (over := self.limit.allow(src.addr, now)) is not None:
            return rate_limited(self.counters, over, src)     # before decoding: cheap under a flood
        out = Effects()
        try:
            msg = decode(data)
        except MalformedMessage:
            if not self._bad_mac_length(data, src, out):
                raise
            return out.items
        if isinstance(msg, MapRegister):
            self._on_register(data, msg, src, now, out)
        elif isinstance(msg, MapNotifyAck):
            self.counters["map_notify_ack_rx"] += 1
            o = self.outgoing.get((msg.nonce, src.addr))
            if o is not None:                # a subscriber acknowledges a publication
                if verify(data, o.sub.secret):
                    del self.outgoing[(msg.nonce, src.addr)]
                    o.sub.outstanding = None
                    o.sub.acked += 1
                    self.counters["pubsub_notify_ack_rx"] += 1
                else:
                    self.counters["pubsub_notify_ack_bad_auth"] += 1
        elif type(msg) is InfoRequest:
            self.nat.on_info_request(data, msg, src, dst, now, out)
        elif is_ddt_request(msg):
            out.items.extend(self.ddt.handle(msg, data, src, dst, now))
        elif (isinstance(msg, EncapsulatedControlMessage) and isinstance(msg.message, MapRequest)
              and self.answer_ecm and not msg.to_etr):
            self.counters["map_request_rx"] += 1
            effects = self.resolve(msg, data, now)
            if effects is None:
                effects = negative_reply(self.cfg, msg, self.configured, None, self.counters, self.registered)
            out.items.extend(effects)
        return out.items

    def _bad_mac_length(self, data: bytes, src: Endpoint, out: Effects) -> bool:
        """A Map-Register whose authentication data is not the full MAC of its
        algorithm (e.g. HMAC-SHA-1-96 truncated to 12 bytes) does not decode;
        it is an authentication failure, not line noise: counted and logged
        as one (for its site when its records can be read)."""
        if len(data) < 16 or data[0] >> 4 != MAP_REGISTER:
            return False
        w, _, key_id, alg_id, alen = _AUTH_HDR.unpack_from(data, 0)
        if AUTH_DATA_LENGTHS.get(alg_id) == alen:
            return False                     # malformed for another reason
        site = None
        try:
            recs, _ = decode_eid_records(data, 16 + alen, len(data), w & 0xFF)
            _, site, unknown, several = self._owners_for(recs)
            if unknown or several:
                site = None
        except MalformedMessage:
            pass
        self.counters["map_register_bad_auth"] += 1
        self.counters["map_register_bad_mac_length"] += 1
        if site is not None:
            site.bad_auth += 1
        out.log(f"dropped Map-Register from {src.addr}"
                f"{' for site ' + site.cfg.name if site is not None else ''}: authentication failed "
                f"({alen}-byte MAC for algorithm {alg_id}, key-id {key_id})",
                kind="map-register-auth-failed", peer=src.addr)
        return True

    def _site_of(self, eid: EidPrefix) -> _Prefix | None:
        hit = self.configured.longest_covering(eid)
        if hit is None:
            return None
        prefix, owner = hit
        if prefix != eid and not owner.cfg.accept_more_specifics:
            return None
        return owner

    def _owners_for(self, records: tuple[EidRecord, ...]) -> tuple[tuple[list[Any], ...], _Site | None, bool, bool]:
        """([EidPrefix, owner, registrations dict or None] per record, the
        site, some record outside every site, records of several sites).
        A registrations dict is never empty while it is in `registered` (it
        is forgotten when it empties), so a non-empty one in an entry (a
        _Shape keeps them) is the live one and spares the table lookup."""
        owners = []
        site = None
        unknown = not records
        several = False
        for rec in records:
            try:
                eid = record_prefix(rec)
            except MalformedMessage:
                unknown = True
                continue
            owner = self._site_of(eid)
            if owner is None:
                unknown = True
                continue
            # the configured prefix's own object where it is the same prefix
            owners.append([owner.eid if eid == owner.eid else eid, owner, None])
            if site is None:
                site = owner.site
            elif owner.site is not site:
                several = True
        return tuple(owners), site, unknown, several

    def _on_register(self, data: bytes, msg: MapRegister, src: Endpoint, now: float, out: Effects) -> None:
        """A Map-Register whose records were not seen before (or not lately):
        find their site, then as _register; its _Shape is kept once it
        authenticates."""
        records = msg.records
        owners, site, unknown, several = self._owners_for(records)
        if unknown or several or site is None:
            self.counters["map_register_rx"] += 1
            self.counters["map_register_bad_prefix"] += 1
            out.log(f"dropped Map-Register from {src.addr}: "
                    f"{'prefixes of several sites' if several else 'prefix not configured for any site'}",
                    kind="map-register-bad-prefix", peer=src.addr)
            return
        alen = len(msg.auth_data)
        shape = _Shape(_AUTH_HDR.unpack_from(data, 0)[0], records, msg.xtr_id, msg.site_id, owners, site,
                       tuple(self._rlocs(rec) for rec in records), len(msg.trailer))
        if self._register(data, shape, msg.nonce, msg.key_id, msg.alg_id, msg.auth_data, src, now, out):
            if len(self._shapes) >= self._shapes_max:
                self._shapes.clear()
            self._shapes[data[16 + alen:]] = shape

    def _register(self, data: bytes, shape: _Shape, nonce: int, key_id: int, alg_id: int, mac: bytes,
                  src: Endpoint, now: float, out: Effects) -> bool:
        """Authenticate a Map-Register of a known shape and apply it; False
        when it does not authenticate."""
        counters = self.counters
        counters["map_register_rx"] += 1
        site = shape.site
        key = shape.key if key_id == shape.key_id else site.key(key_id)
        if key is None or not verify_register(data, alg_id, len(mac), key):
            site.bad_auth += 1
            counters["map_register_bad_auth"] += 1
            out.log(f"dropped Map-Register from {src.addr} for site {site.cfg.name}: "
                    f"{'unknown key-id ' + str(key_id) if key is None else 'authentication failed'}",
                    kind="map-register-auth-failed", peer=src.addr)
            return False
        if key_id != shape.key_id:
            shape.key_id, shape.key = key_id, key
        if (site.superseded and _replayed(site.superseded, mac)) \
                or (self.restored and self._restored(mac)) \
                or (self.restored_first and self._replays_first(mac, shape)):
            # An authentic message the registrant has since replaced by one
            # with another nonce: a replay (the ETR itself never goes back).
            counters["map_register_replayed"] += 1
            out.log(f"dropped replayed Map-Register from {src.addr} for site {site.cfg.name}",
                    kind="map-register-replayed", peer=src.addr)
            return True
        site.registers += 1
        word = shape.word
        timeout = self.cfg.ms.registration_timeout
        subs = self.subs
        changed = []
        reg = None
        applied = []
        repeat = True
        from_rloc, etr = shape.source(src.addr)
        for entry, rec, registrant in zip(shape.owners, shape.records, shape.registrants):
            eid = entry[0]
            before = self._locator_view(eid) if subs else None
            r, rep = self._apply_record(entry, rec, registrant, from_rloc, etr, shape, nonce, key_id, mac,
                                        src, site, now, timeout, out)
            reg = reg or r
            applied.append(r)
            repeat = repeat and rep
            if subs and self._locator_view(eid) != before:
                changed.append(eid)
        # the next refresh of these bytes (another nonce) takes the fast path
        # when the registrations of all its records hold this very message
        # and it qualifies
        shape.fast = reg if reg is not None and reg.mac == mac and self._fast_ok(shape, from_rloc, alg_id) \
            and all(r is not None and r.mac == mac for r in applied) else None
        shape.more = tuple(r for r in applied[1:] if r is not None) if shape.fast is not None else ()
        shape.alg_id, shape.alen = alg_id, len(mac)
        if not repeat:
            counters["map_register_ok"] += 1
        elif reg is not None and reg.nonces_vary:
            counters["map_register_repeat_ignored"] += 1     # a replay of its latest message
        else:
            counters["map_register_ok"] += 1
            counters["map_register_repeated"] += 1
        if word & _MREG_M:
            # To the registrant, never blindly to the source: the source of a
            # Map-Register is not authenticated, its RLOCs are. A source that is
            # one of them keeps its port (lispers.net registers from an
            # ephemeral port); any other gets the notify at the registrant's RLOC.
            to: Endpoint | None
            if from_rloc:
                to = src
            elif reg is not None and reg.etr is not None and not (repeat and reg.nonces_vary):
                to = reg.etr
            else:
                to = None
            if to is not None:
                # == sign(MapNotify(nonce, records, key_id, alg_id, xtr_id, site_id), key)
                notify = map_notify_from(data, alg_id, len(mac), key, len(shape.records),
                                         shape.xtr_id is not None, shape.body_end)
                if shape.xtr_id is not None and self.nat.rtr_keys:   # maybe to an RTR: MS-RTR MAC (roles/nat_ms.py)
                    notify = self.nat.for_rtr(notify, to)
                out.send(notify, to)
                counters["map_notify_tx"] += 1
        if changed:
            for eid in dict.fromkeys(changed):
                self.publish(eid, now, out)
        return True

    def _fast_ok(self, shape: _Shape, from_rloc: bool, alg_id: int) -> bool:
        """May refreshes of this shape take the fast path (refresh)? No
        record a de-registration, the M bit, from an RLOC of a record
        (the Map-Notify goes back to the source), HMAC-SHA-1 or -SHA-256;
        no MS-RTR authentication to add. In a Map-Register worker too:
        refresh journals and reports as _apply_record does. The S bit (LISP-SEC) may be set: a refresh
        has the first word of the message the registration holds, so its
        lisp_sec stays as it is (every lispctl ETR sets S)."""
        return (all(rec.ttl != 0 for rec in shape.records) and from_rloc
                and shape.word & _MREG_M != 0 and alg_id in _DIGESTS
                and not (shape.xtr_id is not None and self.nat.rtr_keys))

    def fast_path(self) -> tuple[int, Any] | None:
        """(Map-Register, refresh): the daemon offers each datagram to refresh
        first while this role alone takes Map-Registers (a Map-Register
        worker's included: refresh journals and reports its refreshes)."""
        return MAP_REGISTER, self.refresh

    def refresh(self, data: bytes, src: Endpoint, now: float) -> bytes | None:
        """The fast path of the common Map-Register: a registration
        refreshed by its registrant with the same record, flags, key and
        source as its latest message, and a new nonce (a site re-registering
        every minute). Returns the Map-Notify for src, after the very
        changes and counts handle() makes for it; None for anything else
        (another message, a first registration, changed records, a repeat of
        the latest message, a replay, a bad MAC, another source...): then
        handle() must have data, and decides as always.

        Recognised by the bytes after the MAC (its _Shape) and the header
        without nonce and MAC; authenticated with one HMAC over data with
        the MAC zeroed; its expiry moves in place (the expiry heap is
        re-filed lazily, tick); the Map-Notify is the Map-Register's own
        bytes with another first word and MAC (map_notify_from), under the
        same HMAC key pads."""
        if len(data) < 16 or data[0] >> 4 != MAP_REGISTER or type(data) is not bytes:
            return None
        w, nonce, key_id, alg_id, alen = _AUTH_HDR.unpack_from(data, 0)
        tail = data[16 + alen:]
        shape = self._shapes.get(tail)
        if shape is None:
            return None
        reg = shape.fast
        if reg is None or w != shape.word or key_id != shape.key_id or alg_id != shape.alg_id \
                or alen != shape.alen or (src.addr is not shape.src_addr and src.addr != shape.src_addr):
            return None
        site = shape.site
        mac = data[16:16 + alen]
        if mac == reg.mac:
            return None
        superseded = site.superseded
        if superseded and _replayed(superseded, mac):
            return None
        if (self.restored and self._restored(mac)) \
                or (self.restored_first and self._replays_first(mac, shape)):
            return None                    # accepted by this shard's previous worker: handle() refuses it
        regs = shape.owners[0][2]
        if regs is None or regs.get(shape.registrants[0]) is not reg or reg.record is not shape.records[0] \
                or reg.etr is not shape.etr or reg.key_id != key_id or not shape.from_rloc:
            shape.fast = None              # changed since by another message (or gone)
            return None
        more = shape.more
        if more:                           # the same for each other record, before anything changes
            for i, r in enumerate(more, 1):
                regs = shape.owners[i][2]
                if regs is None or regs.get(shape.registrants[i]) is not r or r.record is not shape.records[i] \
                        or r.etr is not shape.etr or r.key_id != key_id:
                    shape.fast = None
                    return None
        # both MACs under the same key pads
        digest = _DIGESTS[alg_id]
        pads = hmac_pads(shape.key, digest)     # type: ignore[arg-type]   # (set with key_id)
        zeros = _ZEROS[alen]
        if not compare_digest(hmac_with(digest, pads, data[:16] + zeros + tail), mac):
            return None
        # what _register and _apply_record do for it
        self._now = now
        counters = self.counters
        counters["map_register_rx"] += 1
        site.registers += 1
        if nonce != reg.nonce:
            self._new_nonce(site, reg)
        timeout = self.cfg.ms.registration_timeout
        expires_at = now + timeout
        reg.last_seen, reg.expires_at = now, expires_at
        reg.mac, reg.nonce, reg.source = mac, nonce, src
        # a Map-Register worker's journal and reports (nothing else changed:
        # _report_refresh would find nothing to report)
        worker = self.journal is not None or self.report is not None
        if worker:
            self._refreshed(shape.owners[0][0], shape.registrants[0], reg, mac, now, timeout)
        if more:                           # each record as _apply_record does, in order
            for i, r in enumerate(more, 1):
                if nonce != r.nonce:
                    self._new_nonce(site, r)
                r.last_seen, r.expires_at = now, expires_at
                r.mac, r.nonce, r.source = mac, nonce, src
                if worker:
                    self._refreshed(shape.owners[i][0], shape.registrants[i], r, mac, now, timeout)
            head = (((MAP_NOTIFY << 28) | (_NOTIFY_I if shape.xtr_id is not None else 0) | (len(more) + 1))
                    .to_bytes(4, "big") + data[4:16])
        else:
            head = _NOTIFY_HEAD[shape.xtr_id is not None] + data[4:16]
        counters["map_register_ok"] += 1
        counters["map_notify_tx"] += 1
        body = tail if shape.body_end is None else tail[:shape.body_end]
        return head + hmac_with(digest, pads, head + zeros + body) + body

    @staticmethod
    def _rlocs(rec: EidRecord) -> _Rlocs:
        """(RLOC addresses, usable RLOC addresses best first) of a record:
        what the MAC covers, so what a registration is bound to."""
        locs = rec.locators
        addrs = tuple(l.address for l in locs if isinstance(l.address, (IPv4Address, IPv6Address)))
        usable = sorted((l for l in locs if type(l.address) in (IPv4Address, IPv6Address)),
                        key=lambda l: (not l.reachable, l.priority == 255, l.priority))
        # usable holds IP-address locators only (filtered above)
        best = tuple(cast(IPAddress, l.address) for l in usable)
        return addrs, addrs if best == addrs else best

    def _apply_record(self, entry: list[Any], rec: EidRecord, registrant: str, in_rlocs: bool,
                      etr: Endpoint | None, shape: _Shape, nonce: int, key_id: int, mac: bytes,
                      src: Endpoint, site: _Site, now: float,
                      timeout: float, out: Effects) -> tuple[Registration | None, bool]:
        """(the registration, whether the message only repeated its latest one)."""
        eid, owner, regs = entry
        if not regs:
            regs = entry[2] = self.registered.get(eid)
        old = regs.get(registrant) if regs else None
        xtr_id, word = shape.xtr_id, shape.word
        if old is None and regs and xtr_id is None:
            # An xTR without xTR-ID whose RLOCs changed: its registration is
            # the one last refreshed from this very source address. Only a new,
            # authentic message reaches here (replays are dropped above).
            for k, r in regs.items():
                if r.xtr_id is None and r.source.addr == src.addr and r.origin < 0:    # not a worker's
                    old = regs.pop(k)
                    old.registrant = registrant
                    regs[registrant] = old
                    if self.report is not None:
                        self.report.append((eid, k, None))       # reported again under its new name
                    heapq.heappush(self._expiry, (old.expires_at, next(self._seq), eid, registrant, old))
                    break
        if old is not None:
            if mac == old.mac:
                # The very bytes of its latest message: an ETR that reuses its
                # nonce refreshes this way; a replay does the same, and changes
                # nothing else. A registrant known to vary its nonce is not even
                # refreshed by it.
                if not old.nonces_vary:
                    old.last_seen, old.expires_at = now, now + timeout
                    if in_rlocs:
                        old.source = src
                    if self.report is not None:
                        self._report_late(eid, registrant, old, now, timeout)
                return old, True
            if nonce != old.nonce:
                self._new_nonce(site, old)
        if rec.ttl == 0:       # de-registration
            if old is not None:
                del regs[registrant]
                if not regs:
                    self._forget(eid)
                out.log(f"{eid} de-registered by {registrant} (site {site.cfg.name})")
                if self.report is not None:
                    self.report.append((eid, registrant, None))
            return None, False
        if regs is None:
            regs = entry[2] = {}
            self._file(owner, eid, regs)
        proxy_reply = bool(word & _MREG_P) or owner.cfg.proxy_reply
        if old is not None:             # a refresh: its expiry entry is re-filed lazily
            if self.report is not None:
                self._report_refresh(eid, registrant, old, rec, proxy_reply, etr, xtr_id, shape.site_id,
                                     bool(word & _MREG_S), key_id, mac)
            old.record, old.proxy_reply = rec, proxy_reply
            old.last_seen, old.expires_at, old.xtr_id, old.site_id = now, now + timeout, xtr_id, shape.site_id
            old.mac, old.nonce, old.etr = mac, nonce, etr
            old.lisp_sec, old.key_id = bool(word & _MREG_S), key_id
            if in_rlocs:
                old.source = src
            if self.journal is not None or self.report is not None:
                self._refreshed(eid, registrant, old, mac, now, timeout)
            return old, False
        reg = regs[registrant] = Registration(
            registrant, src, rec, proxy_reply, now, now, now + timeout, xtr_id, shape.site_id, etr, mac, nonce,
            lisp_sec=bool(word & _MREG_S), key_id=key_id)
        heapq.heappush(self._expiry, (reg.expires_at, next(self._seq), eid, registrant, reg))
        out.log(f"{eid} registered by {registrant} (site {site.cfg.name})")
        if self.journal is not None:
            self._journal(mac, first=True)
        if self.report is not None:
            self._report(eid, registrant, reg)
        return reg, False

    def _new_nonce(self, site: _Site, old: Registration) -> None:
        """A new message of a registration has another nonce than its latest
        (handle or refresh, before the registration is updated): its
        registrant varies its nonce, so the latest is a replay from now on."""
        if not old.nonces_vary and self.journal is not None:
            self._journal(old.mac)        # journaled only as a first message when it arrived
        old.nonces_vary = True
        _supersede(site, old.mac)

    # ------------------------------------------------------------ Map-Register workers
    def _refreshed(self, eid: EidPrefix, registrant: str, reg: Registration, mac: bytes, now: float,
                   timeout: float) -> None:
        """In a Map-Register worker: reg was just refreshed by a new message
        whose MAC is mac (handle or refresh, after any report of what
        changed): journaled, and reported when the main process's copy is
        due (_report_late); a refresh that changes nothing else is not."""
        if self.journal is not None and reg.nonces_vary:
            # its latest message: here a repeat of it refreshes nothing
            # (map_register_repeat_ignored); a worker after this one refuses it
            self._journal(mac)
        if self.report is not None:
            self._report_late(eid, registrant, reg, now, timeout)

    def _journal(self, mac: bytes, first: bool = False) -> None:
        """A journal entry: the fingerprint without its lowest bit, which
        tells a registration's first message (whether its registrant varies
        its nonce is not known yet) from a MAC to refuse."""
        self.journal.add(_fingerprint(mac) & ~1 | first)

    @staticmethod
    def _listed(table: Any, mac: bytes) -> bool:
        fp = _fingerprint(mac) & ~1
        i = bisect.bisect_left(table, fp)
        return i < len(table) and bool(table[i] == fp)

    def _restored(self, mac: bytes) -> bool:
        return self._listed(self.restored, mac)

    def _replays_first(self, mac: bytes, shape: _Shape) -> bool:
        """The first message of a registration a previous worker accepted,
        while this worker holds that registration from another message: the
        registrant has moved on, so this is a replay. (Without a
        registration here it may be an ETR that reuses its nonce: those very
        bytes must refresh it.)"""
        if not self._listed(self.restored_first, mac):
            return False
        for entry, registrant in zip(shape.owners, shape.registrants):
            regs = entry[2] or self.registered.get(entry[0])
            old = regs.get(registrant) if regs else None
            if old is not None and old.mac != mac:
                return True
        return False

    def restore(self, entries: Any) -> None:
        """A worker that replaces a dead one (or the workers after a reload):
        the MACs its predecessors refused replays of are replays here too,
        and so are the first messages of their registrations once the
        registrant has sent another."""
        refused = {e & ~1 for e in entries if not e & 1}
        first = {e & ~1 for e in entries if e & 1}
        self.restored = array.array("Q", sorted(refused))
        self.restored_first = array.array("Q", sorted(first))

    def _report(self, eid: EidPrefix, registrant: str, reg: Registration) -> None:
        assert self.report is not None
        self.report.append((eid, registrant, reg))
        reg.reported = reg.expires_at
        heapq.heappush(self._report_heap, (reg.expires_at - self.cfg.ms.registration_timeout / 2,
                                           next(self._seq), eid, registrant, reg))

    def _report_refresh(self, eid: EidPrefix, registrant: str, old: Registration, rec: EidRecord,
                        proxy_reply: bool, etr: Endpoint | None, xtr_id: int | None, site_id: int | None,
                        lisp_sec: bool, key_id: int, mac: bytes) -> None:
        """A worker's registration refreshed by a new message (called before
        it is updated): reported when what the main process uses changed."""
        if (old.record is not rec and old.record != rec) or old.proxy_reply != proxy_reply \
                or (old.etr is not etr and old.etr != etr) or old.xtr_id != xtr_id or old.site_id != site_id \
                or old.lisp_sec != lisp_sec or old.key_id != key_id:
            assert self.report is not None
            self.report.append((eid, registrant, old))
            old.reported = self._now + self.cfg.ms.registration_timeout
            heapq.heappush(self._report_heap, (old.reported - self.cfg.ms.registration_timeout / 2,
                                               next(self._seq), eid, registrant, old))

    def _report_late(self, eid: EidPrefix, registrant: str, reg: Registration, now: float,
                     timeout: float) -> None:
        """A refresh after the time its report was due (reg.reported -
        timeout / 2: _report_due found nothing new then, after a lost
        refresh, and stopped watching it): reported now, or the main
        process's copy would expire while this one lives on."""
        if now >= reg.reported - timeout / 2 and reg.expires_at > reg.reported:
            self._report(eid, registrant, reg)

    def _report_due(self, now: float) -> None:
        """Registrations whose copy in the main process comes within half
        the registration timeout of expiring: reported again if refreshed
        since (else they expire here, and there, at the same time)."""
        heap = self._report_heap
        budget = _REPORT_BATCH          # the rest at the next tick, after the datagrams waiting meanwhile
        while heap and heap[0][0] <= now and budget:
            budget -= 1
            _, _, eid, registrant, reg = heapq.heappop(heap)
            regs = self.registered.get(eid)
            if regs is None or regs.get(registrant) is not reg or reg.expires_at <= reg.reported:
                continue
            self._report(eid, registrant, reg)

    def merge(self, origin: int, changes: list[tuple[EidPrefix, str, Registration | None]],
              now: float) -> list[Effect]:
        """In the main process: what worker `origin` reported. Its
        registrations join the union (Map-Requests, LISP-SEC,
        publish/subscribe, the API) and expire here at the time last
        reported, unless reported again: a worker that dies leaves them until
        then. A removal removes only an entry that worker reported."""
        self._now = now
        out = Effects()
        subs = self.subs
        for eid, registrant, reg in changes:
            owner = self._site_of(eid)
            if owner is None:
                continue                    # not a configured site (any more: a reload in between)
            if eid == owner.eid:
                eid = owner.eid             # not the unpickled copy: one object per prefix
            regs = self.registered.get(eid)
            before = self._locator_view(eid) if subs else None
            if reg is None:
                cur = regs.get(registrant) if regs else None
                if regs is None or cur is None or cur.origin != origin:
                    continue
                del regs[registrant]
                if not regs:
                    self._forget(eid)
            else:
                reg.origin = origin
                if regs is None:
                    regs = {}
                    self._file(owner, eid, regs)
                cur = regs.get(registrant)
                if cur is not None and cur.origin == origin and reg.expires_at >= cur.expires_at:
                    # reported again (every half timeout or so): updated in
                    # place, its expiry entry re-filed lazily, as a refresh;
                    # a new object would live on in its heap entry until then
                    for name in _REGISTRATION_FIELDS:
                        setattr(cur, name, getattr(reg, name))
                else:
                    regs[registrant] = reg      # an old object's expiry entry is dropped lazily
                    heapq.heappush(self._expiry, (reg.expires_at, next(self._seq), eid, registrant, reg))
            if subs and self._locator_view(eid) != before:
                self.publish(eid, now, out)
        return out.items

    # ------------------------------------------------------------ publish/subscribe
    def _locator_view(self, eid: EidPrefix) -> tuple[tuple[Any, ...], ...] | None:
        """What subscribers care about: the merged locator set (None: unregistered)."""
        regs = self.registered.get(eid)
        if not regs:
            return None
        return tuple(sorted((*_address_key(l.address), l.priority, l.weight, l.reachable)
                            for l in self.merged_record(eid, regs).locators))

    def _subscribe(self, asked: EidPrefix, hit: tuple[EidPrefix, dict[str, Registration]] | None,
                   ecm: EncapsulatedControlMessage, now: float,
                   out: Effects) -> None:
        req = ecm.message
        assert isinstance(req, MapRequest)      # resolve() is handed Map-Request ECMs only
        if not self.cfg.ms.pubsub:
            self.counters["subscribe_disabled"] += 1
            return
        if req.xtr_id is None:
            self.counters["subscribe_without_xtr_id"] += 1
            return
        # A bare xTR-ID (lispers.net sends no site-ID) subscribes as site-ID 0.
        site_id = req.site_id if req.site_id is not None else 0
        site = self._site_by_id.get(site_id)
        if site is None:
            self.counters["subscribe_unknown_site"] += 1
            out.log(f"subscription for {asked} from xTR-ID {req.xtr_id:032x} refused: "
                    f"no [[site]] with site-id {site_id}")
            return
        target = reply_target(req.itr_rlocs, CONTROL_PORT)
        if target is None:
            self.counters["map_request_no_itr_rloc"] += 1
            return
        if hit is not None:
            key_eid, regs = hit
            record = self.merged_record(key_eid, regs)
            ttl_s = 60.0 * max(1, min(record.ttl, 1440 * 7))
        else:
            owner = self.configured.longest_covering(asked)
            if owner is None:
                self.counters["subscribe_not_eid"] += 1
                return
            key_eid, record = owner[0], None
            ttl_s = 60.0 * max(1, self.cfg.mr.unregistered_ttl_minutes)
        kid, secret = site.cfg.pubsub_key
        key = (key_eid, req.xtr_id)
        self._drop_sub(key)                 # a renewal replaces the old state and nonce
        sub = Subscription(key_eid, asked, req.xtr_id, site_id, target, req.nonce, kid, secret,
                           site.cfg.name, now, now + ttl_s)
        self.subs[key] = sub
        heapq.heappush(self._sub_expiry, (sub.expires_at, next(self._seq), key))
        self.counters["subscription_accepted"] += 1
        out.log(f"{target.addr} (xTR-ID {req.xtr_id:032x}) subscribed to {key_eid}")
        if record is not None:
            self._notify(sub, record, req.nonce, now, out)   # confirms, with the current mapping

    def publish(self, eid: EidPrefix, now: float, out: Effects) -> None:
        """The registration of eid changed: push it to every subscriber it concerns."""
        regs = self.registered.get(eid)
        if not regs:
            return
        record = None
        for sub in self.subs.values():
            if sub.expires_at <= now or not _within(eid, sub.key) or not _within(sub.asked, eid):
                continue
            record = record or self.merged_record(eid, regs)
            sub.nonce = (sub.nonce + 1) & 0xFFFFFFFFFFFFFFFF
            self._notify(sub, record, sub.nonce, now, out)

    def _notify(self, sub: Subscription, record: EidRecord, nonce: int, now: float, out: Effects) -> None:
        if sub.outstanding is not None:      # superseded: only the newest mapping matters
            self.outgoing.pop(sub.outstanding, None)
        msg = MapNotify(nonce, (record,), key_id=sub.key_id, alg_id=ALG_HMAC_SHA256,
                        xtr_id=sub.xtr_id, site_id=sub.site_id)
        payload = sign(msg, sub.secret)
        out.send(payload, sub.target)
        interval = self.cfg.ms.notify_interval
        sub.outstanding = (nonce, sub.target.addr)
        self.outgoing[sub.outstanding] = _Outgoing(sub, payload, 1, now + interval, interval * 2)
        sub.notifies += 1
        self.counters["pubsub_notify_tx"] += 1
        out.log(f"Map-Notify for {record_prefix(record)} to subscriber {sub.target.addr}",
                f"nonce {nonce:#018x}")

    # ------------------------------------------------------------ lookups
    def merged_record(self, eid: EidPrefix, regs: dict[str, Registration]) -> EidRecord:
        """The site's mapping: locators of every live registrant, de-duplicated."""
        locs: dict[Any, LocatorRecord] = {}
        ttl = None
        for r in regs.values():
            for loc in r.record.locators:
                locs.setdefault(loc.address, dataclasses.replace(loc, local=False, probed=False))
            ttl = r.record.ttl if ttl is None else min(ttl, r.record.ttl)
        return eid_record(eid, tuple(locs.values()), ttl=1440 if ttl is None else ttl, authoritative=False)

    def lookup(self, eid: EidPrefix) -> tuple[EidPrefix, dict[str, Registration]] | None:
        hit = self.registered.longest_covering(eid)
        if hit is None or not hit[1]:
            return None
        return hit

    def resolve(self, ecm: EncapsulatedControlMessage, data: bytes, now: float) -> list[Effect] | None:
        """Effects answering an ECM'd Map-Request for a registered EID, or None
        when no registration covers it (the caller sends a negative reply)."""
        self._now = now
        req = ecm.message
        assert isinstance(req, MapRequest)      # handle() passes Map-Request ECMs only
        if not req.records:
            return []
        try:
            want = record_prefix(req.records[0])
        except MalformedMessage:
            if multicast_sg(req.records[0]):
                return None                  # nothing registered: a negative reply
            self.counters["map_request_bad_eid"] += 1
            return []
        hit = self.lookup(want)
        subscribe = req.notification_requested
        if hit is None:
            if subscribe:
                self._subscribe(want, None, ecm, now, Effects())
            return None
        eid, regs = hit
        out = Effects()
        # LISP-SEC (RFC 9303 6.7): open the ITR-OTK; a request we must refuse gets nothing
        op, why = open_request(ecm, self.cfg.lisp_sec.itr_keys, self.counters)
        if why:
            out.log(f"dropped Map-Request for {want}: {why}", kind="lisp-sec-request-dropped",
                    peer=req.itr_rlocs[0] if req.itr_rlocs else None)
            return out.items
        if subscribe:
            # answered below as usual; the subscription's confirming Map-Notify follows
            sub_fx = Effects()
            self._subscribe(want, hit, ecm, now, sub_fx)
        else:
            sub_fx = None
        if any(r.proxy_reply for r in regs.values()):
            target = reply_target(req.itr_rlocs, ecm.inner_sport)
            if target is None:
                self.counters["map_request_no_itr_rloc"] += 1
                return []
            reply = MapReply(req.nonce, (self.merged_record(eid, regs),))
            out.send(reply.encode() if op is None else ms_signed(reply, op, ms_eid_ad(op, [eid])), target)
            self.counters["proxy_map_reply_tx"] += 1
            out.log(f"proxy Map-Reply for {eid} to {target.addr}:{target.port}",
                    kind="proxy-map-reply", peer=target.addr)
            return out.items + (sub_fx.items if sub_fx else [])
        # Forward to the most recently refreshed registrant's ETR, at an RLOC
        # its (authenticated) record names: never at whatever address its
        # Map-Registers came from, which anyone replaying them can choose.
        reg = max((r for r in regs.values() if r.etr is not None), key=lambda r: r.last_seen, default=None)
        if reg is None or reg.etr is None:      # (the second: for mypy, filtered above)
            self.counters["map_request_no_etr_rloc"] += 1
            return out.items + (sub_fx.items if sub_fx else [])
        if op is not None:             # LISP-SEC: to an ETR that signs, MS-OTK for it
            chosen = self._lisp_sec_forward(ecm, op, eid, regs, out)
            if chosen is None:
                return out.items + (sub_fx.items if sub_fx else [])
            reg, fwd = chosen
        else:
            fwd = dataclasses.replace(ecm, to_etr=True, to_ms=False, security=False, auth=b"")
        assert reg.etr is not None              # either way, one with an ETR RLOC was chosen
        out.send(fwd.encode(), reg.etr)
        self.counters["map_request_forwarded"] += 1
        out.log(f"forwarded Map-Request for {want} to ETR {reg.etr.addr}",
                kind="map-request-forwarded", peer=reg.etr.addr)
        return out.items + (sub_fx.items if sub_fx else [])

    def _lisp_sec_forward(self, ecm: EncapsulatedControlMessage, op: Opened, eid: EidPrefix,
                          regs: dict[str, Registration],
                          out: Effects) -> tuple[Registration, EncapsulatedControlMessage] | None:
        """RFC 9303 6.7 Table 1, rules 2 and 3 (rule 1, proxy-reply, is answered
        above): (registration, ECM) to forward to an ETR that registered with
        the S bit, MS-OTK wrapped under its key; or None after answering with a
        signed negative Map-Reply with the ETR-Cant-Sign bit when none did."""
        owner = self._site_of(eid)
        keys = owner.site.cfg.keys if owner is not None else {}
        capable = [r for r in regs.values() if r.lisp_sec and r.key_id in keys and r.etr is not None]
        cant_sign = len(capable) < len(regs)
        if not capable:
            req = ecm.message
            assert isinstance(req, MapRequest)  # resolve() checked
            target = reply_target(req.itr_rlocs, ecm.inner_sport)
            if target is None:
                self.counters["map_request_no_itr_rloc"] += 1
                return None
            neg = MapReply(req.nonce, (eid_record(eid, (), ttl=self.cfg.mr.unregistered_ttl_minutes,
                                                  act=int(MapAction.SEND_MAP_REQUEST)),))
            out.send(ms_signed(neg, op, ms_eid_ad(op, [eid], etr_cant_sign=True)), target)
            self.counters["lisp_sec_negative_etr_cant_sign"] += 1
            out.log(f"LISP-SEC negative Map-Reply for {eid} to {target.addr}: no registered ETR signs",
                    kind="negative-map-reply", peer=target.addr)
            return None
        reg = max(capable, key=lambda r: r.last_seen)
        fwd = to_etr(dataclasses.replace(ecm, to_etr=True, to_ms=False), op,
                     ms_eid_ad(op, [eid], etr_cant_sign=cant_sign), reg.key_id, keys[reg.key_id])
        self.counters["lisp_sec_request_forwarded"] += 1
        return reg, fwd

    # ------------------------------------------------------------ API
    def reconfigure(self, cfg: Config, now: float) -> list[Effect]:
        """A changed [[site]] list (lispctl reload). Sites are matched by
        name: one that stays keeps its counters and the registrations its new
        prefixes still accept (same prefix, or a more specific one where
        accept-more-specifics allows); every other registration is dropped.
        New keys and flags apply from the next Map-Register on."""
        self._now = now
        old = {s.cfg.name: s for s in self.sites}
        self.cfg = cfg
        self.sites = [_Site(sc, superseded_max=superseded_per_site(len(cfg.site))) for sc in cfg.site]
        old_configured, self.configured = self.configured, LpmTable()
        for site in self.sites:
            for sp in site.cfg.eid_prefix:
                self.configured.insert(sp.eid, _Prefix(site, sp))
            if site.cfg.name in old:
                site.registers, site.bad_auth = old[site.cfg.name].registers, old[site.cfg.name].bad_auth
        self._site_by_id = {s.cfg.site_id: s for s in self.sites if s.cfg.site_id is not None}
        self._shapes.clear()
        self._shapes_max = max(_SHAPES_MIN, 2 * len(self.configured))
        out = Effects()
        for eid, regs in list(self.registered.items()):
            prev = old_configured.longest_covering(eid)
            hit = self.configured.longest_covering(eid)
            if prev is not None and hit is not None and hit[1].site.cfg.name == prev[1].site.cfg.name \
                    and (hit[0] == eid or hit[1].cfg.accept_more_specifics):
                if hit[0] != eid:
                    more = hit[1].more = hit[1].more or {}
                    more[eid] = regs
                continue
            self.registered.remove(eid)
            self.counters["registration_dropped_by_reload"] += 1
            out.log(f"registration of {eid} dropped: no configured site accepts it any more")
        return out.items

    def snapshot(self) -> dict[str, Any]:
        now = self._now
        sites = []
        for site in self.sites:
            prefixes = []
            registered = self._registrations(site)
            for sp in site.cfg.eid_prefix:
                regs = sorted(((e, r) for e, r in registered
                              if _within(e, sp.eid)), key=lambda x: eid_sort_key(x[0]))
                prefixes.append({
                    "prefix": str(sp.eid), "accept_more_specifics": sp.accept_more_specifics,
                    "proxy_reply": sp.proxy_reply, "registered": any(r for _, r in regs),
                    "registrations": [{
                        "eid": str(e), "registrant": r.registrant, "source": str(r.source.addr),
                        "etr": str(r.etr.addr) if r.etr is not None else None,
                        "rlocs": [{"address": str(l.address), "priority": l.priority, "weight": l.weight,
                                   "reachable": l.reachable} for l in r.record.locators],
                        "proxy_reply": r.proxy_reply, "expires_in_s": round(max(0.0, r.expires_at - now), 1),
                        "registered_for_s": round(now - r.first_seen, 1),
                    } for e, rs in regs for r in rs.values()],
                })
            registers, bad_auth = site.registers, site.bad_auth
            if self.remote_site_counters is not None:      # the workers'
                r, b = self.remote_site_counters(site.cfg.name)
                registers, bad_auth = registers + r, bad_auth + b
            sites.append({"name": site.cfg.name, "description": site.cfg.description,
                          "registers": registers, "bad_auth": bad_auth, "eid_prefixes": prefixes})
        subs = [{"eid": str(s.key), "asked": str(s.asked), "xtr_id": f"{s.xtr_id:032x}",
                 "site_id": s.site_id, "site": s.site_name, "itr": str(s.target.addr),
                 "expires_in_s": round(max(0.0, s.expires_at - now), 1),
                 "notifies": s.notifies, "acked": s.acked, "unacked": s.outstanding is not None}
                for s in self.subs.values()]
        return {"sites": sites, "subscriptions": subs, "counters": self.counters.snapshot()}


def resolver_ecm(data: bytes) -> bool:
    """Is data an ECM for a Map-Resolver, by its first byte: type 8 with
    neither D (DDT-originated: for a DDT node or Map-Server, limited there) nor
    E (for an ETR) set (RFC 9301 5.8, RFC 8111)."""
    return bool(data) and data[0] >> 4 == ECM and not data[0] & 0x06


def rate_limited(counters: Counters, over: str, src: Endpoint) -> list[Effect]:
    """Count (and log, summarised by the daemon) an ECM refused by the limiter."""
    counters[f"map_request_rate_limited_{'source' if over == PER_KEY else 'total'}"] += 1
    return [Log(f"Map-Requests from {src.addr} over the {over} rate limit: dropped",
                kind=f"map-request-rate-limited-{over}", peer=src.addr)]


def multicast_sg(record: RequestRecord) -> bool:
    """Is this Map-Request record a multicast (S,G) EID: a Source/Dest LCAF
    whose destination is a group (RFC 8378; lispers.net asks for these), or a
    Multicast-Info LCAF (RFC 8060 type 9), possibly inside an Instance-ID?"""
    eid = record.eid
    if type(eid) is InstanceId:
        eid = eid.address
    if type(eid) is SourceDestKey:
        return isinstance(eid.dest, (IPv4Address, IPv6Address)) and eid.dest.is_multicast
    return type(eid) is UnknownLcaf and eid.lcaf_type == 9


def _gap(want: EidPrefix, inside: EidPrefix, tables: tuple[LpmTable[Any] | None, ...]) -> EidPrefix:
    """The least specific prefix holding want's address, inside `inside`,
    that overlaps nothing in `tables` except prefixes covering it: the hole
    of an unregistered EID between registered (or configured) more-specifics."""
    addr = want.prefix.network_address
    bits = addr.max_prefixlen
    for n in range(inside.prefix.prefixlen, bits + 1):
        cand = EidPrefix(want.iid, ipaddress.ip_network((int(addr) >> (bits - n) << (bits - n), n)
                                                        if addr.version == 4 else
                                                        ipaddress.IPv6Network((int(addr) >> (bits - n) << (bits - n), n))))
        if not any(e != cand and _within(e, cand)
                   for t in tables if t is not None for e, _ in t.more_specifics(cand)):
            if _within(want, cand) or _within(cand, want):
                return cand
            break
    return host_prefix(want.iid, addr)


def negative_reply(cfg: Config, ecm: EncapsulatedControlMessage, configured: LpmTable[Any],
                   extra: LpmTable[Any] | None, counters: Counters,
                   registered: LpmTable[Any] | None = None) -> list[Effect]:
    """The Map-Resolver's answer for space nobody registered:
    - inside a configured site prefix: ACT send-map-request (or drop), TTL 1 min,
      for the widest prefix around the EID that covers no registered or
      configured more-specific prefix (so it never shadows a registered site);
    - elsewhere: ACT natively-forward for the least specific prefix that
      covers the EID and overlaps no configured prefix, TTL 15 min;
    - a multicast (S,G) EID (we hold no replication lists): ACT
      natively-forward for exactly the (S,G) asked, TTL 1 min."""
    req = ecm.message
    assert isinstance(req, MapRequest)          # callers hand Map-Request ECMs only
    out = Effects()
    if not req.records:
        return []
    target = reply_target(req.itr_rlocs, ecm.inner_sport)
    try:
        want = record_prefix(req.records[0])
    except MalformedMessage:
        rec = req.records[0]
        if not multicast_sg(rec):
            counters["map_request_bad_eid"] += 1
            return []
        if target is None:
            counters["map_request_no_itr_rloc"] += 1
            return []
        ttl = cfg.mr.unregistered_ttl_minutes
        reply = MapReply(req.nonce, (EidRecord(rec.eid, rec.mask_len, (), ttl, int(MapAction.NATIVELY_FORWARD)),))
        out.send(reply.encode(), target)
        counters["negative_reply_multicast"] += 1
        out.log(f"negative Map-Reply for multicast (S,G) {rec.eid} natively-forward TTL {ttl} min",
                kind="negative-map-reply", peer=target.addr)
        return out.items
    op, why = open_request(ecm, cfg.lisp_sec.itr_keys, counters)     # LISP-SEC: we sign it
    if why:
        out.log(f"dropped Map-Request for {want}: {why}", kind="lisp-sec-request-dropped",
                peer=req.itr_rlocs[0] if req.itr_rlocs else None)
        return out.items
    if target is None:
        counters["map_request_no_itr_rloc"] += 1
        return []
    addr = want.prefix.network_address
    hit = configured.longest_covering(want) or (extra.longest_covering(want) if extra else None)
    if hit is not None:
        eid = _gap(want, hit[0], (registered, configured, extra))
        act = MapAction.SEND_MAP_REQUEST if cfg.mr.unregistered_action == "send-map-request" else MapAction.DROP
        ttl = cfg.mr.unregistered_ttl_minutes
        counters["negative_reply_unregistered"] += 1
    else:
        union: LpmTable[None] = LpmTable()
        for table in (configured, extra):
            for k, _ in (table.items() if table is not None else ()):
                union.insert(k, None)
        hole = least_specific_uncovered(want.iid, addr, union)
        # the request itself wider than a hole: answer for the host
        eid = hole if hole is not None and (_within(hole, want) or _within(want, hole)) else host_prefix(want.iid, addr)
        act = MapAction.NATIVELY_FORWARD
        ttl = cfg.mr.non_eid_ttl_minutes
        counters["negative_reply_non_eid"] += 1
    reply = MapReply(req.nonce, (eid_record(eid, (), ttl=ttl, act=int(act)),))
    out.send(reply.encode() if op is None else ms_signed(reply, op, ms_eid_ad(op, [eid])), target)
    out.log(f"negative Map-Reply for {want}: {eid} {act.name.lower()} TTL {ttl} min",
            kind="negative-map-reply", peer=target.addr)
    return out.items

"""LISP-DDT (RFC 8111) on the answering side: a DDT node, and the Map-Referral
a Map-Server adds to its usual work when a DDT Map-Resolver asks.

A DDT Map-Request is an ECM with the D bit set (RFC 8111 section 5): the
sender is a DDT client (a Map-Resolver) that wants a Map-Referral back, sent
to the ECM's outer source with the inner Map-Request's nonce. What the
referral says (sections 6.4 and 8):

    ACT                 sent when                                  TTL    I  referral set
    NODE-REFERRAL       a delegation to child DDT nodes covers it  1440   0  the child nodes
    MS-REFERRAL         a delegation to Map-Servers covers it      1440   0  the Map-Servers
    MS-ACK              (Map-Server) an ETR registered it          1440   1* -*
    MS-NOT-REGISTERED   (Map-Server) a site holds it, unregistered 1      1* -*
    DELEGATION-HOLE     authoritative, but nothing delegated       15     0  -
    NOT-AUTHORITATIVE   not authoritative for it                   0      1  -
    *: with ddt.ms-peers, I clear and the set is this Map-Server and its peers

The Map-Server sends MS-ACK/MS-NOT-REGISTERED with the I bit unless it is
told its peers (ddt.ms-peers): then the referral set is itself and them, I
clear. (The MR has the set from the MS-REFERRAL it followed anyway.) A DELEGATION-HOLE names the least
specific prefix around the EID, inside the authoritative prefix, that
overlaps no delegation (or site): the MR and the ITR cache the whole hole.
NOT-AUTHORITATIVE names the requested EID itself, TTL 0 (section 6.4).

Referrals carry the A bit when they come from authoritative configuration.
Every reply is one datagram about as long as the request (a referral set is
at most 32 addresses), and a token bucket bounds how many we send per second.
"""
from __future__ import annotations

import dataclasses
import ipaddress

from lispctl.config import Config
from lispctl.mapping.lpm import LpmTable
from lispctl.mapping.types import EidPrefix, IPAddress
from lispctl.roles.base import Effect, Effects, Endpoint
from lispctl.roles.common import Counters, decode
from lispctl.wire import (DELEGATION_HOLE, MS_ACK, MS_NOT_REGISTERED, MS_REFERRAL, NODE_REFERRAL,
                          NOT_AUTHORITATIVE, EncapsulatedControlMessage, LocatorRecord, MalformedMessage,
                          MapReferral, MapRequest, ReferralRecord, from_eid_prefix, record_prefix)

ACT_NAMES = {NODE_REFERRAL: "node-referral", MS_REFERRAL: "ms-referral", MS_ACK: "ms-ack",
             MS_NOT_REGISTERED: "ms-not-registered", DELEGATION_HOLE: "delegation-hole",
             NOT_AUTHORITATIVE: "not-authoritative"}


def referral_record(eid: EidPrefix, act: int, ttl: int, targets: tuple[IPAddress, ...] = (), *,
                    authoritative: bool = True, incomplete: bool = False) -> ReferralRecord:
    addr, ml = from_eid_prefix(eid)
    refs = tuple(LocatorRecord(a, 1, 100 // max(1, len(targets))) for a in targets)
    return ReferralRecord(addr, ml, refs, ttl, act, authoritative, incomplete)


def is_ddt_request(msg) -> bool:
    return (isinstance(msg, EncapsulatedControlMessage) and isinstance(msg.message, MapRequest)
            and msg.ddt and not msg.to_etr)


def requested_prefix(req: MapRequest) -> EidPrefix | None:
    if not req.records:
        return None
    try:
        return record_prefix(req.records[0])
    except MalformedMessage:
        return None


def hole_around(want: EidPrefix, within: EidPrefix, taken: LpmTable) -> EidPrefix:
    """The least specific prefix inside `within` that holds want's address and
    overlaps nothing in `taken` (delegations, or a Map-Server's sites). A
    request wider than every such hole gets the host prefix of its address."""
    addr = want.prefix.network_address
    host = EidPrefix(want.iid, ipaddress.ip_network(addr))
    net = ipaddress.IPv4Network if addr.version == 4 else ipaddress.IPv6Network
    bits = want.prefix.max_prefixlen
    for n in range(within.prefix.prefixlen, bits + 1):
        cand = EidPrefix(want.iid, net((int(addr) >> (bits - n) << (bits - n), n)))
        if not taken.overlaps(cand):
            if cand.prefix.subnet_of(want.prefix) or want.prefix.subnet_of(cand.prefix):
                return cand
            return host
    return host


class TokenBucket:
    """rate tokens per second, burst of one second's worth."""
    __slots__ = ("rate", "tokens", "at")

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.tokens = rate
        self.at: float | None = None

    def take(self, now: float) -> bool:
        if self.at is not None and now > self.at:
            self.tokens = min(self.rate, self.tokens + (now - self.at) * self.rate)
        self.at = now if self.at is None else max(self.at, now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class Authority:
    """Authoritative prefixes and delegations of one DDT node (or Map-Server)."""

    def __init__(self, cfg: Config) -> None:
        self.ttl = cfg.ddt.referral_ttl_minutes
        self.hole_ttl = cfg.ddt.hole_ttl_minutes
        self.authoritative: LpmTable[None] = LpmTable()
        for p in cfg.ddt.authoritative_prefix:
            self.authoritative.insert(p, None)
        self.delegations: LpmTable[tuple[int, tuple[IPAddress, ...]]] = LpmTable()
        for d in cfg.ddt.delegation:
            act = NODE_REFERRAL if d.type == "ddt-node" else MS_REFERRAL
            self.delegations.insert(d.eid_prefix, (act, tuple(d.address)))

    def referral(self, want: EidPrefix, taken: LpmTable | None = None) -> ReferralRecord:
        """RFC 8111 section 8 for want: a delegation, a hole, or not authoritative.
        taken: what else counts as delegated when finding a hole (a Map-Server's sites)."""
        hit = self.delegations.longest_covering(want)
        if hit is not None:
            eid, (act, targets) = hit
            return referral_record(eid, act, self.ttl, targets)
        auth = self.authoritative.longest_covering(want)
        if auth is not None:
            if taken is None:
                taken = self.delegations
            elif len(self.delegations):
                both: LpmTable = LpmTable()
                for table in (taken, self.delegations):
                    for k, _ in table.items():
                        both.insert(k, None)
                taken = both
            return referral_record(hole_around(want, auth[0], taken), DELEGATION_HOLE, self.hole_ttl)
        return referral_record(want, NOT_AUTHORITATIVE, 0, authoritative=False, incomplete=True)


def send_referral(out: Effects, req: MapRequest, record: ReferralRecord, to: Endpoint,
                  counters: Counters) -> None:
    out.send(MapReferral(req.nonce, (record,)).encode(), to)
    name = ACT_NAMES.get(record.act, str(record.act))
    counters[f"map_referral_tx_{name.replace('-', '_')}"] += 1
    out.log(f"Map-Referral {name} for {record_prefix(record)} to {to.addr}",
            f"nonce {req.nonce:#018x} TTL {record.ttl} min, {len(record.referrals)} referrals")


class DdtNodeRole:
    """A DDT node: answers DDT Map-Requests with Map-Referrals, holds no state
    per request."""
    name = "ddt-node"

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.authority = Authority(cfg)
        self.bucket = TokenBucket(cfg.ddt.max_referral_rate)
        self.counters = Counters()

    def next_deadline(self) -> float | None:
        return None

    def tick(self, now: float) -> list[Effect]:
        return []

    def handle(self, data: bytes, src: Endpoint, dst: Endpoint, now: float) -> list[Effect]:
        msg = decode(data)
        if not (isinstance(msg, EncapsulatedControlMessage) and isinstance(msg.message, MapRequest)):
            return []
        if not is_ddt_request(msg):
            # an ITR or a plain Map-Resolver cannot use a referral
            self.counters["map_request_not_ddt"] += 1
            return []
        self.counters["ddt_map_request_rx"] += 1
        want = requested_prefix(msg.message)
        if want is None:
            self.counters["map_request_bad_eid"] += 1
            return []
        if not self.bucket.take(now):
            self.counters["rate_limited"] += 1
            return []
        out = Effects()
        send_referral(out, msg.message, self.authority.referral(want), src, self.counters)
        return out.items

    def snapshot(self) -> dict:
        return {"authoritative": [str(p) for p in self.authority.authoritative.keys()],
                "delegations": [{"eid": str(e), "type": ACT_NAMES[a], "referrals": [str(t) for t in ts]}
                                for e, (a, ts) in self.authority.delegations.items()],
                "counters": self.counters.snapshot()}


class MapServerDdt:
    """What a Map-Server does with a DDT Map-Request (RFC 8111 section 6.3 and
    8): the usual forwarding to the ETR or proxy Map-Reply, plus a Map-Referral
    to the Map-Resolver: MS-ACK when something is registered, MS-NOT-REGISTERED
    inside a site, else a DELEGATION-HOLE inside ddt.authoritative-prefix, else
    NOT-AUTHORITATIVE. Nothing goes to the ITR for unregistered space: the
    Map-Resolver answers it from the referral."""

    def __init__(self, cfg: Config, ms) -> None:
        self.ms = ms                      # lispctl.roles.ms.MapServerRole
        self.authority = Authority(cfg)
        self.not_registered_ttl = cfg.ddt.not_registered_ttl_minutes
        self.peers = tuple(cfg.ddt.ms_peers)
        self.bucket = TokenBucket(cfg.ddt.max_referral_rate)

    def _ms_set(self, here: IPAddress) -> tuple[tuple[IPAddress, ...], bool]:
        """(referral set, incomplete) of MS-ACK / MS-NOT-REGISTERED: this
        Map-Server and its configured peers, or nothing and the I bit."""
        if not self.peers:
            return (), True
        return tuple(dict.fromkeys((here, *self.peers))), False

    def handle(self, ecm: EncapsulatedControlMessage, data: bytes, src: Endpoint, dst: Endpoint,
               now: float) -> list[Effect]:
        ms = self.ms
        counters = ms.counters
        counters["ddt_map_request_rx"] += 1
        req: MapRequest = ecm.message
        want = requested_prefix(req)
        if want is None:
            counters["map_request_bad_eid"] += 1
            return []
        if not self.bucket.take(now):
            counters["ddt_rate_limited"] += 1
            return []
        out = Effects()
        hit = ms.lookup(want)
        if hit is not None:
            # the ETR gets a plain (D bit clear) ECM, as without DDT
            out.items.extend(ms.resolve(dataclasses.replace(ecm, ddt=False), data, now) or [])
            peers, incomplete = self._ms_set(dst.addr)
            rec = referral_record(hit[0], MS_ACK, self.authority.ttl, peers, incomplete=incomplete)
        else:
            site = ms.configured.longest_covering(want)
            if site is not None:
                peers, incomplete = self._ms_set(dst.addr)
                rec = referral_record(site[0], MS_NOT_REGISTERED, self.not_registered_ttl, peers,
                                      incomplete=incomplete)
            else:
                rec = self.authority.referral(want, ms.configured)
        send_referral(out, req, rec, src, counters)
        return out.items

"""ETR: registers our EID prefixes with the Map-Servers and answers
Map-Requests (direct, forwarded by a Map-Server, RLOC probes). When our own
mapping changes (an address appears or goes, a link goes down or up) it
re-registers at once and sends SMRs to the ITRs that recently asked for it:
the first burst to a target goes out immediately, later ones at most one per
`smr-min-interval`, doubling while changes keep coming (a flapping link
cannot flood anybody). Locators of a link that is down stay in the records
with the R bit clear.

Map-Requests (direct, forwarded, probes) are answered at most
`map-reply-rate-per-itr` times per second per ITR-RLOC answered and
`map-reply-rate` per second in all (RFC 9301 5.3 asks responders to
rate-limit); a reply never goes to a multicast, broadcast or unspecified
ITR-RLOC, nor to a loopback one unless the request came from loopback
(a reflection/amplification guard). Every refusal is counted.

A requester is remembered with all its ITR-RLOCs (up to
_MAX_ITR_RLOCS): a node that loses every RLOC of one family (a mobile node
whose IPv4 uplink went away) still reaches a dual-stack ITR through an
ITR-RLOC of a family it has left, and sends the SMR from that family.

LISP-SEC (RFC 9303): Map-Registers carry the S bit; a Map-Request forwarded
with an MS-OTK we can unwrap (with the Map-Server's key) is answered with a
signed Map-Reply (lispctl.roles.lispsec.EtrSec).
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Iterable

from lispctl.config import Config, MapServerConfig
from lispctl.mapping.lpm import eid_sort_key
from lispctl.mapping.database import LocalMapping
from lispctl.mapping.types import EidPrefix, IPAddress
from lispctl.roles.base import CONTROL_PORT, Effect, Effects, Endpoint
from lispctl.roles.common import Counters, NonceSource, SourceLimiter, decode, ip_only, reply_target
from lispctl.roles.lispsec import EtrSec
from lispctl.roles.local import LocalSite
from lispctl.roles.mapsys import registers_with
from lispctl.wire import (ALG_HMAC_SHA1, ALG_HMAC_SHA256, ALG_HMAC_SHA256_HKDF, EidRecord, EncapsulatedControlMessage,
                          MalformedMessage, MapNotify, MapNotifyAck, MapRegister, MapReply, MapRequest,
                          eid_record, from_eid_prefix, record_prefix, request_record, rloc_to_locator,
                          sign, source_eid_prefix, verify)

if TYPE_CHECKING:  # nat.py imports this module
    from lispctl.roles.nat import NatRole

ALG_IDS = {"hmac-sha1": ALG_HMAC_SHA1, "hmac-sha256": ALG_HMAC_SHA256, "hmac-sha256-hkdf": ALG_HMAC_SHA256_HKDF}
_KEEP_NONCES = 4     # a late Map-Notify for one of the last few registers still counts
_MAX_ITR_RLOCS = 8   # ITR-RLOCs kept per requester (a request may carry up to 32)


def _answerable(addr: IPAddress, src: IPAddress) -> bool:
    """May a Map-Reply go to this ITR-RLOC? Not to group or unspecified
    addresses, not to the IPv4 limited broadcast, and to loopback only when
    the request itself came from loopback."""
    if addr.is_multicast or addr.is_unspecified:
        return False
    if addr.version == 4 and addr == _BROADCAST:
        return False
    if addr.is_loopback and not src.is_loopback:
        return False
    return True


_BROADCAST = ipaddress.IPv4Address("255.255.255.255")


@dataclass
class _MsState:
    cfg: MapServerConfig
    next_at: float = 0.0                  # next Map-Register
    nonces: list[int] = field(default_factory=list)
    retry: float = 0.0                    # current back-off while no Map-Notify comes
    last_register: float | None = None
    last_notify: float | None = None
    sent: int = 0
    notifies: int = 0


@dataclass
class _Requester:
    """An ITR that asked for one of our prefixes (SMR target), keyed by the
    ITR-RLOC it was first known by; `rlocs` are the ITR-RLOCs of its latest
    request (where an SMR may go)."""
    last_seen: float
    rlocs: tuple[IPAddress, ...] = ()
    prefixes: set[EidPrefix] = field(default_factory=set)
    last_smr: float | None = None         # last SMR burst
    gap: float = 0.0                      # current minimum spacing of bursts
    pending: set[EidPrefix] = field(default_factory=set)   # prefixes to SMR at the next burst
    eid: EidPrefix | None = None          # its EID: the Source-EID of its latest request that had one


class EtrRole:
    name = "etr"
    # what the daemon hands to handle() (its message registry, by type)
    message_types = frozenset({MapNotify.TYPE, MapRequest.TYPE, EncapsulatedControlMessage.TYPE})

    def __init__(self, cfg: Config, site: LocalSite, nonce: NonceSource, *,
                 answer_plain_ecm: bool = True) -> None:
        self.cfg = cfg
        self.site = site
        self.nonce = nonce
        # With the MR role in the same process, an ECM without the E bit is
        # the MR's business; otherwise it may be a Map-Server forwarding with
        # E clear (interop), which we answer.
        self.answer_plain_ecm = answer_plain_ecm
        self.ms = [_MsState(m, retry=cfg.etr.register_retry) for m in cfg.map_server]
        self.requesters: dict[IPAddress, _Requester] = {}
        self._smr_due: dict[IPAddress, float] = {}     # deferred (rate-limited) SMR bursts
        self.counters = Counters()
        self.reply_limit = SourceLimiter(cfg.etr.map_reply_rate_per_itr, 2 * cfg.etr.map_reply_rate_per_itr,
                                         cfg.etr.map_reply_rate, cfg.etr.map_reply_rate)
        # signs Map-Replies to LISP-SEC requests with the MS-OTK (RFC 9303 6.8)
        self.sec = EtrSec([(m.key_id, m.key) for m in cfg.map_server], self.counters)
        self.started = False
        self._now = 0.0
        self.nat: NatRole | None = None       # a NatRole (roles/nat.py) registers while an RLOC is behind a NAT

    # ------------------------------------------------------------ timers
    def start(self, now: float) -> list[Effect]:
        """Register with every Map-Server now (tick() does this when not called)."""
        self.started = True
        self._now = now
        out = self._fx()
        for ms in self.ms:
            self._register(ms, now, out)
        return out.items

    def tick(self, now: float) -> list[Effect]:
        if not self.started:
            return self.start(now)
        self._now = now
        out = self._fx()
        for ms in self.ms:
            if ms.next_at <= now:
                self._register(ms, now, out)
        for addr in [a for a, t in self._smr_due.items() if t <= now]:
            r = self.requesters.get(addr)
            del self._smr_due[addr]
            if r is not None:
                self._send_smrs(addr, r, now, out)
        cutoff = now - self.cfg.itr.smr_window
        for addr in [a for a, r in self.requesters.items() if r.last_seen < cutoff]:
            del self.requesters[addr]
            self._smr_due.pop(addr, None)
        return out.items

    def next_deadline(self) -> float | None:
        if not self.started:
            return 0.0
        times = [ms.next_at for ms in self.ms]
        if self._smr_due:
            times.append(min(self._smr_due.values()))
        return min(times, default=None)

    def _fx(self) -> Effects:
        return Effects(default_src=self._src_for if self.cfg.is_mobile_node else None)

    def _src_for(self, dst: Endpoint) -> Endpoint | None:
        addr = self.site.source_for(dst.addr)
        return Endpoint(addr, CONTROL_PORT) if addr is not None else None

    # ------------------------------------------------------------ registering
    def _register(self, ms: _MsState, now: float, out: Effects) -> None:
        interval = self.cfg.etr.register_interval
        if self.nat is not None and self.nat.behind_nat():
            ms.next_at = now + interval       # the NAT role registers through the RTR
            return
        # several mapping systems: only the prefixes this Map-Server serves (roles/mapsys.py)
        servers = self.cfg.map_server
        records = self._records(only=[m.eid for m in self.site.db if registers_with(servers, ms.cfg, m.eid)]
                                if any(m.eid_prefix for m in servers) else None)
        if not records:
            out.log(f"no locators for any EID prefix yet; not registering with {ms.cfg.address}")
            ms.next_at = now + self.cfg.etr.register_retry
            return
        nonce = self.nonce()
        xtr_id = int(self.cfg.etr.xtr_id, 16) if self.cfg.etr.xtr_id else None
        msg = MapRegister(nonce, tuple(records), key_id=ms.cfg.key_id, alg_id=ALG_IDS[ms.cfg.algorithm],
                          proxy_reply=ms.cfg.proxy_reply, want_map_notify=ms.cfg.want_map_notify,
                          security=True,    # S: we sign replies to LISP-SEC requests (RFC 9303 6.3)
                          xtr_id=xtr_id, site_id=self.cfg.etr.site_id if xtr_id is not None else None)
        out.send(sign(msg, ms.cfg.key), Endpoint(ms.cfg.address, CONTROL_PORT))
        ms.nonces = (ms.nonces + [nonce])[-_KEEP_NONCES:]
        ms.sent += 1
        ms.last_register = now
        self.counters["map_register_tx"] += 1
        if ms.cfg.want_map_notify:
            # Until a valid Map-Notify arrives, retry with exponential back-off
            # (capped at the register interval); the notify resets it.
            ms.next_at = now + min(ms.retry, interval)
            ms.retry = min(ms.retry * 2, interval)
        else:
            ms.next_at = now + interval
        out.log(f"Map-Register to {ms.cfg.address} for {len(records)} prefix(es)",
                f"nonce {nonce:#018x} key-id {ms.cfg.key_id} {ms.cfg.algorithm}")

    def register_now(self, now: float) -> list[Effect]:
        """Register with every Map-Server at once (the NAT role, when an
        RLOC's NAT check has come back and we register directly)."""
        self._now = now
        out = self._fx()
        if self.started:
            for ms in self.ms:
                ms.retry = self.cfg.etr.register_retry
                self._register(ms, now, out)
        return out.items

    def _records(self, probed: IPAddress | None = None,
                 only: list[EidPrefix] | None = None) -> list[EidRecord]:
        recs: list[EidRecord] = []
        # an RLOC whose NAT check is pending or found it unreachable from
        # outside is announced with R=0 (roles/nat.py NatRole.hidden)
        hidden = self.nat.hidden if self.nat is not None else None
        for m in self.site.db:
            if not m.rlocs or (only is not None and m.eid not in only):
                continue
            rlocs = [replace(r, reachable=False) if hidden is not None and r.reachable and hidden(r.address) else r
                     for r in m.rlocs]
            locs = tuple(rloc_to_locator(r, local=True, probed=(probed == r.address)) for r in rlocs)
            recs.append(eid_record(m.eid, locs, ttl=self.cfg.etr.record_ttl_minutes, authoritative=True))
        return recs

    def _on_notify(self, data: bytes, msg: MapNotify, src: Endpoint, now: float, out: Effects) -> None:
        for ms in self.ms:
            if msg.nonce in ms.nonces:
                break
        else:
            ms = None
        if ms is None:
            if not self._about_us(msg):
                # e.g. a publish/subscribe notification: the ITR's business
                self.counters["map_notify_not_ours"] += 1
                return
            # Unsolicited (the MS tells us of a merge/change): must still authenticate.
            signer = next((m for m in self.ms if m.cfg.address == src.addr and m.cfg.key_id == msg.key_id), None)
            if signer is None or not verify(data, signer.cfg.key):
                self.counters["map_notify_bad"] += 1
                out.log(f"ignored Map-Notify from {src.addr}: unknown nonce or bad authentication",
                        kind="map-notify-bad", peer=src.addr)
                return
            self.counters["map_notify_unsolicited"] += 1
            ack = MapNotifyAck(msg.nonce, msg.records, key_id=msg.key_id, alg_id=msg.alg_id,
                               xtr_id=msg.xtr_id, site_id=msg.site_id)
            out.send(sign(ack, signer.cfg.key), src)
            return
        if msg.key_id != ms.cfg.key_id or not verify(data, ms.cfg.key, alg_ids=(ALG_IDS[ms.cfg.algorithm],)):
            self.counters["map_notify_bad"] += 1
            out.log(f"ignored Map-Notify from {src.addr}: bad authentication",
                    kind="map-notify-bad", peer=src.addr)
            return
        self.counters["map_notify_rx"] += 1
        ms.notifies += 1
        first = ms.last_notify is None
        ms.last_notify = now
        ms.nonces.clear()
        ms.retry = self.cfg.etr.register_retry
        ms.next_at = (now if ms.last_register is None else ms.last_register) + self.cfg.etr.register_interval
        if first:
            out.log(f"registered with Map-Server {ms.cfg.address}")

    def _about_us(self, msg: MapNotify) -> bool:
        for rec in msg.records:
            try:
                if self.site.db.match(record_prefix(rec)) is not None:
                    return True
            except MalformedMessage:
                continue
        return False

    # ------------------------------------------------------------ Map-Requests
    def handle(self, data: bytes, src: Endpoint, dst: Endpoint, now: float) -> list[Effect]:
        self._now = now
        msg = decode(data)
        out = self._fx()
        if isinstance(msg, MapNotify):
            self._on_notify(data, msg, src, now, out)
        elif isinstance(msg, MapRequest):
            if not msg.smr:         # SMRs are for the ITR
                self._on_request(msg, src.port, src, dst, now, out, probe_dst=dst.addr)
        elif isinstance(msg, EncapsulatedControlMessage) and isinstance(msg.message, MapRequest):
            if msg.to_etr or self.answer_plain_ecm:
                self._on_request(msg.message, msg.inner_sport, src, dst, now, out, probe_dst=None,
                                 forwarded=True, ecm=msg)
        return out.items

    def _on_request(self, req: MapRequest, port: int, src: Endpoint, dst: Endpoint, now: float,
                    out: Effects, probe_dst: IPAddress | None, forwarded: bool = False,
                    ecm: EncapsulatedControlMessage | None = None) -> None:
        matched = []
        for rec in req.records:
            try:
                eid = record_prefix(rec)
            except MalformedMessage:
                continue                      # e.g. AFI 0 target of a probe
            m = self.site.db.match(eid)
            if m is not None and m.eid not in matched:
                matched.append(m.eid)
        if not matched:
            if not req.probe:
                self.counters["map_request_not_ours"] += 1
                return
            matched = [m.eid for m in self.site.db]   # probe with a wildcard target
        itr_rlocs = [a for a in ip_only(req.itr_rlocs) if _answerable(a, src.addr)]
        if len(itr_rlocs) < len(ip_only(req.itr_rlocs)):
            self.counters["map_request_bad_itr_rloc"] += 1
        target = reply_target(itr_rlocs, port, self.site.usable_rlocs())
        if target is None:
            self.counters["map_request_no_itr_rloc"] += 1
            return
        refused = self.reply_limit.allow(target.addr, now)
        if refused is not None:
            self.counters[f"map_request_rate_limited_{refused}"] += 1
            return
        records = self._records(probed=probe_dst if req.probe else None, only=matched)
        if not records:
            self.counters["map_request_no_locators"] += 1
            return
        reply = MapReply(req.nonce, tuple(records[:255]), probe=req.probe)
        src_ep = None
        if req.probe and probe_dst is not None and probe_dst.version == target.addr.version:
            src_ep = Endpoint(probe_dst, CONTROL_PORT)   # answer a probe from the probed RLOC
        out.send(self.sec.reply_bytes(reply, ecm), target, src_ep)
        self.counters["rloc_probe_reply_tx" if req.probe else "map_reply_tx"] += 1
        if forwarded:
            self.counters["map_request_forwarded_rx"] += 1
        self._remember(req, matched, now)
        # a peer decides how often this happens: summarised per kind above debug
        out.log(f"{'RLOC-probe reply' if req.probe else 'Map-Reply'} to {target.addr}:{target.port} "
                f"for {', '.join(str(e) for e in matched)}", f"nonce {req.nonce:#018x}",
                kind="rloc-probe-reply" if req.probe else "map-reply", peer=target.addr)

    def _remember(self, req: MapRequest, matched: list[EidPrefix], now: float) -> None:
        """Remember the asking ITR (an SMR target) with all its ITR-RLOCs: one
        entry per ITR even when it changes its ITR-RLOC list, found by any
        address it shares with the list we know."""
        rlocs = tuple(dict.fromkeys(ip_only(req.itr_rlocs)))[:_MAX_ITR_RLOCS]
        if not rlocs:
            return
        key = next((a for a in rlocs if a in self.requesters), None)
        if key is None:
            key = next((k for k, r in self.requesters.items() if set(r.rlocs) & set(rlocs)), rlocs[0])
        r = self.requesters.setdefault(key, _Requester(now))
        r.last_seen = now
        r.rlocs = rlocs
        r.prefixes.update(matched)
        try:
            eid = source_eid_prefix(req.source_eid)
        except MalformedMessage:
            eid = None
        if eid is not None:
            r.eid = eid

    def _smr_route(self, key: IPAddress, r: _Requester) -> tuple[Endpoint, Endpoint] | None:
        """Where an SMR to this ITR goes and from where: its first ITR-RLOC of a
        family we have a usable RLOC of, sent from that RLOC."""
        for a in r.rlocs or (key,):
            src = self.site.source_for(a)
            if src is not None:
                return Endpoint(a, CONTROL_PORT), Endpoint(src, CONTROL_PORT)
        return None

    # ------------------------------------------------------------ changes
    def reconfigure(self, cfg: Config, now: float) -> list[Effect]:
        """A new configuration (lispctl reload) with a changed [[database]]
        or [[map-server]] list: prefixes removed are de-registered (record TTL
        0), then if our mapping changed every Map-Server gets a Map-Register
        at once and the ITRs that asked get SMRs; a new or changed Map-Server
        alone is registered with at once."""
        self._now = now
        out = self._fx()
        old_db = {m.eid: m for m in self.site.db}
        old_ms = list(self.ms)
        self.cfg = cfg
        self.sec = EtrSec([(m.key_id, m.key) for m in cfg.map_server], self.counters)   # keys may change
        changed = self.site.set_config(cfg)
        # a Map-Server whose settings are unchanged keeps its state
        self.ms = []
        for c in cfg.map_server:
            prev = next((m for m in old_ms if m.cfg == c), None)
            if prev is not None:
                old_ms.remove(prev)
            self.ms.append(prev or _MsState(c, retry=cfg.etr.register_retry))
        removed = [old_db[e] for e in changed if e in old_db and self.site.db.get(e) is None]
        if not self.started:
            return []
        if removed:
            for ms in self.ms:
                self._deregister(ms, removed, out)
        if changed:
            out.items += self.mapping_changed(changed, now)
        else:
            for ms in self.ms:
                if ms.last_register is None:
                    self._register(ms, now, out)
        return out.items

    def _deregister(self, ms: _MsState, mappings: Iterable[LocalMapping], out: Effects) -> None:
        records = tuple(eid_record(m.eid, tuple(rloc_to_locator(r, local=True) for r in m.rlocs), ttl=0,
                                   authoritative=True) for m in mappings)
        xtr_id = int(self.cfg.etr.xtr_id, 16) if self.cfg.etr.xtr_id else None
        msg = MapRegister(self.nonce(), records, key_id=ms.cfg.key_id, alg_id=ALG_IDS[ms.cfg.algorithm],
                          proxy_reply=ms.cfg.proxy_reply, want_map_notify=False, xtr_id=xtr_id,
                          site_id=self.cfg.etr.site_id if xtr_id is not None else None)
        out.send(sign(msg, ms.cfg.key), Endpoint(ms.cfg.address, CONTROL_PORT))
        self.counters["map_register_tx"] += 1
        out.log(f"de-registered {', '.join(str(m.eid) for m in mappings)} at {ms.cfg.address} (record TTL 0)")

    def set_interface_addresses(self, ifname: str, addrs: Iterable[IPAddress], now: float) -> list[Effect]:
        """The daemon reports an interface's addresses (at start and on change)."""
        changed = self.site.set_interface_addresses(ifname, addrs)
        return self.mapping_changed(changed, now) if changed else []

    def set_link_state(self, ifname: str, up: bool, now: float) -> list[Effect]:
        """The daemon reports a link going down or up (LinkDown/LinkUp). Its
        locators stay in our records with the R bit following the link."""
        changed = self.site.set_link_state(ifname, up)
        return self.mapping_changed(changed, now) if changed else []

    def mapping_changed(self, prefixes: list[EidPrefix], now: float) -> list[Effect]:
        """Our locator set for `prefixes` changed: re-register now, SMR the ITRs."""
        self._now = now
        out = self._fx()
        if self.nat is not None:              # Info-Requests from new RLOCs (roles/nat.py)
            out.items.extend(self.nat.addresses_changed(now))
        if self.started:
            for ms in self.ms:
                ms.retry = self.cfg.etr.register_retry
                self._register(ms, now, out)
        if not self.cfg.etr.smr:
            return out.items
        cutoff = now - self.cfg.itr.smr_window
        for addr, r in self.requesters.items():
            if r.last_seen < cutoff:
                continue
            hits = [eid for eid in prefixes if eid in r.prefixes]
            if not hits:
                continue
            r.pending.update(hits)
            if addr in self._smr_due:
                self.counters["smr_coalesced"] += 1      # joins the burst already scheduled
            elif r.last_smr is None or now >= r.last_smr + r.gap:
                self._send_smrs(addr, r, now, out)
            else:
                self._smr_due[addr] = r.last_smr + r.gap
                self.counters["smr_deferred"] += 1
        return out.items

    def _send_smrs(self, addr: IPAddress, r: _Requester, now: float, out: Effects) -> None:
        rlocs = self.site.usable_rlocs()
        if not rlocs or not r.pending:
            return                          # nothing to tell / no way to be asked back yet
        route = self._smr_route(addr, r)
        if route is None:
            # none of its ITR-RLOCs is of a family we can send from
            self.counters["smr_no_common_family"] += 1
            r.pending.clear()
            return
        dst, src = route
        lo, hi = self.cfg.etr.smr_min_interval, self.cfg.etr.smr_max_interval
        busy = r.last_smr is not None and now - r.last_smr < hi
        r.gap = min(max(r.gap * 2, lo), hi) if busy else lo
        r.last_smr = now
        for eid in sorted(r.pending, key=eid_sort_key):   # IPv4 and IPv6 do not compare
            # Source-EID: our changed prefix; record: the ITR's own EID (RFC
            # 9301 6.1: an SMR goes to the sites whose mappings we cache; OOR
            # acts only on SMRs whose record is one of its EIDs). Without a
            # known EID of that ITR, our prefix in the record (lispctl ITRs
            # act on both forms).
            src_eid, _ = from_eid_prefix(EidPrefix(eid.iid, eid.prefix))
            smr = MapRequest(self.nonce(), (request_record(r.eid if r.eid is not None else eid),),
                             tuple(rlocs[:32]), source_eid=src_eid, smr=True)
            # a mobile node's Effects give it src (its RLOC of dst's family);
            # a fixed xTR leaves the choice to the kernel, as for every send
            out.send(smr.encode(), dst)
            self.counters["smr_tx"] += 1
            out.log(f"SMR to {dst.addr} for {eid}", f"from {src.addr}")
        r.pending.clear()

    # ------------------------------------------------------------ API
    def _registered(self, ms: _MsState, now: float) -> bool | None:
        """True while a verified Map-Notify is recent enough that the MS still
        holds us; None when we never ask for notifies (we cannot know)."""
        if not ms.cfg.want_map_notify:
            return None
        return ms.last_notify is not None and now - ms.last_notify < 3 * self.cfg.etr.register_interval

    def snapshot(self) -> dict[str, Any]:
        now = self._now
        return {
            "database": self.site.db.snapshot(),
            "map_servers": [{
                "address": str(ms.cfg.address), "registered": self._registered(ms, now),
                "want_map_notify": ms.cfg.want_map_notify,
                "registers_sent": ms.sent, "notifies": ms.notifies,
                "last_notify_s_ago": None if ms.last_notify is None else round(now - ms.last_notify, 1),
                "next_register_in_s": round(max(0.0, ms.next_at - now), 1),
            } for ms in self.ms],
            "smr_targets": [{"itr": str(a), "itr_rlocs": [str(x) for x in r.rlocs],
                             "last_seen_s_ago": round(now - r.last_seen, 1),
                             "prefixes": sorted(str(p) for p in r.prefixes),
                             "last_smr_s_ago": None if r.last_smr is None else round(now - r.last_smr, 3),
                             "smr_pending": sorted(str(p) for p in r.pending)}
                            for a, r in self.requesters.items()],
            "counters": self.counters.snapshot(),
        }

"""xTR / mobile-node side of NAT traversal (draft-ietf-lisp-nat-traversal).

Per local RLOC (at start, on every address change, and every
[nat] keepalive-interval) we send an Info-Request to the Map-Server, from
that RLOC and the data port 4341 (the binding a NAT creates for it is the
one our data must use), signed with the Map-Server's key. The Info-Reply
tells the address and port the Map-Server saw:

  the same as ours (address, 4341)  -> "public": nothing changes, the ETR
                                       registers this RLOC as it always did;
  anything else                     -> "nat": the RLOC is behind a NAT. We
                                       pick the first RTR of its family from
                                       the reply, register through it (an ECM
                                       whose inner message is our Map-Register,
                                       sent from port 4341 so the NAT opens
                                       the data path to the RTR) and, while it
                                       is our preferred RLOC of its family, send
                                       all outgoing data to the RTR.

While some RLOC is behind a NAT this role does all the registering (the
ETR's direct registration would announce an address nobody can reach):
records list the public RLOCs as they are and, for each NATed RLOC, the
RTR's RLOC in its place, with the xTR-ID (I bit) by which the RTR and the
Map-Server know us. With no NATed RLOC it registers nothing.

An Info-Reply is accepted only with the nonce of an outstanding
Info-Request (the last few per RLOC) and a valid MAC from the Map-Server it
went to; anything else is ignored and counted. RLOCs that no Info-Reply
answers stay "probing" (retried with back-off) and keep working as before,
unless the Map-Server has answered another of our RLOCs: then they are
announced unreachable (R=0) until their answer comes (`hidden`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lispctl.config import Config, MapServerConfig
from lispctl.mapping.types import IPAddress, Rloc
from lispctl.roles.base import CONTROL_PORT, DATA_PORT, Effect, Effects, Endpoint
from lispctl.roles.common import Counters, NonceSource, decode
from lispctl.roles.etr import ALG_IDS
from lispctl.roles.local import LocalSite

if TYPE_CHECKING:  # itr.py and etr.py import this module
    from lispctl.roles.etr import EtrRole
    from lispctl.roles.itr import ItrRole
from lispctl.wire import (EidRecord, EncapsulatedControlMessage, InfoReply, InfoRequest,
                          MapNotify, MapRegister, NatTraversal, eid_record, from_eid_prefix,
                          rloc_to_locator, sign, verify)

_KEEP_NONCES = 4          # Info-Requests of one RLOC that may still be answered
_MAX_RLOCS = 64           # bound of the per-RLOC table (addresses come from netlink)

PROBING, PUBLIC, NAT, NAT_NO_RTR = "probing", "public", "nat", "nat-no-rtr"


@dataclass
class RlocNat:
    address: IPAddress
    state: str = PROBING
    nonces: dict[int, MapServerConfig] = field(default_factory=dict)   # outstanding
    next_at: float = 0.0
    retry: float = 1.0
    translated: tuple[IPAddress, int] | None = None      # (global address, port) the MS saw
    ms_rloc: IPAddress | None = None
    rtrs: tuple[IPAddress, ...] = ()
    rtr: IPAddress | None = None                          # the RTR in use
    last_reply: float | None = None
    requests: int = 0
    replies: int = 0


class NatRole:
    """Sans-IO: Info-Requests and -Replies, NAT detection, registration via the RTR."""
    name = "nat"
    message_types = frozenset({InfoReply.TYPE, EncapsulatedControlMessage.TYPE})

    def __init__(self, cfg: Config, site: LocalSite, nonce: NonceSource, *, port: int = DATA_PORT) -> None:
        self.cfg = cfg
        # The source port of Info-Requests and ECM'd Map-Registers, and the
        # port an un-NATed reply must show: 4341 by the draft (the NAT binding
        # of the data path); the daemon passes 4342 while it sends control
        # messages only from its control sockets (docs/nat.md).
        self.port = port
        self.site = site
        self.nonce = nonce
        self.rlocs: dict[IPAddress, RlocNat] = {}
        self.counters = Counters()
        self.started = False
        self._now = 0.0
        self._register_at = math.inf
        self._register_nonces: list[int] = []
        self.last_notify: float | None = None
        self.itr: ItrRole | None = None       # the ItrRole whose data we steer to the RTR
        self.etr: EtrRole | None = None       # re-registers when a NAT check finds an RLOC public
        self._steered: tuple[IPAddress | None, IPAddress | None] = (None, None)   # data_rtr(4), (6)
        self.xtr_id = cfg.xtr_id
        self._sync(0.0)

    # ------------------------------------------------------------ queries
    def behind_nat(self) -> bool:
        """True while some RLOC is behind a NAT with an RTR: we register, not the ETR."""
        return any(r.state == NAT for r in self.rlocs.values())

    def data_rtr(self, version: int) -> IPAddress | None:
        """The RTR all data of this outer family goes to: while our preferred
        usable RLOC of that family (LocalSite.preferred_rlocs: best priority,
        the one data leaves from) is behind a NAT, else None. A node with a
        NATed and a public uplink thus follows its own priorities: data via
        the RTR while the NATed uplink is preferred, directly once only (or
        preferably) the public one is left."""
        first = next((a for a in self.site.preferred_rlocs() if a.version == version), None)
        r = self.rlocs.get(first) if first is not None else None
        return r.rtr if r is not None and r.state == NAT else None

    def _restir(self, now: float, out: Effects) -> None:
        """Where data goes (per family: an RTR or directly) changed since the
        data plane was last told: every positive map-cache entry again."""
        steering = (self.data_rtr(4), self.data_rtr(6))
        if steering != self._steered:
            self._steered = steering
            if self.itr is not None:
                out.items.extend(self.itr.reinstall_all(now))

    def steer(self, rlocs: tuple[Rloc, ...]) -> tuple[Rloc, ...]:
        """The locators the data plane gets for a remote mapping: the RTR
        instead, when we can only send that family's data through one."""
        for v in dict.fromkeys(r.address.version for r in rlocs if r.priority != 255):
            rtr = self.data_rtr(v)
            if rtr is not None:
                # port set (to 4341): the data plane then sends from 4341 too,
                # the binding the RTR answers through (docs/nat.md)
                return (Rloc(rtr, port=DATA_PORT),)
        return rlocs

    def hidden(self, rloc: IPAddress) -> bool:
        """True for an RLOC the ETR announces unreachable (R=0): behind a NAT
        without an RTR, or still being checked while the Map-Server has
        answered another of our RLOCs (so it does answer NAT checks: this
        one's answer is a round trip away). A mobile node's uplink that
        returns behind a NAT is thus never offered to correspondents at its
        private address. With no answer at all (an MS without NAT traversal)
        nothing is hidden: RLOCs work as without [nat]."""
        r = self.rlocs.get(rloc)
        if r is None:
            return False
        return r.state == NAT_NO_RTR or (r.state == PROBING and any(
            x.last_reply is not None for x in self.rlocs.values()))

    def rtr_for(self, rloc: IPAddress) -> IPAddress | None:
        """Where the data of this RLOC goes: its RTR when behind a NAT, else None."""
        r = self.rlocs.get(rloc)
        return r.rtr if r is not None and r.state == NAT else None

    # ------------------------------------------------------------ table
    def _ms_for(self, addr: IPAddress) -> MapServerConfig | None:
        return next((m for m in self.cfg.map_server if m.address.version == addr.version), None)

    def _sync(self, now: float) -> bool:
        """Follow the site's usable RLOCs (address present, link up); new
        ones, and ones whose link came back, are probed at once: a link that
        returns may sit behind another NAT (or none) than before."""
        current = [a for a in self.site.usable_rlocs() if self._ms_for(a) is not None][:_MAX_RLOCS]
        changed = False
        for a in [a for a in self.rlocs if a not in current]:
            changed |= self.rlocs.pop(a).state == NAT
        for a in current:
            if a not in self.rlocs:
                self.rlocs[a] = RlocNat(a, next_at=now, retry=self.cfg.nat.info_retry)
        return changed

    def addresses_changed(self, now: float) -> list[Effect]:
        """The site's addresses changed (the daemon calls this after the ETR
        learnt them): Info-Request from every new RLOC now."""
        self._now = now
        out = Effects()
        if self._sync(now):                      # a NATed RLOC went away
            self._register_at = now
        self._restir(now, out)                   # e.g. the preferred uplink went or came back
        if self.started:
            self._run(now, out)
        return out.items

    def reprobe(self, now: float) -> list[Effect]:
        """Ask again for every RLOC now: the daemon calls this once a mobile
        node's uplinks route from their own RLOCs (daemon/mobile.py); an
        answer to an Info-Request that left before that (through another
        uplink) may have been wrong."""
        self._now = now
        for r in self.rlocs.values():
            r.next_at = now
        out = Effects()
        if self.started:
            self._run(now, out)
        return out.items

    # ------------------------------------------------------------ timers
    def next_deadline(self) -> float | None:
        if not self.started:
            return 0.0
        times = [r.next_at for r in self.rlocs.values()]
        times.append(self._register_at)
        t = min(times, default=math.inf)
        return None if t == math.inf else t

    def tick(self, now: float) -> list[Effect]:
        self._now = now
        self.started = True
        out = Effects()
        self._run(now, out)
        return out.items

    def _run(self, now: float, out: Effects) -> None:
        for r in self.rlocs.values():
            if r.next_at <= now:
                self._info_request(r, now, out)
        if self._register_at <= now:
            self._register(now, out)

    def _info_request(self, r: RlocNat, now: float, out: Effects) -> None:
        ms = self._ms_for(r.address)
        prefixes = self.site.eids()
        if ms is None or not prefixes:
            r.next_at = now + self.cfg.nat.keepalive_interval
            return
        addr, mask = from_eid_prefix(prefixes[0])
        nonce = self.nonce()
        ttl = max(1, math.ceil(self.cfg.nat.keepalive_interval / 60))
        msg = InfoRequest(nonce, addr, mask, ms.key_id, ALG_IDS[ms.algorithm], ttl=ttl)
        out.send(sign(msg, ms.key), Endpoint(ms.address, CONTROL_PORT), Endpoint(r.address, self.port))
        r.nonces[nonce] = ms
        while len(r.nonces) > _KEEP_NONCES:
            del r.nonces[next(iter(r.nonces))]
        r.requests += 1
        self.counters["info_request_tx"] += 1
        keep = self.cfg.nat.keepalive_interval
        if r.state == PROBING:
            r.next_at = now + min(r.retry, keep)
            r.retry = min(r.retry * 2, keep)
        else:
            r.next_at = now + keep

    # ------------------------------------------------------------ datagrams
    def handle(self, data: bytes, src: Endpoint, dst: Endpoint, now: float) -> list[Effect]:
        self._now = now
        msg = decode(data)
        out = Effects()
        if type(msg) is InfoReply:
            self._on_reply(data, msg, src, now, out)
        elif (type(msg) is EncapsulatedControlMessage and type(msg.message) is MapNotify):
            self._on_notify(data, msg.message, src, now, out)
        return out.items

    def _on_notify(self, data: bytes, msg: MapNotify, src: Endpoint, now: float, out: Effects) -> None:
        """The Map-Server's Map-Notify for a registration we sent through the
        RTR, which the RTR hands back to us inside an ECM."""
        if msg.nonce not in self._register_nonces:
            self.counters["map_notify_via_rtr_unknown_nonce"] += 1
            return
        ms = next((m for m in self.cfg.map_server if m.key_id == msg.key_id), None)
        # the codec re-encodes a decoded message byte for byte
        if ms is None or not verify(msg.encode(), ms.key, alg_ids=(ALG_IDS[ms.algorithm],)):
            self.counters["map_notify_via_rtr_bad_auth"] += 1
            return
        self.counters["map_notify_via_rtr_rx"] += 1
        self.last_notify = now
        self._data_keepalive(msg.nonce, ms, src.addr, out)

    def _data_keepalive(self, nonce: int, ms: MapServerConfig, rtr: IPAddress, out: Effects) -> None:
        """Open (and, once per keepalive interval, keep) the NAT binding the
        RTR's data comes back through: an Info-Request from our 4341 to the
        RTR's 4341. A NAT filtering by address and port (Linux conntrack)
        passes the RTR's data only through a binding towards its 4341, and
        the register's (to its 4342) may even be mapped to another port. It
        carries the nonce of the register the Map-Server just confirmed:
        the RTR takes the binding only with that nonce (roles/rtr.py); the
        RTR does not answer it (docs/nat.md)."""
        prefixes = self.site.eids()
        if not prefixes or self.port != DATA_PORT:       # no data plane: no data binding
            return
        addr, mask = from_eid_prefix(prefixes[0])
        ttl = max(1, math.ceil(self.cfg.nat.keepalive_interval / 60))
        msg = sign(InfoRequest(nonce, addr, mask, ms.key_id, ALG_IDS[ms.algorithm], ttl=ttl), ms.key)
        for r in self.rlocs.values():
            if r.state == NAT and r.rtr == rtr:
                out.send(msg, Endpoint(rtr, DATA_PORT), Endpoint(r.address, self.port))
                self.counters["data_keepalive_tx"] += 1

    def _on_reply(self, data: bytes, msg: InfoReply, src: Endpoint, now: float, out: Effects) -> None:
        c = self.counters
        c["info_reply_rx"] += 1
        r = next((r for r in self.rlocs.values() if msg.nonce in r.nonces), None)
        if r is None:
            c["info_reply_unknown_nonce"] += 1
            return
        ms = r.nonces[msg.nonce]
        if msg.key_id != ms.key_id or not verify(data, ms.key, alg_ids=(ALG_IDS[ms.algorithm],)):
            c["info_reply_bad_auth"] += 1
            out.log(f"ignored Info-Reply from {src.addr}: bad authentication")
            return
        nat = msg.nat
        if not isinstance(nat, NatTraversal) or not isinstance(nat.global_etr_rloc, type(r.address)):
            c["info_reply_malformed"] += 1
            return
        del r.nonces[msg.nonce]
        c["info_reply_ok"] += 1
        r.replies += 1
        r.last_reply = now
        r.retry = self.cfg.nat.info_retry
        r.next_at = now + self.cfg.nat.keepalive_interval
        before = (r.state, r.translated, r.rtr)
        r.translated = (nat.global_etr_rloc, nat.etr_port)
        r.ms_rloc = nat.ms_rloc if isinstance(nat.ms_rloc, type(r.address)) else None
        if r.translated == (r.address, self.port):
            r.state, r.rtrs, r.rtr = PUBLIC, (), None
        else:
            r.rtrs = tuple(a for a in nat.rtr_rlocs if isinstance(a, type(r.address)))
            if r.rtr not in r.rtrs:
                r.rtr = r.rtrs[0] if r.rtrs else None
            r.state = NAT if r.rtr is not None else NAT_NO_RTR
            if r.state == NAT_NO_RTR:
                c["nat_without_rtr"] += 1
        self._restir(now, out)                   # data now (or no longer) via the RTR
        if (r.state, r.translated, r.rtr) != before:
            g, p = r.translated
            out.log(f"RLOC {r.address}: {r.state}" + (f", seen as {g}:{p}" if r.state != PUBLIC else "")
                    + (f", RTR {r.rtr}" if r.rtr else ""))
            self._register_at = now              # a new translation or RTR: register now
            if not self.behind_nat() and self.etr is not None and before[0] != r.state:
                # the ETR registers: this RLOC is no longer hidden (or now is)
                out.items.extend(self.etr.register_now(now))

    # ------------------------------------------------------------ registering via the RTR
    def _records(self) -> list[EidRecord]:
        recs: list[EidRecord] = []
        for m in self.site.db:
            locs: dict[IPAddress, Rloc] = {}
            for rl in m.rlocs:
                st = self.rlocs.get(rl.address)
                if st is not None and st.state == NAT_NO_RTR:
                    continue                     # unreachable from outside
                addr = st.rtr if st is not None and st.state == NAT and st.rtr is not None else rl.address
                up = rl.reachable and not self.hidden(rl.address)       # hidden: being checked
                locs.setdefault(addr, Rloc(addr, rl.priority, rl.weight, up))
            if locs:
                recs.append(eid_record(m.eid, tuple(rloc_to_locator(x) for x in locs.values()),
                                       ttl=self.cfg.etr.record_ttl_minutes, authoritative=True))
        return recs

    def _register(self, now: float, out: Effects) -> None:
        self._register_at = now + self.cfg.nat.keepalive_interval
        natted = [r for r in self.rlocs.values() if r.state == NAT]
        if not natted:
            self._register_at = math.inf
            return
        records = self._records()
        if not records:
            return
        for r in natted:
            ms = self._ms_for(r.address)
            if ms is None:
                continue
            assert r.rtr is not None             # state NAT: an RTR was chosen
            nonce = self.nonce()
            xtr_id = self.xtr_id if self.xtr_id is not None else 0
            # proxy-reply always: a Map-Request the MS forwarded to our
            # locator would reach the RTR, which is no ETR (docs/nat.md)
            reg = MapRegister(nonce, tuple(records), key_id=ms.key_id, alg_id=ALG_IDS[ms.algorithm],
                              proxy_reply=True, want_map_notify=ms.want_map_notify,
                              xtr_id=xtr_id, site_id=self.cfg.etr.site_id)
            inner = decode(sign(reg, ms.key))
            ecm = EncapsulatedControlMessage(inner, r.address, ms.address, self.port, CONTROL_PORT,
                                             to_ms=True)
            out.send(ecm.encode(), Endpoint(r.rtr, CONTROL_PORT), Endpoint(r.address, self.port))
            self._register_nonces = (self._register_nonces + [nonce])[-_KEEP_NONCES:]
            self.counters["map_register_via_rtr_tx"] += 1

    # ------------------------------------------------------------ API
    def snapshot(self) -> dict[str, Any]:
        now = self._now
        return {
            "rlocs": [{
                "rloc": str(r.address), "state": r.state,
                "translated": None if r.translated is None else f"{r.translated[0]}:{r.translated[1]}"
                if r.translated[0].version == 4 else f"[{r.translated[0]}]:{r.translated[1]}",
                "rtr": None if r.rtr is None else str(r.rtr),
                "rtrs_offered": [str(a) for a in r.rtrs],
                "info_requests": r.requests, "info_replies": r.replies,
                "last_reply_s_ago": None if r.last_reply is None else round(now - r.last_reply, 1),
                "next_info_request_in_s": round(max(0.0, r.next_at - now), 1),
            } for r in self.rlocs.values()],
            "keepalive_interval_s": self.cfg.nat.keepalive_interval,
            # the MS's Map-Notify through the RTR: how recent (None: never)
            "notify_via_rtr_s_ago": None if self.last_notify is None else round(now - self.last_notify, 1),
            "counters": self.counters.snapshot(),
        }

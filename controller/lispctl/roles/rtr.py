"""RTR control plane (draft-ietf-lisp-nat-traversal): relay the registrations
of xTRs behind a NAT to their Map-Server and the Map-Notify back.

An xTR behind a NAT sends its Map-Register to us inside an ECM (M bit); the
ECM's outer source is its translated address and port. We forward the inner
Map-Register unchanged (the xTR signed it with its site key, which we do not
know) to its Map-Server, and hand the Map-Server's Map-Notify back to the xTR
inside an ECM, to the translated address and port, so it crosses the NAT on
the binding the xTR opened.

Trust: we cannot check the xTR's MAC, the Map-Server can. So a peer (keyed
by its xTR-ID) and its translated address:port are recorded only when the
Map-Server answers the forwarded Map-Register with a Map-Notify of the same
nonce from the address we sent it to: a forged register naming somebody
else's xTR-ID never moves that xTR's binding. With an MS-RTR key for the
Map-Server ([rtr] map-server-keys) the Map-Notify must also carry the R bit
and a valid MS-RTR MAC (wire/auth.py): an underlay attacker who saw a
register's nonce (it crosses the underlay in clear) and spoofs the
Map-Server's address cannot confirm a forged register. We forward only registers
that carry an xTR-ID (I bit), only to configured Map-Servers ([rtr]
map-servers: otherwise we would be a reflector), at most one outstanding
register per xTR-ID, at a bounded rate per source and overall ([rtr]
register-rate-per-source, register-rate), with bounded tables; everything
refused is counted.

A confirmed peer's EID prefixes go into the map-cache with one locator, its
translated address and port (the BPF locator carries the UDP port), and leave
it when the peer expires. The port is the peer's *data* binding once known: a
NAT filtering by address and port (Linux conntrack) passes our data (from
4341) only through the binding the xTR opened towards our 4341, and may map it
to another port than the register's (to our 4342). The xTR opens and keeps it
with an Info-Request from its 4341 to our 4341 after each Map-Notify we relay,
carrying that register's nonce; we take its source as the data binding only
from the peer's confirmed address and with the nonce of its last confirmed
register, and only once per nonce (_on_data_keepalive; docs/nat.md). The data plane (decapsulate, look up,
re-encapsulate) is loaded by the daemon when the RTR has RLOC-facing
interfaces - see docs/nat.md, "Data through the RTR".
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lispctl.config import Config
from lispctl.mapping.types import EidPrefix, IPAddress, Rloc
from lispctl.roles.base import DATA_PORT, Effect, Effects, Endpoint, InstallMapping, RemoveMapping
from lispctl.roles.common import Counters, decode
from lispctl.roles.ratelimit import RateLimiter
from lispctl.wire import (EncapsulatedControlMessage, InfoRequest, MalformedMessage, MapNotify,
                          MapRegister, decode_control, record_prefix)
from lispctl.wire.auth import strip_ms_rtr_auth

if TYPE_CHECKING:  # itr.py imports this module
    from lispctl.roles.itr import ItrRole
    from lispctl.roles.local import LocalSite

_PENDING_S = 10.0          # how long a forwarded register waits for its Map-Notify


def _hostport(ep: Endpoint) -> str:
    """address:port, an IPv6 address in brackets (as `lispctl status` shows the xTR's side)."""
    return f"[{ep.addr}]:{ep.port}" if ep.addr.version == 6 else f"{ep.addr}:{ep.port}"


@dataclass
class Peer:
    xtr_id: int
    translated: Endpoint                  # where the xTR's NAT lets us reach it
    private: IPAddress                    # the ECM's inner source (the xTR's own address)
    ms: IPAddress
    eids: tuple[EidPrefix, ...] = ()
    first_seen: float = 0.0
    last_confirmed: float = 0.0
    registers: int = 0
    notifies: int = 0
    nonce: int | None = None              # of the last confirmed register
    data: Endpoint | None = None          # data binding (keepalive to our 4341), if learned
    data_nonce: int | None = None         # the register nonce data was learned with

    @property
    def locator(self) -> Rloc:
        """Where data for the peer's EIDs goes: its NAT's address AND port."""
        ep = self.data if self.data is not None else self.translated
        return Rloc(ep.addr, port=ep.port)


@dataclass
class _Pending:
    xtr_id: int
    source: Endpoint
    private: IPAddress
    ms: IPAddress
    eids: tuple[EidPrefix, ...]
    expires: float


class RtrRole:
    name = "rtr"
    message_types = frozenset({EncapsulatedControlMessage.TYPE, MapNotify.TYPE, InfoRequest.TYPE})

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.map_servers = set(cfg.rtr.map_servers)
        self.ms_keys = dict(cfg.rtr.map_server_keys)
        self.peers: dict[int, Peer] = {}
        self.pending: dict[int, _Pending] = {}          # nonce -> forwarded register
        self._pending_by_xtr: dict[int, int] = {}        # xTR-ID -> its outstanding nonce
        self.counters = Counters()
        self.limit = RateLimiter(cfg.rtr.register_rate_per_source, cfg.rtr.register_rate)
        self._now = 0.0
        # with a data plane (roles/__init__.py): the ITR resolving what we
        # miss, and our RLOCs
        self.itr: ItrRole | None = None
        self.site: LocalSite | None = None

    def steer(self, rlocs: tuple[Rloc, ...]) -> tuple[Rloc, ...]:
        """The locators the ITR hands the data plane: our own RLOCs made
        unusable. The Map-Server names us as the locator of every NATed xTR we
        relay for; while no confirmed peer holds that EID (the xTR is gone,
        or never confirmed) its data has no translated port to go to, and is
        dropped and counted (drop_no_locator) instead of sent to ourselves."""
        mine = set(self.site.rlocs()) if self.site is not None else set()
        if not any(r.address in mine for r in rlocs):
            return rlocs
        self.counters["map_cache_self_locator"] += 1
        return tuple(dataclasses.replace(r, priority=255, reachable=False) if r.address in mine else r
                     for r in rlocs)

    # ------------------------------------------------------------ timers
    def next_deadline(self) -> float | None:
        times = [p.expires for p in self.pending.values()]
        times += [p.last_confirmed + self.cfg.rtr.peer_timeout for p in self.peers.values()]
        return min(times, default=None)

    def tick(self, now: float) -> list[Effect]:
        self._now = now
        for nonce in [n for n, p in self.pending.items() if p.expires <= now]:
            self._drop_pending(nonce)
            self.counters["register_unconfirmed"] += 1
        out = Effects()
        for xid in [x for x, p in self.peers.items() if p.last_confirmed + self.cfg.rtr.peer_timeout <= now]:
            for eid in self.peers.pop(xid).eids:
                out.items.append(RemoveMapping(eid))
            self.counters["peer_expired"] += 1
            out.log(f"NATed xTR {xid:032x} expired")
        return out.items

    def _drop_pending(self, nonce: int) -> None:
        p = self.pending.pop(nonce)
        if self._pending_by_xtr.get(p.xtr_id) == nonce:
            del self._pending_by_xtr[p.xtr_id]

    # ------------------------------------------------------------ datagrams
    def handle(self, data: bytes, src: Endpoint, dst: Endpoint, now: float) -> list[Effect]:
        self._now = now
        msg = decode(data)
        out = Effects()
        if type(msg) is EncapsulatedControlMessage and type(msg.message) is MapRegister:
            self._on_register(msg, src, now, out)
        elif type(msg) is MapNotify:
            self._on_notify(data, msg, src, now, out)
        elif type(msg) is InfoRequest and dst.port == DATA_PORT:
            self._on_data_keepalive(msg, src, out)
        return out.items

    def _on_data_keepalive(self, msg: InfoRequest, src: Endpoint, out: Effects) -> None:
        """A NATed xTR's Info-Request to our data port: its source is the NAT
        binding our data must use. It is signed with the xTR's site key, which
        we do not have, so what we trust is the nonce: the one of the peer's
        last register the Map-Server confirmed (64 random bits, seen only on
        the xTR-RTR-MS paths), from the peer's confirmed address, naming one
        of its EIDs. A nonce sets the binding once; repeats only refresh it,
        so a replay from another port cannot move it."""
        c = self.counters
        c["data_keepalive_rx"] += 1
        peer = next((p for p in self.peers.values() if p.nonce == msg.nonce), None)
        named = f"{msg.eid_prefix}/{msg.eid_mask_len}"
        if peer is None or src.addr != peer.translated.addr or \
                not any(str(e.prefix) == named for e in peer.eids):
            c["data_keepalive_unknown"] += 1
            return
        if peer.data == src:
            c["data_keepalive_refresh"] += 1
            return
        if peer.data_nonce == msg.nonce:
            c["data_keepalive_moved_refused"] += 1       # only a new confirmed register may
            return
        peer.data, peer.data_nonce = src, msg.nonce
        c["data_binding_learned"] += 1
        out.log(f"NATed xTR {peer.xtr_id:032x}: data to {_hostport(src)}")
        self._install(peer, out)

    def _install(self, peer: Peer, out: Effects) -> None:
        loc = (peer.locator,)
        for eid in peer.eids:
            if self.itr is not None:
                self.itr.forget(eid)          # ours now: the ITR's entry (us as locator) must not return
            out.items.append(InstallMapping(eid, loc, ttl_s=self.cfg.rtr.peer_timeout))

    def _on_register(self, ecm: EncapsulatedControlMessage, src: Endpoint, now: float, out: Effects) -> None:
        c = self.counters
        c["ecm_register_rx"] += 1
        reg = ecm.message
        assert type(reg) is MapRegister        # handle() passes only those
        if (over := self.limit.allow(src.addr, now)) is not None:
            c[f"register_rate_limited_{over.replace('-', '_')}"] += 1
            return
        if reg.xtr_id is None:
            c["register_without_xtr_id"] += 1
            return
        if ecm.inner_dst not in self.map_servers:
            c["register_unknown_map_server"] += 1
            return
        if reg.xtr_id not in self.peers and len(self.peers) >= self.cfg.rtr.max_peers:
            c["register_peer_table_full"] += 1
            return
        if len(self.pending) >= self.cfg.rtr.max_peers and reg.xtr_id not in self._pending_by_xtr:
            c["register_pending_full"] += 1
            return
        try:
            eids = tuple(record_prefix(r) for r in reg.records)
        except MalformedMessage:
            c["register_bad_record"] += 1
            return
        old = self._pending_by_xtr.get(reg.xtr_id)
        if old is not None:                       # one outstanding register per xTR-ID
            self._drop_pending(old)
        self.pending[reg.nonce] = _Pending(reg.xtr_id, src, ecm.inner_src, ecm.inner_dst, eids,
                                           now + _PENDING_S)
        self._pending_by_xtr[reg.xtr_id] = reg.nonce
        out.send(reg.encode(), Endpoint(ecm.inner_dst))
        c["register_forwarded"] += 1

    def _on_notify(self, data: bytes, msg: MapNotify, src: Endpoint, now: float, out: Effects) -> None:
        c = self.counters
        p = self.pending.get(msg.nonce)
        if p is None or src.addr != p.ms:
            c["notify_unknown"] += 1
            return
        key = self.ms_keys.get(p.ms)
        if key is not None:
            # checked before the pending register is used up: a forged notify
            # must not cancel the genuine one either
            signed = strip_ms_rtr_auth(data, key)
            if signed is None:
                c["notify_bad_ms_rtr_auth" if msg.rtr else "notify_without_ms_rtr_auth"] += 1
                out.log(f"ignored Map-Notify from {src.addr}: "
                        f"{'bad' if msg.rtr else 'no'} MS-RTR authentication")
                return
            stripped = decode_control(signed)
            assert type(stripped) is MapNotify        # strip_ms_rtr_auth decoded it as one
            msg = stripped                            # what the xTR gets: as without an RTR
        elif msg.rtr:
            # a Map-Server with a key we were not given: the xTR's MAC covers
            # the notify without the MS-RTR fields
            msg = dataclasses.replace(msg, rtr=False, ms_rtr_key_id=None, ms_rtr_auth_data=b"")
            c["notify_ms_rtr_auth_unchecked"] += 1
        self._drop_pending(msg.nonce)
        peer = self.peers.get(p.xtr_id)
        if peer is None:
            peer = self.peers[p.xtr_id] = Peer(p.xtr_id, p.source, p.private, p.ms, first_seen=now)
            out.log(f"NATed xTR {p.xtr_id:032x} at {_hostport(p.source)} "
                    f"({', '.join(str(e) for e in p.eids)})")
        elif peer.translated != p.source:
            c["peer_rebound"] += 1
            out.log(f"NATed xTR {p.xtr_id:032x} moved to {_hostport(p.source)}")
            if peer.data is not None and peer.data.addr != p.source.addr:
                peer.data = None              # another NAT: its data binding is to be learned
        for eid in set(peer.eids) - set(p.eids):
            out.items.append(RemoveMapping(eid))
        peer.translated, peer.private, peer.ms, peer.eids = p.source, p.private, p.ms, p.eids
        peer.nonce = msg.nonce
        self._install(peer, out)
        peer.last_confirmed = now
        peer.registers += 1
        peer.notifies += 1
        ecm = EncapsulatedControlMessage(msg, p.ms, p.private, 4342, p.source.port)
        out.send(ecm.encode(), p.source)
        c["notify_relayed"] += 1

    # ------------------------------------------------------------ API
    def snapshot(self) -> dict[str, Any]:
        now = self._now
        return {
            "peers": [{
                "xtr_id": f"{p.xtr_id:032x}", "translated": _hostport(p.translated),
                "data": _hostport(p.data) if p.data is not None else None,
                "private": str(p.private), "map_server": str(p.ms), "eids": [str(e) for e in p.eids],
                "registers": p.registers, "confirmed_s_ago": round(now - p.last_confirmed, 1),
            } for p in self.peers.values()],
            "pending_registers": len(self.pending),
            "counters": self.counters.snapshot(),
        }

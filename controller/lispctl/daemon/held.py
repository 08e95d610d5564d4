"""Send the packets a miss held once their destination resolves.

The data plane hands a packet it drops on a miss to the daemon inside the
miss event (bpf/lisp_maps.h, LISP_MISS_PKT_MAX); roles/holdq.py keeps it,
bounded, for at most the ITR's resolution timeout. When a mapping with
locators is installed, its held packets are encapsulated here, in user
space, and sent from a UDP socket to the chosen locator's port 4341, from
a local RLOC of the same family (IP_PKTINFO, so source routing picks the
RLOC's uplink; never through an EID device whose ITR would see it again).

Why not re-inject through the data plane: a tc program only sees packets
that cross its hook, and there is no way to put a packet on the ingress of
the EID-facing interface without a second device; user-space encapsulation
is a few lines and sends exactly the header the data plane would (N, L, I).
The path is only for the few packets sent before the mapping existed, so
its cost does not matter.
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import socket
from typing import Callable, Iterable

from lispctl.mapping.types import EidPrefix, IPAddress, MapAction, Rloc
from lispctl.roles.base import MissEvent
from lispctl.roles.holdq import LISP_DATA_PORT, HoldQueue, encapsulate

from .udp import _src_cmsg

log = logging.getLogger("lispctl.daemon.held")


class HeldPackets:
    def __init__(self, queue: HoldQueue, local_rlocs: Callable[[], Iterable[IPAddress]],
                 now: Callable[[], float], loop: asyncio.AbstractEventLoop | None = None,
                 data_port: int = LISP_DATA_PORT) -> None:
        self.queue = queue
        self.data_port = data_port
        self.local_rlocs = local_rlocs
        self.now = now
        self.loop = loop
        self._socks: dict[int, socket.socket] = {}
        self._raw: dict[int, socket.socket] = {}
        self.sent_native = 0
        # NAT traversal (docs/nat.md): a locator with a port set must get its
        # data from our port 4341 (the NAT binding the RTR answers through);
        # send(payload, (dst, port), src) through the daemon's 4341 socket
        self.data_port_sender: Callable[[bytes, tuple[str, int], str], bool] | None = None
        self.nat_path_dropped = 0
        self._timer: asyncio.TimerHandle | None = None
        self.sent = 0
        self.send_errors = 0
        # observe(seconds): held -> sent, per packet (the first-packet figure)
        self.observe: Callable[[float], None] | None = None

    def counters(self) -> dict[str, int]:
        out = {f"held_{k}": v for k, v in self.queue.counters.items()}
        out.update(held_now=len(self.queue), held_sent=self.sent, held_sent_native=self.sent_native,
                   held_send_errors=self.send_errors, held_nat_path_dropped=self.nat_path_dropped)
        return out

    def on_miss(self, event: MissEvent) -> None:
        if not event.packet:
            return
        now = self.now()
        if self.queue.hold(event.eid.iid, event.eid.prefix.network_address, event.packet, now):
            self._arm()

    def on_install(self, eid: EidPrefix, rlocs: tuple[Rloc, ...], action: MapAction) -> None:
        if not len(self.queue):
            return
        now = self.now()
        usable = tuple(r for r in rlocs if r.reachable and r.priority != 255)
        # what the data plane does with later packets (lisp_datapath.c route()):
        # NATIVELY_FORWARD, or NO_ACTION without locators, passes them natively
        native = not usable and (action == MapAction.NATIVELY_FORWARD
                                 or (action == MapAction.NO_ACTION and not rlocs))
        for held_at, pkt in self.queue.release(eid, bool(usable) or native, now):
            ok = self._send_native(pkt) if native else self._send(eid.iid, usable, pkt)
            if ok and self.observe is not None:
                self.observe(now - held_at)

    def _send_native(self, pkt: bytes) -> bool:
        """The packet as it was, routed by this host (a raw socket with the
        IP header included: IPPROTO_RAW implies IP_HDRINCL, and IPv6's
        IPV6_HDRINCL on Linux >= 4.5)."""
        version = pkt[0] >> 4 if pkt else 0
        if version not in (4, 6):
            return False
        dst = ipaddress.ip_address(pkt[16:20] if version == 4 else pkt[24:40])
        try:
            sock = self._raw.get(version)
            if sock is None:
                sock = self._raw[version] = socket.socket(
                    socket.AF_INET if version == 4 else socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW)
                sock.setblocking(False)
            sock.sendto(pkt, (str(dst), 0))
            self.sent_native += 1
            return True
        except OSError as exc:
            self.send_errors += 1
            log.debug("forwarding a held packet to %s natively failed: %s", dst, exc)
            return False

    def _send(self, iid: int, rlocs: tuple[Rloc, ...], pkt: bytes) -> bool:
        out = encapsulate(pkt, iid, rlocs, random.getrandbits(24))
        if out is None:
            return False
        dst, payload = out
        src = next((a for a in self.local_rlocs() if a.version == dst.version), None)
        rloc = next((r for r in rlocs if ipaddress.ip_address(r.address) == dst), None)
        if rloc is not None and rloc.port:
            # from an ephemeral port it would open a second NAT binding
            if self.data_port_sender is None or src is None or \
                    not self.data_port_sender(payload, (str(dst), rloc.port), str(src)):
                self.nat_path_dropped += 1
                return False
            self.sent += 1
            return True
        try:
            sock = self._sock(dst.version)
            cmsg = _src_cmsg(src) if src is not None else []
            sock.sendmsg([payload], cmsg, 0, (str(dst), self.data_port))
            self.sent += 1
            return True
        except OSError as exc:
            self.send_errors += 1
            log.debug("sending a held packet to %s failed: %s", dst, exc)
            return False

    def _sock(self, version: int) -> socket.socket:
        s = self._socks.get(version)
        if s is None:
            s = socket.socket(socket.AF_INET if version == 4 else socket.AF_INET6, socket.SOCK_DGRAM)
            s.setblocking(False)
            self._socks[version] = s
        return s

    def _arm(self) -> None:
        if self.loop is None or self._timer is not None:
            return
        at = self.queue.next_deadline()
        if at is not None:
            self._timer = self.loop.call_later(max(0.0, at - self.now()) + 0.01, self._expire)

    def _expire(self) -> None:
        self._timer = None
        self.queue.expire(self.now())
        self._arm()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for s in (*self._socks.values(), *self._raw.values()):
            s.close()
        self._socks.clear()
        self._raw.clear()

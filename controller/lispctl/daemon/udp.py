"""Control-plane UDP sockets driven by the asyncio event loop.

asyncio's DatagramProtocol hides recvmsg/sendmsg, and a LISP node needs both:
the destination address of each request (IP_PKTINFO / IPV6_RECVPKTINFO, so an
ETR answers from the RLOC that was asked) and a chosen source address on send
(ECM'd Map-Requests and probes leave from a given RLOC). So the sockets are
plain non-blocking sockets registered with loop.add_reader.

Map-Requests get their own sockets. Each control address is served by one
"control" socket and REQUEST_QUEUES "requests" sockets in one SO_REUSEPORT
group, and a classic BPF program attached to the group steers each datagram
by the first byte of its UDP payload (the message type): Map-Requests and
ECMs to a requests socket chosen by a hash of the source address, everything
else (Map-Registers, Notify-Acks, Map-Replies, ...) to the control socket.
Each socket has its own kernel receive queue, so a Map-Request flood fills
only the queue of its source's hash and can never push a Map-Register out,
nor the requests of sources hashed elsewhere; every batch read from a requests
socket is preceded by a drain of the control socket, so registrations are
handled first; the loop serves the ready sockets in turn, one batch each.
Where the kernel refuses the program (checked once at start), one socket
serves everything and a warning says so.
"""
from __future__ import annotations

import asyncio
import ctypes
import errno
import ipaddress
import logging
import socket
import struct
from dataclasses import dataclass
from typing import Callable, Sequence

from lispctl.roles.base import CONTROL_PORT, Endpoint

log = logging.getLogger("lispctl.daemon.udp")

# Linux values; the socket module of Python 3.11 does not export the IPv4 ones.
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)
IPV6_RECVPKTINFO = getattr(socket, "IPV6_RECVPKTINFO", 49)
IPV6_PKTINFO = getattr(socket, "IPV6_PKTINFO", 50)

SO_ATTACH_REUSEPORT_CBPF = getattr(socket, "SO_ATTACH_REUSEPORT_CBPF", 51)
SO_MEMINFO = 55
_SK_MEMINFO_DROPS = 8

# Classic BPF for the reuseport group. The program sees the UDP payload at
# offset 0 and the IP header at SKF_NET_OFF; it returns the index of the
# socket in the group (in the order they were bound): 0 control, 1..n requests.
REQUEST_QUEUES = 8
_SKF_NET_OFF = 0xFFF00000             # -0x100000 as u32


def _steer_program(family: int, queues: int = REQUEST_QUEUES) -> tuple:
    """A = payload[0] >> 4; types 1 (Map-Request) and 8 (ECM): return
    1 + fold(last 32 bits of the source address) % queues; anything else,
    or an empty datagram (the load fails: 0), returns 0."""
    src_word = _SKF_NET_OFF + (12 if family == socket.AF_INET else 20)
    return (
        (0x30, 0, 0, 0),            # ldb [0]
        (0x74, 0, 0, 4),            # rsh #4
        (0x15, 2, 0, 1),            # jeq #1 -> request
        (0x15, 1, 0, 8),            # jeq #8 -> request
        (0x06, 0, 0, 0),            # ret #0: control socket
        (0x20, 0, 0, src_word),     # request: ld [net + source address]
        (0x07, 0, 0, 0),            # tax
        (0x74, 0, 0, 16),           # rsh #16
        (0xAC, 0, 0, 0),            # xor x
        (0x07, 0, 0, 0),            # tax
        (0x74, 0, 0, 8),            # rsh #8
        (0xAC, 0, 0, 0),            # xor x
        (0x94, 0, 0, queues),       # mod #queues
        (0x04, 0, 0, 1),            # add #1
        (0x16, 0, 0, 0),            # ret a
    )


def request_queue_of(addr: ipaddress._BaseAddress, queues: int = REQUEST_QUEUES) -> int:
    """The requests socket (1..queues) _steer_program picks for a source."""
    a = int(addr) & 0xFFFFFFFF
    a ^= a >> 16
    a ^= a >> 8
    return 1 + a % queues


def _attach_steering(sock: socket.socket, family: int) -> None:
    """Attach the steering program to sock's reuseport group (OSError when refused)."""
    prog = _steer_program(family)
    filt = (ctypes.c_uint64 * len(prog))()
    for i, (code, jt, jf, k) in enumerate(prog):
        filt[i] = struct.unpack("=Q", struct.pack("=HBBI", code, jt, jf, k))[0]
    fprog = struct.pack("@HP", len(prog), ctypes.addressof(filt))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, fprog)


def _kernel_drops(sock: socket.socket) -> int:
    """Datagrams the kernel dropped at this socket (full receive queue)."""
    try:
        info = sock.getsockopt(socket.SOL_SOCKET, SO_MEMINFO, 4 * 9)
        return struct.unpack_from("=9I", info)[_SK_MEMINFO_DROPS]
    except (OSError, struct.error):
        return 0


_IN_PKTINFO = struct.Struct("=I4s4s")      # ifindex, spec_dst, addr (header dst)
_IN6_PKTINFO = struct.Struct("=16sI")      # addr, ifindex
_MAX_DATAGRAM = 65535
RX_BATCH = 64               # datagrams per readiness event before yielding to the loop
_CACHE_MAX = 4096           # per-socket endpoint caches are cleared when they reach this

Receiver = Callable[[bytes, Endpoint, Endpoint], None]
BatchDone = Callable[[], None]


@dataclass
class SocketStats:
    rx: int = 0
    tx: int = 0
    send_errors: int = 0


def _pktinfo_dst(family: int, ancdata) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    for level, ctype, cdata in ancdata:
        if family == socket.AF_INET and level == socket.IPPROTO_IP and ctype == IP_PKTINFO:
            _, _, addr = _IN_PKTINFO.unpack_from(cdata)
            return ipaddress.IPv4Address(addr)
        if family == socket.AF_INET6 and level == socket.IPPROTO_IPV6 and ctype == IPV6_PKTINFO:
            addr, _ = _IN6_PKTINFO.unpack_from(cdata)
            return ipaddress.IPv6Address(addr)
    return None


def _src_cmsg(src: ipaddress.IPv4Address | ipaddress.IPv6Address) -> list:
    if src.version == 4:
        return [(socket.IPPROTO_IP, IP_PKTINFO, _IN_PKTINFO.pack(0, src.packed, b"\0" * 4))]
    return [(socket.IPPROTO_IPV6, IPV6_PKTINFO, _IN6_PKTINFO.pack(src.packed, 0))]


class ControlSocket:
    """One UDP socket (one family) bound to a port; reports (data, src, dst)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, family: int, bind_addr: str,
                 port: int, receiver: Receiver, stats: SocketStats,
                 batch_done: BatchDone | None = None, *, reuseport: bool = False,
                 first: "ControlSocket | None" = None) -> None:
        """reuseport: join a SO_REUSEPORT group (the control/requests pair).
        first: a socket drained before each batch of this one."""
        self.family = family
        self.loop = loop
        self.receiver = receiver
        self.batch_done = batch_done
        self.stats = stats
        self.first = first
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuseport:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVPKTINFO, 1)
            else:
                sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
                # An RLOC may be added after start-up (DHCP, mobile node handover).
                sock.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)
            sock.setblocking(False)
            sock.bind((bind_addr, port))
        except OSError:
            sock.close()
            raise
        self.sock = sock
        self.local = Endpoint(ipaddress.ip_address(sock.getsockname()[0]), sock.getsockname()[1])
        self._pktinfo_kind = ((socket.IPPROTO_IPV6, IPV6_PKTINFO) if family == socket.AF_INET6
                              else (socket.IPPROTO_IP, IP_PKTINFO))
        self._srcs: dict[tuple, tuple] = {}             # sockaddr -> (Endpoint, send sockaddr)
        self._dsts: dict[bytes, Endpoint] = {}          # pktinfo bytes -> Endpoint
        self._sockaddrs: dict[Endpoint, tuple] = {}     # Endpoint -> sockaddr
        self._last: tuple = (None, None)                # (Endpoint, sockaddr) last received
        loop.add_reader(sock.fileno(), self._readable)

    @property
    def port(self) -> int:
        return self.local.port

    def _readable(self) -> None:
        # Drain what is queued, but yield to the loop after a batch so one busy
        # socket cannot starve timers and the API. Endpoints are cached per
        # sockaddr / pktinfo: parsing an address costs more than the rest of
        # the receive path, and a server hears the same few peers over and over.
        # batch_done (if any) runs once after the batch.
        try:
            if self.first is not None:
                self.first._drain()      # Map-Registers before Map-Requests
            self._drain()
        finally:
            if self.batch_done is not None:
                self.batch_done()

    def _drain(self) -> None:
        if not self.local.addr.is_unspecified:
            return self._drain_bound()
        recvmsg, receiver, stats = self.sock.recvmsg, self.receiver, self.stats
        srcs, dsts = self._srcs, self._dsts
        for _ in range(RX_BATCH):
            try:
                data, anc, _flags, addr = recvmsg(_MAX_DATAGRAM, 256)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:          # e.g. ICMP port unreachable reported late
                log.debug("recvmsg on %s: %s", self.local, exc)
                continue
            stats.rx += 1
            last = srcs.get(addr)
            if last is None:
                last = self._src_endpoint(addr)
            self._last = last
            src = last[0]
            dst = dsts.get(anc[0][2]) if len(anc) == 1 else None
            if dst is None:
                dst = self._dst_endpoint(anc)
            receiver(data, src, dst)

    def _drain_bound(self) -> None:
        # Bound to one address: every datagram was sent to it, so the
        # destination needs no IP_PKTINFO and recvfrom does.
        recvfrom, receiver, stats = self.sock.recvfrom, self.receiver, self.stats
        srcs, dst = self._srcs, self.local
        for _ in range(RX_BATCH):
            try:
                data, addr = recvfrom(_MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.debug("recvfrom on %s: %s", self.local, exc)
                continue
            stats.rx += 1
            last = srcs.get(addr)
            if last is None:
                last = self._src_endpoint(addr)
            self._last = last
            src = last[0]
            receiver(data, src, dst)

    def _src_endpoint(self, addr: tuple) -> tuple[Endpoint, tuple]:
        """(Endpoint, the sockaddr send() uses for it) of a sender."""
        if len(self._srcs) >= _CACHE_MAX:   # spoofed sources must not grow it without bound
            self._srcs.clear()
        ep = Endpoint(ipaddress.ip_address(addr[0].split("%", 1)[0]), addr[1])
        pair = self._srcs[addr] = (ep, (str(ep.addr), ep.port))
        return pair

    def _dst_endpoint(self, anc) -> Endpoint:
        ep = Endpoint(_pktinfo_dst(self.family, anc) or self.local.addr, self.local.port)
        if len(anc) == 1 and len(self._dsts) < _CACHE_MAX:
            level, ctype, cdata = anc[0]
            if (level, ctype) == self._pktinfo_kind:
                self._dsts[cdata] = ep
        return ep

    def send(self, payload: bytes, dst: Endpoint, src_addr=None) -> bool:
        last_src, last_to = self._last
        # A reply to the datagram just received goes to that very Endpoint object.
        to = last_to if dst is last_src else self._sockaddrs.get(dst)
        if to is None:
            if len(self._sockaddrs) >= _CACHE_MAX:
                self._sockaddrs.clear()
            to = self._sockaddrs[dst] = (str(dst.addr), dst.port)
        try:
            if src_addr is None or src_addr.is_unspecified:
                self.sock.sendto(payload, to)
            else:
                self.sock.sendmsg([payload], _src_cmsg(src_addr), 0, to)
        except OSError as exc:
            self.stats.send_errors += 1
            level = logging.DEBUG if exc.errno in (errno.ECONNREFUSED, errno.EAGAIN) else logging.WARNING
            log.log(level, "send to %s from %s failed: %s", dst, src_addr or self.local.addr, exc)
            return False
        self.stats.tx += 1
        return True

    def close(self) -> None:
        if self.sock.fileno() >= 0:
            self.loop.remove_reader(self.sock.fileno())
            self.sock.close()


class ControlSockets:
    """The control sockets of a device: one per configured bind address (the
    wildcards 0.0.0.0 and :: by default), plus sockets bound to other source
    ports on demand (a Send whose src port is not the control port)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, receiver: Receiver, *,
                 port: int = CONTROL_PORT, binds: Sequence[str] = ("0.0.0.0", "::"),
                 batch_done: BatchDone | None = None) -> None:
        """receiver(data, src, dst) per datagram; batch_done() after each
        batch read from one socket (the loop runs nothing in between)."""
        self.loop = loop
        self.receiver = receiver
        self.batch_done = batch_done
        self.stats = SocketStats()
        self.sockets: list[ControlSocket] = []
        self.request_sockets: list[ControlSocket] = []   # REQUEST_QUEUES per control socket
        self.extra: dict[tuple[str, int], ControlSocket] = {}
        # port -> send(payload, dst, src): a port some other socket of ours
        # serves (4341: the data plane's reassembly socket, NAT traversal)
        self.port_senders: dict[int, Callable[[bytes, Endpoint, Endpoint], bool]] = {}
        if not binds:
            raise ValueError("no control address configured")
        try:
            for addr in binds:
                family = socket.AF_INET6 if ipaddress.ip_address(addr).version == 6 else socket.AF_INET
                try:
                    sock = ControlSocket(loop, family, str(addr), port, receiver, self.stats, batch_done,
                                         reuseport=True)
                except OSError as exc:
                    # A host without IPv6 still serves IPv4 with the default binds.
                    if family == socket.AF_INET6 and exc.errno in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL) \
                            and ipaddress.ip_address(addr).is_unspecified and len(binds) > 1:
                        log.warning("no IPv6 control socket on [%s]:%d: %s", addr, port, exc)
                        continue
                    raise OSError(exc.errno, f"cannot bind UDP {addr} port {port}: {exc.strerror}") from None
                self.sockets.append(sock)
                port = port or sock.port     # port 0 (tests): every family on the same port
                self._pair(sock, family, str(addr), port)
        except Exception:
            self.close()
            raise
        self._default: dict[int, ControlSocket] = {}
        for version in (4, 6):
            same = [s for s in self.sockets if s.local.addr.version == version]
            wild = [s for s in same if s.local.addr.is_unspecified]
            if same:
                self._default[version] = (wild or same)[0]

    def _pair(self, control: ControlSocket, family: int, addr: str, port: int) -> None:
        """The requests sockets beside control, and the steering program."""
        reqs: list[ControlSocket] = []
        try:
            for _ in range(REQUEST_QUEUES):
                reqs.append(ControlSocket(self.loop, family, addr, port, self.receiver, self.stats,
                                          self.batch_done, reuseport=True, first=control))
            _attach_steering(control.sock, family)
        except OSError as exc:
            for r in reqs:
                r.close()
            log.warning("Map-Requests share the control socket on %s port %d (no reuseport BPF steering: %s)",
                        addr, port, exc)
            return
        self.request_sockets.extend(reqs)

    def queue_drops(self) -> dict[str, int]:
        """Datagrams the kernel dropped for a full receive queue, per kind."""
        return {"control": sum(_kernel_drops(s.sock) for s in self.sockets if s.sock.fileno() >= 0),
                "requests": sum(_kernel_drops(s.sock) for s in self.request_sockets if s.sock.fileno() >= 0)}

    @property
    def port(self) -> int:
        return self.sockets[0].port

    def send(self, payload: bytes, dst: Endpoint, src: Endpoint | None = None) -> bool:
        if src is None:
            # The common case (a reply, no source asked): the wildcard socket of
            # dst's family, or the first one of that family; chosen at start.
            sock = self._default.get(dst.addr.version)
            return sock.send(payload, dst) if sock is not None else self._fail(dst)
        if src.port in self.port_senders:
            if self.port_senders[src.port](payload, dst, src):
                self.stats.tx += 1
                return True
            return self._fail(dst)
        if src.port not in (0, self.port):
            sock = self._extra_socket(src)
            return sock.send(payload, dst) if sock else self._fail(dst)
        family = [s for s in self.sockets if s.local.addr.version == dst.addr.version]
        if not family:
            return self._fail(dst)
        src_addr = src.addr if src is not None and not src.addr.is_unspecified else None
        if src_addr is not None:
            for s in family:
                if s.local.addr == src_addr:
                    return s.send(payload, dst)
        wild = [s for s in family if s.local.addr.is_unspecified]
        return (wild or family)[0].send(payload, dst, src_addr)

    def _fail(self, dst: Endpoint) -> bool:
        self.stats.send_errors += 1
        log.warning("no socket to send to %s", dst)
        return False

    def _extra_socket(self, src: Endpoint) -> ControlSocket | None:
        key = (str(src.addr), src.port)
        if key not in self.extra:
            family = socket.AF_INET if src.addr.version == 4 else socket.AF_INET6
            try:
                self.extra[key] = ControlSocket(self.loop, family, str(src.addr), src.port,
                                                self.receiver, self.stats, self.batch_done)
            except OSError as exc:
                log.warning("cannot bind %s port %d to send from it: %s", src.addr, src.port, exc)
                return None
        return self.extra[key]

    def describe(self) -> list[str]:
        return [f"{s.local.addr}:{s.port}" if s.local.addr.version == 4 else f"[{s.local.addr}]:{s.port}"
                for s in self.sockets]

    def close(self) -> None:
        for s in self.request_sockets + self.sockets + list(self.extra.values()):
            s.close()
        self.sockets.clear()
        self.request_sockets.clear()
        self.extra.clear()
        self._default = {}

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

from . import mmsg

log = logging.getLogger("lispctl.daemon.udp")

# Linux values; the socket module of Python 3.11 does not export the IPv4 ones.
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)
IPV6_RECVPKTINFO = getattr(socket, "IPV6_RECVPKTINFO", 49)
IPV6_PKTINFO = getattr(socket, "IPV6_PKTINFO", 50)

SO_ATTACH_REUSEPORT_CBPF = getattr(socket, "SO_ATTACH_REUSEPORT_CBPF", 51)
SO_MEMINFO = 55
_SK_MEMINFO_DROPS = 8
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)

# Receive buffer of the sockets Map-Registers arrive on (the control sockets
# and the [ms] workers'). The default (net.core.rmem_default, 208 KiB) holds
# about 200 small datagrams (the kernel charges each its buffer's true size,
# about 1 KiB), fewer than the Map-Registers a few hundred sites keep in
# flight, or than 100,000 sites re-registering every minute send while the
# daemon is busy for a few milliseconds. 4 MiB holds about 4,000; the kernel
# takes the memory only for what is queued. Raised beyond net.core.rmem_max
# with SO_RCVBUFFORCE where we may (root, CAP_NET_ADMIN); else as far as
# rmem_max allows, with a warning. What still overflows is counted
# (queue_drops_control, queue_drops_workers).
CONTROL_RCVBUF = 4 << 20

# Classic BPF for the reuseport group. The program sees the UDP payload at
# offset 0 and the IP header at SKF_NET_OFF; it returns the index of the
# socket in the group (in the order they were bound): 0 control, 1..n requests.
REQUEST_QUEUES = 8
_SKF_NET_OFF = 0xFFF00000             # -0x100000 as u32


def _steer_program(family: int, queues: int = REQUEST_QUEUES, workers: int = 0) -> tuple:
    """A = payload[0] >> 4; types 1 (Map-Request) and 8 (ECM): return
    1 + fold(last 32 bits of the source address) % queues; with workers,
    type 3 (Map-Register): 1 + queues + a hash of the first EID record's
    EID (with its instance ID) % workers (register_worker_of); anything
    else, or a datagram too short for a load (the load fails: 0), returns 0."""
    src_word = _SKF_NET_OFF + (12 if family == socket.AF_INET else 20)
    request = (
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
    if not workers:
        return (
            (0x30, 0, 0, 0),            # ldb [0]
            (0x74, 0, 0, 4),            # rsh #4
            (0x15, 2, 0, 1),            # jeq #1 -> request
            (0x15, 1, 0, 8),            # jeq #8 -> request
            (0x06, 0, 0, 0),            # ret #0: control socket
        ) + request
    # Map-Register: 16 bytes of header (type/flags/count, nonce, key ID,
    # algorithm ID, authentication data length at 14), the authentication
    # data, then the first record: 10 bytes (TTL, counts, flags, version),
    # its EID-AFI, its EID. Only the EID is hashed (never a locator, whose
    # priority may change): every message of a registration reaches the
    # same worker, replays included. An EID the program does not read (an
    # LCAF other than an Instance-ID, a distinguished name), or a datagram
    # too short, goes to the control socket: this process serves it.
    register = _assemble((
        (0x28, 0, 0, 14),           # ldh [14]: authentication data length
        (0x07, 0, 0, 0),            # tax
        (0x48, 0, 0, 26),           # ldh [x + 26]: EID-AFI
        (0x15, "v4", 0, 1),
        (0x15, "v6", 0, 2),
        (0x15, "lcaf", 0, 16387),
        (0x06, 0, 0, 0),            # ret #0
        "v4",
        (0x40, 0, 0, 28),           # ld [x + 28]
        (0x05, 0, 0, "hash"),       # ja
        "v6",
        *_xor_words(28, 4),
        (0x05, 0, 0, "hash"),
        "lcaf",
        (0x50, 0, 0, 30),           # ldb [x + 30]: LCAF type
        (0x15, "iid", 0, 2),        # Instance-ID
        (0x06, 0, 0, 0),
        "iid",
        (0x40, 0, 0, 34),           # ld [x + 34]: the instance ID
        (0x02, 0, 0, 4),            # st M[4]
        (0x48, 0, 0, 38),           # ldh [x + 38]: its AFI
        (0x15, "iid4", 0, 1),
        (0x15, "iid6", 0, 2),
        (0x06, 0, 0, 0),
        "iid4",
        (0x40, 0, 0, 40),           # ld [x + 40]
        (0x61, 0, 0, 4),            # ldx M[4]
        (0xAC, 0, 0, 0),            # xor x
        (0x05, 0, 0, "hash"),
        "iid6",
        *_xor_words(40, 4),
        (0x61, 0, 0, 4),            # ldx M[4]
        (0xAC, 0, 0, 0),            # xor x
        "hash",
        (0x24, 0, 0, _HASH_MUL),    # mul (Knuth's multiplicative hash)
        (0x74, 0, 0, 16),           # rsh #16
        (0x94, 0, 0, workers),      # mod #workers
        (0x04, 0, 0, 1 + queues),   # add #(first worker socket)
        (0x16, 0, 0, 0),            # ret a
    ))
    return (
        (0x30, 0, 0, 0),            # ldb [0]
        (0x74, 0, 0, 4),            # rsh #4
        (0x15, 3, 0, 1),            # jeq #1 -> request
        (0x15, 2, 0, 8),            # jeq #8 -> request
        (0x15, 1 + len(request), 0, 3),   # jeq #3 -> register
        (0x06, 0, 0, 0),            # ret #0: control socket
    ) + request + register


_HASH_MUL = 0x9E3779B1


def _xor_words(off: int, n: int) -> tuple:
    """A = the XOR of the n 32-bit words at x + off (X is kept until the
    last load; M[0..n-2] hold the others)."""
    out: list = []
    for i in range(n - 1):
        out += [(0x40, 0, 0, off + 4 * i), (0x02, 0, 0, i)]          # ld [x + ...]; st M[i]
    out.append((0x40, 0, 0, off + 4 * (n - 1)))
    for i in range(n - 1):
        out += [(0x61, 0, 0, i), (0xAC, 0, 0, 0)]                     # ldx M[i]; xor x
    return tuple(out)


def _assemble(items: tuple) -> tuple:
    """Instructions with label names (strings) as jump targets (relative
    jumps: the labels resolve within items) -> the instructions."""
    at: dict[str, int] = {}
    prog: list = []
    for it in items:
        if isinstance(it, str):
            at[it] = len(prog)
        else:
            prog.append(it)
    out = []
    for i, (code, jt, jf, k) in enumerate(prog):
        if isinstance(jt, str):
            jt = at[jt] - i - 1
        if isinstance(jf, str):
            jf = at[jf] - i - 1
        if isinstance(k, str):
            k = at[k] - i - 1
        assert 0 <= jt < 256 and 0 <= jf < 256
        out.append((code, jt, jf, k))
    return tuple(out)


class _Short(Exception):
    pass


def register_worker_of(data: bytes, workers: int) -> int | None:
    """The worker (0..workers-1) _steer_program sends a Map-Register to, or
    None when it goes to the control socket (this process)."""
    if len(data) < 16:
        return None
    x = int.from_bytes(data[14:16], "big")

    def load(off: int, size: int) -> int:
        if len(data) < x + off + size:
            raise _Short                 # the program's load fails: it returns 0
        return int.from_bytes(data[x + off:x + off + size], "big")
    try:
        afi = load(26, 2)
        if afi == 1:
            a = load(28, 4)
        elif afi == 2:
            a = load(28, 4) ^ load(32, 4) ^ load(36, 4) ^ load(40, 4)
        elif afi == 16387 and load(30, 1) == 2:
            iid, inner = load(34, 4), load(38, 2)
            if inner == 1:
                a = load(40, 4) ^ iid
            elif inner == 2:
                a = load(40, 4) ^ load(44, 4) ^ load(48, 4) ^ load(52, 4) ^ iid
            else:
                return None
        else:
            return None
    except _Short:
        return None
    return (((a * _HASH_MUL) & 0xFFFFFFFF) >> 16) % workers


def request_queue_of(addr: ipaddress._BaseAddress, queues: int = REQUEST_QUEUES) -> int:
    """The requests socket (1..queues) _steer_program picks for a source."""
    a = int(addr) & 0xFFFFFFFF
    a ^= a >> 16
    a ^= a >> 8
    return 1 + a % queues



def _attach_steering(sock: socket.socket, family: int, workers: int = 0) -> None:
    """Attach the steering program to sock's reuseport group (OSError when refused)."""
    prog = _steer_program(family, workers=workers)
    filt = (ctypes.c_uint64 * len(prog))()
    for i, (code, jt, jf, k) in enumerate(prog):
        filt[i] = struct.unpack("=Q", struct.pack("=HBBI", code, jt, jf, k))[0]
    fprog = struct.pack("@HP", len(prog), ctypes.addressof(filt))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, fprog)


def size_receive_buffer(sock: socket.socket, size: int = CONTROL_RCVBUF) -> int:
    """Ask for a receive buffer of `size` bytes; returns what the kernel
    granted (it reports twice the size asked, the bookkeeping included)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size)
    except OSError:                      # not privileged: capped at net.core.rmem_max
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
        except OSError:
            pass
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2


def _kernel_drops(sock: socket.socket) -> int:
    """Datagrams the kernel dropped at this socket (full receive queue)."""
    try:
        info = sock.getsockopt(socket.SOL_SOCKET, SO_MEMINFO, 4 * 9)
        return struct.unpack_from("=9I", info)[_SK_MEMINFO_DROPS]
    except (OSError, struct.error):
        return 0


_IN_PKTINFO = struct.Struct("=I4s4s")      # ifindex, spec_dst, addr (header dst)
_IN6_PKTINFO = struct.Struct("=16sI")      # addr, ifindex
RX_BATCH = mmsg.BATCH       # datagrams per readiness event (one recvmmsg) before yielding to the loop
_CACHE_MAX = 4096           # per-socket endpoint caches are cleared when they reach this

Receiver = Callable[[bytes, Endpoint, Endpoint], None]
BatchDone = Callable[[], None]
# A role's fast path (MapServerRole.refresh): (data, src, now) -> the reply
# to send back to src, having handled data; None: hand data to the receiver
FastPath = Callable[[bytes, Endpoint, float], "bytes | None"]


@dataclass
class SocketStats:
    rx: int = 0
    tx: int = 0
    send_errors: int = 0


def _src_cmsg(src: ipaddress.IPv4Address | ipaddress.IPv6Address) -> list:
    if src.version == 4:
        return [(socket.IPPROTO_IP, IP_PKTINFO, _IN_PKTINFO.pack(0, src.packed, b"\0" * 4))]
    return [(socket.IPPROTO_IPV6, IPV6_PKTINFO, _IN6_PKTINFO.pack(src.packed, 0))]


def open_socket(family: int, bind_addr: str, port: int, reuseport: bool) -> socket.socket:
    """A bound, non-blocking UDP control socket with the destination-address
    control messages on."""
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuseport:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        # The destination address of each datagram, where the socket does
        # not tell it (bound to a wildcard; ControlSocket._drain): the kernel
        # would build that control message for every datagram otherwise too
        pktinfo = ipaddress.ip_address(bind_addr).is_unspecified
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if pktinfo:
                sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVPKTINFO, 1)
        else:
            if pktinfo:
                sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
            # An RLOC may be added after start-up (DHCP, mobile node handover).
            sock.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)
        sock.setblocking(False)
        sock.bind((bind_addr, port))
    except OSError:
        sock.close()
        raise
    return sock


class ControlSocket:
    """One UDP socket (one family) bound to a port; reports (data, src, dst).

    Datagrams are read up to mmsg.BATCH per recvmmsg; while the sockets of
    the device are draining such a batch (ControlSockets.corked), replies are
    queued and leave together in one sendmmsg when the batch is done."""

    def __init__(self, loop: asyncio.AbstractEventLoop, family: int, bind_addr: str,
                 port: int, receiver: Receiver, stats: SocketStats,
                 batch_done: BatchDone | None = None, *, reuseport: bool = False,
                 first: "ControlSocket | None" = None, group: "ControlSockets | None" = None,
                 sock: socket.socket | None = None) -> None:
        """reuseport: join a SO_REUSEPORT group (the control/requests pair).
        first: a socket drained before each batch of this one.
        group: the device's sockets (shared receive buffers, send batching).
        sock: an open, bound socket to serve instead of a new one (an MS
        worker's, bound by the daemon before it forked)."""
        self.family = family
        self.loop = loop
        self.receiver = receiver
        self.batch_done = batch_done
        self.stats = stats
        self.first = first
        self.group = group
        rx = group.rx if group is not None else None
        self.rx = rx if rx is not None else mmsg.Receiver()
        self._own_rx = rx is None
        self._tx: mmsg.Sender | None = None             # created on the first batched send
        if sock is None:
            try:
                sock = open_socket(family, bind_addr, port, reuseport)
            except OSError:
                if self._own_rx:
                    self.rx.close()
                raise
        self.sock = sock
        self.fd = sock.fileno()
        self.local = Endpoint(ipaddress.ip_address(sock.getsockname()[0]), sock.getsockname()[1])
        # (level, type, size) of the destination-address control message
        self._pktinfo_kind = ((socket.IPPROTO_IPV6, IPV6_PKTINFO, _IN6_PKTINFO.size) if family == socket.AF_INET6
                              else (socket.IPPROTO_IP, IP_PKTINFO, _IN_PKTINFO.size))
        self._srcs: dict[bytes, tuple] = {}             # raw sockaddr -> (Endpoint, sendto address, raw)
        self._dsts: dict[bytes, Endpoint] = {}          # pktinfo bytes -> Endpoint
        self._sockaddrs: dict[Endpoint, tuple] = {}     # Endpoint -> (sendto address, raw sockaddr)
        self._last: tuple = (None, None, None)          # (Endpoint, sendto address, raw) last received
        # offer datagrams to the group's fast path first: set (by _defaults)
        # on the socket its family's replies leave from (ControlSockets.send)
        self.takes_fast = False
        loop.add_reader(self.fd, self._readable)

    @property
    def port(self) -> int:
        return self.local.port

    def _readable(self) -> None:
        # Drain what is queued, but yield to the loop after a batch so one busy
        # socket cannot starve timers and the API. Endpoints are cached per
        # raw sockaddr / pktinfo: parsing an address costs more than the rest
        # of the receive path, and a server hears the same few peers over and
        # over. Replies queued meanwhile leave together at the end of the
        # batch; batch_done (if any) runs once after it.
        group = self.group
        if group is not None:
            group.corked = True
        try:
            if self.first is not None:
                self.first._drain()      # Map-Registers before Map-Requests
            self._drain()
        finally:
            if group is not None:
                group.uncork()
            if self.batch_done is not None:
                self.batch_done()

    def _drain(self) -> None:
        rx = self.rx
        for _ in range(2):               # a pending socket error (ICMP) is reported first
            try:
                n = rx.recv(self.fd)
                break
            except OSError as exc:
                log.debug("recvmmsg on %s: %s", self.local, exc)
        else:
            return
        if not n:
            return
        self.stats.rx += n
        # everything out of the shared buffers before any datagram is handled
        datas = rx.datas()
        names = rx.names()
        if self.local.addr.is_unspecified:
            infos: list[bytes | None] | None = rx.pktinfos(*self._pktinfo_kind)
        else:
            infos = None                 # bound to one address: every datagram was sent to it
        receiver, srcs, dsts, local = self.receiver, self._srcs, self._dsts, self.local
        group = self.group
        fast = group.fast if group is not None and self.takes_fast else None
        if fast is not None:
            now = self.loop.time()
            handled = 0
            queue, slot = self._queue, mmsg.TX_SLOT
        for k in range(n):
            name = names[k]
            last = srcs.get(name)
            if last is None:
                last = self._src_endpoint(name)
            self._last = last
            if fast is not None:
                try:
                    reply = fast(datas[k], last[0], now)
                except Exception:            # a bug: logged, counted; the datagram goes the usual way
                    log.exception("fast path: error handling datagram from %s", last[0])
                    group.fast_errors += 1   # type: ignore[union-attr]   # (fast: group is set)
                    reply = None
                if reply is not None:        # to the source: send() without its choices
                    if len(reply) <= slot:
                        queue(reply, last[2], last[0])
                    else:
                        self.send(reply, last[0])
                    handled += 1
                    continue
            if infos is None:
                dst = local
            else:
                info = infos[k]
                dst = dsts.get(info) if info is not None else local  # type: ignore[assignment]
                if dst is None:
                    dst = self._dst_endpoint(info)
            receiver(datas[k], last[0], dst)
        if fast is not None and group is not None:
            group.fast_handled += handled

    def _src_endpoint(self, name: bytes) -> tuple[Endpoint, tuple, bytes]:
        """(Endpoint, the sendto address, the raw sockaddr) of a sender."""
        if len(self._srcs) >= _CACHE_MAX:   # spoofed sources must not grow it without bound
            self._srcs.clear()
        port = int.from_bytes(name[2:4], "big")
        raw = name[4:8] if self.family == socket.AF_INET else name[8:24]
        ep = Endpoint(ipaddress.ip_address(raw), port)
        triple = self._srcs[name] = (ep, (str(ep.addr), ep.port), name)
        return triple

    def _dst_endpoint(self, info: bytes) -> Endpoint:
        addr = (_IN_PKTINFO.unpack(info)[2] if self.family == socket.AF_INET
                else _IN6_PKTINFO.unpack(info)[0])
        ep = Endpoint(ipaddress.ip_address(addr), self.local.port)
        if len(self._dsts) < _CACHE_MAX:
            self._dsts[info] = ep
        return ep

    def _address_of(self, dst: Endpoint) -> tuple:
        """(sendto address, raw sockaddr) of a destination."""
        last_src, last_to, last_raw = self._last
        # A reply to the datagram just received goes to that very Endpoint object.
        if dst is last_src:
            return last_to, last_raw
        pair = self._sockaddrs.get(dst)
        if pair is None:
            if len(self._sockaddrs) >= _CACHE_MAX:
                self._sockaddrs.clear()
            pair = self._sockaddrs[dst] = ((str(dst.addr), dst.port),
                                           mmsg.sockaddr(self.family, dst.addr.packed, dst.port))
        return pair

    def send(self, payload: bytes, dst: Endpoint, src_addr=None) -> bool:
        """Send (or, during a batch, queue) one datagram. False when the
        kernel refused it at once; a queued one that fails is counted when
        the batch is sent (ControlSockets.send_failed)."""
        to, raw = self._address_of(dst)
        group = self.group
        plain = src_addr is None or src_addr.is_unspecified
        if group is not None and group.corked and plain and len(payload) <= mmsg.TX_SLOT \
                and dst.addr.version == self.local.addr.version:
            self._queue(payload, raw, dst)
            return True
        if group is not None and group.corked:
            group.before_send()
        if self._tx is not None and self._tx.count:
            self.flush()                 # keep the order of this socket's datagrams
        try:
            if plain:
                self.sock.sendto(payload, to)
            else:
                self.sock.sendmsg([payload], _src_cmsg(src_addr), 0, to)
        except OSError as exc:
            self._send_failed(dst, exc, src_addr)
            return False
        self.stats.tx += 1
        return True

    def _queue(self, payload: bytes, raw: bytes, dst: Endpoint) -> None:
        """Queue a datagram (of at most mmsg.TX_SLOT bytes) during a batch."""
        tx = self._tx
        if tx is None:
            tx = self._tx = mmsg.Sender(16 if self.family == socket.AF_INET else 28)
        group = self.group
        assert group is not None                 # (during a batch of the group)
        if not tx.count:
            group.pending.append(self)
        if tx.add(payload, raw, dst):           # full: these leave before the batch ends
            group.before_send()
            self.flush()

    def flush(self) -> None:
        """Send the queued datagrams (one sendmmsg)."""
        if self._tx is not None and self._tx.count and self.sock.fileno() >= 0:
            self.stats.tx += self._tx.flush(self.fd, self._send_failed)

    def _send_failed(self, dst, exc: OSError, src_addr=None) -> None:
        self.stats.send_errors += 1
        level = logging.DEBUG if exc.errno in (errno.ECONNREFUSED, errno.EAGAIN) else logging.WARNING
        log.log(level, "send to %s from %s failed: %s", dst, src_addr or self.local.addr, exc)
        if self.group is not None and self.group.send_failed is not None:
            self.group.send_failed()

    def close(self) -> None:
        if self.sock.fileno() >= 0:
            self.flush()
            self.loop.remove_reader(self.fd)
            self.sock.close()
        if self._tx is not None:
            self._tx.close()
            self._tx = None
        if self._own_rx:
            self.rx.close()


class ControlSockets:
    """The control sockets of a device: one per configured bind address (the
    wildcards 0.0.0.0 and :: by default), plus sockets bound to other source
    ports on demand (a Send whose src port is not the control port)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, receiver: Receiver, *,
                 port: int = CONTROL_PORT, binds: Sequence[str] = ("0.0.0.0", "::"),
                 batch_done: BatchDone | None = None, workers: int = 0,
                 adopt: Sequence[socket.socket] = ()) -> None:
        """receiver(data, src, dst) per datagram; batch_done() after each
        batch read from one socket (the loop runs nothing in between).
        workers: bind that many more sockets into each control address's
        group, for Map-Register worker processes (`worker_sockets`; this
        process does not read them), and steer Map-Registers to them.
        adopt: serve these bound sockets instead (in a worker process)."""
        self.loop = loop
        self.receiver = receiver
        self.batch_done = batch_done
        self.stats = SocketStats()
        self.rx: mmsg.Receiver | None = mmsg.Receiver()   # receive buffers, shared by every socket
        self.corked = False                      # a batch is being handled: queue replies
        self.pending: list[ControlSocket] = []   # sockets with queued replies
        self.send_failed: Callable[[], None] | None = None   # a queued datagram was refused
        # a role's fast path, offered each datagram of the default sockets
        # first (Runtime: the Map-Server's refresh), and how many datagrams it
        # answered since the owner last took the count
        self.fast: FastPath | None = None
        self.fast_handled = 0
        self.fast_errors = 0                     # (exceptions it raised: the owner counts them too)
        # runs when a batch is done, before its replies leave (an MS worker
        # tells the main process what changed before it answers)
        self.before_replies: Callable[[], None] | None = None
        self.sockets: list[ControlSocket] = []
        self.request_sockets: list[ControlSocket] = []   # REQUEST_QUEUES per control socket
        # per worker, its socket in each control address's group (same order as `sockets`)
        self.worker_sockets: list[list[socket.socket]] = [[] for _ in range(workers)]
        self.workers = workers
        self.extra: dict[tuple[str, int], ControlSocket] = {}
        self._warned_rcvbuf = False
        # port -> send(payload, dst, src): a port some other socket of ours
        # serves (4341: the data plane's reassembly socket, NAT traversal)
        self.port_senders: dict[int, Callable[[bytes, Endpoint, Endpoint], bool]] = {}
        if adopt:
            self._adopt(adopt)
            return
        if not binds:
            raise ValueError("no control address configured")
        try:
            for addr in binds:
                family = socket.AF_INET6 if ipaddress.ip_address(addr).version == 6 else socket.AF_INET
                try:
                    sock = ControlSocket(loop, family, str(addr), port, receiver, self.stats, batch_done,
                                         reuseport=True, group=self)
                except OSError as exc:
                    # A host without IPv6 still serves IPv4 with the default binds.
                    if family == socket.AF_INET6 and exc.errno in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL) \
                            and ipaddress.ip_address(addr).is_unspecified and len(binds) > 1:
                        log.warning("no IPv6 control socket on [%s]:%d: %s", addr, port, exc)
                        continue
                    raise OSError(exc.errno, f"cannot bind UDP {addr} port {port}: {exc.strerror}") from None
                self.sockets.append(sock)
                self._size(sock.sock, str(addr))
                port = port or sock.port     # port 0 (tests): every family on the same port
                self._pair(sock, family, str(addr), port)
        except Exception:
            self.close()
            raise
        self._defaults()

    def _size(self, sock: socket.socket, addr: str) -> None:
        got = size_receive_buffer(sock)
        if got < CONTROL_RCVBUF and not self._warned_rcvbuf:
            self._warned_rcvbuf = True
            log.warning("the control socket on %s has a %d KiB receive buffer, not %d KiB (net.core.rmem_max; "
                        "not root): bursts of Map-Registers may overflow it (counted: queue_drops_control)",
                        addr, got >> 10, CONTROL_RCVBUF >> 10)

    def _adopt(self, socks: Sequence[socket.socket]) -> None:
        for sock in socks:
            self.sockets.append(ControlSocket(self.loop, sock.family, "", 0, self.receiver, self.stats,
                                              self.batch_done, group=self, sock=sock))
        self._defaults()

    def _defaults(self) -> None:
        self._default: dict[int, ControlSocket] = {}
        for version in (4, 6):
            same = [s for s in self.sockets if s.local.addr.version == version]
            wild = [s for s in same if s.local.addr.is_unspecified]
            if same:
                self._default[version] = (wild or same)[0]
                # replies are sent from the default socket of their family:
                # one the fast path answers from the socket it arrived on
                self._default[version].takes_fast = True

    def _pair(self, control: ControlSocket, family: int, addr: str, port: int) -> None:
        """The requests sockets beside control, the workers' sockets, and the
        steering program. The group's socket indexes are the order of the
        binds: control 0, requests 1..REQUEST_QUEUES, then the workers'."""
        reqs: list[ControlSocket] = []
        wsocks: list[socket.socket] = []
        try:
            for _ in range(REQUEST_QUEUES):
                reqs.append(ControlSocket(self.loop, family, addr, port, self.receiver, self.stats,
                                          self.batch_done, reuseport=True, first=control, group=self))
            for _ in range(self.workers):
                wsocks.append(open_socket(family, addr, port, True))
                size_receive_buffer(wsocks[-1])
            _attach_steering(control.sock, family, self.workers)
        except OSError as exc:
            for r in reqs:
                r.close()
            for w in wsocks:
                w.close()
            if self.workers:
                # without the program the kernel would hash registrations to
                # any socket of the group: no worker could own its sites
                raise OSError(exc.errno, f"cannot steer Map-Registers to [ms] workers on {addr} port {port} "
                                         f"(reuseport BPF: {exc.strerror}); set [ms] workers = 1") from None
            log.warning("Map-Requests share the control socket on %s port %d (no reuseport BPF steering: %s)",
                        addr, port, exc)
            return
        self.request_sockets.extend(reqs)
        for k, w in enumerate(wsocks):
            self.worker_sockets[k].append(w)

    def before_send(self) -> None:
        """A reply of the batch is about to leave (the batch is done, or
        its replies fill a send queue, or one is sent on its own)."""
        if self.before_replies is not None:
            self.before_replies()

    def uncork(self) -> None:
        """The batch is done: send every reply queued during it."""
        self.corked = False
        self.before_send()
        pending = self.pending
        while pending:
            pending.pop().flush()

    def queue_drops(self) -> dict[str, int]:
        """Datagrams the kernel dropped for a full receive queue, per kind."""
        out = {"control": sum(_kernel_drops(s.sock) for s in self.sockets if s.sock.fileno() >= 0),
               "requests": sum(_kernel_drops(s.sock) for s in self.request_sockets if s.sock.fileno() >= 0)}
        if self.workers:
            out["workers"] = sum(_kernel_drops(s) for w in self.worker_sockets for s in w if s.fileno() >= 0)
        return out

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
                                                self.receiver, self.stats, self.batch_done, group=self)
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
        for w in self.worker_sockets:
            for sock in w:
                sock.close()
            w.clear()
        self.sockets.clear()
        self.request_sockets.clear()
        self.extra.clear()
        self.pending.clear()
        self._default = {}
        if self.rx is not None:
            self.rx.close()
            self.rx = None

"""Control-plane UDP sockets driven by the asyncio event loop.

asyncio's DatagramProtocol hides recvmsg/sendmsg, and a LISP node needs both:
the destination address of each request (IP_PKTINFO / IPV6_RECVPKTINFO, so an
ETR answers from the RLOC that was asked) and a chosen source address on send
(ECM'd Map-Requests and probes leave from a given RLOC). So the sockets are
plain non-blocking sockets registered with loop.add_reader.
"""
from __future__ import annotations

import asyncio
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

_IN_PKTINFO = struct.Struct("=I4s4s")      # ifindex, spec_dst, addr (header dst)
_IN6_PKTINFO = struct.Struct("=16sI")      # addr, ifindex
_MAX_DATAGRAM = 65535

Receiver = Callable[[bytes, Endpoint, Endpoint], None]


@dataclass
class SocketStats:
    rx: int = 0
    tx: int = 0
    send_errors: int = 0


def _pktinfo_dst(family: int, ancdata) -> ipaddress._BaseAddress | None:
    for level, ctype, cdata in ancdata:
        if family == socket.AF_INET and level == socket.IPPROTO_IP and ctype == IP_PKTINFO:
            _, _, addr = _IN_PKTINFO.unpack_from(cdata)
            return ipaddress.IPv4Address(addr)
        if family == socket.AF_INET6 and level == socket.IPPROTO_IPV6 and ctype == IPV6_PKTINFO:
            addr, _ = _IN6_PKTINFO.unpack_from(cdata)
            return ipaddress.IPv6Address(addr)
    return None


def _src_cmsg(src: ipaddress._BaseAddress) -> list:
    if src.version == 4:
        return [(socket.IPPROTO_IP, IP_PKTINFO, _IN_PKTINFO.pack(0, src.packed, b"\0" * 4))]
    return [(socket.IPPROTO_IPV6, IPV6_PKTINFO, _IN6_PKTINFO.pack(src.packed, 0))]


class ControlSocket:
    """One UDP socket (one family) bound to a port; reports (data, src, dst)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, family: int, bind_addr: str,
                 port: int, receiver: Receiver, stats: SocketStats) -> None:
        self.family = family
        self.loop = loop
        self.receiver = receiver
        self.stats = stats
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
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
        loop.add_reader(sock.fileno(), self._readable)

    @property
    def port(self) -> int:
        return self.local.port

    def _readable(self) -> None:
        # Drain what is queued, but yield to the loop after a batch so one busy
        # socket cannot starve timers and the API.
        for _ in range(64):
            try:
                data, anc, _flags, addr = self.sock.recvmsg(_MAX_DATAGRAM, 256)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:          # e.g. ICMP port unreachable reported late
                log.debug("recvmsg on %s: %s", self.local, exc)
                continue
            self.stats.rx += 1
            src = Endpoint(ipaddress.ip_address(addr[0].split("%", 1)[0]), addr[1])
            dst_addr = _pktinfo_dst(self.family, anc) or self.local.addr
            self.receiver(data, src, Endpoint(dst_addr, self.local.port))

    def send(self, payload: bytes, dst: Endpoint, src_addr=None) -> bool:
        anc = _src_cmsg(src_addr) if src_addr is not None and not src_addr.is_unspecified else []
        try:
            self.sock.sendmsg([payload], anc, 0, (str(dst.addr), dst.port))
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
                 port: int = CONTROL_PORT, binds: Sequence[str] = ("0.0.0.0", "::")) -> None:
        self.loop = loop
        self.receiver = receiver
        self.stats = SocketStats()
        self.sockets: list[ControlSocket] = []
        self.extra: dict[tuple[str, int], ControlSocket] = {}
        if not binds:
            raise ValueError("no control address configured")
        try:
            for addr in binds:
                family = socket.AF_INET6 if ipaddress.ip_address(addr).version == 6 else socket.AF_INET
                try:
                    sock = ControlSocket(loop, family, str(addr), port, receiver, self.stats)
                except OSError as exc:
                    # A host without IPv6 still serves IPv4 with the default binds.
                    if family == socket.AF_INET6 and exc.errno in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL) \
                            and ipaddress.ip_address(addr).is_unspecified and len(binds) > 1:
                        log.warning("no IPv6 control socket on [%s]:%d: %s", addr, port, exc)
                        continue
                    raise OSError(exc.errno, f"cannot bind UDP {addr} port {port}: {exc.strerror}") from None
                self.sockets.append(sock)
                port = port or sock.port     # port 0 (tests): every family on the same port
        except Exception:
            self.close()
            raise

    @property
    def port(self) -> int:
        return self.sockets[0].port

    def send(self, payload: bytes, dst: Endpoint, src: Endpoint | None = None) -> bool:
        if src is not None and src.port not in (0, self.port):
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
                                                self.receiver, self.stats)
            except OSError as exc:
                log.warning("cannot bind %s port %d to send from it: %s", src.addr, src.port, exc)
                return None
        return self.extra[key]

    def describe(self) -> list[str]:
        return [f"{s.local.addr}:{s.port}" if s.local.addr.version == 4 else f"[{s.local.addr}]:{s.port}"
                for s in self.sockets]

    def close(self) -> None:
        for s in self.sockets + list(self.extra.values()):
            s.close()
        self.sockets.clear()
        self.extra.clear()

"""The ETR for LISP packets the kernel reassembled (RFC 9300 section 7).

tc and XDP see outer fragments one by one, and a fragment is no LISP packet
the programs can decapsulate: they count it (`frag_to_stack`) and pass it to
the stack, which reassembles datagrams addressed to a local RLOC and
delivers them to UDP port 4341. This module owns that port: it reads the
reassembled LISP packets, applies the ETR's rules (the same checks as
`etr_check` in bpf/lisp_datapath.c: accepted instance ID, inner destination
in the local EID database, inner lengths, TTL, RFC 6040 ECN) and sends the
inner packet on with a raw socket, which the kernel routes like any packet.
It is the slow path of a rare case: the ITR side of lispctl never sends
outer fragments (RFC 9300 7.1, inner fragmentation), but other ITRs and
paths with a smaller MTU do.

`decapsulate` is the decision, bytes in and bytes out; `ReassemblyReceiver`
does the socket I/O for one Datapath.
"""
from __future__ import annotations

import ipaddress
import socket
import struct
from collections import Counter
from typing import Callable

LISP_DATA_PORT = 4341
_F_I = 0x08
_LISP_HDR = 8

IP_RECVTTL = getattr(socket, "IP_RECVTTL", 12)
IP_RECVTOS = getattr(socket, "IP_RECVTOS", 13)
IP_TOS, IP_TTL = 1, 2
IPV6_RECVHOPLIMIT = getattr(socket, "IPV6_RECVHOPLIMIT", 51)
IPV6_HOPLIMIT = getattr(socket, "IPV6_HOPLIMIT", 52)
IPV6_RECVTCLASS = getattr(socket, "IPV6_RECVTCLASS", 66)
IPV6_TCLASS = getattr(socket, "IPV6_TCLASS", 67)
UDP_NO_CHECK6_RX = 102      # accept UDP over IPv6 with checksum 0 (RFC 6935/6936 tunnels; what ITRs send)


def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ecn_decap(inner: int, outer: int) -> int | None:
    """RFC 6040 normal mode: the inner ECN field, or None to drop."""
    inner, outer = inner & 3, outer & 3
    if inner == 0:
        return None if outer == 3 else 0
    if outer == 3:
        return 3
    if inner == 2 and outer == 1:
        return 1
    return inner


def decapsulate(payload: bytes, outer_ttl: int, outer_tos: int,
                accepted_iid: Callable[[int], bool],
                local_eid: Callable[[int, ipaddress.IPv4Address | ipaddress.IPv6Address], bool],
                ) -> tuple[bytes | None, str]:
    """The inner packet to forward (TTL = min(inner, outer) - 1, ECN per RFC
    6040), or None and the drop reason (the data plane's names)."""
    if len(payload) < _LISP_HDR + 20:
        return None, "malformed"
    flags = payload[0]
    iid = int.from_bytes(payload[4:7], "big") if flags & _F_I else 0
    inner = bytearray(payload[_LISP_HDR:])
    ver = inner[0] >> 4
    if ver == 4:
        ihl = (inner[0] & 0xF) * 4
        if ihl < 20 or struct.unpack("!H", inner[2:4])[0] != len(inner) or ihl > len(inner):
            return None, "malformed"
        ttl, tos = inner[8], inner[1]
        dst: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.IPv4Address(bytes(inner[16:20]))
    elif ver == 6:
        if len(inner) < 40 or struct.unpack("!H", inner[4:6])[0] + 40 != len(inner):
            return None, "malformed"
        ttl = inner[7]
        tos = (struct.unpack("!H", inner[0:2])[0] >> 4) & 0xFF
        dst = ipaddress.IPv6Address(bytes(inner[24:40]))
    else:
        return None, "malformed"
    if not accepted_iid(iid):
        return None, "unknown_iid"
    if outer_ttl == 0:
        return None, "ttl"
    if ttl == 0:
        return None, "inner_ttl"
    ecn = ecn_decap(tos, outer_tos)
    if ecn is None:
        return None, "ecn"
    if not local_eid(iid, dst):
        return None, "not_local_eid"
    # routed by us: one less than min(inner, outer); at 0 it dies here
    new_ttl = min(ttl, outer_ttl) - 1
    if new_ttl < 1:
        return None, "ttl_expired"
    if ver == 4:
        inner[1] = (tos & ~3) | ecn
        inner[8] = new_ttl
        inner[10:12] = b"\0\0"
        inner[10:12] = struct.pack("!H", _csum(bytes(inner[:ihl])))
    else:
        inner[1] = (inner[1] & ~0x30) | (ecn << 4)
        inner[7] = new_ttl
    return bytes(inner), "ok"


LISP_CONTROL_PORT = 4342
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
IPV6_RECVPKTINFO = getattr(socket, "IPV6_RECVPKTINFO", 49)
IPV6_PKTINFO = getattr(socket, "IPV6_PKTINFO", 50)
_IN_PKTINFO = struct.Struct("=I4s4s")      # ifindex, spec_dst, addr (header dst)
_IN6_PKTINFO = struct.Struct("=16sI")      # addr, ifindex


def _pktinfo_dst(anc) -> str | None:
    for level, kind, val in anc:
        if (level, kind) == (socket.SOL_IP, IP_PKTINFO) and len(val) >= _IN_PKTINFO.size:
            return str(ipaddress.IPv4Address(_IN_PKTINFO.unpack_from(val)[2]))
        if (level, kind) == (socket.IPPROTO_IPV6, IPV6_PKTINFO) and len(val) >= _IN6_PKTINFO.size:
            return str(ipaddress.IPv6Address(_IN6_PKTINFO.unpack_from(val)[0]))
    return None


class ReassemblyReceiver:
    """UDP 4341 sockets (IPv4 and IPv6) for reassembled LISP packets, and
    raw sockets to send the inner packets on. Non-blocking: call handle(fd)
    when fds() are readable (asyncio add_reader, or a select loop).

    accepted_iid(iid) and local_eid(iid, addr) answer from the data plane's
    maps (Datapath.iid_accepted / Datapath.is_local_eid)."""

    def __init__(self, accepted_iid, local_eid) -> None:
        self.accepted_iid = accepted_iid
        self.local_eid = local_eid
        self.counters: Counter[str] = Counter()
        self._rx: list[socket.socket] = []
        self._tx: dict[int, socket.socket] = {}
        # NAT traversal (docs/nat.md): control messages sent from port 4341
        # are answered from 4342 to 4341, and the tc ETR passes those to the
        # stack, so they land here: on_control(data, (src ip, src port), dst ip)
        # hands them to the control plane. send_control() sends from 4341.
        self.on_control: Callable[[bytes, tuple[str, int], str | None], None] | None = None
        try:
            s4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s4.setsockopt(socket.SOL_IP, IP_RECVTTL, 1)
            s4.setsockopt(socket.SOL_IP, IP_RECVTOS, 1)
            s4.setsockopt(socket.SOL_IP, IP_PKTINFO, 1)
            s4.bind(("0.0.0.0", LISP_DATA_PORT))
            self._rx.append(s4)
            s6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            s6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s6.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVHOPLIMIT, 1)
            s6.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVTCLASS, 1)
            s6.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVPKTINFO, 1)
            s6.setsockopt(socket.IPPROTO_UDP, UDP_NO_CHECK6_RX, 1)
            s6.bind(("::", LISP_DATA_PORT))
            self._rx.append(s6)
            for s in self._rx:
                s.setblocking(False)
            # IPPROTO_RAW: the header is ours (IPv4 checksum and length refilled by the kernel)
            self._tx[4] = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
            self._tx[6] = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW)
        except OSError:
            self.close()
            raise

    def fds(self) -> list[int]:
        return [s.fileno() for s in self._rx]

    def handle(self, fd: int, budget: int = 64) -> int:
        """Read up to `budget` datagrams from fd; returns how many were read."""
        sock = next((s for s in self._rx if s.fileno() == fd), None)
        if sock is None:
            return 0
        n = 0
        while n < budget:
            try:
                data, anc, _flags, _addr = sock.recvmsg(1 << 16, 256)
            except (BlockingIOError, InterruptedError):
                break
            n += 1
            # control: a reply from 4342, or a NATed xTR's keepalive Info-Request
            # (first byte 0x70, as the ETR program tells them from data)
            if _addr[1] == LISP_CONTROL_PORT or data[:1] == b"\x70":
                if self.on_control is None:
                    self.counters["control_ignored"] += 1
                else:
                    self.counters["control_rx"] += 1
                    self.on_control(data, (_addr[0], _addr[1]), _pktinfo_dst(anc))
                continue
            ttl, tos = 255, 0
            for level, kind, val in anc:
                if (level, kind) in ((socket.SOL_IP, IP_TTL), (socket.IPPROTO_IPV6, IPV6_HOPLIMIT)):
                    ttl = int.from_bytes(val[:4], "little") if len(val) >= 4 else val[0]
                elif (level, kind) in ((socket.SOL_IP, IP_TOS), (socket.IPPROTO_IPV6, IPV6_TCLASS)):
                    tos = val[0] if len(val) == 1 else int.from_bytes(val[:4], "little")
            inner, reason = decapsulate(data, ttl, tos, self.accepted_iid, self.local_eid)
            if inner is None:
                self.counters[reason] += 1
                continue
            ver = inner[0] >> 4
            dst = str(ipaddress.ip_address(inner[16:20] if ver == 4 else inner[24:40]))
            try:
                self._tx[ver].sendto(inner, (dst, 0))
            except OSError:
                self.counters["send_failed"] += 1
                continue
            self.counters["decapsulated"] += 1
        return n

    def send_control(self, payload: bytes, dst: tuple[str, int], src: str) -> bool:
        """A control message from src:4341 (IP_PKTINFO picks the source)."""
        v6 = ipaddress.ip_address(src).version == 6
        sock = next((s for s in self._rx if (s.family == socket.AF_INET6) == v6), None)
        if sock is None:
            return False
        packed = ipaddress.ip_address(src).packed
        cmsg = ((socket.IPPROTO_IPV6, IPV6_PKTINFO, _IN6_PKTINFO.pack(packed, 0)) if v6
                else (socket.SOL_IP, IP_PKTINFO, _IN_PKTINFO.pack(0, packed, bytes(4))))
        try:
            sock.sendmsg([payload], [cmsg], 0, dst)
        except OSError:
            self.counters["control_send_failed"] += 1
            return False
        self.counters["control_tx"] += 1
        return True

    def close(self) -> None:
        for s in [*self._rx, *self._tx.values()]:
            s.close()
        self._rx.clear()
        self._tx.clear()

"""recvmmsg / sendmmsg for the control sockets (ctypes; Python has neither).

A busy Map-Server spends most of its time per datagram, not per byte: one
recvfrom and one sendto per Map-Register, each a Python call with its own
argument parsing, tuple and address objects, and a system call. These two
classes move up to BATCH datagrams per system call and keep the per-datagram
Python work to slicing preallocated buffers:

- `Receiver.recv(fd)` reads up to BATCH datagrams with one recvmmsg and
  returns their count; `datas()` are the datagrams, `names()` their raw
  source sockaddrs (hashable bytes, the key of the caller's endpoint cache)
  and `pktinfos(...)` their IP_PKTINFO / IPV6_PKTINFO payloads (or None).
- `Sender.add(payload, sockaddr)` copies a datagram into the next slot;
  `flush(fd)` sends them all with sendmmsg and reports failures per datagram.

The buffers are anonymous mmaps: the kernel gives them pages only where a
datagram was written, so 64 slots of 64 KiB (any UDP datagram fits, none is
truncated) cost a page or two each, not 4 MiB. Layouts are those of x86-64
and the other LP64 Linux ABIs (struct mmsghdr: 64 bytes).
"""
from __future__ import annotations

import ctypes
import mmap
import os
import socket
import struct
from typing import Callable

BATCH = 64
_RX_SLOT = 1 << 16              # any UDP datagram fits: never truncated
TX_SLOT = 4096                 # larger payloads are sent on their own
_NAME = 28                      # sizeof(struct sockaddr_in6)
_CTRL = 64                      # CMSG_SPACE(sizeof(struct in6_pktinfo)) = 40
_HDR = struct.Struct("=QI4xQQQQi4xI4x")     # struct mmsghdr (msghdr + msg_len)
_IOV = struct.Struct("=QQ")
_RESULT = struct.Struct("=8xI28xQ8xI4x")   # msg_namelen, msg_controllen, msg_len
_NAMELEN_OFF = 8                # msg_namelen
_U32 = struct.Struct("=I")
_CMSG_HDR = struct.Struct("=Qii")          # cmsg_len, cmsg_level, cmsg_type
_MSG_DONTWAIT = 0x40
assert _HDR.size == 64 and _IOV.size == 16 and _RESULT.size == 64 and ctypes.sizeof(ctypes.c_void_p) == 8

_libc = ctypes.CDLL(None, use_errno=True)
_recvmmsg = _libc.recvmmsg
_recvmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p]
_recvmmsg.restype = ctypes.c_int
_sendmmsg = _libc.sendmmsg
_sendmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
_sendmmsg.restype = ctypes.c_int


class _Area:
    """An anonymous mmap with its address and a memoryview."""

    def __init__(self, size: int) -> None:
        self.map = mmap.mmap(-1, size)
        self.view = memoryview(self.map)
        self._anchor = ctypes.c_char.from_buffer(self.map)
        self.addr = ctypes.addressof(self._anchor)

    def close(self) -> None:
        del self._anchor
        self.view.release()
        self.map.close()


def _headers(n: int, data: _Area, slot: int, names: _Area, ctrl: _Area | None, iovs: _Area) -> bytes:
    out = bytearray()
    for k in range(n):
        _IOV.pack_into(iovs.view, 16 * k, data.addr + slot * k, slot)
        out += _HDR.pack(names.addr + _NAME * k, _NAME, iovs.addr + 16 * k, 1,
                         ctrl.addr + _CTRL * k if ctrl is not None else 0, _CTRL if ctrl is not None else 0,
                         0, 0)
    return bytes(out)


class Receiver:
    """Shared by every socket of a device: the loop drains one at a time and
    each datagram is copied out (bytes) before the next call."""

    def __init__(self) -> None:
        self.data = _Area(_RX_SLOT * BATCH)
        self.names_area = _Area(_NAME * BATCH)
        self.ctrl = _Area(_CTRL * BATCH)
        self.iovs = _Area(16 * BATCH)
        self.hdrs = _Area(_HDR.size * BATCH)
        # msg_namelen and msg_controllen are written back by the kernel: the
        # pristine headers are copied over the used ones after each call
        self._pristine = _headers(BATCH, self.data, _RX_SLOT, self.names_area, self.ctrl, self.iovs)
        self.hdrs.view[:] = self._pristine
        self._got: list[tuple[int, int, int]] = []

    def recv(self, fd: int) -> int:
        """Datagrams read (0: none queued). OSError for a pending socket error."""
        n = _recvmmsg(fd, self.hdrs.addr, BATCH, _MSG_DONTWAIT, None)
        if n < 0:
            err = ctypes.get_errno()
            if err in (11, 4):                   # EAGAIN, EINTR
                return 0
            raise OSError(err, os.strerror(err))
        view = self.hdrs.view
        # (msg_namelen, msg_controllen, msg_len) of each, as the kernel left them
        self._got = list(_RESULT.iter_unpack(view[:64 * n]))
        view[:64 * n] = self._pristine[:64 * n]
        return n

    def datas(self) -> list[bytes]:
        """The datagrams of the last recv, in order (copies)."""
        area = self.data.map                     # (a slice of the mmap is bytes: one copy, no view)
        return [area[_RX_SLOT * k:_RX_SLOT * k + got[2]] for k, got in enumerate(self._got)]

    def names(self) -> list[bytes]:
        """Their raw source sockaddrs."""
        area = self.names_area.map
        return [area[_NAME * k:_NAME * k + got[0]] for k, got in enumerate(self._got)]

    def pktinfos(self, level: int, ctype: int, size: int) -> list[bytes | None]:
        """The payload of each one's first control message when it is
        (level, ctype) (the only one these sockets ask for), else None."""
        view, out = self.ctrl.view, list[bytes | None]()
        for k, got in enumerate(self._got):
            off = _CTRL * k
            if got[1] >= _CMSG_HDR.size + size and _CMSG_HDR.unpack_from(view, off)[1:] == (level, ctype):
                out.append(view[off + 16:off + 16 + size].tobytes())
            else:
                out.append(None)
        return out

    def close(self) -> None:
        for a in (self.hdrs, self.iovs, self.ctrl, self.names_area, self.data):
            a.close()


def sockaddr(family: int, addr: bytes, port: int) -> bytes:
    """A packed sockaddr_in / sockaddr_in6 (what sendmmsg takes)."""
    if family == socket.AF_INET:
        return struct.pack("=H", socket.AF_INET) + struct.pack("!H4s", port, addr) + bytes(8)
    return struct.pack("=H", socket.AF_INET6) + struct.pack("!HI16s", port, 0, addr) + bytes(4)


class Sender:
    """Datagrams of one socket queued during a batch, sent with one sendmmsg.
    Every destination is a sockaddr of the socket's family: `namelen` bytes
    (16 for AF_INET, 28 for AF_INET6), written into every header once."""

    def __init__(self, namelen: int = _NAME) -> None:
        self.data = _Area(TX_SLOT * BATCH)
        self.names = _Area(_NAME * BATCH)
        self.iovs = _Area(16 * BATCH)
        self.hdrs = _Area(_HDR.size * BATCH)
        self.hdrs.view[:] = _headers(BATCH, self.data, TX_SLOT, self.names, None, self.iovs)
        for k in range(BATCH):
            _U32.pack_into(self.hdrs.view, 64 * k + _NAMELEN_OFF, namelen)
        self.namelen = namelen
        # the iovecs as 64-bit words: [base, length] per slot
        self._iov_words = self.iovs.view.cast("Q")
        self.count = 0
        # what each queued datagram was for (error reports)
        self.dests: list[object] = []

    def add(self, payload: bytes, name: bytes, dest: object) -> bool:
        """Queue one datagram to name (namelen bytes); True when the queue is
        now full (flush it)."""
        k = self.count
        off = TX_SLOT * k
        ln = len(payload)
        self.data.view[off:off + ln] = payload
        self.names.view[_NAME * k:_NAME * k + self.namelen] = name
        self._iov_words[2 * k + 1] = ln
        self.dests.append(dest)
        self.count = k + 1
        return self.count == BATCH

    def flush(self, fd: int, failed: Callable[[object, OSError], None]) -> int:
        """Send what is queued; failed(dest, error) for each datagram the kernel
        refused (the rest are still sent). Returns how many were sent."""
        n, sent, i = self.count, 0, 0
        base = self.hdrs.addr
        while i < n:
            r = _sendmmsg(fd, base + 64 * i, n - i, 0)
            if r < 0:
                err = ctypes.get_errno()
                if err == 4:                     # EINTR
                    continue
                failed(self.dests[i], OSError(err, os.strerror(err)))
                i += 1
            elif r == 0:                         # (not for a non-empty vector)
                break
            else:
                sent += r
                i += r
        self.count = 0
        self.dests.clear()
        return sent

    def close(self) -> None:
        self._iov_words.release()
        for a in (self.hdrs, self.iovs, self.names, self.data):
            a.close()

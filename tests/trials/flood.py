"""A UDP flood generator for the attack trials: one payload, sent with
sendmmsg(2) in batches from a connected socket, paced to a target rate and
bounded in time and count. Run as a script (in the attacker's namespace):

    python flood.py DST_ADDR DST_PORT PAYLOAD_HEX RATE SECONDS MAX_COUNT [SRC_ADDR]

prints one JSON line {"sent": N, "seconds": S, "rate": N/S}. Python cannot
send one datagram per syscall fast enough; one sendmmsg call carries BATCH
datagrams, so the generator costs little more than the kernel's own work."""
from __future__ import annotations

import ctypes
import ctypes.util
import json
import socket
import sys
import time

BATCH = 256


class _IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class _MsgHdr(ctypes.Structure):
    _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32),
                ("iov", ctypes.POINTER(_IoVec)), ("iovlen", ctypes.c_size_t),
                ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t), ("flags", ctypes.c_int)]


class _MMsgHdr(ctypes.Structure):
    _fields_ = [("hdr", _MsgHdr), ("len", ctypes.c_uint)]


def flood(dst: str, port: int, payload: bytes, rate: float, seconds: float, max_count: int,
          src: str | None = None) -> dict:
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    family = socket.AF_INET6 if ":" in dst else socket.AF_INET
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 22)
    if src:
        s.bind((src, 0))
    s.connect((dst, port))
    buf = ctypes.create_string_buffer(payload, len(payload))
    iov = _IoVec(ctypes.cast(buf, ctypes.c_void_p), len(payload))
    msgs = (_MMsgHdr * BATCH)()
    for m in msgs:
        m.hdr.iov = ctypes.pointer(iov)
        m.hdr.iovlen = 1
    sent = 0
    t0 = time.monotonic()
    end = t0 + seconds
    while sent < max_count:
        now = time.monotonic()
        if now >= end:
            break
        due = t0 + sent / rate             # pace: never ahead of the target rate
        if due > now:
            time.sleep(min(due - now, end - now))
            continue
        n = libc.sendmmsg(s.fileno(), msgs, min(BATCH, max_count - sent), 0)
        if n < 0:
            if ctypes.get_errno() in (11, 105):  # EAGAIN, ENOBUFS: the kernel is busy, retry
                continue
            raise OSError(ctypes.get_errno(), "sendmmsg")
        sent += n
    took = time.monotonic() - t0
    s.close()
    return {"sent": sent, "seconds": round(took, 3), "rate": round(sent / took) if took else 0}


if __name__ == "__main__":
    dst, port, hexpayload, rate, seconds, max_count = sys.argv[1:7]
    src = sys.argv[7] if len(sys.argv) > 7 else None
    print(json.dumps(flood(dst, int(port), bytes.fromhex(hexpayload), float(rate), float(seconds),
                           int(max_count), src)), flush=True)

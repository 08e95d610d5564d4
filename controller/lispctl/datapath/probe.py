"""What the running kernel's BPF helpers accept, asked once per process.

The data plane supports kernels from 6.1 (Debian 12) on. Where a helper
gained a better mode later, the kernel is asked at load time whether it has
it, and the answer goes to the compiler as a -D flag (see bpf/lisp_compat.h),
so each packet runs one fixed code path instead of trying a flag and falling
back.

Each probe is a five-instruction SCHED_CLS program, built here as bytecode
(no compiler: milliseconds), that calls bpf_skb_adjust_room() with the flags
in question on a LISP packet through BPF_PROG_TEST_RUN and returns the
helper's result. A kernel that does not know a flag answers -EINVAL before
touching the packet; one that knows it decapsulates and answers 0. Asking
the helper itself, rather than comparing version numbers, also gives the
right answer on distribution kernels with backports.
"""
from __future__ import annotations

import ctypes
import os
import struct
from dataclasses import dataclass
from functools import lru_cache

from lispctl.datapath.errors import DatapathError
from lispctl.datapath.syscall import bpf
from lispctl.datapath.testrun import run_prog

# UAPI (include/uapi/linux/bpf.h): stable numbers
BPF_PROG_LOAD = 5
BPF_PROG_TYPE_SCHED_CLS = 3
BPF_FUNC_skb_adjust_room = 50
BPF_ADJ_ROOM_MAC = 1
ADJ_ROOM_FIXED_GSO = 1 << 0
ADJ_ROOM_DECAP_L3_IPV4 = 1 << 7      # kernel >= 6.3
ADJ_ROOM_DECAP_L3_IPV6 = 1 << 8
ADJ_ROOM_DECAP_L4_UDP = 1 << 10      # after 6.18 (bpf-next 2025)


@dataclass(frozen=True)
class KernelFeatures:
    decap_l3: bool       # bpf_skb_adjust_room sets skb->protocol to the inner family
    decap_l4_udp: bool   # ... and clears the UDP tunnel GSO state of a decapsulated packet

    def cflags(self) -> tuple[str, ...]:
        return (f"-DLISP_HAVE_DECAP_L3={int(self.decap_l3)}",
                f"-DLISP_HAVE_DECAP_L4_UDP={int(self.decap_l4_udp)}")


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


def _adjust_room_prog(len_diff: int, flags: int) -> bytes:
    """r0 = bpf_skb_adjust_room(ctx, len_diff, BPF_ADJ_ROOM_MAC, flags); exit"""
    lo, hi = struct.unpack("<ii", struct.pack("<Q", flags))
    return b"".join((
        _insn(0xB7, dst=2, imm=len_diff),             # r2 = len_diff (mov64 imm)
        _insn(0xB7, dst=3, imm=BPF_ADJ_ROOM_MAC),     # r3 = mode
        _insn(0x18, dst=4, imm=lo), _insn(0, imm=hi),  # r4 = flags (ld_imm64)
        _insn(0x85, imm=BPF_FUNC_skb_adjust_room),    # call; r1 is still ctx
        _insn(0x95),                                  # exit
    ))


class _LoadAttr(ctypes.Structure):
    """The BPF_PROG_LOAD member of union bpf_attr, as far as needed."""
    _fields_ = [
        ("prog_type", ctypes.c_uint32),
        ("insn_cnt", ctypes.c_uint32),
        ("insns", ctypes.c_uint64),
        ("license", ctypes.c_uint64),
        ("log_level", ctypes.c_uint32),
        ("log_size", ctypes.c_uint32),
        ("log_buf", ctypes.c_uint64),
        ("kern_version", ctypes.c_uint32),
        ("prog_flags", ctypes.c_uint32),
        ("prog_name", ctypes.c_char * 16),
    ]


def _load(code: bytes) -> int:
    insns = ctypes.create_string_buffer(code, len(code))
    lic = ctypes.create_string_buffer(b"GPL")
    attr = _LoadAttr(prog_type=BPF_PROG_TYPE_SCHED_CLS, insn_cnt=len(code) // 8,
                     insns=ctypes.addressof(insns), license=ctypes.addressof(lic),
                     prog_name=b"lisp_probe")
    return bpf(BPF_PROG_LOAD, attr)


def _probe_packet() -> tuple[bytes, int]:
    """Ethernet + IPv4 + UDP/4341 + LISP + an inner IPv6 packet with 8 bytes
    of payload; returns it and the outer length to remove."""
    inner = struct.pack("!IHBB16s16s", 6 << 28, 8, 59, 64, b"\xfd" + bytes(15), b"\xfd" + bytes(14) + b"\1")
    inner += bytes(8)
    lisp = bytes(8)
    udp = struct.pack("!HHHH", 49152, 4341, 8 + len(lisp) + len(inner), 0)
    ip4 = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp) + len(lisp) + len(inner), 0, 0x4000,
                      64, 17, 0, bytes([192, 0, 2, 2]), bytes([192, 0, 2, 1]))
    eth = bytes.fromhex("020000000001" "020000000002" "0800")
    return eth + ip4 + udp + lisp + inner, len(ip4) + len(udp) + len(lisp)


def _accepts(flags: int) -> bool:
    pkt, olen = _probe_packet()
    try:
        fd = _load(_adjust_room_prog(-olen, flags))
    except OSError as exc:
        raise DatapathError(f"cannot load a BPF probe program: {exc}") from exc
    try:
        res = run_prog(fd, pkt)
    except OSError as exc:
        raise DatapathError(f"cannot run a BPF probe program: {exc}") from exc
    finally:
        os.close(fd)
    return res.retval == 0


@lru_cache(maxsize=1)
def kernel_features() -> KernelFeatures:
    """The running kernel's answers (root/CAP_BPF needed); raises DatapathError."""
    l3 = _accepts(ADJ_ROOM_DECAP_L3_IPV6 | ADJ_ROOM_FIXED_GSO)
    l4 = l3 and _accepts(ADJ_ROOM_DECAP_L3_IPV6 | ADJ_ROOM_DECAP_L4_UDP | ADJ_ROOM_FIXED_GSO)
    return KernelFeatures(decap_l3=l3, decap_l4_udp=l4)

"""BPF_PROG_TEST_RUN through bpf(2) (bcc does not wrap it).

Shared by the tests and the benchmark: run a loaded program on a packet in
the kernel, without any interface, and get the verdict and output bytes.
"""
from __future__ import annotations

import ctypes
import struct
from dataclasses import dataclass

from lispctl.datapath.syscall import bpf

BPF_PROG_TEST_RUN = 10


class _TestAttr(ctypes.Structure):
    """The `test` member of union bpf_attr (include/uapi/linux/bpf.h)."""
    _fields_ = [
        ("prog_fd", ctypes.c_uint32),
        ("retval", ctypes.c_uint32),
        ("data_size_in", ctypes.c_uint32),
        ("data_size_out", ctypes.c_uint32),
        ("data_in", ctypes.c_uint64),
        ("data_out", ctypes.c_uint64),
        ("repeat", ctypes.c_uint32),
        ("duration", ctypes.c_uint32),
        ("ctx_size_in", ctypes.c_uint32),
        ("ctx_size_out", ctypes.c_uint32),
        ("ctx_in", ctypes.c_uint64),
        ("ctx_out", ctypes.c_uint64),
        ("flags", ctypes.c_uint32),
        ("cpu", ctypes.c_uint32),
        ("batch_size", ctypes.c_uint32),
        ("_pad", ctypes.c_uint32),
    ]


# struct __sk_buff is UAPI; only these fields may be non-zero in a test-run ctx.
_SKB_SIZE = 192
_SKB_FIELDS = {"mark": 8, "priority": 32, "ingress_ifindex": 36, "ifindex": 40,
               "wire_len": 160, "gso_segs": 164, "gso_size": 176}

# tc verdicts and XDP actions (UAPI)
TC_ACT_OK, TC_ACT_SHOT, TC_ACT_REDIRECT = 0, 2, 7
XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX, XDP_REDIRECT = 0, 1, 2, 3, 4


@dataclass(frozen=True)
class RunResult:
    retval: int
    data: bytes
    duration_ns: int      # mean per run, as the kernel measures it


def skb_ctx(**fields: int) -> bytes:
    """A struct __sk_buff for the run, e.g. skb_ctx(ifindex=3, gso_size=1400)."""
    buf = bytearray(_SKB_SIZE)
    for name, value in fields.items():
        if name not in _SKB_FIELDS:
            raise ValueError(f"__sk_buff field {name} cannot be set for a test run")
        struct.pack_into("=I", buf, _SKB_FIELDS[name], value)
    return bytes(buf)


def xdp_ctx(data_len: int, ingress_ifindex: int = 0, rx_queue_index: int = 0) -> bytes:
    """A struct xdp_md for the run: data = 0, data_end = the frame's length
    (the kernel insists), and the receiving device (0: loopback)."""
    return struct.pack("=IIIIII", 0, data_len, 0, ingress_ifindex, rx_queue_index, 0)


def run_prog(prog_fd: int, data: bytes, repeat: int = 1, ctx: bytes | None = None,
             out_size: int | None = None) -> RunResult:
    """Run prog_fd on data `repeat` times; raises OSError with the kernel's errno."""
    out_len = out_size if out_size is not None else len(data) + 4096
    din = ctypes.create_string_buffer(bytes(data), len(data))
    dout = ctypes.create_string_buffer(out_len)
    attr = _TestAttr()
    attr.prog_fd = prog_fd
    attr.data_size_in = len(data)
    attr.data_size_out = out_len
    attr.data_in = ctypes.addressof(din)
    attr.data_out = ctypes.addressof(dout)
    attr.repeat = repeat
    if ctx is not None:
        cin = ctypes.create_string_buffer(ctx, len(ctx))
        attr.ctx_size_in = len(ctx)
        attr.ctx_in = ctypes.addressof(cin)
    try:
        bpf(BPF_PROG_TEST_RUN, attr)
    except OSError as exc:
        raise OSError(exc.errno, f"BPF_PROG_TEST_RUN: {exc.strerror}") from None
    return RunResult(attr.retval, dout.raw[: attr.data_size_out], attr.duration)

"""The bpf(2) system call, for the few commands bcc does not wrap
(BPF_PROG_TEST_RUN, BPF_OBJ_GET of pinned maps, program info by id)."""
from __future__ import annotations

import ctypes
import os
import platform

SYS_BPF = {"x86_64": 321, "aarch64": 280, "armv7l": 386, "riscv64": 280}.get(platform.machine(), 321)

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def bpf(cmd: int, attr, size: int | None = None) -> int:
    """bpf(cmd, attr): attr is the bytes of a union bpf_attr member, or a
    ctypes object (passed by reference, so the kernel's writes are visible).
    Raises OSError with errno on failure."""
    if isinstance(attr, (bytes, bytearray)):
        buf = ctypes.create_string_buffer(bytes(attr), 128)
        rc = _libc.syscall(SYS_BPF, cmd, buf, 128)
    else:
        rc = _libc.syscall(SYS_BPF, cmd, ctypes.byref(attr), size or ctypes.sizeof(attr))
    if rc < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return rc

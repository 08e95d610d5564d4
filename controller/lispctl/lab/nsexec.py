"""Run code inside a named network namespace without `ip netns exec`.

Two tools: `call_in_netns` forks, enters the namespace and runs a function
(used for /proc/sys writes and ethtool ioctls, both of which act on the
namespace of the calling task); `preexec` is a Popen preexec_fn that moves the
child into the namespace before exec.

Mount namespace caveat: setns(CLONE_NEWNET) changes only the network
namespace, so /sys still shows the root namespace's devices. Netlink, ioctls
and /proc/net follow the task's namespace, which is all ping, iperf3, tshark
-i IF, pyroute2 and bcc need. A tool that reads /sys/class/net must be started
with remount_sys=True: it gets a private mount namespace with a fresh sysfs,
and bpffs is bound back onto /sys/fs/bpf so pinned maps stay visible.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import pickle
import signal
import traceback
from typing import Any, Callable

from pyroute2 import netns as _netns

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
CLONE_NEWNS = 0x00020000
MS_REC, MS_SLAVE, MS_BIND = 16384, 1 << 19, 4096


def enter(name: str) -> None:
    """Move the calling thread into the named namespace (never creates one)."""
    _netns.setns(name, flags=0)


def _mount(src: bytes | None, target: bytes, fstype: bytes | None, flags: int) -> None:
    if _libc.mount(src, target, fstype, flags, None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {target!r}: {os.strerror(err)}")


def remount_sys() -> None:
    """Private mount namespace with this netns's sysfs; keep bpffs visible."""
    keep = [p for p in ("/sys/fs/bpf", "/sys/kernel/tracing", "/sys/kernel/debug") if os.path.ismount(p)]
    if _libc.unshare(CLONE_NEWNS) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNS)")
    _mount(b"none", b"/", None, MS_REC | MS_SLAVE)  # our mounts never leak to the host
    # opened after unshare: a bind source must belong to our own mount namespace
    fds = {p: os.open(p, os.O_PATH | os.O_DIRECTORY) for p in keep}
    _mount(b"sysfs", b"/sys", b"sysfs", 0)
    for p, fd in fds.items():
        _mount(f"/proc/self/fd/{fd}".encode(), p.encode(), None, MS_BIND | MS_REC)
        os.close(fd)


def preexec(name: str, sysfs: bool = False) -> Callable[[], None]:
    def _run() -> None:
        enter(name)
        if sysfs:
            remount_sys()
    return _run


def call_in_netns(name: str, fn: Callable[..., Any], *args: Any) -> Any:
    """fn(*args) in a forked child inside the namespace; its result or exception comes back pickled."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into the caller's stack
        code = 0
        try:
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, signal.SIG_DFL)  # the parent's handlers are not ours to run
            os.close(r)
            enter(name)
            try:
                payload = pickle.dumps(("ok", fn(*args)))
            except BaseException as exc:  # report, do not die silently
                payload = pickle.dumps(("err", RuntimeError(f"in netns {name}: {exc!r}\n{traceback.format_exc()}")))
            with os.fdopen(w, "wb") as f:
                f.write(payload)
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    if not data:
        raise RuntimeError(f"child in netns {name} died (status {status})")
    kind, value = pickle.loads(data)
    if kind == "err":
        raise value
    return value


def write_sysctls(values: dict[str, str]) -> None:
    """Runs inside the namespace: /proc/sys/net/* belongs to the writer's netns."""
    for key, value in values.items():
        with open("/proc/sys/" + key.replace(".", "/"), "w") as f:
            f.write(str(value))


def read_sysctl(key: str) -> str:
    with open("/proc/sys/" + key.replace(".", "/")) as f:
        return f.read().strip()


def set_features(ifname: str, features: dict[str, bool]) -> dict[str, bool]:
    """Runs inside the namespace: ethtool -K, through pyroute2's ioctl path. Returns the resulting states."""
    from pyroute2.ethtool import Ethtool
    with Ethtool() as et:
        cur = et.get_features(ifname)
        for fname, on in features.items():
            if fname not in cur.features:
                raise KeyError(f"{ifname}: no ethtool feature {fname!r}")
            cur.features[fname].enable = on
        et.set_features(ifname, cur)
        after = et.get_features(ifname)
        return {f: after.features[f].enable for f in features}

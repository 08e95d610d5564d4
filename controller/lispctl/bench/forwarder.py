"""The benchmarks' bpf-forward baseline and generator sink (bpf/bench_forward.c).

Benchmark only: compiled with bcc here, never by the daemon's loader or
prebuilt cache. Programs are loaded once per process; attaching runs in a
lab node's namespace (a forked child inherits the program fds), and the tc
filter keeps the program alive after the child exits, until the filter or
its interface (the lab's namespace) goes.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

SOURCE = Path(__file__).resolve().parents[3] / "bpf" / "bench_forward.c"
TC_FORWARD, XDP_FORWARD, TC_DROP = "bench_fwd_tc", "bench_fwd_xdp", "bench_drop_tc"


@dataclass(frozen=True)
class Programs:
    holder: Any             # the bcc BPF object: the fds live as long as it does
    tc: int                 # bench_fwd_tc: bpf_fib_lookup + redirect (tc)
    xdp: int                # bench_fwd_xdp: the same in XDP
    drop: int               # bench_drop_tc: TC_ACT_SHOT (the generator's sink)


@lru_cache(maxsize=None)
def load() -> Programs:
    """Compile and load the three programs (once per process; bcc takes seconds)."""
    from bcc import BPF
    b = BPF(src_file=str(SOURCE).encode())
    return Programs(b, b.load_func(TC_FORWARD.encode(), BPF.SCHED_CLS).fd,
                    b.load_func(XDP_FORWARD.encode(), BPF.XDP).fd,
                    b.load_func(TC_DROP.encode(), BPF.SCHED_CLS).fd)


def attach_here(fd: int, name: str, ifnames: tuple[str, ...]) -> None:
    """In the caller's namespace: fd as the tc ingress filter of each interface
    (the same clsact filter slot the data plane uses, so the two exclude each
    other), or for XDP_FORWARD as the interface's XDP program (native; the
    program stays attached with the device, as the tc filter does)."""
    from lispctl.datapath import vethpeer
    from lispctl.datapath.attach import INGRESS, attach_tc, attach_xdp, ifindex_of
    for ifname in ifnames:
        if name == XDP_FORWARD:
            if attach_xdp(ifname, fd, name).mode != "native":
                raise RuntimeError(f"{ifname}: no native XDP; bpf-forward (XDP) would measure generic XDP")
        else:
            attach_tc(ifname, fd, name, INGRESS)
            # hand over to the veth peer where the data plane would. One map
            # for every namespace, keyed by ifindex: the lab's xTR interfaces
            # all answer yes, and a key is never taken back here.
            if name == TC_FORWARD and (peer := vethpeer.handoff(ifname)) is not None and peer.accepts:
                table = load().holder[b"fwd_peer"]
                table[table.Key(ifindex_of(ifname))] = table.Leaf(1)


def detach_here(name: str, ifnames: tuple[str, ...]) -> None:
    """Remove what attach_here installed (the filter; clsact too, an empty
    qdisc would stay; or the XDP program)."""
    from lispctl.datapath.attach import (INGRESS, XDP_FLAGS_DRV_MODE, TcAttachment, XdpAttachment, detach_tc,
                                         detach_xdp, ifindex_of, xdp_program_id)
    for ifname in ifnames:
        if name == XDP_FORWARD:
            detach_xdp(XdpAttachment(ifname, ifindex_of(ifname), name, xdp_program_id(ifname), XDP_FLAGS_DRV_MODE))
        else:
            detach_tc(TcAttachment(ifname, ifindex_of(ifname), INGRESS, name, created_clsact=True))


def attach(lab, node: str, program: str, ifnames: tuple[str, ...]) -> None:
    """program: TC_FORWARD or TC_DROP on tc ingress, or XDP_FORWARD as the
    XDP program, of node's interfaces."""
    progs = load()
    fd = {TC_FORWARD: progs.tc, XDP_FORWARD: progs.xdp, TC_DROP: progs.drop}[program]
    lab.call(node, attach_here, fd, program, ifnames)


def detach(lab, node: str, program: str, ifnames: tuple[str, ...]) -> None:
    lab.call(node, detach_here, program, ifnames)


def stack_forwarded_here() -> int:
    """IPv4 + IPv6 datagrams the caller's namespace forwarded through the IP
    stack (Ip ForwDatagrams, Ip6OutForwDatagrams). A packet a BPF program
    redirected never shows here: the figure tells which path forwarded."""
    lines = Path("/proc/net/snmp").read_text().splitlines()
    ip = [ln.split()[1:] for ln in lines if ln.startswith("Ip:")]
    v4 = int(dict(zip(ip[0], ip[1]))["ForwDatagrams"])
    v6 = 0
    for ln in Path("/proc/net/snmp6").read_text().splitlines():
        if ln.startswith("Ip6OutForwDatagrams"):
            v6 = int(ln.split()[1])
    return v4 + v6


def stack_forwarded(lab, node: str) -> int:
    return int(lab.call(node, stack_forwarded_here))

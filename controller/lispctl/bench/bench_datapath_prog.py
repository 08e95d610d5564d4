"""Per-packet cost of the BPF programs, measured in the kernel with
BPF_PROG_TEST_RUN (no NIC, no stack), next to a program that only returns
TC_ACT_OK (tc) or XDP_PASS (XDP). Runs in a namespace of its own so FIB
lookups hit known routes."""
from __future__ import annotations

import ipaddress
import os
import shutil
from pathlib import Path

SECTION = "Data plane programs (BPF_PROG_TEST_RUN)"
RUNS = 50_000


def _mean_ns(fd: int, frame: bytes, ctx: bytes | None = None) -> float:
    """Mean in-kernel duration of single runs. repeat=N would reuse one skb,
    and after the first run it is no longer the packet we meant (encapsulated
    or decapsulated already), so every run gets a fresh copy instead."""
    from lispctl.datapath.testrun import run_prog
    total = 0
    for _ in range(RUNS):
        total += run_prog(fd, frame, ctx=ctx).duration_ns
    return total / RUNS


def _trivial_fds():
    from bcc import BPF
    b = BPF(text=b"int pass(struct __sk_buff *skb) { return 0; }\n"
                 b"int xpass(struct xdp_md *ctx) { return XDP_PASS; }")
    return b, b.load_func(b"pass", BPF.SCHED_CLS).fd, b.load_func(b"xpass", BPF.XDP).fd


def _lab(ns: str) -> None:
    from pyroute2 import IPRoute
    with IPRoute() as ipr:
        for name, peer in (("rl0", "rl0p"), ("eid0", "eid0p")):
            ipr.link("add", ifname=name, kind="veth", peer=peer)
            for n in (name, peer):
                ipr.link("set", index=ipr.link_lookup(ifname=n)[0], state="up")
        rl, ei = ipr.link_lookup(ifname="rl0")[0], ipr.link_lookup(ifname="eid0")[0]
        ipr.addr("add", index=rl, address="192.0.2.1", prefixlen=24)
        ipr.addr("add", index=ei, address="10.1.0.254", prefixlen=24)
        ipr.neigh("add", dst="192.0.2.2", lladdr="02:00:00:00:01:02", ifindex=rl, state=0x80)
        ipr.neigh("add", dst="10.1.0.10", lladdr="02:00:00:00:02:10", ifindex=ei, state=0x80)
    Path("/proc/sys/net/ipv4/ip_forward").write_text("1\n")


def _frames():
    import struct

    def csum(b: bytes) -> int:
        s = sum(struct.unpack(f"!{len(b) // 2}H", b))
        while s >> 16:
            s = (s & 0xFFFF) + (s >> 16)
        return ~s & 0xFFFF

    def ipv4(src, dst, payload, proto=17):
        h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0, 0x4000, 64, proto, 0,
                        ipaddress.ip_address(src).packed, ipaddress.ip_address(dst).packed)
        return h[:10] + struct.pack("!H", csum(h)) + h[12:] + payload

    udp = struct.pack("!HHHH", 1234, 80, 8 + 64, 0) + bytes(64)
    inner_out = ipv4("10.1.0.10", "10.2.0.5", udp)          # to a remote EID
    inner_in = ipv4("10.2.0.5", "10.1.0.10", udp)           # to our site
    eth4 = bytes.fromhex("020000000201" "020000000210" "0800")
    lisp = struct.pack("!B3sI", 0xC0, b"\x12\x34\x56", 1) + inner_in
    outer = ipv4("192.0.2.2", "192.0.2.1", struct.pack("!HHHH", 50000, 4341, 8 + len(lisp), 0) + lisp)
    return eth4 + inner_out, eth4 + outer


def run(rec) -> None:
    if os.geteuid() != 0:
        rec.note("_skipped: needs root_")
        print("  skipped: needs root")
        return
    from pyroute2 import netns

    from lispctl.datapath import Datapath
    from lispctl.datapath.testrun import TC_ACT_REDIRECT, XDP_REDIRECT, run_prog, xdp_ctx
    from lispctl.mapping.types import EidPrefix, Rloc

    ns = f"lbench{os.getpid()}"
    pin = Path(f"/sys/fs/bpf/lispctl-bench-{os.getpid()}")
    netns.create(ns)
    netns.pushns(ns)
    try:
        _lab(ns)
        pin.mkdir(parents=True, exist_ok=True)
        dp = Datapath("bench", pin_root=pin)
        try:
            dp.add_local_rloc(ipaddress.ip_address("192.0.2.1"))
            dp.add_local_eid(EidPrefix.parse("10.1.0.0/16"))
            dp.set_mapping(EidPrefix.parse("10.2.0.0/16"), [Rloc(ipaddress.ip_address("192.0.2.2"))])
            for i in range(1000):   # a non-trivial map-cache
                dp.set_mapping(EidPrefix.parse(f"172.{16 + i // 256}.{i % 256}.0/24"),
                               [Rloc(ipaddress.ip_address("192.0.2.2"))])
            # as for NICs: the XDP ETR may redirect into the EID interface,
            # the XDP ITR into the RLOC interface
            dp.set_xdp_redirect("eid0", True)
            dp.set_xdp_redirect("rl0", True)
            enc, dec = _frames()
            from pyroute2 import IPRoute
            with IPRoute() as ipr:
                xctx = xdp_ctx(len(dec), ipr.link_lookup(ifname="rl0")[0])
                ectx = xdp_ctx(len(enc), ipr.link_lookup(ifname="eid0")[0])
            assert run_prog(dp.prog_fd("lisp_itr_ingress"), enc).retval == TC_ACT_REDIRECT
            assert run_prog(dp.prog_fd("lisp_etr_ingress"), dec).retval == TC_ACT_REDIRECT
            assert run_prog(dp.prog_fd("lisp_etr_xdp"), dec, ctx=xctx).retval == XDP_REDIRECT
            assert run_prog(dp.prog_fd("lisp_itr_xdp"), enc, ctx=ectx).retval == XDP_REDIRECT
            holder, trivial, trivial_xdp = _trivial_fds()
            base = _mean_ns(trivial, enc)
            e = _mean_ns(dp.prog_fd("lisp_itr_ingress"), enc)
            d = _mean_ns(dp.prog_fd("lisp_etr_ingress"), dec)
            xbase = _mean_ns(trivial_xdp, dec, xctx)
            xd = _mean_ns(dp.prog_fd("lisp_etr_xdp"), dec, xctx)
            xe = _mean_ns(dp.prog_fd("lisp_itr_xdp"), enc, ectx)
            holder.cleanup()
        finally:
            dp.close(unpin=True)
    finally:
        netns.popns()
        netns.remove(ns)
        shutil.rmtree(pin, ignore_errors=True)
    base = max(base, 1.0)
    xbase = max(xbase, 1.0)
    rec.figure("datapath_trivial_tc_ns_per_pkt", base)
    rec.figure("datapath_encap_ns_per_pkt", e)
    rec.figure("datapath_decap_ns_per_pkt", d)
    rec.figure("datapath_encap_vs_trivial_ratio", e / base)
    rec.figure("datapath_decap_vs_trivial_ratio", d / base)
    rec.figure("datapath_trivial_xdp_ns_per_pkt", xbase)
    rec.figure("datapath_xdp_decap_ns_per_pkt", xd)
    rec.figure("datapath_xdp_decap_vs_trivial_xdp_ratio", xd / xbase)
    rec.figure("datapath_xdp_decap_vs_tc_decap_ratio", xd / d if d else 0.0)
    rec.figure("datapath_xdp_encap_ns_per_pkt", xe)
    rec.figure("datapath_xdp_encap_vs_trivial_xdp_ratio", xe / xbase)
    rec.figure("datapath_xdp_encap_vs_tc_encap_ratio", xe / e if e else 0.0)
    rec.note(f"BPF_PROG_TEST_RUN, mean of {RUNS:,} single runs each (a fresh skb per run; the "
             "kernel's timer overhead is in every figure, trivial program included), 64-byte UDP "
             "payload, IPv4 in IPv4, 1,001 map-cache entries; includes FIB lookup and redirect. "
             "Data-path-bound by construction: the kernel times the program alone, no traffic "
             "generator is involved (the trivial program's figure is the timing overhead).")
    rec.note("")
    rec.note("| program | ns/packet | x trivial tc program |")
    rec.note("|---|---:|---:|")
    rec.note(f"| trivial (return TC_ACT_OK) | {base:.0f} | 1.00 |")
    rec.note(f"| ITR encapsulation (lisp_itr_ingress) | {e:.0f} | {e / base:.2f} |")
    rec.note(f"| ETR decapsulation (lisp_etr_ingress) | {d:.0f} | {d / base:.2f} |")
    rec.note("")
    rec.note("XDP ETR on the same LISP frame (ingress rl0, redirect target eid0, as for a NIC), "
             "XDP ITR on the same EID frame (ingress eid0, redirect target rl0):")
    rec.note("")
    rec.note("| program | ns/packet | x trivial XDP program | x tc counterpart |")
    rec.note("|---|---:|---:|---:|")
    rec.note(f"| trivial (return XDP_PASS) | {xbase:.0f} | 1.00 | {xbase / d:.2f} |")
    rec.note(f"| XDP ETR decapsulation (lisp_etr_xdp) | {xd:.0f} | {xd / xbase:.2f} | {xd / d:.2f} |")
    rec.note(f"| XDP ITR encapsulation (lisp_itr_xdp) | {xe:.0f} | {xe / xbase:.2f} | {xe / e:.2f} (x tc ITR) |")
    rec.note("")
    rec.note("Test runs measure the program only: the XDP figure leaves out the skb allocation and "
             "GRO that a real NIC's tc path pays before the tc ETR runs, so on hardware the "
             "difference is larger than this ratio.")

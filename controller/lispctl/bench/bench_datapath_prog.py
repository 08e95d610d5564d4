"""Per-packet cost of the BPF programs, measured in the kernel with
BPF_PROG_TEST_RUN (no NIC, no stack), next to a program that only returns
TC_ACT_OK (tc) or XDP_PASS (XDP) and next to bpf-forward (bpf/bench_forward.c:
bpf_fib_lookup + redirect, no encapsulation, the ceiling of the method).

One hot flow and FLOWS distinct flows (each run the next of FLOWS packets,
each to its own destination: its own map-cache entry for the ITR, its own
neighbour for the ETR), with a map-cache of 1,001 entries and of
LARGE_MAP_CACHE (or as many as the loaded data plane holds). Runs in a
namespace of its own so FIB lookups hit known routes and neighbours.

Every figure twice: driven from Python (cold-ish: the interpreter touches
much memory between two runs, so the maps a program reads may miss the
caches; the trivial program reads nothing), and on the warm path
(warmrun.c: the same single runs back to back from C, on one CPU).

LISPCTL_BENCH_QUICK=1: 5,000 runs per figure (for developing the bench).
"""
from __future__ import annotations

import ipaddress
import os
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

SECTION = "Data plane programs (BPF_PROG_TEST_RUN)"
QUICK = os.environ.get("LISPCTL_BENCH_QUICK", "") not in ("", "0")
RUNS = 5_000 if QUICK else 50_000
FLOWS = 1_000
SMALL_MAP_CACHE, LARGE_MAP_CACHE = 1_001, 100_000
RLOC_PEER, RLOC_LOCAL = "192.0.2.2", "192.0.2.1"
SITE_HOST = "10.1.0.10"          # the one-flow ETR destination
REMOTE_HOST = "10.2.0.5"         # the one-flow ITR destination (in 10.2.0.0/16)


def _mean_ns(fd: int, frames: list[bytes], ctx=None) -> float:
    """Mean in-kernel duration of single runs, cycling over `frames`.
    repeat=N would reuse one skb, and after the first run it is no longer the
    packet we meant (encapsulated or decapsulated already), so every run gets
    a fresh copy instead. ctx: one context, or a function of the frame."""
    from lispctl.datapath.testrun import run_prog
    total = 0
    n = len(frames)
    for i in range(RUNS):
        f = frames[i % n]
        total += run_prog(fd, f, ctx=ctx(f) if callable(ctx) else ctx).duration_ns
    return total / RUNS


class _Meter:
    """Measures a program both ways: cold (the Python loop, _mean_ns) into
    `cold`, warm (warmrun.c) into `warm` when a C compiler was found."""

    def __init__(self, workdir: Path) -> None:
        from lispctl.bench import warmrun
        self.workdir = workdir
        self.exe = warmrun.build(workdir)
        self.cold: dict[tuple[str, int, int], float] = {}
        self.warm: dict[tuple[str, int, int], float] = {}

    def __call__(self, key: tuple[str, int, int], fd: int, frames: list[bytes], ctx=None,
                 retval: int | None = None) -> None:
        from lispctl.bench import warmrun
        self.cold[key] = _mean_ns(fd, frames, ctx)
        if self.exe is None:
            return
        ctxs = [ctx(f) if callable(ctx) else ctx for f in frames]
        r = warmrun.run(self.exe, fd, frames, ctxs, RUNS, self.workdir)
        if retval is not None and set(r.retvals) != {retval}:
            raise RuntimeError(f"warm path: {key[0]} returned {r.retvals}, expected {retval} every run")
        self.warm[key] = r.mean_ns


def _trivial_fds():
    from bcc import BPF
    b = BPF(text=b"int pass(struct __sk_buff *skb) { return 0; }\n"
                 b"int xpass(struct xdp_md *ctx) { return XDP_PASS; }")
    return b, b.load_func(b"pass", BPF.SCHED_CLS).fd, b.load_func(b"xpass", BPF.XDP).fd


def _site_dst(j: int) -> str:
    """The j-th of FLOWS destinations behind eid0 (10.1.0.0/16, each a neighbour)."""
    return str(ipaddress.ip_address("10.1.1.0") + j)


def _remote_dst(j: int, entries: int) -> str:
    """A host in the j-th of FLOWS map-cache entries spread over the table's
    filler prefixes (/24s of 20.0.0.0/8, then of 21.0.0.0/8)."""
    i = j * (entries - 1) // FLOWS
    return f"{20 + i // 65536}.{i // 256 % 256}.{i % 256}.5"


def _filler(i: int) -> str:
    return f"{20 + i // 65536}.{i // 256 % 256}.{i % 256}.0/24"     # 20/8 then 21/8


def _routes(indexes: range) -> None:
    """The filler prefixes as kernel routes too (ip -batch: netlink one by one
    takes minutes for 65,535), so bpf-forward looks up a FIB as large as the
    ITR's map-cache. In the caller's namespace."""
    if not indexes:
        return
    batch = "".join(f"route add {_filler(i)} via {RLOC_PEER}\n" for i in indexes)
    cp = subprocess.run(["ip", "-batch", "-"], input=batch, text=True, capture_output=True)
    if cp.returncode:
        raise RuntimeError(f"ip -batch (routes for bpf-forward): {cp.stderr.strip()[:500]}")


def _lab() -> None:
    from pyroute2 import IPRoute
    with IPRoute() as ipr:
        for name, peer in (("rl0", "rl0p"), ("eid0", "eid0p")):
            ipr.link("add", ifname=name, kind="veth", peer=peer)
            for n in (name, peer):
                ipr.link("set", index=ipr.link_lookup(ifname=n)[0], state="up")
        rl, ei = ipr.link_lookup(ifname="rl0")[0], ipr.link_lookup(ifname="eid0")[0]
        ipr.addr("add", index=rl, address=RLOC_LOCAL, prefixlen=24)
        ipr.addr("add", index=ei, address="10.1.0.254", prefixlen=16)
        ipr.neigh("add", dst=RLOC_PEER, lladdr="02:00:00:00:01:02", ifindex=rl, state=0x80)
        for j, dst in enumerate([SITE_HOST] + [_site_dst(j) for j in range(FLOWS)]):
            ipr.neigh("add", dst=dst, lladdr=f"02:00:00:00:{2 + j // 256:02x}:{j % 256:02x}", ifindex=ei,
                      state=0x80)
        # for bpf-forward: the remote EIDs are routed, over the same next hop the ITR uses
        for net in ("10.2.0.0/16", "20.0.0.0/8", "21.0.0.0/8"):
            ipr.route("add", dst=net, gateway=RLOC_PEER)
    Path("/proc/sys/net/ipv4/ip_forward").write_text("1\n")


def _csum(b: bytes) -> int:
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def _ipv4(src: str, dst: str, payload: bytes, proto: int = 17) -> bytes:
    h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0, 0x4000, 64, proto, 0,
                    ipaddress.ip_address(src).packed, ipaddress.ip_address(dst).packed)
    return h[:10] + struct.pack("!H", _csum(h)) + h[12:] + payload


ETH4 = bytes.fromhex("020000000201" "020000000210" "0800")


def _plain(src: str, dst: str, sport: int = 1234) -> bytes:
    """An Ethernet frame with 64 bytes of UDP payload, as a host sends it."""
    return ETH4 + _ipv4(src, dst, struct.pack("!HHHH", sport, 80, 8 + 64, 0) + bytes(64))


def _lisp(inner: bytes, sport: int = 50000) -> bytes:
    """The same packet as it arrives LISP-encapsulated from the peer xTR."""
    lisp = struct.pack("!B3sI", 0xC0, b"\x12\x34\x56", 1) + inner[14:]
    return ETH4 + _ipv4(RLOC_PEER, RLOC_LOCAL, struct.pack("!HHHH", sport, 4341, 8 + len(lisp), 0) + lisp)


class Frames:
    """The packets of one test, one flow and FLOWS flows."""

    def __init__(self, entries: int) -> None:
        self.itr1 = [_plain(SITE_HOST, REMOTE_HOST)]
        self.itrn = [_plain(SITE_HOST, _remote_dst(j, entries), 1024 + j) for j in range(FLOWS)]
        # what the ETR receives, and the same packets without LISP (bpf-forward's)
        self.fwd_in1 = [_plain(REMOTE_HOST, SITE_HOST)]
        self.fwd_inn = [_plain(REMOTE_HOST, _site_dst(j), 1024 + j) for j in range(FLOWS)]
        self.etr1 = [_lisp(f) for f in self.fwd_in1]
        self.etrn = [_lisp(f, 49152 + j) for j, f in enumerate(self.fwd_inn)]


def run(rec) -> None:
    if os.geteuid() != 0:
        rec.note("_skipped: needs root_")
        print("  skipped: needs root")
        return
    from pyroute2 import IPRoute, netns

    from lispctl.bench import forwarder as fw
    from lispctl.datapath import Datapath
    from lispctl.datapath.testrun import TC_ACT_REDIRECT, XDP_PASS, XDP_REDIRECT, run_prog, xdp_ctx
    from lispctl.mapping.types import EidPrefix, Rloc

    ns = f"lbench{os.getpid()}"
    pin = Path(f"/sys/fs/bpf/lispctl-bench-{os.getpid()}")
    ns_made = False
    # (program, flows, map-cache entries or 0) -> ns/packet, cold and warm
    work = Path(tempfile.mkdtemp(prefix="lispctl-warmrun-"))
    large = LARGE_MAP_CACHE
    try:
        m = _Meter(work)
        if m.exe is None:
            print("  no C compiler (cc): the warm-path columns are skipped")
        netns.create(ns)
        ns_made = True
        netns.pushns(ns)
        try:
            _lab()
            pin.mkdir(parents=True, exist_ok=True)
            dp = Datapath("bench", pin_root=pin)
            holder = None
            try:
                rloc = [Rloc(ipaddress.ip_address(RLOC_PEER))]
                dp.add_local_rloc(ipaddress.ip_address(RLOC_LOCAL))
                dp.add_local_eid(EidPrefix.parse("10.1.0.0/16"))
                dp.set_mapping(EidPrefix.parse("10.2.0.0/16"), rloc)
                # as for NICs: the XDP ETR may redirect into the EID interface,
                # the XDP ITR into the RLOC interface
                dp.set_xdp_redirect("eid0", True)
                dp.set_xdp_redirect("rl0", True)
                large = min(LARGE_MAP_CACHE, dp.capacity)
                with IPRoute() as ipr:
                    rl = ipr.link_lookup(ifname="rl0")[0]
                    ei = ipr.link_lookup(ifname="eid0")[0]
                progs = fw.load()
                holder, trivial, trivial_xdp = _trivial_fds()
                itr, etr, xetr = (dp.prog_fd(n) for n in ("lisp_itr_ingress", "lisp_etr_ingress", "lisp_etr_xdp"))
                xctx = lambda f: xdp_ctx(len(f), rl)  # noqa: E731  (arrives on rl0, as from a NIC)
                xitr = dp.prog_fd("lisp_itr_xdp")
                ectx = lambda f: xdp_ctx(len(f), ei)  # noqa: E731  (the ITR's packets arrive on eid0)
                installed = 1
                for entries in (SMALL_MAP_CACHE, large):
                    for i in range(installed - 1, entries - 1):
                        dp.set_mapping(EidPrefix.parse(_filler(i)), rloc)
                    # bpf-forward's like for like: a FIB of as many routes
                    _routes(range(installed - 1, entries - 1))
                    installed = entries
                    fr = Frames(entries)
                    for f in fr.itr1 + fr.itrn:   # every packet takes the path measured, or the figure lies
                        if run_prog(itr, f).retval != TC_ACT_REDIRECT or \
                                run_prog(xitr, f, ctx=ectx(f)).retval != XDP_REDIRECT:
                            raise RuntimeError("ITR did not redirect a test packet (map-cache or FIB)")
                    for f in fr.etr1 + fr.etrn:
                        if run_prog(etr, f).retval != TC_ACT_REDIRECT or \
                                run_prog(xetr, f, ctx=xctx(f)).retval != XDP_REDIRECT:
                            raise RuntimeError("ETR did not redirect a test packet (neighbours)")
                    for f in fr.itr1 + fr.itrn + fr.fwd_in1 + fr.fwd_inn:
                        if run_prog(progs.tc, f).retval != TC_ACT_REDIRECT:
                            raise RuntimeError("bpf-forward (tc) did not redirect a test packet")
                    for f in fr.fwd_in1 + fr.fwd_inn:
                        if run_prog(progs.xdp, f, ctx=xctx(f)).retval != XDP_REDIRECT:
                            raise RuntimeError("bpf-forward (XDP) did not redirect a test packet")
                    print(f"  map-cache {entries:,} entries")
                    TR, XR = TC_ACT_REDIRECT, XDP_REDIRECT
                    if entries == SMALL_MAP_CACHE:   # nothing of these looks at the map-cache
                        m(("trivial_tc", 1, 0), trivial, fr.itr1, retval=0)
                        m(("trivial_xdp", 1, 0), trivial_xdp, fr.fwd_in1, xctx, retval=XDP_PASS)
                        for n, fl in ((1, "1"), (FLOWS, "n")):
                            m(("bpf_forward_tc_in", n, 0), progs.tc, getattr(fr, f"fwd_in{fl}"), retval=TR)
                            m(("bpf_forward_xdp_in", n, 0), progs.xdp, getattr(fr, f"fwd_in{fl}"), xctx, retval=XR)
                    for n, fl in ((1, "1"), (FLOWS, "n")):
                        m(("bpf_forward_tc_out", n, entries), progs.tc, getattr(fr, f"itr{fl}"), retval=TR)
                        m(("encap", n, entries), itr, getattr(fr, f"itr{fl}"), retval=TR)
                        m(("decap", n, entries), etr, getattr(fr, f"etr{fl}"), retval=TR)
                        m(("xdp_decap", n, entries), xetr, getattr(fr, f"etr{fl}"), xctx, retval=XR)
                        m(("xdp_encap", n, entries), xitr, getattr(fr, f"itr{fl}"), ectx, retval=XR)
            finally:
                if holder is not None:
                    holder.cleanup()
                dp.close(unpin=True)
        finally:
            netns.popns()
    finally:
        if ns_made:
            netns.remove(ns)
        shutil.rmtree(pin, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    _report(rec, m.cold, m.warm, large)


def _flows(n: int) -> str:
    return "1flow" if n == 1 else f"{n}flows"


def _ref(t: dict[tuple[str, int, int], float], r: str, n: int, entries: int) -> float:
    """bpf-forward's figure for a program's row: with a FIB as large as the
    map-cache for the ITR's packets; the ETR's side has no such table."""
    return t[r, n, entries] if (r, n, entries) in t else t[r, n, 0]


def _figures(rec, t: dict[tuple[str, int, int], float], large: int, sfx: str) -> None:
    """The figures of one way of driving (sfx "": cold, the names of earlier
    runs; "_warm": the warm path)."""
    small, N = SMALL_MAP_CACHE, FLOWS
    base, xbase = max(t["trivial_tc", 1, 0], 1.0), max(t["trivial_xdp", 1, 0], 1.0)
    e, d, xd = t["encap", 1, small], t["decap", 1, small], t["xdp_decap", 1, small]
    # one flow, 1,001 entries
    rec.figure(f"datapath_trivial_tc{sfx}_ns_per_pkt", base)
    rec.figure(f"datapath_encap{sfx}_ns_per_pkt", e)
    rec.figure(f"datapath_decap{sfx}_ns_per_pkt", d)
    rec.figure(f"datapath_encap_vs_trivial{sfx}_ratio", e / base)
    rec.figure(f"datapath_decap_vs_trivial{sfx}_ratio", d / base)
    rec.figure(f"datapath_trivial_xdp{sfx}_ns_per_pkt", xbase)
    rec.figure(f"datapath_xdp_decap{sfx}_ns_per_pkt", xd)
    rec.figure(f"datapath_xdp_decap_vs_trivial_xdp{sfx}_ratio", xd / xbase)
    rec.figure(f"datapath_xdp_decap_vs_tc_decap{sfx}_ratio", xd / d if d else 0.0)
    xe = t["xdp_encap", 1, small]
    rec.figure(f"datapath_xdp_encap_vs_trivial_xdp{sfx}_ratio", xe / xbase)
    rec.figure(f"datapath_xdp_encap_vs_tc_encap{sfx}_ratio", xe / e if e else 0.0)
    for (prog, n, entries), v in t.items():
        if prog.startswith("trivial"):
            continue
        rec.figure(f"datapath_{prog}_{_flows(n)}" + (f"_{entries}entries" if entries else "") + f"{sfx}_ns_per_pkt", v)
    for prog, r in REF.items():
        for n in (1, N):
            for entries in (small, large):
                rec.figure(f"datapath_{prog}_vs_bpf_forward_{_flows(n)}_{entries}entries{sfx}_ratio",
                           t[prog, n, entries] / _ref(t, r, n, entries))


REF = {"encap": "bpf_forward_tc_out", "decap": "bpf_forward_tc_in", "xdp_decap": "bpf_forward_xdp_in"}


def _cold_and_warm(rec, kind: str, table, cold, warm, large: int) -> None:
    """A kind's table driven from Python, then (when the C driver ran) the same from it."""
    rec.note(f"{kind}, cold-ish (driven from Python):")
    rec.note("")
    table(rec, cold, large)
    if warm:
        rec.note("")
        rec.note(f"{kind}, warm path (C driver, back to back):")
        rec.note("")
        table(rec, warm, large)


def _tc_table(rec, t: dict[tuple[str, int, int], float], large: int) -> None:
    small, N = SMALL_MAP_CACHE, FLOWS
    base = max(t["trivial_tc", 1, 0], 1.0)
    rec.note(f"| program | map-cache | ns/packet, 1 flow | ns/packet, {N:,} flows | x trivial tc (1 flow) "
             f"| x bpf-forward (1 flow) | x bpf-forward ({N:,} flows) |")
    rec.note("|---|---:|---:|---:|---:|---:|---:|")
    rec.note(f"| trivial (return TC_ACT_OK) | - | {base:.0f} | | 1.00 | | |")
    for entries in (small, large):
        r = "bpf_forward_tc_out"
        rec.note(f"| bpf-forward, tc (the ITR's packets) | {entries:,} FIB routes | {t[r, 1, entries]:.0f} | "
                 f"{t[r, N, entries]:.0f} | {t[r, 1, entries] / base:.2f} | 1.00 | 1.00 |")
    r = "bpf_forward_tc_in"
    rec.note(f"| bpf-forward, tc (the ETR's packets without LISP) | - | {t[r, 1, 0]:.0f} | {t[r, N, 0]:.0f} | "
             f"{t[r, 1, 0] / base:.2f} | 1.00 | 1.00 |")
    for label, prog in (("ITR encapsulation (lisp_itr_ingress)", "encap"),
                        ("ETR decapsulation (lisp_etr_ingress)", "decap")):
        r = REF[prog]
        for entries in (small, large):
            a, b = t[prog, 1, entries], t[prog, N, entries]
            rec.note(f"| {label} | {entries:,} | {a:.0f} | {b:.0f} | {a / base:.2f} | "
                     f"{a / _ref(t, r, 1, entries):.2f} | {b / _ref(t, r, N, entries):.2f} |")


def _xdp_table(rec, t: dict[tuple[str, int, int], float], large: int) -> None:
    small, N = SMALL_MAP_CACHE, FLOWS
    xbase, d = max(t["trivial_xdp", 1, 0], 1.0), t["decap", 1, small]
    rec.note(f"| program | map-cache | ns/packet, 1 flow | ns/packet, {N:,} flows | x trivial XDP (1 flow) "
             f"| x bpf-forward XDP (1 flow) | x bpf-forward XDP ({N:,} flows) | x tc ETR (1 flow) |")
    rec.note("|---|---:|---:|---:|---:|---:|---:|---:|")
    fx1, fxn = t["bpf_forward_xdp_in", 1, 0], t["bpf_forward_xdp_in", N, 0]
    rec.note(f"| trivial (return XDP_PASS) | - | {xbase:.0f} | | 1.00 | | | {xbase / d:.2f} |")
    rec.note(f"| bpf-forward, XDP | - | {fx1:.0f} | {fxn:.0f} | {fx1 / xbase:.2f} | 1.00 | 1.00 | {fx1 / d:.2f} |")
    for entries in (small, large):
        a, b = t["xdp_decap", 1, entries], t["xdp_decap", N, entries]
        rec.note(f"| XDP ETR decapsulation (lisp_etr_xdp) | {entries:,} | {a:.0f} | {b:.0f} | {a / xbase:.2f} | "
                 f"{a / fx1:.2f} | {b / fxn:.2f} | {a / t['decap', 1, entries]:.2f} |")
    for entries in (small, large):
        a, b = t["xdp_encap", 1, entries], t["xdp_encap", N, entries]
        rec.note(f"| XDP ITR encapsulation (lisp_itr_xdp) | {entries:,} | {a:.0f} | {b:.0f} | {a / xbase:.2f} | "
                 f"- | - | {a / t['encap', 1, entries]:.2f} |")


def _report(rec, t: dict[tuple[str, int, int], float], w: dict[tuple[str, int, int], float],
            large: int) -> None:
    small, N = SMALL_MAP_CACHE, FLOWS
    _figures(rec, t, large, "")
    if w:
        _figures(rec, w, large, "_warm")

    if QUICK:
        rec.note(f"**Quick run (LISPCTL_BENCH_QUICK): {RUNS:,} runs per figure, not for the record.**")
        rec.note("")
    rec.note(f"BPF_PROG_TEST_RUN, mean of {RUNS:,} single runs each (a fresh skb per run; the "
             "kernel's timer overhead is in every figure, trivial program included), 64-byte UDP "
             "payload, IPv4 in IPv4; includes FIB lookup and redirect. **1 flow**: the same packet every "
             f"run. **{N:,} flows**: each run the next of {N:,} packets, each to its own "
             "destination: for the ITR its own map-cache entry, spread over the table; for the ETR and "
             f"bpf-forward its own neighbour behind the EID interface. Map-cache of {small:,} entries and "
             f"of {large:,} (the rest /24s of 20.0.0.0/8 and 21.0.0.0/8)."
             + ("" if large >= LARGE_MAP_CACHE else
                f" {LARGE_MAP_CACHE:,} entries were asked for; the loaded data plane holds {large:,} "
                "(`Datapath.capacity`: LISP_MAX_MAPPINGS in bpf/lisp_maps.h, one locator set id per "
                "mapping), so the large table is filled to capacity."))
    rec.note("")
    rec.note("Every program is measured two ways, on the same packets. **Cold-ish** (the first tables): "
             "the runs are driven one by one from Python, and between two runs the interpreter touches "
             "much memory, so the maps, flow and next-hop cache slots and neighbours a program reads may "
             "have left the CPU's caches by its next run, even with 1 flow, while the trivial program "
             "reads nothing: these ratios to trivial overstate a busy router's cost. **Warm path** (the "
             "tables so named): the same single runs back to back from a small C driver "
             "(controller/lispctl/bench/warmrun.c, compiled at bench time), pinned to one CPU, after an "
             "untimed pass over the packets: what a program costs when its working set stays in cache, "
             "as on a router forwarding steadily; trivial and bpf-forward are measured the same way, so "
             "its ratios compare like with like."
             + ("" if w else " **No C compiler (cc) was found: the warm-path tables are left out.**"))
    rec.note("")
    rec.note("**bpf-forward** (bpf/bench_forward.c, benchmark only) does what any BPF router must: "
             "`bpf_fib_lookup`, new MACs, TTL - 1, `bpf_redirect`; no map, no encapsulation. It runs on "
             "the same packets without LISP (the ITR's input; the ETR's output, arriving on rl0); for "
             "the ITR's packets the kernel FIB holds the map-cache's prefixes as routes (like for like: "
             "a router forwarding to as many destinations), for the ETR's the EID interface's neighbours. "
             "Program x bpf-forward is what encapsulation or decapsulation and the LISP lookups add "
             "to the cheapest forwarding by redirect.")
    rec.note("")
    _cold_and_warm(rec, "tc", _tc_table, t, w, large)
    rec.note("")
    rec.note("XDP on the same frames (ingress rl0, redirect target eid0, as for a NIC): the XDP ETR on "
             "the LISP packets, bpf-forward (XDP) on the same packets without LISP; and the XDP ITR on the "
             "tc ITR's packets (ingress eid0, redirect target rl0; its last column: x tc ITR).")
    rec.note("")
    _cold_and_warm(rec, "XDP", _xdp_table, t, w, large)
    rec.note("")
    rec.note("Bound: these figures are the programs' own cost; the generator is the kernel's test-run loop, "
             "whose fixed cost is the trivial program's row, so every row is data-path-bound. Cold-ish "
             f"figures: with {N:,} flows each entry is reused only every {N:,} runs, so they are close to "
             "cold-cache costs (map-cache trie nodes, locator sets, neighbours); the 1-flow figures are "
             "partly cold too (see above). The warm path is the lower end: every figure there is with "
             "caches hot. The ETR never reads the map-cache: its rows at the two sizes differ by noise "
             "only. Test runs measure the program only: the XDP figure leaves out the skb allocation and "
             "GRO that a real NIC's tc path pays before the tc ETR runs, so on hardware the difference is "
             "larger than this ratio.")

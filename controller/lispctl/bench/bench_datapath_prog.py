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

The machine's speed drifts (+-30% between adjacent measurements on a shared
VM), so no row is measured in one go: after the set-up of a map-cache size,
ROUNDS rounds each measure every row of that size once (trivial and
bpf-forward included), in an order of its own each round. A row's figure is
its median over the rounds; a ratio is taken per round (both rows of the same
round) and reported as the median of those, with their min-max. A round
makes a warm pass over its rows, then a cold one, all on one CPU; its warm
figure is the median of the means of blocks of 100 runs, its cold one the
mean of its runs (_report's notes say why).

LISPCTL_BENCH_QUICK=1: 3 rounds of 1,000 runs (for developing the bench).
"""
from __future__ import annotations

import contextlib
import ipaddress
import math
import os
import random
import shutil
import statistics
import struct
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

from lispctl.bench.rounds import Stat, cpu_times

SECTION = "Data plane programs (BPF_PROG_TEST_RUN)"
QUICK = os.environ.get("LISPCTL_BENCH_QUICK", "") not in ("", "0")
# 7 x 6,000 runs a row and size: about the 50,000 runs of one row of earlier
# runs, with trivial and bpf-forward now measured in both sizes' rounds.
ROUNDS = 3 if QUICK else 7
RUNS = 1_000 if QUICK else 6_000      # single runs of a row in one round
FLOWS = 1_000
SMALL_MAP_CACHE, LARGE_MAP_CACHE = 1_001, 100_000
RLOC_PEER, RLOC_LOCAL = "192.0.2.2", "192.0.2.1"
SITE_HOST = "10.1.0.10"          # the one-flow ETR destination
REMOTE_HOST = "10.2.0.5"         # the one-flow ITR destination (in 10.2.0.0/16)

Row = tuple[str, int]            # (program, flows)
PROGS = ("bpf_forward_tc_in", "bpf_forward_xdp_in", "bpf_forward_tc_out",
         "encap", "decap", "xdp_decap", "xdp_encap")
ROWS: list[Row] = [("trivial_tc", 1), ("trivial_xdp", 1)] + [(p, n) for n in (1, FLOWS) for p in PROGS]
# Rows that read no map-cache: measured in both sizes' rounds (so every ratio
# compares rows of the same rounds), their figures named after the small one's.
SIZE_FREE = ("trivial_tc", "trivial_xdp", "bpf_forward_tc_in", "bpf_forward_xdp_in")


# -- rounds, medians, ratios (pure) -------------------------------------------------
def orders(rows: Sequence[Row], rounds: int) -> Iterator[list[Row]]:
    """Each round's measuring order: every row once, each round in an order
    of its own (shuffled with the round's number as seed: the same on every
    run), so no row always runs right after the same other one and drift
    within a round does not always favour the same rows."""
    for r in range(rounds):
        order = list(rows)
        random.Random(r).shuffle(order)
        yield order


def take(rows: Sequence[Row], rounds: int,
         passes: Sequence[Callable[[Row], Mapping[str, float]]]) -> dict[str, dict[Row, list[float]]]:
    """Samples of every row in `rounds` interleaved rounds: way -> row -> one
    value a round, indexed by round. A round makes one pass over its rows per
    way of driving (a pass(row) gives its values by name, e.g. the warm
    figure and the means beside it), so the rows one ratio compares were
    measured close together in time."""
    out: dict[str, dict[Row, list[float]]] = {}
    for r, order in enumerate(orders(rows, rounds)):
        for measure in passes:
            for row in order:
                for way, v in measure(row).items():
                    out.setdefault(way, {}).setdefault(row, [math.nan] * rounds)[r] = v
    return out


def stat(values: Sequence[float]) -> Stat:
    """Median and min-max over the rounds."""
    if not values or any(math.isnan(v) for v in values):
        raise ValueError("a round without a sample")
    return Stat(statistics.median(values), min(values), max(values))


def ratio(a: Sequence[float], b: Sequence[float]) -> Stat:
    """a / b round by round (both rows measured in the same rounds, index =
    round), then the median and min-max of those ratios: drift between rounds
    cancels, where a ratio of medians would divide samples of different
    moments."""
    if len(a) != len(b):
        raise ValueError("rows of different rounds")
    return stat([x / max(y, 1.0) for x, y in zip(a, b, strict=True)])


class Table:
    """One way of driving (cold-ish or warm): per map-cache size, per row, one
    value a round."""

    def __init__(self, by_size: Mapping[int, Mapping[Row, Sequence[float]]]) -> None:
        self.by_size = by_size

    def ns(self, row: Row, entries: int) -> Stat:
        return stat(self.by_size[entries][row])

    def x(self, row: Row, ref: Row, entries: int) -> Stat:
        """row / ref, both of the rounds of map-cache size `entries`."""
        return ratio(self.by_size[entries][row], self.by_size[entries][ref])


# -- measuring -----------------------------------------------------------------------
def _mean_ns(fd: int, frames: list[bytes], ctx=None) -> float:
    """Mean in-kernel duration of RUNS single runs, cycling over `frames`.
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
    """The two ways of driving a row for one round: cold() (the Python loop:
    "cold", the mean of its runs) and, when a C compiler was found, warm()
    (warmrun.c: "warm", the median of the means of blocks of 100 runs;
    "warm_mean" and "warm_median", the mean and median of single runs, only
    for the notes)."""

    def __init__(self, workdir: Path) -> None:
        from lispctl.bench import warmrun
        self.workdir = workdir
        self.exe = warmrun.build(workdir)

    @staticmethod
    def cold(name: str, fd: int, frames: list[bytes], ctx, retval: int) -> dict[str, float]:
        return {"cold": _mean_ns(fd, frames, ctx)}

    def warm(self, name: str, fd: int, frames: list[bytes], ctx, retval: int) -> dict[str, float]:
        from lispctl.bench import warmrun
        assert self.exe is not None
        ctxs = [ctx(f) if callable(ctx) else ctx for f in frames]
        r = warmrun.run(self.exe, fd, frames, ctxs, RUNS, self.workdir)
        if set(r.retvals) != {retval}:
            raise RuntimeError(f"warm path: {name} returned {r.retvals}, expected {retval} every run")
        if r.median_ns is None or r.block_median_ns is None:
            raise RuntimeError("warmrun printed no medians")
        return {"warm": r.block_median_ns, "warm_mean": r.mean_ns, "warm_median": float(r.median_ns)}


class _Others:
    """The CPU time others used while we measured (`with` around each
    measuring phase): the machine's busy time (/proc/stat, all CPUs; time the
    hypervisor took counts as busy) less our own and our children's."""

    def __init__(self) -> None:
        self.busy = self.total = 0.0

    @staticmethod
    def _own() -> float:
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system

    def __enter__(self) -> _Others:
        self._start = (*cpu_times(), self._own())
        return self

    def __exit__(self, *exc) -> None:
        b0, t0, o0 = self._start
        b1, t1 = cpu_times()
        self.busy += (b1 - b0) - (self._own() - o0) * os.sysconf("SC_CLK_TCK")
        self.total += t1 - t0

    @property
    def share(self) -> float:
        """Of all CPUs' time while measuring, 0..1."""
        return min(1.0, max(0.0, self.busy / self.total)) if self.total else 0.0


@contextlib.contextmanager
def _pinned(cpu: int | None = None) -> Iterator[int]:
    """The process (and the warm path's drivers it starts) on `cpu` (None:
    the one it runs on), restored after: every row of every round then meets the same per-CPU maps (the
    ITR's flow cache is per CPU), caches and interrupt load, and a ratio
    never compares rows that ran on different CPUs."""
    before = os.sched_getaffinity(0)
    if cpu is None:
        cpu = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[36])   # field 39: processor
    os.sched_setaffinity(0, {cpu})
    try:
        yield cpu
    finally:
        os.sched_setaffinity(0, before)


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
    # way of driving -> map-cache entries -> row -> ns/packet, one a round
    samples: dict[str, dict[int, dict[Row, list[float]]]] = {}
    t0 = time.monotonic()
    others, cpu = _Others(), None
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
                    TR, XR = TC_ACT_REDIRECT, XDP_REDIRECT
                    # row -> (program fd, packets, context, the verdict every run must give)
                    spec: dict[Row, tuple] = {("trivial_tc", 1): (trivial, fr.itr1, None, 0),
                                              ("trivial_xdp", 1): (trivial_xdp, fr.fwd_in1, xctx, XDP_PASS)}
                    for n, fl in ((1, "1"), (FLOWS, "n")):
                        ip, ep, fp = (getattr(fr, f"{k}{fl}") for k in ("itr", "etr", "fwd_in"))
                        spec |= {("bpf_forward_tc_in", n): (progs.tc, fp, None, TR),
                                 ("bpf_forward_xdp_in", n): (progs.xdp, fp, xctx, XR),
                                 ("bpf_forward_tc_out", n): (progs.tc, ip, None, TR),
                                 ("encap", n): (itr, ip, None, TR),
                                 ("decap", n): (etr, ep, None, TR),
                                 ("xdp_decap", n): (xetr, ep, xctx, XR),
                                 ("xdp_encap", n): (xitr, ip, ectx, XR)}
                    print(f"  map-cache {entries:,} entries: {ROUNDS} rounds of {len(ROWS)} rows")
                    ways = [m.cold] if m.exe is None else [m.warm, m.cold]
                    passes = [lambda row, way=way: way(row[0], *spec[row]) for way in ways]
                    with _pinned(cpu) as cpu, others:     # both sizes on the first one's CPU
                        got = take(ROWS, ROUNDS, passes)
                    for way, rows in got.items():
                        samples.setdefault(way, {})[entries] = rows
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
    _report(rec, {way: Table(v) for way, v in samples.items()}, large, time.monotonic() - t0, others.share, cpu)


def _flows(n: int) -> str:
    return "1flow" if n == 1 else f"{n}flows"


REF = {"encap": "bpf_forward_tc_out", "decap": "bpf_forward_tc_in", "xdp_decap": "bpf_forward_xdp_in"}
# The ratios of the table (x the trivial program, x the tc program),
# one flow, small map-cache: recorded with their min-max over the rounds.
HEADLINE = (("encap_vs_trivial", "encap", "trivial_tc"), ("decap_vs_trivial", "decap", "trivial_tc"),
            ("xdp_decap_vs_trivial_xdp", "xdp_decap", "trivial_xdp"), ("xdp_decap_vs_tc_decap", "xdp_decap", "decap"),
            ("xdp_encap_vs_trivial_xdp", "xdp_encap", "trivial_xdp"), ("xdp_encap_vs_tc_encap", "xdp_encap", "encap"))


def _figures(rec, t: Table, large: int, sfx: str) -> None:
    """The figures of one way of driving (sfx "": cold, the names of earlier
    runs; "_warm": the warm path): medians over the rounds, ratios the median
    of the per-round ratios."""
    small, N = SMALL_MAP_CACHE, FLOWS
    for prog in ("trivial_tc", "encap", "decap", "trivial_xdp", "xdp_decap"):
        rec.figure(f"datapath_{prog}{sfx}_ns_per_pkt", t.ns((prog, 1), small).median)
    for key, a, b in HEADLINE:
        st = t.x((a, 1), (b, 1), small)
        rec.figure(f"datapath_{key}{sfx}_ratio", st.median)
        rec.figure(f"datapath_{key}{sfx}_ratio_min", st.lo)
        rec.figure(f"datapath_{key}{sfx}_ratio_max", st.hi)
    for entries in (small, large):
        for prog, n in ROWS:
            if prog.startswith("trivial") or (prog in SIZE_FREE and entries != small):
                continue
            name = f"datapath_{prog}_{_flows(n)}" + ("" if prog in SIZE_FREE else f"_{entries}entries")
            rec.figure(f"{name}{sfx}_ns_per_pkt", t.ns((prog, n), entries).median)
    for prog, r in REF.items():
        for n in (1, N):
            for entries in (small, large):
                rec.figure(f"datapath_{prog}_vs_bpf_forward_{_flows(n)}_{entries}entries{sfx}_ratio",
                           t.x((prog, n), (r, n), entries).median)


def _ns(st: Stat) -> str:
    return f"{st.median:.0f} ({st.lo:.0f}-{st.hi:.0f})"


def _x(st: Stat) -> str:
    return f"{st.median:.2f} ({st.lo:.2f}-{st.hi:.2f})"


def _cold_and_warm(rec, kind: str, table, tables: Mapping[str, Table], large: int) -> None:
    """A kind's table driven from Python, then (when the C driver ran) the same from it."""
    rec.note(f"{kind}, cold-ish (driven from Python; mean of each round's runs):")
    rec.note("")
    table(rec, tables["cold"], large)
    if "warm" in tables:
        rec.note("")
        rec.note(f"{kind}, warm path (C driver, back to back; median of each round's blocks of 100 runs):")
        rec.note("")
        table(rec, tables["warm"], large)


def _tc_table(rec, t: Table, large: int) -> None:
    N, triv = FLOWS, ("trivial_tc", 1)
    rec.note(f"| program | map-cache | ns/packet, 1 flow | ns/packet, {N:,} flows | x trivial tc (1 flow) "
             f"| x bpf-forward (1 flow) | x bpf-forward ({N:,} flows) |")
    rec.note("|---|---:|---:|---:|---:|---:|---:|")
    for entries in (SMALL_MAP_CACHE, large):
        def ns(prog: str, n: int) -> str:
            return _ns(t.ns((prog, n), entries))
        rec.note(f"| trivial (return TC_ACT_OK) | {entries:,} | {ns('trivial_tc', 1)} | | 1.00 | | |")
        for label, r in (("bpf-forward, tc (the ITR's packets; the map-cache's prefixes as FIB routes)",
                          "bpf_forward_tc_out"),
                         ("bpf-forward, tc (the ETR's packets without LISP)", "bpf_forward_tc_in")):
            rec.note(f"| {label} | {entries:,} | {ns(r, 1)} | {ns(r, N)} | {_x(t.x((r, 1), triv, entries))} | | |")
        for label, prog in (("ITR encapsulation (lisp_itr_ingress)", "encap"),
                            ("ETR decapsulation (lisp_etr_ingress)", "decap")):
            r = REF[prog]
            rec.note(f"| {label} | {entries:,} | {ns(prog, 1)} | {ns(prog, N)} | "
                     f"{_x(t.x((prog, 1), triv, entries))} | {_x(t.x((prog, 1), (r, 1), entries))} | "
                     f"{_x(t.x((prog, N), (r, N), entries))} |")


def _xdp_table(rec, t: Table, large: int) -> None:
    N, triv, fwd = FLOWS, ("trivial_xdp", 1), "bpf_forward_xdp_in"
    rec.note(f"| program | map-cache | ns/packet, 1 flow | ns/packet, {N:,} flows | x trivial XDP (1 flow) "
             f"| x bpf-forward XDP (1 flow) | x bpf-forward XDP ({N:,} flows) | x tc ETR (1 flow) |")
    rec.note("|---|---:|---:|---:|---:|---:|---:|---:|")
    for entries in (SMALL_MAP_CACHE, large):
        def ns(prog: str, n: int) -> str:
            return _ns(t.ns((prog, n), entries))

        def x(a: str, b: str, n: int = 1) -> str:
            return _x(t.x((a, n), (b, n), entries))
        rec.note(f"| trivial (return XDP_PASS) | {entries:,} | {ns('trivial_xdp', 1)} | | 1.00 | | | "
                 f"{x('trivial_xdp', 'decap')} |")
        rec.note(f"| bpf-forward, XDP | {entries:,} | {ns(fwd, 1)} | {ns(fwd, N)} | {_x(t.x((fwd, 1), triv, entries))} "
                 f"| | | {x(fwd, 'decap')} |")
        rec.note(f"| XDP ETR decapsulation (lisp_etr_xdp) | {entries:,} | {ns('xdp_decap', 1)} | "
                 f"{ns('xdp_decap', N)} | {_x(t.x(('xdp_decap', 1), triv, entries))} | {x('xdp_decap', fwd)} | "
                 f"{x('xdp_decap', fwd, N)} | {x('xdp_decap', 'decap')} |")
        rec.note(f"| XDP ITR encapsulation (lisp_itr_xdp) | {entries:,} | {ns('xdp_encap', 1)} | "
                 f"{ns('xdp_encap', N)} | {_x(t.x(('xdp_encap', 1), triv, entries))} | - | - | "
                 f"{x('xdp_encap', 'encap')} |")


def _report(rec, tables: Mapping[str, Table], large: int, seconds: float, others: float,
            cpu: int | None) -> None:
    small, N = SMALL_MAP_CACHE, FLOWS
    _figures(rec, tables["cold"], large, "")
    if "warm" in tables:
        _figures(rec, tables["warm"], large, "_warm")

    if QUICK:
        rec.note(f"**Quick run (LISPCTL_BENCH_QUICK): {ROUNDS} rounds of {RUNS:,} runs, not for the record.**")
        rec.note("")
    rec.note(f"BPF_PROG_TEST_RUN, single runs (a fresh skb per run; the kernel's timer overhead is in every "
             "figure, trivial program included), 64-byte UDP payload, IPv4 in IPv4; includes FIB lookup and "
             "redirect, into veths whose peers are in the same namespace, as into a NIC: no hand-over to a "
             "veth peer, which the throughput lab's xTRs do (a handed-over ITR packet takes "
             "`bpf_skb_adjust_room`, ~60 ns more than the push measured here, and skips the veth's transmit "
             f"and backlog, ~0.5 us there: docs/datapath.md). **1 flow**: the same packet every run. **{N:,} flows**: each run the next of {N:,} "
             "packets, each to its own destination: for the ITR its own map-cache entry, spread over the table; "
             f"for the ETR and bpf-forward its own neighbour behind the EID interface. Map-cache of {small:,} "
             f"entries and of {large:,} (the rest /24s of 20.0.0.0/8 and 21.0.0.0/8)."
             + ("" if large >= LARGE_MAP_CACHE else
                f" {LARGE_MAP_CACHE:,} entries were asked for; the loaded data plane holds {large:,} "
                "(`Datapath.capacity`: LISP_MAX_MAPPINGS in bpf/lisp_maps.h, one locator set id per "
                "mapping), so the large table is filled to capacity."))
    rec.note("")
    rec.note(f"**Interleaved rounds.** This VM's speed drifts by up to +-30% between adjacent measurements, "
             "so a row measured once, in sequence, would carry the moment it landed in. After the set-up of "
             f"each map-cache size, {ROUNDS} rounds each measure every row of that size once ({RUNS:,} single "
             "runs), trivial and bpf-forward included, each round in an order of its own (a shuffle seeded by "
             "the round's number): a pass over the rows on the warm path, then one driven from Python, so "
             "the rows a ratio compares ran within a second or two of each other, all on one CPU "
             f"(CPU {cpu}: the same per-CPU maps, caches and interrupts for every row). A row's ns figure is its median over the rounds, with the min-max in "
             "brackets; every ratio is taken round by round (both rows of the same round, so drift between "
             "rounds cancels) and given as the median of those per-round ratios, with their min-max. Rows "
             "that read no map-cache (trivial, bpf-forward on the ETR's packets) are measured again in the "
             "rounds of each size, so no ratio divides rows of different rounds; their keys in "
             "build/bench.json are the small size's. "
             f"This run took {seconds:.0f} s, set-up of {large:,} mappings and routes included. While it "
             f"measured, others used {others:.0%} of the machine's CPU time (other processes, and time the "
             "hypervisor took)"
             + (": ratios within rounds hold up under such load better than the ns figures, which it raises."
                if others > 0.10 else "."))
    rec.note("")
    compare = ""
    if "warm_mean" in tables and "warm_median" in tables:
        def itr(way: str) -> str:
            return _x(tables[way].x(("encap", 1), ("trivial_tc", 1), small))
        compare = (" For comparison, this run's warm ITR x trivial tc (1 flow) from the block medians: "
                   f"{itr('warm')}; from the means of single runs: {itr('warm_mean')}; from the medians of "
                   f"single runs: {itr('warm_median')}.")
    rec.note("Every program is measured two ways, on the same packets. **Cold-ish** (the first tables): "
             "the runs are driven one by one from Python, and between two runs the interpreter touches "
             "much memory, so the maps, flow and next-hop cache slots and neighbours a program reads may "
             "have left the CPU's caches by its next run, even with 1 flow, while the trivial program "
             "reads nothing: these ratios to trivial overstate a busy router's cost. A round's cold figure "
             "is the **mean** of its runs: the cache misses are the program's own cost, spread over many "
             "runs (with 1,000 flows, most), which a median could drop, and the timed part is a small share "
             "of each Python iteration, so an interrupt or preemption rarely lands in it (a round it spoils "
             "is outvoted by the median over rounds). **Warm path** (the tables so named): the same single "
             "runs back to back from a small C driver (controller/lispctl/bench/warmrun.c, compiled at bench "
             "time), pinned to one CPU, after an untimed pass over the packets: what a program costs when its "
             "working set stays in cache, as on a router forwarding steadily. A round's warm figure is the "
             "**median of the means of blocks of 100 consecutive runs**, neither the mean nor the median of "
             "single runs: back to back, the timed part is most of the loop, and whatever lands in a run "
             "counts in it (the kernel disables only migration around a test run): a timer or device "
             "interrupt, or the hypervisor taking the virtual CPU away, microseconds to tens of microseconds "
             "(one run of 28 us among 6,000 adds 5 ns to a trivial program's mean of 70); a median of single "
             "runs drops those, but the kernel's durations come in steps of the clock (10 ns on this VM: a "
             "trivial tc run reads 60, 70 or 80 ns), so it moves by whole steps, 14% of the trivial program. "
             "A block's mean resolves below a step (runs fall at every phase of the clock) and the median "
             "over a round's blocks drops the few an interrupt fell in. Trivial and bpf-forward are measured "
             "the same way in the same rounds, so the warm ratios compare like with like." + compare
             + ("" if "warm" in tables else " **No C compiler (cc) was found: the warm-path tables are left out.**"))
    rec.note("")
    rec.note("**bpf-forward** (bpf/bench_forward.c, benchmark only) does what any BPF router must: "
             "`bpf_fib_lookup`, new MACs, TTL - 1, `bpf_redirect`; no map, no encapsulation. It runs on "
             "the same packets without LISP (the ITR's input; the ETR's output, arriving on rl0); for "
             "the ITR's packets the kernel FIB holds the map-cache's prefixes as routes (like for like: "
             "a router forwarding to as many destinations), for the ETR's the EID interface's neighbours. "
             "Program x bpf-forward is what encapsulation or decapsulation and the LISP lookups add "
             "to the cheapest forwarding by redirect.")
    rec.note("")
    _cold_and_warm(rec, "tc", _tc_table, tables, large)
    rec.note("")
    rec.note("XDP on the same frames (ingress rl0, redirect target eid0, as for a NIC): the XDP ETR on "
             "the LISP packets, bpf-forward (XDP) on the same packets without LISP; and the XDP ITR on the "
             "tc ITR's packets (ingress eid0, redirect target rl0; its last column: x tc ITR).")
    rec.note("")
    _cold_and_warm(rec, "XDP", _xdp_table, tables, large)
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

"""Data-plane throughput in the netns lab: LISP against the method's ceiling
(bpf-forward), the kernel's VXLAN and plain routing, and the generator's own
ceiling; the LISP and bpf-forward modes both with tc and with XDP on the xTRs.

Same topology (hostA - xtr1 - router - xtr2 - hostB), same host settings
(the XDP modes: see below), one lab per mode, all built at the start of the
run and measured interleaved:
  plain        EID routes added to the underlay (ordinary forwarding, no tunnel)
  vxlan        kernel VXLAN between xtr1 and xtr2 over the IPv4 RLOCs
  lisp         the eBPF xTRs with static mappings over the IPv4 RLOCs; eid-mode
               and rloc-mode "auto", which is tc on veth; rloc-checksum
               "offload" (the lab's: both ETRs are lispctl's, so the RLOC
               veths keep their offloads and TSO super-packets cross whole)
  lisp-xdp     the same with eid-mode = rloc-mode = "xdp" (XDP ITR and XDP ETR
               in front of tc on both xTRs) and --xdp-redirect
  bpf-forward  plain's routes, and on both xTRs' interfaces a tc program that
               only does bpf_fib_lookup + redirect (bpf/bench_forward.c): the
               ceiling of forwarding by redirect, without encapsulation; like
               the LISP programs it hands packets to a veth peer that qualifies
               (bpf_redirect_peer, docs/datapath.md)
  bpf-forward-xdp  the same program's XDP variant as the xTRs' XDP programs
  sink         the generators alone: TCP from hostA to xtr1 (one hop, the
               endpoints' ceiling), UDP into a tc program on xtr1 that drops
               every packet (the generator's ceiling)

The XDP modes need of the xTRs' veth peers what a NIC gives XDP for free:
a veth takes an XDP-redirected frame only when its peer runs XDP or has GRO
on (GRO on: hostA's and hostB's eth0, the router's r1 and r2), and XDP cannot
see a veth skb's CHECKSUM_PARTIAL, which a redirected frame loses, so the
same peers send complete checksums (tx checksum offload off: the hosts' TCP,
and the router's, which forwards GRO-merged TCP in bpf-forward-xdp; with it
goes TSO, which XDP on the peer turns off anyway: TCP crosses as MTU-sized
frames).
Figures: TCP Gbit/s (iperf3 -P 2, IPv4 and IPv6 EIDs) and 64-byte UDP
packets/s delivered to hostB (trafgen on one core in hostA; the rate is read
from hostB's interface counters over a window after warm-up), to one
destination and to MULTI_DSTS destinations that each hit their own map-cache
entry (of MAP_CACHE_SIZE in the LISP mode).

Why interleaved rounds and pinned CPUs: on 2 cores a single 3 s TCP sample
swings by up to 2x between runs of the same mode, mostly with where the
scheduler puts the iperf3 client and server (same CPU: about half the
rate of split CPUs, in every mode). So the iperf3 client and server are
pinned the same way in every mode (taskset), each figure is the median of
ROUNDS samples taken in rotating mode order, so drift over the run hits all
modes alike, and the min-max range is reported with it. Ratios are of medians.

Hosts and xTRs keep the kernel's default offloads (TSO/GSO on veth), so TCP
crosses as 64 KB super-packets in every mode (underlay packet counters show
~45 KB average packets for both LISP and VXLAN).

On veth the forwarding work of every hop runs in softirq context on the
sender's CPU (netif_rx, then the softirq on leaving the send call), so
trafgen's send rate *is* the rate of the whole chain, and sent = delivered
means nothing was lost on the way. Whether a figure is the data path's or the
generator's limit is read off the sink: a mode well below the sink's rate is
data-path-bound. Compare modes by ratio, never by absolute numbers across
machines.

LISPCTL_BENCH_QUICK=1: one round of 1 s samples (for developing the bench;
its figures are not for the record).
"""
from __future__ import annotations

import contextlib
import json
import os
import time
from typing import Callable

from lispctl.lab import Lab, load
from lispctl.lab import dataplane as dp
from lispctl.lab import nsexec
from lispctl.lab.references import setup_plain, setup_vxlan
from lispctl.lab.traffic import iperf3, iperf3_gbps, link_stats, mac_of, ping_here, trafgen_config

from . import Recorder
from . import forwarder as fw
from . import rounds as rd
from .trafgen import UDP_CPU, udp_rates

SECTION = "Data-plane throughput (netns lab)"
QUICK = os.environ.get("LISPCTL_BENCH_QUICK", "") not in ("", "0")
TCP_SECONDS = 1 if QUICK else 3
ROUNDS = 1 if QUICK else 3
UDP_WARMUP, UDP_WINDOW = (0.5, 1.0) if QUICK else (1.0, 2.0)
# iperf3 (client CPU, server CPU): "split" is the usual case on an idle
# 2-core box; "same" makes one CPU carry sender, every hop and receiver.
PLACEMENTS = {"split": (0, 1), "same": (1, 1)}
# Multi-flow UDP: destinations 10.2.0.128-254 (hostB accepts the /25 as
# local, xtr2 has a permanent neighbour for each), source ports 1024-2047,
# both stepping per packet: 130,048 distinct flows, MULTI_DSTS destination EIDs.
MULTI_NET, MULTI_FIRST, MULTI_LAST = "10.2.0.128/25", 128, 254
MULTI_DSTS = MULTI_LAST - MULTI_FIRST + 1
# LISP map-cache on each xTR: the peer's EID prefixes, a /32 per multi-flow
# destination (on xtr1) and unrelated /24s up to this many entries.
MAP_CACHE_SIZE = 1001
XTR_IFS = ("eid0", "rloc0")
SINK_IFS = ("eid0",)
# The BPF modes must forward by redirect: a larger share through an xTR's IP
# stack means the mode measured something else, and the run fails.
STACK_SHARE_MAX = 0.01


# The XDP modes' veth peers: GRO on, and tx checksum offload off (see the docstring).
XDP_PEERS = (("hostA", "eth0"), ("router", "r1"), ("router", "r2"), ("hostB", "eth0"))
XDP_PEER_FEATURES = {"rx-gro": True, "tx-checksum-ip-generic": False}
# lisp-xdp, as a user configures it (the static runner's flags for the daemon's
# interfaces.eid-mode / rloc-mode), plus redirects into the lab's veths
XDP_ARGS = ("--eid-mode", "xdp", "--rloc-mode", "xdp", "--xdp-redirect")
# A lisp-xdp sample whose packets the XDP programs did not mostly handle
# (encapsulated by the XDP ITR, decapsulated and redirected by the XDP ETR)
# measured the tc programs instead, and fails the run.
XDP_SHARE_MIN = 0.9


def setup_xdp_peers(lab: Lab) -> None:
    for node, ifname in XDP_PEERS:
        got = lab.call(node, nsexec.set_features, ifname, XDP_PEER_FEATURES)
        if got != XDP_PEER_FEATURES:
            raise RuntimeError(f"{node} {ifname}: features {got}, wanted {XDP_PEER_FEATURES}")


def setup_bpf_forward(lab: Lab, xdp: bool = False) -> None:
    setup_plain(lab)
    if xdp:
        setup_xdp_peers(lab)
    for x in ("xtr1", "xtr2"):
        fw.attach(lab, x, fw.XDP_FORWARD if xdp else fw.TC_FORWARD, XTR_IFS)


def lisp_mappings(lab: Lab, xtr: str) -> list[tuple[str, int]]:
    m = dp.prefix_mappings(lab, xtr, 4)
    if xtr == "xtr1":
        m += [(f"10.2.0.{d}/32", 4) for d in range(MULTI_FIRST, MULTI_LAST + 1)]
    fill = MAP_CACHE_SIZE - len(m)
    # 20.0.0.0/8 in /24s: nothing in the lab routes or uses them
    return m + [(f"20.{i // 256}.{i % 256}.0/24", 4) for i in range(fill)]


def setup_lisp(lab: Lab, xdp: bool = False) -> None:
    if xdp:
        setup_xdp_peers(lab)
    files = {}
    for xtr in ("xtr1", "xtr2"):
        path = lab.rundir / f"{xtr}-bench-static.json"
        path.write_text(json.dumps(dp.static_config(lab, xtr, lisp_mappings(lab, xtr)), indent=1))
        files[xtr] = path
    for xtr, path in files.items():   # both compile at once
        lab.start_declared(xtr, "datapath", wait=False, more_argv=XDP_ARGS if xdp else (),
                           static=str(path), iid="0")
    for xtr in files:
        lab.wait_ready(xtr, "datapath")


def xdp_programs_here(ifnames: tuple[str, ...]) -> dict[str, str]:
    """In the caller's namespace: the name of each interface's XDP program ('' for none)."""
    from lispctl.datapath.attach import prog_name_of_id, xdp_program_id
    return {i: prog_name_of_id(pid) if (pid := xdp_program_id(i)) else "" for i in ifnames}


# mode -> the XDP programs its xTRs' interfaces must run
XDP_PROGRAMS = {"lisp-xdp": {"eid0": "lisp_itr_xdp", "rloc0": "lisp_etr_xdp"},
                "bpf-forward-xdp": {"eid0": fw.XDP_FORWARD, "rloc0": fw.XDP_FORWARD}}

MODES: dict[str, Callable[[Lab], object]] = {
    "plain": setup_plain,
    "vxlan": lambda lab: setup_vxlan(lab, 4),
    "lisp": setup_lisp,
    "lisp-xdp": lambda lab: setup_lisp(lab, xdp=True),
    "bpf-forward": setup_bpf_forward,
    "bpf-forward-xdp": lambda lab: setup_bpf_forward(lab, xdp=True),
    "sink": lambda lab: None,
}
BPF_MODES = ("lisp", "lisp-xdp", "bpf-forward", "bpf-forward-xdp")
REFS = ("bpf-forward", "plain", "vxlan")
# (a, b) of the ratio table beyond LISP / each of REFS
MORE_RATIOS = (("bpf-forward", "plain"), ("lisp-xdp", "plain"), ("lisp-xdp", "bpf-forward-xdp"),
               ("lisp-xdp", "lisp"), ("bpf-forward-xdp", "plain"), ("bpf-forward-xdp", "bpf-forward"))
NAMES = {"lisp": "LISP", "lisp-xdp": "LISP-XDP"}
# figure -> (EID family, placement); placement "udp"/"udp-multi": the UDP tests
TESTS: dict[str, tuple[int, str]] = {
    "tcp4_gbit_per_s": (4, "split"),
    "tcp6_gbit_per_s": (6, "split"),
    "tcp4_same_cpu_gbit_per_s": (4, "same"),
    "udp64_delivered_pps": (4, "udp"),
    "udp64_multi_delivered_pps": (4, "udp-multi"),
}


def multi_trafgen_config(src_mac: str, dst_mac: str, src: str, payload: int = 64) -> str:
    """Like trafgen_config, with the destination's last byte stepping too
    (trafgen recomputes the IPv4 and UDP checksums of changed fields)."""
    return (f"{{ eth(sa={src_mac}, da={dst_mac}), "
            f"ipv4(sa={src}, da=10.2.0.{MULTI_FIRST}, da[3]=dinc({MULTI_FIRST}, {MULTI_LAST}), ttl=64, df), "
            f"udp(sp=dinc(1024, 2047), dp=9), fill(0x42, {payload}) }}\n")


def udp_pps(lab: Lab, payload: int = 64, multi: bool = False) -> tuple[float, float]:
    """(sent, delivered) packets/s of 64-byte UDP from hostA to hostB."""
    cfg = lab.rundir / ("udp64-multi.trafgen" if multi else "udp64.trafgen")
    smac, dmac = mac_of(lab, "hostA", "eth0"), mac_of(lab, "xtr1", "eid0")
    cfg.write_text(multi_trafgen_config(smac, dmac, lab.addr("hostA"), payload) if multi else
                   trafgen_config(smac, dmac, lab.addr("hostA"), lab.addr("hostB"), payload))
    sent, delivered = udp_rates(lab, "hostA", cfg, (("hostA", "tx_packets"), ("hostB", "rx_packets")),
                                UDP_WARMUP, UDP_WINDOW)
    return sent, delivered


def multi_flow_hosts(lab: Lab) -> None:
    """hostB takes every address of MULTI_NET as its own (a local route),
    and xtr2 knows them all at hostB's MAC (no ARP during the run)."""
    mac = mac_of(lab, "hostB", "eth0")
    with lab.ipr("hostB") as ipr:
        ipr.route("add", dst=MULTI_NET, type="local", table=255, scope=254,  # RT_SCOPE_HOST
                  oif=ipr.link_lookup(ifname="lo")[0])
    with lab.ipr("xtr2") as ipr:
        eid0 = ipr.link_lookup(ifname="eid0")[0]
        for d in range(MULTI_FIRST, MULTI_LAST + 1):
            ipr.neigh("add", dst=f"10.2.0.{d}", lladdr=mac, ifindex=eid0, state=0x80)  # NUD_PERMANENT


def target(lab: Lab, mode: str, v: int) -> tuple[str, str]:
    """(node, address) the TCP tests send to: hostB, or for the sink xtr1 (one hop)."""
    node = "xtr1" if mode == "sink" else "hostB"
    return node, lab.addr(node, v, "eid0" if mode == "sink" else None)


def prepare(lab: Lab, mode: str) -> None:
    MODES[mode](lab)
    for x in ("xtr1", "xtr2") if mode in XDP_PROGRAMS else ():
        got = lab.call(x, xdp_programs_here, XTR_IFS)
        if got != XDP_PROGRAMS[mode]:
            raise RuntimeError(f"{mode}: {x} runs the XDP programs {got}, not {XDP_PROGRAMS[mode]}")
    if mode != "sink":
        multi_flow_hosts(lab)
    for v in (4, 6):  # also fills neighbour caches before timing
        dst = target(lab, mode, v)[1]
        if lab.call("hostA", ping_here, dst, 3, 1.0) == 0:
            raise RuntimeError(f"{mode}: hostA cannot reach {dst}; nothing to measure")
    if mode != "sink":
        dst = f"10.2.0.{MULTI_FIRST}"
        if lab.call("hostA", ping_here, dst, 3, 1.0) == 0:
            raise RuntimeError(f"{mode}: hostA cannot reach {dst} (multi-flow destinations); nothing to measure")


def xdp_work(before: dict[str, dict[str, int]], after: dict[str, dict[str, int]]) -> dict[str, float]:
    """What the XDP programs did of the LISP work between two counter reads
    (per xTR, as dataplane.counters returns them), summed over the xTRs:
    xdp_itr_share: of the packets encapsulated, those the XDP ITR did;
    xdp_etr_share: of those decapsulated, those the XDP ETR did;
    xdp_to_stack_share: of those, the ones it handed to the stack (no
    redirect target, no neighbour) instead of redirecting them."""
    def delta(k: str) -> int:
        return sum(after[x].get(k, 0) - before[x].get(k, 0) for x in after)
    xdp_dec = delta("xdp_decapsulated")
    return {"xdp_itr_share": rd.ratio(delta("xdp_encapsulated"), delta("encapsulated")),
            "xdp_etr_share": rd.ratio(xdp_dec, delta("decapsulated")),
            "xdp_to_stack_share": rd.ratio(delta("xdp_to_stack"), xdp_dec)}


def _lisp_counters(lab: Lab) -> dict[str, dict[str, int]]:
    return {x: dp.counters(lab, x) for x in ("xtr1", "xtr2")}


def _moved(lab: Lab) -> int:
    """Packets hostA and hostB sent so far (the traffic through the xTRs)."""
    return sum(link_stats(lab, h, "eth0")["tx_packets"] for h in ("hostA", "hostB"))


def _xtr_transmitted(lab: Lab) -> int:
    """Packets the xTRs' veths transmitted so far (a packet handed to a veth
    peer is not among them)."""
    return sum(link_stats(lab, x, i)["tx_packets"] for x in ("xtr1", "xtr2") for i in XTR_IFS)


def sample(mode: str, lab: Lab) -> dict[str, float]:
    """One sample of every test in one lab."""
    out: dict[str, float] = {}
    if mode in BPF_MODES:
        stack0, moved0 = sum(fw.stack_forwarded(lab, x) for x in ("xtr1", "xtr2")), _moved(lab)
        tx0 = _xtr_transmitted(lab)
    if mode == "lisp-xdp":
        counters0 = _lisp_counters(lab)
    for key, (v, placement) in TESTS.items():
        if placement.startswith("udp"):
            multi = placement == "udp-multi"
            if mode == "sink":
                fw.attach(lab, "xtr1", fw.TC_DROP, SINK_IFS)
            try:
                out[key.replace("delivered", "sent")], out[key] = udp_pps(lab, multi=multi)
            finally:
                if mode == "sink":
                    fw.detach(lab, "xtr1", fw.TC_DROP, SINK_IFS)
        else:
            node, dst = target(lab, mode, v)
            out[key] = iperf3_gbps(iperf3(lab, "hostA", node, dst, TCP_SECONDS,
                                          parallel=2, cpus=PLACEMENTS[placement]))
    if mode in BPF_MODES:
        stack = sum(fw.stack_forwarded(lab, x) for x in ("xtr1", "xtr2")) - stack0
        moved = _moved(lab) - moved0
        out["stack_share"] = stack / max(moved, 1)
        # each packet leaves two xTRs: through a veth's transmit, or handed to its peer
        out["handoff_share"] = max(0.0, 1 - (_xtr_transmitted(lab) - tx0) / max(2 * moved, 1))
        if out["stack_share"] > STACK_SHARE_MAX:
            raise RuntimeError(f"{mode}: the xTRs' IP stack forwarded {stack:,} packets of {moved:,} sent: "
                               "the BPF path is not what was measured")
    if mode == "lisp-xdp":
        out.update(xdp_work(counters0, _lisp_counters(lab)))
        if min(out["xdp_itr_share"], out["xdp_etr_share"]) < XDP_SHARE_MIN:
            raise RuntimeError(f"{mode}: the XDP programs did only {out['xdp_itr_share']:.1%} of the "
                               f"encapsulations and {out['xdp_etr_share']:.1%} of the decapsulations: "
                               "the XDP path is not what was measured")
    return out


COLUMNS = [  # (key, header)
    ("tcp4_gbit_per_s", "TCP IPv4 EIDs Gbit/s"),
    ("tcp6_gbit_per_s", "TCP IPv6 EIDs Gbit/s"),
    ("tcp4_same_cpu_gbit_per_s", "TCP IPv4, same CPU Gbit/s"),
    ("udp64_delivered_pps", "UDP 64 B, 1 destination, pkt/s"),
    ("udp64_multi_delivered_pps", f"UDP 64 B, {MULTI_DSTS} destinations, pkt/s"),
]
GENERATOR_BOUND = 0.9   # at or above this share of the sink's rate, the generator is the limit


def _key(mode: str) -> str:
    return mode.replace("-", "_")


def measure(quiet: rd.Quiet, errors: dict[str, str]) -> tuple[rd.Taken, dict[str, dict], float]:
    """(samples, the LISP labs' counters by mode, seconds building the labs)."""
    counters: dict[str, dict] = {}
    with contextlib.ExitStack() as stack:
        def make(mode: str) -> Lab:
            lab = stack.enter_context(Lab(load("dataplane")))
            prepare(lab, mode)
            return lab
        t0 = time.monotonic()
        labs = rd.build(MODES, make, errors)   # keep the others even when one mode fails
        build_s = time.monotonic() - t0
        taken = rd.interleave(labs, sample, ROUNDS, quiet, errors)
        for mode in ("lisp", "lisp-xdp"):
            if mode not in labs:
                continue
            try:
                counters[mode] = {x: {k: v for k, v in c.items() if v} for x, c in _lisp_counters(labs[mode]).items()}
            except Exception as exc:
                counters[mode] = {"error": str(exc)}
    return taken, counters, build_s


ROW_ORDER = ("lisp", "lisp-xdp", "bpf-forward", "bpf-forward-xdp", "vxlan", "plain", "sink")
XDP_KEYS = ("xdp_itr_share", "xdp_etr_share", "xdp_to_stack_share")


def name_of(mode: str) -> str:
    return NAMES.get(mode, mode)


def bound(share: float) -> str:
    """What limits a figure at this share of the sink's rate."""
    return "generator" if share >= GENERATOR_BOUND else "data path"


def run(rec: Recorder) -> None:
    t_start = time.monotonic()
    quiet = rd.Quiet()
    errors: dict[str, str] = {}
    taken, counters, build_s = measure(quiet, errors)
    noisy = taken.noisy
    keys = [k for k, _ in COLUMNS] + ["udp64_sent_pps", "udp64_multi_sent_pps"]
    stats: dict[str, dict[str, rd.Stat]] = {}
    for mode, ss in taken.samples.items():
        if mode in errors or not ss:
            continue
        extra = (["stack_share", "handoff_share"] if mode in BPF_MODES else []) + (list(XDP_KEYS) if mode == "lisp-xdp" else [])
        st = stats[mode] = rd.summarise(ss, keys + extra)
        rd.record(rec, f"throughput_{_key(mode)}",
                  {k: v for k, v in st.items() if not (mode == "sink" and "delivered" in k)}, 4)
    if "sink" in stats:   # the sink's UDP figure is what was sent into the drop
        for k in ("udp64", "udp64_multi"):
            stats["sink"][f"{k}_delivered_pps"] = stats["sink"][f"{k}_sent_pps"]
    med = {mode: {k: v.median for k, v in st.items()} for mode, st in stats.items()}

    split, same = PLACEMENTS["split"], PLACEMENTS["same"]
    if QUICK:
        rec.note("**Quick run (LISPCTL_BENCH_QUICK): one round of 1 s samples, not for the record.**")
        rec.note("")
    rec.note(f"Same lab topology and host settings for every mode (default offloads: TSO/GSO on; the XDP "
             f"modes: below). The {len(MODES)} labs are built once and measured in {ROUNDS} interleaved "
             "rounds (mode order rotates each round); each figure is the **median** of the rounds, with the "
             f"min-max range. TCP: iperf3 -P 2 for {TCP_SECONDS} s, client pinned to CPU {split[0]} and "
             f"server to CPU {split[1]} (\"same CPU\": both on CPU {same[0]}), identical in every mode. "
             f"UDP: 64-byte payloads from trafgen pinned to CPU {UDP_CPU}, delivered (hostB) rate over a "
             f"{UDP_WINDOW:g} s window; source ports 1024-2047, to one destination (one map-cache entry) "
             f"or to {MULTI_DSTS} destinations 10.2.0.{MULTI_FIRST}-{MULTI_LAST} (each its own /32 "
             f"map-cache entry; {MULTI_DSTS * 1024:,} distinct flows). LISP map-caches hold "
             f"{MAP_CACHE_SIZE:,} entries. Single TCP samples vary by tens of percent; read the ranges.")
    rec.note("")
    rec.note("- **lisp**: the xTRs' `eid-mode` and `rloc-mode` left at `auto`, which is tc on veth "
             "(tc ITR + tc ETR). **lisp-xdp**: `eid-mode = xdp` and `rloc-mode = xdp` (static runner "
             "`--eid-mode xdp --rloc-mode xdp`, and `--xdp-redirect` so the XDP programs may redirect into "
             "the lab's veths): the XDP ITR and XDP ETR in front of tc on both xTRs.")
    rec.note("- **bpf-forward**: the same xTR nodes with plain's routes and, on tc ingress of both xTRs' "
             "interfaces, a program that does only `bpf_fib_lookup`, new MACs, TTL - 1 and `bpf_redirect` "
             "(bpf/bench_forward.c, benchmark only): the ceiling of forwarding by redirect, the method "
             "the LISP programs use, including their hand-over to a veth peer (`bpf_redirect_peer` where "
             "the peer is in another namespace and nothing on the veth's transmit path would act on the "
             "packet: docs/datapath.md, \"Hand-over to a veth peer\"; all the lab's xTR veths qualify; "
             "plain routing cannot do this). LISP / bpf-forward is what encapsulation and the LISP lookups "
             "cost; LISP / plain also measures redirect against the kernel's forwarding path. "
             "**bpf-forward-xdp**: the same program's XDP variant (`bench_fwd_xdp`, the one the per-packet "
             "section measures) as the XDP program of both xTRs' interfaces: the ceiling for LISP-XDP.")
    rec.note("- **The XDP modes' lab**: what a NIC gives XDP for free, a veth needs set: it takes an "
             "XDP-redirected frame only when its peer runs XDP or has GRO on, so GRO is on at the xTRs' "
             "peers (hostA's and hostB's eth0, the router's r1 and r2; the router still forwards through "
             "its stack); and XDP cannot see a veth skb's CHECKSUM_PARTIAL, which a redirected frame loses, "
             "so the same peers send complete checksums (tx checksum offload off; the router forwards "
             "GRO-merged TCP in bpf-forward-xdp), as frames from a wire are. "
             "trafgen builds complete checksums in every mode. Without TSO (XDP on a veth turns its "
             "peer's off), TCP leaves the hosts as MTU-sized frames in these modes, one program run each, "
             "where the tc modes carry ~45 KB GSO super-packets: that trade-off is why `auto` keeps tc on "
             "virtual devices.")
    rec.note("- **What XDP saves, veth against a NIC.** With native XDP on a NIC the program runs on the "
             "driver's buffer before any skb exists, and a frame redirected to another NIC never becomes "
             "one: the xTR allocates no skb for it at all (that is why `auto` picks XDP on physical NICs). "
             "On veth the frame arrives as the sender's skb; veth's XDP copies it into a page of its own "
             "(a new skb head) whenever that skb lacks XDP's 256 bytes of headroom or is non-linear, as "
             "trafgen's and the stack's packets are, frees it on XDP_REDIRECT, and the next receiver "
             "builds a new skb from the frame. So here the XDP modes skip the xTRs' receive path (GRO, "
             "tc, the stack's entry) but pay a copy and an skb rebuild per XDP hop that the tc modes do "
             "not: the lab understates what XDP gains on NICs.")
    rec.note("- **sink**: the generators alone. TCP from hostA to xtr1 (one veth hop, nothing "
             "forwarded): the endpoints' ceiling. UDP into a tc program on xtr1's eid0 that drops "
             "every packet: the generator's ceiling (trafgen and one veth hop).")
    rec.note("")
    for line in rd.header("mode", [h for _, h in COLUMNS] + ["UDP lost (1 / many destinations)"]):
        rec.note(line)

    def lost(mode: str, k: str) -> str:
        sent = med[mode][f"{k}_sent_pps"]
        return f"{max(0.0, 1 - med[mode][f'{k}_delivered_pps'] / sent):.1%}" if sent else "-"

    for mode in ROW_ORDER:
        if mode not in stats:
            rec.note(rd.failed_row(mode, len(COLUMNS) + 1))
            continue
        loss = "-" if mode == "sink" else f"{lost(mode, 'udp64')} / {lost(mode, 'udp64_multi')}"
        rec.note(rd.row(mode, [rd.cell(k, stats[mode][k]) for k, _ in COLUMNS] + [loss]))

    def ratio(a: str, b: str, k: str) -> float:
        return rd.ratio(med[a][k], med[b][k])

    short_headers = [h.replace(" Gbit/s", "").replace(", pkt/s", "") for _, h in COLUMNS]
    rec.note("")
    for line in rd.header("ratio of medians", short_headers):
        rec.note(line)
    for a, b in [("lisp", r) for r in REFS] + list(MORE_RATIOS):
        if a not in med or b not in med:
            continue
        for k, _ in COLUMNS:
            rec.figure(f"throughput_{_key(a)}_vs_{_key(b)}_{rd.short(k)}_ratio", round(ratio(a, b, k), 3))
        rec.note(rd.ratio_row(f"{name_of(a)} / {name_of(b)}", (ratio(a, b, k) for k, _ in COLUMNS)))
    rec.note("")
    rec.note("TCP in the XDP modes crosses as MTU-sized frames with software checksums at the hosts (above), "
             "against GSO super-packets in the others: their TCP ratios compare the two ways a veth lab can "
             "run, not the programs' cost. Between the two XDP modes TCP differs at the router too: in "
             "bpf-forward-xdp it receives plain TCP, which its GRO merges and its forwarding segments again "
             "in software (XDP on the next veth turned that veth's peer's TSO off), while in lisp-xdp it "
             "receives LISP UDP, which GRO leaves alone; so LISP-XDP / bpf-forward-XDP for TCP is no cost of "
             "LISP. The 64-byte UDP columns compare like with like (one frame, one program run per hop in "
             "every mode; GRO merges no UDP here). " +
             "TCP in the tc modes: the lab's RLOC veths keep their offloads (rloc-checksum \"offload\", "
             "netns-lab/dataplane.toml: both ETRs are lispctl's), so TCP's GSO super-packets cross every hop "
             "whole in LISP as in plain and bpf-forward, and both BPF modes hand them (and the ACKs, whose "
             "checksums the hosts leave to the offload) to the next namespace without a veth transmit "
             "(`LISP_OUT_PEER_ALL`, docs/datapath.md). With rloc-checksum \"auto\" on a veth (tx checksumming "
             "off, for socket readers beyond it) the RLOC veth's transmit would segment them in software "
             "instead: the NAT throughput section's rtr_complete row shows what that costs. Where TCP is "
             "data-path-bound (the same-CPU column) LISP / bpf-forward shows LISP's per-super-packet work;"
             " split over two CPUs the TCP figures are near the endpoints' ceiling (shares below).")

    if "sink" in med:
        rec.note("")
        rec.note("Generator-bound or data-path-bound: each mode's median as a share of the sink's "
                 f"(same test, nothing forwarded). At {GENERATOR_BOUND:.0%} or more the generator "
                 "(UDP: trafgen and its veth hop) or the TCP endpoints are the limit and the figure says "
                 "little about the data path; below, the forwarding chain is. Why the sink decides it: on "
                 "veth every hop's softirq work runs on the sending CPU (netif_rx queues to the current "
                 "CPU; with XDP or GRO on the receiving veth, its NAPI poll is scheduled on the sending CPU "
                 "too), so trafgen's CPU carries generator and whole chain, and the iperf3 client's CPU "
                 "carries the TCP send path and every hop while the server's CPU only copies data out. "
                 "UDP 64 B is one packet per 64 bytes, so the chain's per-packet work dominates and these "
                 "figures are data-path-bound unless they reach the sink. TCP crosses as ~45 KB GSO "
                 "super-packets in the tc modes, one program run per super-packet, so per-packet costs are "
                 "spread over ~700 times more bytes and the endpoints' own work (copies, checksums, ACKs) is "
                 "most of it: a TCP figure near the sink's says the endpoints are the limit, and TCP ratios "
                 "between modes then hide data-path differences rather than show them. The sink is the tc "
                 "one in every row (for the XDP modes hostA's first hop differs: the frame waits in the "
                 "veth's ring for a NAPI poll instead of the backlog), so read the XDP rows' shares as "
                 "approximate; at 64 bytes they are far from the sink either way.")
        rec.note("")
        for line in rd.header("share of the sink's rate", short_headers):
            rec.note(line)
        for mode in ROW_ORDER[:-1]:
            if mode not in med:
                continue
            cells = []
            for k, _ in COLUMNS:
                sh = ratio(mode, "sink", k)
                rec.figure(f"throughput_{_key(mode)}_vs_sink_{rd.short(k)}_ratio", round(sh, 3))
                cells.append(f"{sh:.2f} ({bound(sh)})")
            rec.note(rd.row(mode, cells))

    def goal(a: str, b: str, k: str, want: float) -> str:
        got = ratio(a, b, k)
        return f"{got:.2f} ({'met' if got >= want else 'not met'})"

    rec.note("")
    if "lisp" in med and "bpf-forward" in med:
        rec.note("Goal of issue 13, LISP / bpf-forward: TCP >= 0.9: IPv4 "
                 f"{goal('lisp', 'bpf-forward', 'tcp4_gbit_per_s', 0.9)}, IPv6 "
                 f"{goal('lisp', 'bpf-forward', 'tcp6_gbit_per_s', 0.9)}, same CPU "
                 f"{goal('lisp', 'bpf-forward', 'tcp4_same_cpu_gbit_per_s', 0.9)}; 64-byte UDP >= 0.75: one "
                 f"destination {goal('lisp', 'bpf-forward', 'udp64_delivered_pps', 0.75)}, {MULTI_DSTS} "
                 f"destinations {goal('lisp', 'bpf-forward', 'udp64_multi_delivered_pps', 0.75)}.")
    if "lisp" in med and "plain" in med:
        rec.note("Goal of issue 13, 64-byte UDP x plain routing >= 1.0, LISP: one destination "
                 f"{goal('lisp', 'plain', 'udp64_delivered_pps', 1.0)}, {MULTI_DSTS} destinations "
                 f"{goal('lisp', 'plain', 'udp64_multi_delivered_pps', 1.0)}.")
        rec.note("Goal of issue 13, TCP x plain routing >= 1.0 (kept), LISP: IPv4 EIDs "
                 f"{goal('lisp', 'plain', 'tcp4_gbit_per_s', 1.0)}, IPv6 EIDs "
                 f"{goal('lisp', 'plain', 'tcp6_gbit_per_s', 1.0)}; same CPU (a column of ours, beyond the "
                 f"issue's) {goal('lisp', 'plain', 'tcp4_same_cpu_gbit_per_s', 1.0)}.")
    if "lisp-xdp" in med and "plain" in med:
        rec.note("LISP-XDP against the same 1.0 for 64-byte UDP (measured as the issue's XDP ITR section "
                 "asks; the goal is the xTR pair's as `auto` runs it on veth, tc: XDP on a veth pays for "
                 "turning each skb into a frame, see above): one destination "
                 f"{goal('lisp-xdp', 'plain', 'udp64_delivered_pps', 1.0)}, {MULTI_DSTS} destinations "
                 f"{goal('lisp-xdp', 'plain', 'udp64_multi_delivered_pps', 1.0)}.")
    if "lisp-xdp" in med and "bpf-forward-xdp" in med:
        rec.note("LISP-XDP / bpf-forward-XDP against the same 0.75 for 64-byte UDP: one destination "
                 f"{goal('lisp-xdp', 'bpf-forward-xdp', 'udp64_delivered_pps', 0.75)}, {MULTI_DSTS} "
                 f"destinations {goal('lisp-xdp', 'bpf-forward-xdp', 'udp64_multi_delivered_pps', 0.75)}.")
    shares = {m: med[m]["stack_share"] for m in BPF_MODES if m in med}
    if shares:
        rec.note("")
        rec.note("Forwarded by redirect, checked: the packets the xTRs' IP stack forwarded (Ip ForwDatagrams + "
                 "Ip6OutForwDatagrams) per packet the hosts sent, median over the samples: "
                 + ", ".join(f"{m} {v:.2%}" for m, v in shares.items())
                 + f" (a sample above {STACK_SHARE_MAX:.0%} fails the run).")
        rec.note("Handed over to the veth peer: of the packets the xTRs forwarded (two xTRs per packet the "
                 "hosts sent), the share that did not cross an xTR veth's transmit (tx_packets), median over "
                 "the samples: " + ", ".join(f"{m} {med[m]['handoff_share']:.2%}" for m in shares)
                 + ". The XDP modes redirect XDP frames (their veth transmit counts them), tc's fallbacks hand "
                 "over.")
    if "lisp-xdp" in stats:
        x = stats["lisp-xdp"]

        def pct(k: str) -> str:
            return f"{x[k].median:.2%} ({x[k].lo:.2%}-{x[k].hi:.2%})"
        rec.note("")
        rec.note("Done by XDP, checked: of the packets the lisp-xdp xTRs encapsulated in a sample (both "
                 f"directions, every test), the XDP ITR encapsulated {pct('xdp_itr_share')}; of those they "
                 f"decapsulated, the XDP ETR did {pct('xdp_etr_share')}, and handed {pct('xdp_to_stack_share')} "
                 "of its share to the stack instead of redirecting it (counters `xdp_encapsulated`, "
                 "`xdp_decapsulated`, `xdp_to_stack`; median over the samples, min-max; a sample below "
                 f"{XDP_SHARE_MIN:.0%} fails the run). The rest took the tc programs behind XDP (e.g. a "
                 "packet whose next hop had no neighbour entry yet).")
    for mode, c in counters.items():
        rec.note("")
        rec.note(f"{name_of(mode)} ({mode}) data-plane counters after the run (non-zero): `{c}`")
    rec.note("")
    rec.note(f"Before each sample the bench waits up to {rd.QUIET_PATIENCE:.0f} s for a quiet machine "
             f"(at most {rd.QUIET_BUSY:.0%} CPU busy over {rd.QUIET_WINDOW:g} s) and takes a sample again (once) "
             "if the machine was busy right after it. " + rd.busy_note(noisy))
    elapsed = time.monotonic() - t_start
    rec.note("")
    per = taken.seconds / max(taken.count, 1)
    estimate = build_s + ROUNDS * len(MODES) * (per + 2 * rd.QUIET_WINDOW)   # + the two quiet checks
    rec.note(f"The module ran {elapsed / 60:.1f} minutes: {quiet.waited / 60:.1f} waiting for a quiet machine, "
             f"{build_s:.0f} s building the labs, {taken.count} samples "
             f"(retakes included) of {per:.0f} s each; on a quiet machine, about {estimate / 60:.1f} minutes.")
    rec.figure("throughput_quiet_machine_estimate_seconds", round(estimate, 1))
    rec.figure("throughput_busy_samples_count", len(noisy))
    rec.figure("throughput_run_seconds", round(elapsed, 1))
    rec.figure("throughput_waiting_for_quiet_seconds", round(quiet.waited, 1))
    rd.report_errors(rec, errors)

"""Interworking (RFC 6832) in the `interworking` netns lab: throughput through
the PITR and through the PETR against plain routing on the same topology,
and the PITR's time from the first packet of a new destination to its first
encapsulated packet.

Modes, one lab each, built at the start and measured in interleaved rounds
(as bench_throughput, whose quiet-machine and trafgen helpers this uses):
  lisp   the lab as `make lab TOPO=interworking` runs it: BIRD, the MS/MR,
         xtr1 and the PxTR daemons; legacy -> hostA crosses the PITR
         (encapsulation) and xtr1 (decapsulation), hostA -> legacy crosses
         xtr1 (encapsulation to the PETR) and the PETR (decapsulation)
  plain  no LISP at all: static routes for 10.1.0.0/24 and 198.18.0.0/24
         along the same nodes (inet -> pxtr -> core -> xtr1 and back)
IPv4 EIDs (the core of this lab is IPv4-only, so plain routing cannot carry
IPv6 EIDs). Figures: TCP Gbit/s (iperf3 -P 2, client and server pinned to
different CPUs) and 64-byte UDP packets/s delivered (trafgen on one CPU).

First packet: a variant of the lisp lab where xtr1 registers FIRST_N extra
/24s (the MS accepts more-specifics of 10.1.0.0/16), so each is a new
destination for the PITR. From legacy, a UDP packet every 0.2 ms to one
address of the prefix until 0.4 s have passed; tcpdump on the PxTR stamps
the first of them arriving on inet0 and the first encapsulated one leaving
core0 (both kernel timestamps, one clock). The difference is miss event ->
daemon -> ECM Map-Request -> MS -> xtr1's ETR -> Map-Reply -> map-cache
install -> next packet (resolution 0.2 ms).
"""
from __future__ import annotations

import contextlib
import statistics
import subprocess
import time

from lispctl.lab import Lab, load
from lispctl.lab.dataplane import capture
from lispctl.lab.scenarios import control as cp
from lispctl.lab.scenarios import interworking as iw
from lispctl.lab.traffic import iperf3, iperf3_gbps, link_stats, mac_of, ping_here, trafgen_config

from .bench_throughput import QUIET_BUSY, UDP_CPU, UDP_WARMUP, UDP_WINDOW, stop_group, wait_quiet

SECTION = "Interworking: PITR and PETR (netns lab)"
TCP_SECONDS = 3
ROUNDS = 3
CPUS = (0, 1)                      # iperf3 client, server
FIRST_N = 40
FIRST_GAP_S, FIRST_SPAN_S = 0.0002, 0.4
# figure -> (client node, server node, destination)
PATHS = {
    "pitr": ("legacy", "hostA", iw.HOST4),
    "petr": ("hostA", "legacy", iw.LEGACY4),
}
# first hop of each sender (trafgen writes Ethernet frames)
NEXT_HOP = {"legacy": ("inet", "i2"), "hostA": ("xtr1", "eid0")}

PLAIN_ROUTES = {
    "inet": [("10.1.0.0/24", "100.64.0.2")],
    "pxtr": [("10.1.0.0/24", "203.0.113.254")],
    "core": [("10.1.0.0/24", "198.51.100.1"), ("198.18.0.0/24", "203.0.113.20")],
}


def setup_plain(lab: Lab) -> None:
    for node, routes in PLAIN_ROUTES.items():
        with lab.ipr(node) as ipr:
            for dst, via in routes:
                net, plen = dst.split("/")
                ipr.route("add", dst=net, dst_len=int(plen), gateway=via)


def setup_lisp(lab: Lab) -> None:
    iw.start(lab)
    cp.wait_registered(lab, ("site1",))
    iw.wait_bgp(lab, iw.AGGREGATES)


MODES = {"lisp": setup_lisp, "plain": setup_plain}


def prepare(lab: Lab, mode: str) -> None:
    MODES[mode](lab)
    for src, _server, dst in PATHS.values():   # resolves the mappings, fills neighbour caches
        ok = cp.eventually(lambda: lab.call(src, ping_here, dst, 1, 0.5), 10)
        if not ok or lab.call(src, ping_here, dst, 3, 1.0) < 3:
            raise RuntimeError(f"{mode}: {src} cannot reach {dst}; nothing to measure")


def udp_pps(lab: Lab, src: str, dst_node: str, dst: str) -> float:
    """64-byte UDP delivered packets/s from src to dst (trafgen)."""
    hop = NEXT_HOP[src]
    cfg = lab.rundir / f"udp64-{src}.trafgen"
    cfg.write_text(trafgen_config(mac_of(lab, src, "eth0"), mac_of(lab, *hop), lab.addr(src), dst, 64))
    proc = lab.start(src, "trafgen", ["taskset", "-c", str(UDP_CPU), "trafgen", "-i", str(cfg), "-o", "eth0",
                                      "--cpus", "1", "-q"], ready=None, sysfs=True)
    try:
        time.sleep(UDP_WARMUP)
        b0, t0 = link_stats(lab, dst_node, "eth0"), time.monotonic()
        time.sleep(UDP_WINDOW)
        b1, t1 = link_stats(lab, dst_node, "eth0"), time.monotonic()
    finally:
        stop_group(proc.pid)
        lab.stop(src, "trafgen")
    return (b1["rx_packets"] - b0["rx_packets"]) / (t1 - t0)


def sample(lab: Lab) -> dict[str, float]:
    out = {}
    for path, (client, server, dst) in PATHS.items():
        out[f"{path}_tcp4_gbit_per_s"] = iperf3_gbps(iperf3(lab, client, server, dst, TCP_SECONDS,
                                                            parallel=2, cpus=CPUS))
        out[f"{path}_udp64_delivered_pps"] = udp_pps(lab, client, server, dst)
    return out


# -- first packet -------------------------------------------------------------------
def _stream_here(dst: str, gap: float, span: float) -> int:
    """UDP datagrams to dst:9 every `gap` seconds for `span` seconds."""
    import socket as _s
    n = 0
    with _s.socket(_s.AF_INET, _s.SOCK_DGRAM) as sock:
        end = time.monotonic() + span
        nxt = time.monotonic()
        while time.monotonic() < end:
            sock.sendto(b"first", (dst, 9))
            n += 1
            nxt += gap
            while time.monotonic() < nxt:
                pass
    return n


def _first_times(pcap, inner: bool) -> dict[str, float]:
    """First timestamp per (inner) IPv4 destination in a pcap."""
    out = subprocess.run(["tshark", "-r", str(pcap), "-n", "-T", "fields", "-e", "frame.time_epoch",
                          "-e", "ip.dst"], capture_output=True, text=True, timeout=120, check=True).stdout
    first: dict[str, float] = {}
    for line in out.splitlines():
        ts, _, dsts = line.partition("\t")
        parts = dsts.split(",")
        dst = parts[1] if inner and len(parts) > 1 else parts[0]
        first.setdefault(dst, float(ts))
    return first


def first_packet(lab_factory) -> list[float]:
    """ms from the first packet of a new destination at the PITR to its first encapsulated packet."""
    with lab_factory() as lab:
        msmr = cp.config_text(lab, "msmr").replace('prefix = "10.1.0.0/24"',
                                                  'prefix = "10.1.0.0/16"\naccept-more-specifics = true')
        extra = "".join(f'\n[[database]]\neid-prefix = "10.1.{i}.0/24"\n[[database.locator]]\n'
                        f'address = "198.51.100.1"\n' for i in range(1, FIRST_N + 1))
        xtr1 = cp.config_text(lab, "xtr1").replace("[[map-server]]", extra.lstrip("\n") + "\n[[map-server]]", 1)
        iw.start_bird(lab)
        cp.start_node(lab, "msmr", cp.render_config(lab, "msmr", msmr, "bench"))
        cp.start_node(lab, "xtr1", cp.render_config(lab, "xtr1", xtr1, "bench"), wait=False)
        cp.start_node(lab, "pxtr", wait=False)
        cp.wait_node(lab, "xtr1")
        cp.wait_node(lab, "pxtr")
        cp.wait_registered(lab, ("site1",), timeout=30)
        iw.wait_bgp(lab, iw.AGGREGATES)
        dsts = [f"10.1.{i}.9" for i in range(1, FIRST_N + 1)]
        with capture(lab, "pxtr", "inet0", "udp dst port 9") as arrive, \
                capture(lab, "pxtr", "core0", f"udp dst port 4341 and src host {iw.PXTR_RLOC}") as leave:
            for dst in dsts:
                wait_quiet(patience=5)
                lab.call("legacy", _stream_here, dst, FIRST_GAP_S, FIRST_SPAN_S)
        t_in, t_out = _first_times(arrive, False), _first_times(leave, True)
    return [(t_out[d] - t_in[d]) * 1000 for d in dsts if d in t_in and d in t_out]


def _p(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def run(rec) -> None:
    samples: dict[str, list[dict[str, float]]] = {m: [] for m in MODES}
    errors: dict[str, str] = {}
    noisy: list[str] = []
    counters = None
    with contextlib.ExitStack() as stack:
        labs: dict[str, Lab] = {}
        for mode in MODES:
            try:
                lab = stack.enter_context(Lab(load("interworking")))
                prepare(lab, mode)
                labs[mode] = lab
            except Exception as exc:
                errors[mode] = repr(exc)
                print(f"  {mode} failed: {exc!r}")
        order = list(labs)
        for r in range(ROUNDS):
            for mode in order[r % len(order):] + order[: r % len(order)]:
                if mode in errors:
                    continue
                try:
                    before = wait_quiet()
                    print(f"  -- round {r + 1} {mode} (before: {before:.0%} busy)")
                    s = sample(labs[mode])
                    after = wait_quiet(patience=0)
                    if max(before, after) > QUIET_BUSY:
                        noisy.append(f"round {r + 1} {mode} ({before:.0%} before, {after:.0%} after)")
                    samples[mode].append(s)
                except Exception as exc:
                    errors[mode] = repr(exc)
                    print(f"  {mode} failed: {exc!r}")
        if "lisp" in labs:
            with contextlib.suppress(Exception):
                d = cp.counters(labs["lisp"], "pxtr")["datapath"]
                counters = {"encapsulated": d["encapsulated"], "decapsulated": d["decapsulated"],
                            "petr_forwarded": d["other"]["petr_forwarded"],
                            "drops": {k: v for k, v in d["drops"].items() if v}}
    try:
        firsts = first_packet(lambda: Lab(load("interworking")))
    except Exception as exc:
        firsts = []
        errors["first_packet"] = repr(exc)
        print(f"  first packet failed: {exc!r}")

    keys = [f"{p}_{k}" for p in PATHS for k in ("tcp4_gbit_per_s", "udp64_delivered_pps")]
    med, rng = {}, {}
    for mode, ss in samples.items():
        if not ss:
            continue
        med[mode] = {k: statistics.median(s[k] for s in ss) for k in keys}
        rng[mode] = {k: (min(s[k] for s in ss), max(s[k] for s in ss)) for k in keys}
        for k in keys:
            rec.figure(f"interworking_{mode}_{k}", round(med[mode][k], 3))

    rec.note(f"The `interworking` lab (docs/lab.md), IPv4 EIDs. Two labs built once and measured in "
             f"{ROUNDS} interleaved rounds: **lisp** (legacy -> PITR -> xtr1 -> hostA, and hostA -> xtr1 "
             "-> PETR -> legacy) and **plain** (static routes along the same nodes, no LISP). Medians "
             f"with min-max. TCP: iperf3 -P 2 for {TCP_SECONDS} s, client on CPU {CPUS[0]}, server on CPU "
             f"{CPUS[1]}. UDP: 64-byte payloads from trafgen on CPU {UDP_CPU}, delivered rate over "
             f"{UDP_WINDOW:.0f} s.")
    rec.note("")
    rec.note("| mode | through PITR: TCP Gbit/s | through PITR: UDP 64 B pkt/s | "
             "through PETR: TCP Gbit/s | through PETR: UDP 64 B pkt/s |")
    rec.note("|---|---:|---:|---:|---:|")

    def cell(mode: str, k: str) -> str:
        lo, hi = rng[mode][k]
        if k.endswith("pps"):
            return f"{med[mode][k]:,.0f} ({lo:,.0f}-{hi:,.0f})"
        return f"{med[mode][k]:.1f} ({lo:.1f}-{hi:.1f})"

    for mode in MODES:
        if mode in med:
            rec.note(f"| {mode} | " + " | ".join(cell(mode, k) for k in keys) + " |")
        else:
            rec.note(f"| {mode} | failed | | | |")
    if "lisp" in med and "plain" in med:
        ratios = {k: (med["lisp"][k] / med["plain"][k] if med["plain"][k] else 0.0) for k in keys}
        for k, v in ratios.items():
            short = k.replace("_gbit_per_s", "").replace("_delivered_pps", "")
            rec.figure(f"interworking_lisp_vs_plain_{short}_ratio", round(v, 3))
        rec.note("| LISP / plain | " + " | ".join(f"{ratios[k]:.2f}" for k in keys) + " |")
    if counters:
        rec.note("")
        rec.note(f"PxTR data-plane counters after the run: `{counters}`")
    if firsts:
        rec.figure("pitr_first_packet_median_ms", round(statistics.median(firsts), 3))
        rec.figure("pitr_first_packet_p99_ms", round(_p(firsts, 0.99), 3))
        rec.note("")
        rec.note(f"PITR first packet of a new destination to its first encapsulated packet, "
                 f"{len(firsts)} destinations (a UDP packet every {FIRST_GAP_S * 1000:.1f} ms, miss action "
                 f"drop): median **{statistics.median(firsts):.1f} ms**, p99 {_p(firsts, 0.99):.1f} ms, "
                 f"min {min(firsts):.1f} ms, max {max(firsts):.1f} ms (miss event, Map-Request through the "
                 "MS to xtr1's ETR, Map-Reply, install).")
    if noisy:
        rec.note("")
        rec.note(f"**Samples taken on a busy machine:** {', '.join(noisy)}.")
    for what, err in errors.items():
        rec.note(f"\n{what} failed: `{err}`")
    if errors:
        raise RuntimeError(f"failed: {', '.join(errors)}")

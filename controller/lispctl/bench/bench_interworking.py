"""Interworking (RFC 6832) in the `interworking` netns lab: throughput through
the PITR and through the PETR against plain routing on the same topology,
and the PITR's time from the first packet of a new destination to its first
encapsulated packet.

Modes, one lab each, built at the start and measured in interleaved rounds
on a quiet machine (rounds.py, as bench_throughput):
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
from lispctl.lab.traffic import iperf3, iperf3_gbps, mac_of, ping_here, trafgen_config

from . import Recorder
from . import rounds as rd
from .trafgen import UDP_CPU, UDP_WINDOW, udp_rates

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
    return udp_rates(lab, src, cfg, ((dst_node, "rx_packets"),))[0]


def sample(mode: str, lab: Lab) -> dict[str, float]:
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
        quiet = rd.Quiet()
        with capture(lab, "pxtr", "inet0", "udp dst port 9") as arrive, \
                capture(lab, "pxtr", "core0", f"udp dst port 4341 and src host {iw.PXTR_RLOC}") as leave:
            for dst in dsts:
                quiet.wait(patience=5)
                lab.call("legacy", _stream_here, dst, FIRST_GAP_S, FIRST_SPAN_S)
        t_in, t_out = _first_times(arrive, False), _first_times(leave, True)
    return [(t_out[d] - t_in[d]) * 1000 for d in dsts if d in t_in and d in t_out]


def _p(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def run(rec: Recorder) -> None:
    errors: dict[str, str] = {}
    counters = None
    with contextlib.ExitStack() as stack:
        def make(mode: str) -> Lab:
            lab = stack.enter_context(Lab(load("interworking")))
            prepare(lab, mode)
            return lab
        labs = rd.build(MODES, make, errors)
        taken = rd.interleave(labs, sample, ROUNDS, rd.Quiet(), errors)
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
    stats: dict[str, dict[str, rd.Stat]] = {}
    for mode, ss in taken.samples.items():
        if mode in errors or not ss:
            continue
        stats[mode] = rd.summarise(ss, keys)
        for k in keys:
            rec.figure(f"interworking_{mode}_{k}", round(stats[mode][k].median, 3))

    rec.note(f"The `interworking` lab (docs/lab.md), IPv4 EIDs. Two labs built once and measured in "
             f"{ROUNDS} interleaved rounds: **lisp** (legacy -> PITR -> xtr1 -> hostA, and hostA -> xtr1 "
             "-> PETR -> legacy) and **plain** (static routes along the same nodes, no LISP). Medians "
             f"with min-max. TCP: iperf3 -P 2 for {TCP_SECONDS} s, client on CPU {CPUS[0]}, server on CPU "
             f"{CPUS[1]}. UDP: 64-byte payloads from trafgen on CPU {UDP_CPU}, delivered rate over "
             f"{UDP_WINDOW:.0f} s.")
    rec.note("")
    for line in rd.header("mode", [f"through {p.upper()}: {what}" for p in PATHS
                                   for what in ("TCP Gbit/s", "UDP 64 B pkt/s")]):
        rec.note(line)
    for mode in MODES:
        if mode in stats:
            rec.note(rd.row(mode, (rd.cell(k, stats[mode][k]) for k in keys)))
        else:
            rec.note(rd.failed_row(mode, len(keys)))
    if "lisp" in stats and "plain" in stats:
        ratios = {k: rd.ratio(stats["lisp"][k].median, stats["plain"][k].median) for k in keys}
        for k, v in ratios.items():
            rec.figure(f"interworking_lisp_vs_plain_{rd.short(k)}_ratio", round(v, 3))
        rec.note(rd.ratio_row("LISP / plain", ratios.values()))
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
    if taken.noisy:
        rec.note("")
        rec.note(rd.busy_note(taken.noisy))
    rd.report_errors(rec, errors)

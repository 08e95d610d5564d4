"""Data-plane throughput in the netns lab: LISP vs the kernel's VXLAN vs plain routing.

Same topology (hostA - xtr1 - router - xtr2 - hostB), same host settings, a
fresh lab per mode, all in one run:
  plain  EID routes added to the underlay (ordinary forwarding, no tunnel)
  vxlan  kernel VXLAN between xtr1 and xtr2 over the IPv4 RLOCs
  lisp   the eBPF xTRs with static mappings over the IPv4 RLOCs
Figures: TCP Gbit/s (iperf3 -P 2, IPv4 and IPv6 EIDs) and 64-byte UDP
packets/s delivered to hostB (trafgen on one core in hostA; the rate is read
from hostB's interface counters over a window after warm-up).

Hosts and xTRs keep the kernel's default offloads (TSO/GSO on veth), so TCP
crosses as 64 KB super-packets in every mode.

On veth the forwarding work of every hop runs in softirq context on the
sender's CPU (netif_rx, then the softirq on leaving the send call), so
trafgen's send rate *is* the rate of the whole chain: the data path, not
the generator, is the limit (trafgen's own work is a few percent of that
CPU in a perf profile), and sent = delivered means nothing was lost on the
way. A costlier data path shows up as fewer packets sent and delivered.
Compare modes by ratio, never by absolute numbers across machines.
"""
from __future__ import annotations

import time
from typing import Callable

from lispctl.lab import Lab, load
from lispctl.lab import dataplane as dp
from lispctl.lab.references import setup_plain, setup_vxlan
from lispctl.lab.traffic import iperf3, iperf3_gbps, link_stats, mac_of, ping_here, trafgen_config

SECTION = "Data-plane throughput (netns lab)"
TCP_SECONDS = 3
UDP_WARMUP, UDP_WINDOW = 1.0, 2.0
MODES: dict[str, Callable[[Lab], None]] = {
    "plain": setup_plain,
    "vxlan": lambda lab: setup_vxlan(lab, 4),
    "lisp": lambda lab: dp.start_datapaths(lab, rloc_family=4),
}


def udp_pps(lab: Lab, payload: int = 64) -> tuple[float, float]:
    """(sent, delivered) packets/s of 64-byte UDP from hostA to hostB."""
    cfg = lab.rundir / "udp64.trafgen"
    cfg.write_text(trafgen_config(mac_of(lab, "hostA", "eth0"), mac_of(lab, "xtr1", "eid0"),
                                  lab.addr("hostA"), lab.addr("hostB"), payload))
    # sysfs=True: trafgen inspects the device under /sys/class/net
    lab.start("hostA", "trafgen", ["trafgen", "-i", str(cfg), "-o", "eth0", "--cpus", "1", "-q"],
              ready=None, sysfs=True)
    try:
        time.sleep(UDP_WARMUP)
        a0, b0, t0 = link_stats(lab, "hostA", "eth0"), link_stats(lab, "hostB", "eth0"), time.monotonic()
        time.sleep(UDP_WINDOW)
        a1, b1, t1 = link_stats(lab, "hostA", "eth0"), link_stats(lab, "hostB", "eth0"), time.monotonic()
    finally:
        lab.stop("hostA", "trafgen")
    dt = t1 - t0
    return (a1["tx_packets"] - a0["tx_packets"]) / dt, (b1["rx_packets"] - b0["rx_packets"]) / dt


def measure(mode: str) -> dict[str, float]:
    with Lab(load("dataplane")) as lab:
        MODES[mode](lab)
        b4, b6 = lab.addr("hostB", 4), lab.addr("hostB", 6)
        for dst in (b4, b6):  # also fills neighbour caches before timing
            if lab.call("hostA", ping_here, dst, 3, 1.0) == 0:
                raise RuntimeError(f"{mode}: hostA cannot reach {dst}; nothing to measure")
        out = {
            "tcp4_gbit_per_s": iperf3_gbps(iperf3(lab, "hostA", "hostB", b4, TCP_SECONDS, parallel=2)),
            "tcp6_gbit_per_s": iperf3_gbps(iperf3(lab, "hostA", "hostB", b6, TCP_SECONDS, parallel=2)),
        }
        sent, got = udp_pps(lab)
        out["udp64_sent_pps"], out["udp64_delivered_pps"] = sent, got
        if mode == "lisp":
            try:
                out["_counters"] = {x: dp.counters(lab, x) for x in ("xtr1", "xtr2")}  # type: ignore[assignment]
            except Exception as exc:
                out["_counters"] = {"error": str(exc)}  # type: ignore[assignment]
        return out


def run(rec) -> None:
    results: dict[str, dict] = {}
    errors: dict[str, str] = {}
    for mode in ("plain", "vxlan", "lisp"):
        print(f"  -- {mode}")
        try:
            results[mode] = measure(mode)
        except Exception as exc:  # keep the references even when one mode fails
            errors[mode] = repr(exc)
            print(f"  {mode} failed: {exc!r}")
            continue
        for k, v in results[mode].items():
            if not k.startswith("_"):
                rec.figure(f"throughput_{mode}_{k}", round(v, 3))

    rec.note("Same lab topology and host settings for every mode (default offloads: TSO/GSO on); "
             f"fresh namespaces per mode; TCP: iperf3 -P 2 for {TCP_SECONDS} s; UDP: 64-byte payloads "
             "from trafgen on 1 CPU, sent (hostA) and delivered (hostB) rates over a 2 s window. "
             "On veth every hop's softirq work runs on the sender's CPU, so the send rate is the "
             "whole chain's rate: the data path is the limit, and sent = delivered means no loss.")
    rec.note("")
    rec.note("| mode | TCP IPv4 EIDs Gbit/s | TCP IPv6 EIDs Gbit/s | UDP 64 B sent pkt/s | UDP 64 B delivered pkt/s |")
    rec.note("|---|---:|---:|---:|---:|")
    for mode in ("lisp", "vxlan", "plain"):
        r = results.get(mode)
        if r is None:
            rec.note(f"| {mode} | failed | | | |")
            continue
        rec.note(f"| {mode} | {r['tcp4_gbit_per_s']:.2f} | {r['tcp6_gbit_per_s']:.2f} | "
                 f"{r['udp64_sent_pps']:,.0f} | {r['udp64_delivered_pps']:,.0f} |")
    if "lisp" in results:
        rec.note("")
        rec.note("| ratio | TCP IPv4 | TCP IPv6 | UDP 64 B pkt/s |")
        rec.note("|---|---:|---:|---:|")
        for ref in ("vxlan", "plain"):
            if ref not in results:
                continue
            ratios = {}
            for k in ("tcp4_gbit_per_s", "tcp6_gbit_per_s", "udp64_delivered_pps"):
                ratios[k] = results["lisp"][k] / results[ref][k] if results[ref][k] else 0.0
                short = k.split("_")[0]
                rec.figure(f"throughput_lisp_vs_{ref}_{short}_ratio", round(ratios[k], 3))
            rec.note(f"| LISP / {ref} | {ratios['tcp4_gbit_per_s']:.2f} | {ratios['tcp6_gbit_per_s']:.2f} | "
                     f"{ratios['udp64_delivered_pps']:.2f} |")
        counters = results["lisp"].get("_counters")
        if counters:
            rec.note("")
            rec.note(f"LISP data-plane counters after the run: `{counters}`")
    for mode, err in errors.items():
        rec.note(f"\n{mode} failed: `{err}`")
    if errors:
        raise RuntimeError(f"modes failed: {', '.join(errors)}")

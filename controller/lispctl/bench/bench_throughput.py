"""Data-plane throughput in the netns lab: LISP vs the kernel's VXLAN vs plain routing.

Same topology (hostA - xtr1 - router - xtr2 - hostB), same host settings, one
lab per mode, all built at the start of the run and measured interleaved:
  plain  EID routes added to the underlay (ordinary forwarding, no tunnel)
  vxlan  kernel VXLAN between xtr1 and xtr2 over the IPv4 RLOCs
  lisp   the eBPF xTRs with static mappings over the IPv4 RLOCs
Figures: TCP Gbit/s (iperf3 -P 2, IPv4 and IPv6 EIDs) and 64-byte UDP
packets/s delivered to hostB (trafgen on one core in hostA; the rate is read
from hostB's interface counters over a window after warm-up).

Why interleaved rounds and pinned CPUs: on 2 cores a single 3 s TCP sample
swings by up to 2x between runs of the same mode, mostly with where the
scheduler puts the iperf3 client and server (same CPU: about half the
rate of split CPUs, in every mode). So the iperf3 client and server are
pinned the same way in every mode (taskset), each figure is the median of
ROUNDS samples taken in rotating mode order (plain, vxlan, lisp; vxlan,
lisp, plain; ...), so drift over the run hits all modes alike, and the
min-max range is reported with it. Ratios are of medians.

Hosts and xTRs keep the kernel's default offloads (TSO/GSO on veth), so TCP
crosses as 64 KB super-packets in every mode (underlay packet counters show
~45 KB average packets for both LISP and VXLAN).

On veth the forwarding work of every hop runs in softirq context on the
sender's CPU (netif_rx, then the softirq on leaving the send call), so
trafgen's send rate *is* the rate of the whole chain: the data path, not
the generator, is the limit, and sent = delivered means nothing was lost on
the way. Compare modes by ratio, never by absolute numbers across machines.
"""
from __future__ import annotations

import contextlib
import os
import signal
import statistics
import time
from typing import Callable

from lispctl.lab import Lab, load
from lispctl.lab import dataplane as dp
from lispctl.lab.references import setup_plain, setup_vxlan
from lispctl.lab.traffic import iperf3, iperf3_gbps, link_stats, mac_of, ping_here, trafgen_config

SECTION = "Data-plane throughput (netns lab)"
TCP_SECONDS = 3
ROUNDS = 3
UDP_WARMUP, UDP_WINDOW = 1.0, 2.0
UDP_CPU = 0
# Between samples nothing of ours runs: more CPU use than this is someone else's.
QUIET_BUSY, QUIET_PATIENCE = 0.10, 30.0
# iperf3 (client CPU, server CPU): "split" is the usual case on an idle
# 2-core box; "same" makes one CPU carry sender, every hop and receiver.
PLACEMENTS = {"split": (0, 1), "same": (1, 1)}
MODES: dict[str, Callable[[Lab], object]] = {
    "plain": setup_plain,
    "vxlan": lambda lab: setup_vxlan(lab, 4),
    "lisp": lambda lab: dp.start_datapaths(lab, rloc_family=4),
}
# figure -> (EID family, placement); None placement: the UDP test
TESTS: dict[str, tuple[int, str | None]] = {
    "tcp4_gbit_per_s": (4, "split"),
    "tcp6_gbit_per_s": (6, "split"),
    "tcp4_same_cpu_gbit_per_s": (4, "same"),
    "udp64_delivered_pps": (4, None),
}


def stop_group(pgid: int) -> None:
    """Stop trafgen with its worker: trafgen forks one sender per CPU, and a
    signal to the parent alone leaves the sender running (and taking a
    whole CPU from every later sample). The lab starts each program as a
    session leader, so its process group is exactly trafgen and its workers."""
    for sig in (signal.SIGINT, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        for _ in range(20):
            time.sleep(0.05)
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return


def udp_pps(lab: Lab, payload: int = 64) -> tuple[float, float]:
    """(sent, delivered) packets/s of 64-byte UDP from hostA to hostB."""
    cfg = lab.rundir / "udp64.trafgen"
    cfg.write_text(trafgen_config(mac_of(lab, "hostA", "eth0"), mac_of(lab, "xtr1", "eid0"),
                                  lab.addr("hostA"), lab.addr("hostB"), payload))
    # sysfs=True: trafgen inspects the device under /sys/class/net
    proc = lab.start("hostA", "trafgen", ["taskset", "-c", str(UDP_CPU), "trafgen", "-i", str(cfg), "-o", "eth0",
                                          "--cpus", "1", "-q"], ready=None, sysfs=True)
    try:
        time.sleep(UDP_WARMUP)
        a0, b0, t0 = link_stats(lab, "hostA", "eth0"), link_stats(lab, "hostB", "eth0"), time.monotonic()
        time.sleep(UDP_WINDOW)
        a1, b1, t1 = link_stats(lab, "hostA", "eth0"), link_stats(lab, "hostB", "eth0"), time.monotonic()
    finally:
        stop_group(proc.pid)
        lab.stop("hostA", "trafgen")
    dt = t1 - t0
    return (a1["tx_packets"] - a0["tx_packets"]) / dt, (b1["rx_packets"] - b0["rx_packets"]) / dt


def _cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs, from /proc/stat."""
    f = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    idle = f[3] + f[4]  # idle + iowait
    return sum(f) - idle, sum(f)


def wait_quiet(window: float = 0.5, limit: float = QUIET_BUSY, patience: float = QUIET_PATIENCE) -> float:
    """Wait until the machine is quiet between samples (another program's
    load would decide the result, not the data path); returns the busy
    fraction of the last window (above `limit`: gave up after `patience` s)."""
    deadline = time.monotonic() + patience
    said = False
    while True:
        b0, t0 = _cpu_times()
        time.sleep(window)
        b1, t1 = _cpu_times()
        busy = (b1 - b0) / max(t1 - t0, 1)
        if busy <= limit or time.monotonic() > deadline:
            return busy
        if not said:
            print(f"  machine busy ({busy:.0%}), waiting up to {patience:.0f} s")
            said = True


def prepare(lab: Lab, mode: str) -> None:
    MODES[mode](lab)
    for v in (4, 6):  # also fills neighbour caches before timing
        dst = lab.addr("hostB", v)
        if lab.call("hostA", ping_here, dst, 3, 1.0) == 0:
            raise RuntimeError(f"{mode}: hostA cannot reach {dst}; nothing to measure")


def sample(lab: Lab) -> dict[str, float]:
    """One sample of every test in one lab."""
    out: dict[str, float] = {}
    for key, (v, placement) in TESTS.items():
        if placement is None:
            out["udp64_sent_pps"], out[key] = udp_pps(lab)
        else:
            out[key] = iperf3_gbps(iperf3(lab, "hostA", "hostB", lab.addr("hostB", v), TCP_SECONDS,
                                          parallel=2, cpus=PLACEMENTS[placement]))
    return out


def run(rec) -> None:
    samples: dict[str, list[dict[str, float]]] = {m: [] for m in MODES}
    errors: dict[str, str] = {}
    counters: dict[str, object] | None = None
    noisy: list[str] = []
    with contextlib.ExitStack() as stack:
        labs: dict[str, Lab] = {}
        for mode in MODES:
            try:
                lab = stack.enter_context(Lab(load("dataplane")))
                prepare(lab, mode)
                labs[mode] = lab
            except Exception as exc:  # keep the references even when one mode fails
                errors[mode] = repr(exc)
                print(f"  {mode} failed: {exc!r}")
        order = list(labs)
        for r in range(ROUNDS):
            for mode in order[r % len(order):] + order[: r % len(order)]:
                if mode in errors:
                    continue
                try:
                    # Load that starts during a sample shows right after it
                    # (others' test runs last longer than a sample): such a
                    # sample is taken again, once.
                    for attempt in range(2):
                        before = wait_quiet()
                        print(f"  -- round {r + 1} {mode} (before: {before:.0%} busy)")
                        s = sample(labs[mode])
                        after = wait_quiet(patience=0)
                        if max(before, after) <= QUIET_BUSY:
                            break
                        print(f"  machine busy around the sample ({before:.0%}/{after:.0%})")
                    else:
                        noisy.append(f"round {r + 1} {mode} ({before:.0%} before, {after:.0%} after)")
                    samples[mode].append(s)
                except Exception as exc:
                    errors[mode] = repr(exc)
                    print(f"  {mode} failed: {exc!r}")
        if "lisp" in labs:
            try:
                counters = {x: dp.counters(labs["lisp"], x) for x in ("xtr1", "xtr2")}
            except Exception as exc:
                counters = {"error": str(exc)}

    keys = ["tcp4_gbit_per_s", "tcp6_gbit_per_s", "tcp4_same_cpu_gbit_per_s", "udp64_sent_pps", "udp64_delivered_pps"]
    med: dict[str, dict[str, float]] = {}
    rng: dict[str, dict[str, tuple[float, float]]] = {}
    for mode, ss in samples.items():
        if mode in errors or not ss:
            continue
        med[mode] = {k: statistics.median(s[k] for s in ss) for k in keys}
        rng[mode] = {k: (min(s[k] for s in ss), max(s[k] for s in ss)) for k in keys}
        for k in keys:
            rec.figure(f"throughput_{mode}_{k}", round(med[mode][k], 3))
            rec.figure(f"throughput_{mode}_{k}_min", round(rng[mode][k][0], 3))
            rec.figure(f"throughput_{mode}_{k}_max", round(rng[mode][k][1], 3))

    split, same = PLACEMENTS["split"], PLACEMENTS["same"]
    rec.note("Same lab topology and host settings for every mode (default offloads: TSO/GSO on). "
             f"The three labs are built once and measured in {ROUNDS} interleaved rounds (mode order "
             "rotates each round); each figure is the **median** of the rounds, with the min-max range. "
             f"TCP: iperf3 -P 2 for {TCP_SECONDS} s, client pinned to CPU {split[0]} and server to CPU "
             f"{split[1]} (\"same CPU\": both on CPU {same[0]}), identical in every mode. "
             f"UDP: 64-byte payloads from trafgen pinned to CPU {UDP_CPU}, sent (hostA) and delivered "
             "(hostB) rates over a 2 s window. On veth every hop's softirq work runs on the sender's CPU, "
             "so the send rate is the whole chain's rate: the data path is the limit, and sent = "
             "delivered means no loss. Single TCP samples vary by tens of percent; read the ranges.")
    rec.note("")
    rec.note("| mode | TCP IPv4 EIDs Gbit/s | TCP IPv6 EIDs Gbit/s | TCP IPv4, same CPU Gbit/s | "
             "UDP 64 B sent pkt/s | UDP 64 B delivered pkt/s |")
    rec.note("|---|---:|---:|---:|---:|---:|")

    def cell(mode: str, k: str) -> str:
        lo, hi = rng[mode][k]
        if k.endswith("pps"):
            return f"{med[mode][k]:,.0f} ({lo:,.0f}-{hi:,.0f})"
        return f"{med[mode][k]:.1f} ({lo:.1f}-{hi:.1f})"

    for mode in ("lisp", "vxlan", "plain"):
        if mode not in med:
            rec.note(f"| {mode} | failed | | | | |")
            continue
        rec.note(f"| {mode} | " + " | ".join(cell(mode, k) for k in
                 ("tcp4_gbit_per_s", "tcp6_gbit_per_s", "tcp4_same_cpu_gbit_per_s",
                  "udp64_sent_pps", "udp64_delivered_pps")) + " |")
    if "lisp" in med:
        rec.note("")
        rec.note("| ratio of medians | TCP IPv4 | TCP IPv6 | TCP IPv4, same CPU | UDP 64 B pkt/s |")
        rec.note("|---|---:|---:|---:|---:|")
        for ref in ("vxlan", "plain"):
            if ref not in med:
                continue
            ratios = {}
            for k in ("tcp4_gbit_per_s", "tcp6_gbit_per_s", "tcp4_same_cpu_gbit_per_s", "udp64_delivered_pps"):
                ratios[k] = med["lisp"][k] / med[ref][k] if med[ref][k] else 0.0
                short = k.replace("_gbit_per_s", "").replace("_delivered_pps", "")
                rec.figure(f"throughput_lisp_vs_{ref}_{short}_ratio", round(ratios[k], 3))
            rec.note(f"| LISP / {ref} | {ratios['tcp4_gbit_per_s']:.2f} | {ratios['tcp6_gbit_per_s']:.2f} | "
                     f"{ratios['tcp4_same_cpu_gbit_per_s']:.2f} | {ratios['udp64_delivered_pps']:.2f} |")
        if counters:
            rec.note("")
            rec.note(f"LISP data-plane counters after the run: `{counters}`")
    rec.note("")
    rec.note(f"Before each sample the bench waits up to {QUIET_PATIENCE:.0f} s for a quiet machine "
             f"(at most {QUIET_BUSY:.0%} CPU busy over 0.5 s) and takes a sample again (once) if the machine "
             "was busy right after it. "
             + (f"**Samples taken on a busy machine:** {', '.join(noisy)}." if noisy
                else "Every sample started on a quiet machine."))
    rec.figure("throughput_busy_samples_count", len(noisy))
    for mode, err in errors.items():
        rec.note(f"\n{mode} failed: `{err}`")
    if errors:
        raise RuntimeError(f"modes failed: {', '.join(errors)}")

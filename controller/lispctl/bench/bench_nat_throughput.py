"""NAT traversal in the `nat` netns lab: throughput through the RTR
(re-encapsulation) against plain routing on the same topology.

Three labs of netns-lab/nat.toml, built at the start and measured in
interleaved rounds on a quiet machine (rounds.py, as bench_throughput):
  rtr    the lab's daemons (msmr, rtr, mn behind the nftables masquerade,
         pub): hostA -> hostP is encapsulated by mn to the RTR from port
         4341 (mapped endpoint-independently to 40341 by the NAT, as the
         data test does), decapsulated, looked up and re-encapsulated by the
         RTR's eBPF data plane to pub, decapsulated by pub; the replies take
         the reverse path, the RTR re-encapsulating to the NAT's translated
         address and port. mn, rtr and pub run with [interfaces]
         rloc-checksum = "offload" (all ETRs are lispctl's), so TCP
         super-packets stay whole across veth, as in bench_throughput.
  rtr_complete  the same with the lab's configs as they are: on veth
         rloc-checksum "auto" completes every inner checksum on the RLOC
         interfaces (any ETR can read them), which costs GSO: the kernel
         segments the super-packets in software before they leave mn.
  plain  no LISP: mn routes natively through the same NAT (masquerade), the
         router routes 10.5.0.0/24 to pub, pub to hostP.
The RTR path has two more veth hops (router -> rtr -> router): that detour
is part of what using an RTR costs, and is in the ratio.

Figures: TCP Gbit/s (iperf3 -P 2, client and server pinned to different
CPUs) and 64-byte UDP packets/s (trafgen on one CPU in hostA; sent at
hostA, delivered at hostP). IPv4 EIDs over IPv4 RLOCs.
"""
from __future__ import annotations

import contextlib

from lispctl.lab import Lab, load
from lispctl.lab import dataplane as dp
from lispctl.lab.procs import ProcessError
from lispctl.lab.scenarios import control as cp
from lispctl.lab.scenarios import nat as nt
from lispctl.lab.traffic import iperf3, iperf3_gbps, mac_of, ping_here, trafgen_config

from . import Recorder
from . import rounds as rd
from .trafgen import UDP_CPU, UDP_WINDOW, udp_rates

SECTION = "NAT traversal: throughput through the RTR (netns lab)"
TCP_SECONDS = 3
ROUNDS = 3
CPUS = (0, 1)                      # iperf3 client, server
SRC, DST_NODE, DST = "hostA", "hostP", "10.5.0.2"
PUB_RLOC = "203.0.113.10"
MAPPED = 40341

# The NAT of both modes: masquerade on wan0, mn's port 4341 mapped to one
# outside port whatever the destination (the draft's assumption; the lab's
# own rules randomise ports, see tests/e2e/test_nat.py).
NAT_RULES = f"""table ip benchnat {{
 chain post {{ type nat hook postrouting priority srcnat; policy accept;
  oifname "wan0" udp sport 4341 masquerade to :{MAPPED}
  oifname "wan0" masquerade
 }}
}}
"""


def _nat(lab: Lab) -> None:
    r = lab.run("nat", ["nft", "-f", "-"], input=NAT_RULES, timeout=10)
    if r.returncode != 0:
        raise ProcessError(f"nft failed: {r.stderr}")


def _offload(lab: Lab, node: str):
    text = cp.config_text(lab, node).replace("[interfaces]\n", '[interfaces]\nrloc-checksum = "offload"\n', 1)
    return cp.render_config(lab, node, text, "bench")


def setup_rtr(lab: Lab, offload: bool = True) -> None:
    _nat(lab)
    for node in ("msmr", "rtr", "pub", "mn"):
        cp.start_node(lab, node, _offload(lab, node) if offload and node != "msmr" else None)
    if nt.wait_nat_state(lab, nt.PRIVATE_RLOC, "nat") is None:
        raise RuntimeError(f"mn found no NAT: {nt.nat_state(lab)}")
    want = f"{nt.NAT_PUBLIC}:{MAPPED}"
    if not cp.eventually(lambda: (nt.rtr_peer(lab) or {}).get("translated") == want, 20):
        raise RuntimeError(f"the RTR has not confirmed mn at {want}: {nt.rtr_peer(lab)}")


def setup_plain(lab: Lab) -> None:
    _nat(lab)
    with lab.ipr("router") as ipr:
        ipr.route("add", dst="10.5.0.0", dst_len=24, gateway=PUB_RLOC)
    with lab.ipr("nat") as ipr:       # hostA's subnet behind mn, as a home NAT knows its LAN
        ipr.route("add", dst="10.1.0.0", dst_len=24, gateway=nt.PRIVATE_RLOC)


MODES = {"rtr": setup_rtr, "rtr_complete": lambda lab: setup_rtr(lab, offload=False), "plain": setup_plain}


def prepare(lab: Lab, mode: str) -> None:
    MODES[mode](lab)
    # resolves the mappings (mn's miss goes to the RTR, the RTR's to the MR), fills neighbour caches
    if not cp.eventually(lambda: lab.call(SRC, ping_here, DST, 1, 0.5), 20) or \
            lab.call(SRC, ping_here, DST, 3, 1.0) < 3:
        raise RuntimeError(f"{mode}: {SRC} cannot reach {DST}; nothing to measure")


def udp_pps(lab: Lab) -> tuple[float, float]:
    """(sent, delivered) packets/s of 64-byte UDP from hostA to hostP."""
    cfg = lab.rundir / "udp64-nat.trafgen"
    cfg.write_text(trafgen_config(mac_of(lab, SRC, "eth0"), mac_of(lab, "mn", "eid0"), lab.addr(SRC), DST, 64))
    sent, delivered = udp_rates(lab, SRC, cfg, ((SRC, "tx_packets"), (DST_NODE, "rx_packets")))
    return sent, delivered


def sample(mode: str, lab: Lab) -> dict[str, float]:
    out = {"tcp4_gbit_per_s": iperf3_gbps(iperf3(lab, SRC, DST_NODE, DST, TCP_SECONDS, parallel=2, cpus=CPUS))}
    out["udp64_sent_pps"], out["udp64_delivered_pps"] = udp_pps(lab)
    return out


KEYS = ("tcp4_gbit_per_s", "udp64_sent_pps", "udp64_delivered_pps")


def run(rec: Recorder) -> None:
    errors: dict[str, str] = {}
    counters: dict[str, object] = {}
    with contextlib.ExitStack() as stack:
        def make(mode: str) -> Lab:
            lab = stack.enter_context(Lab(load("nat")))
            prepare(lab, mode)
            return lab
        labs = rd.build(MODES, make, errors)   # keep the reference even when one mode fails
        taken = rd.interleave(labs, sample, ROUNDS, rd.Quiet(), errors)
        if "rtr" in labs:
            try:
                c = {n: dp.counters(labs["rtr"], n) for n in ("mn", "rtr", "pub")}
                counters = {n: {k: v for k, v in cs.items() if v} for n, cs in c.items()}
            except Exception as exc:
                counters = {"error": str(exc)}

    stats: dict[str, dict[str, rd.Stat]] = {}
    for mode, ss in taken.samples.items():
        if mode in errors or not ss:
            continue
        stats[mode] = rd.summarise(ss, KEYS)
        rd.record(rec, f"nat_{mode}", stats[mode], 3)

    rec.note("hostA (behind mn, whose only uplink is behind the lab's nftables masquerade) -> hostP "
             "(behind pub, public). **rtr**: mn encapsulates to the RTR, the RTR's eBPF data plane "
             "decapsulates, looks up and re-encapsulates to pub (replies: to the NAT's translated "
             "address and port), with rloc-checksum \"offload\"; **rtr_complete**: the same with the lab's "
             "configs as they are (complete inner checksums on veth); **plain**: no LISP, native routing through the same NAT. The RTR path "
             "crosses two more veth hops (router -> rtr -> router), part of what the RTR costs. "
             f"The labs are built once and measured in {ROUNDS} interleaved rounds; each figure is the "
             "**median** (min-max). TCP: iperf3 -P 2 for "
             f"{TCP_SECONDS} s, client on CPU {CPUS[0]}, server on CPU {CPUS[1]}. UDP: 64-byte payloads "
             f"from trafgen on CPU {UDP_CPU}, sent (hostA) and delivered (hostP) over a "
             f"{UDP_WINDOW:.0f} s window.")
    rec.note("")
    for line in rd.header("mode", ["TCP Gbit/s", "UDP 64 B sent pkt/s", "UDP 64 B delivered pkt/s"]):
        rec.note(line)
    for mode in MODES:
        if mode not in stats:
            rec.note(rd.failed_row(mode, len(KEYS)))
            continue
        rec.note(rd.row(mode, (rd.cell(k, stats[mode][k], 2) for k in KEYS)))
    if "plain" in stats and any(m in stats for m in ("rtr", "rtr_complete")):
        rec.note("")
        for line in rd.header("ratio of medians", ["TCP", "UDP 64 B pkt/s"]):
            rec.note(line)
        for mode in ("rtr", "rtr_complete"):
            if mode not in stats:
                continue
            ratios = [rd.ratio(stats[mode][k].median, stats["plain"][k].median)
                      for k in ("tcp4_gbit_per_s", "udp64_delivered_pps")]
            rec.figure(f"nat_{mode}_vs_plain_tcp4_ratio", round(ratios[0], 3))
            rec.figure(f"nat_{mode}_vs_plain_udp64_ratio", round(ratios[1], 3))
            rec.note(rd.ratio_row(f"{mode} / plain", ratios))
    rec.note("")
    rec.note("What bounds each figure: on veth every hop's forwarding runs in softirq on the sending "
             "CPU, so one CPU carries the generator and the whole chain (mn's encapsulation, the NAT, "
             "the RTR's decapsulation and re-encapsulation, pub's decapsulation). **UDP 64 B** is "
             "data-path-bound: per-packet work dominates, trafgen's send rate is the chain's rate "
             "(sent = delivered: nothing lost on the way), and the ratio is the RTR path's extra "
             "per-packet work (two more hops, two more LISP headers). **TCP** is data-path-bound too: "
             "with rloc-checksum \"offload\" (rtr) the super-packets cross every hop whole, as in "
             "plain routing, and the ratio is the RTR path's extra per-super-packet work; with the "
             "default on veth (rtr_complete) the inner checksums are completed on the RLOC "
             "interfaces, so the kernel segments each super-packet in software at mn and every later "
             "hop works per MTU-sized packet (a 2 s sample: 6,451 encapsulations at mn, 196,684 "
             "outer packets of about 1,540 bytes on its uplink): that ratio is mostly the price of "
             "complete checksums on veth, not of the RTR.")
    if counters:
        rec.note("")
        rec.note(f"Data-plane counters of the rtr lab after the run (non-zero): `{counters}`")
    rec.note("")
    rec.note(f"Before each sample the bench waits up to {rd.QUIET_PATIENCE:.0f} s for a quiet machine "
             f"(at most {rd.QUIET_BUSY:.0%} CPU busy) and takes a busy sample again once. "
             + rd.busy_note(taken.noisy))
    rec.figure("nat_busy_samples_count", len(taken.noisy))
    rd.report_errors(rec, errors)

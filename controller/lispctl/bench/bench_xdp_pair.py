"""64-byte UDP through an xTR pair with the XDP programs on both xTRs (XDP
ITR on the EID side, XDP ETR on the RLOC side) against the tc programs
alone, on the same namespaces, measured interleaved.

    hostA eth0 -- eid0 [xtr1] rloc0 == rloc0 [xtr2] eid0 -- eth0 hostB

Both xTRs are lispctl Datapath instances of this process, so switching
modes only attaches or detaches the XDP programs (tc stays attached in both
modes, as it does in production). trafgen in hostA (pinned to one CPU)
sends 64-byte UDP packets with many source ports; the rate delivered is
read from hostB's interface counters over a window after warm-up.

veth and XDP: an XDP program on a veth puts its peer's transmit into NAPI
mode, and a frame redirected into a veth is taken only when its peer runs
an XDP program or GRO. So in XDP mode both RLOC ends run the XDP ETR (and
each XDP ITR may redirect into its RLOC veth), and hostB's eth0 has GRO on
in both modes (so xtr2's XDP ETR may redirect into eid0; the tc ETR does
not care). trafgen builds complete checksums, as frames from a NIC have.
"""
from __future__ import annotations

import ipaddress
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from . import Recorder
from . import rounds as rd

SECTION = "XDP on both xTRs (64-byte UDP, netns)"
ROUNDS = 3
WARMUP, WINDOW = 1.0, 2.0
CPU = 0
MODES = ("tc", "xdp")


def _ns(tag: str) -> str:
    return f"lbx{tag}{os.getpid()}"


def _build(names: dict[str, str]) -> None:
    from pyroute2 import NetNS, netns
    for ns in names.values():
        netns.create(ns)
    links = (("hostA", "eth0", "xtr1", "eid0", "10.1.0.2", "10.1.0.1"),
             ("xtr1", "rloc0", "xtr2", "rloc0", "192.0.2.1", "192.0.2.2"),
             ("xtr2", "eid0", "hostB", "eth0", "10.2.0.1", "10.2.0.2"))
    for a, aif, b, bif, aaddr, baddr in links:
        with NetNS(names[a]) as na:
            na.link("add", ifname=aif, kind="veth", peer={"ifname": bif, "net_ns_fd": names[b]})
            na.addr("add", index=na.link_lookup(ifname=aif)[0], address=aaddr, prefixlen=24)
        with NetNS(names[b]) as nb:
            nb.addr("add", index=nb.link_lookup(ifname=bif)[0], address=baddr, prefixlen=24)
    for node, ns in names.items():
        with NetNS(ns) as n:
            for link in n.get_links():
                n.link("set", index=link["index"], state="up")
            if node == "hostA":
                n.route("add", dst="0.0.0.0/0", gateway="10.1.0.1")
            elif node == "hostB":
                n.route("add", dst="0.0.0.0/0", gateway="10.2.0.1")


def _in(ns: str, fn, *args):
    from pyroute2 import netns
    netns.pushns(ns)
    try:
        return fn(*args)
    finally:
        netns.popns()


def _setup_node(node: str) -> None:
    if node in ("xtr1", "xtr2"):
        Path("/proc/sys/net/ipv4/ip_forward").write_text("1\n")
        for conf in ("all", "default", "rloc0"):
            Path(f"/proc/sys/net/ipv4/conf/{conf}/rp_filter").write_text("0\n")
    if node == "hostB":
        from pyroute2.ethtool import Ethtool
        with Ethtool() as et:
            feats = et.get_features("eth0")
            feats.features["rx-gro"].enable = True
            et.set_features("eth0", feats)


def _rx_packets(ifname: str) -> int:
    from pyroute2 import IPRoute
    with IPRoute() as ipr:
        return int(ipr.get_links(ipr.link_lookup(ifname=ifname)[0])[0].get("IFLA_STATS64")["rx_packets"])


def _tx_packets(ifname: str) -> int:
    from pyroute2 import IPRoute
    with IPRoute() as ipr:
        return int(ipr.get_links(ipr.link_lookup(ifname=ifname)[0])[0].get("IFLA_STATS64")["tx_packets"])


def _mac(ifname: str) -> str:
    from pyroute2 import IPRoute
    with IPRoute() as ipr:
        return ipr.get_links(ipr.link_lookup(ifname=ifname)[0])[0].get("IFLA_ADDRESS")


def _attach(dp, mode: str) -> None:
    dp.attach_eid_interface("eid0", mode=mode, xdp_redirect=(mode == "xdp"))
    dp.attach_rloc_interface("rloc0", mode=mode, complete_checksums=False, xdp_redirect=(mode == "xdp"))


def _sample(names: dict[str, str], cfg: Path) -> dict[str, float]:
    """sent_pps and delivered_pps."""
    proc = subprocess.Popen(["ip", "netns", "exec", names["hostA"], "taskset", "-c", str(CPU), "trafgen",
                             "-i", str(cfg), "-o", "eth0", "--cpus", "1", "-q"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        time.sleep(WARMUP)
        a0, b0, t0 = _in(names["hostA"], _tx_packets, "eth0"), _in(names["hostB"], _rx_packets, "eth0"), \
            time.monotonic()
        time.sleep(WINDOW)
        a1, b1, t1 = _in(names["hostA"], _tx_packets, "eth0"), _in(names["hostB"], _rx_packets, "eth0"), \
            time.monotonic()
    finally:
        for sig in (signal.SIGINT, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(2)
                break
            except subprocess.TimeoutExpired:
                continue
    dt = t1 - t0
    return {"sent_pps": (a1 - a0) / dt, "delivered_pps": (b1 - b0) / dt}


def run(rec: Recorder) -> None:
    if os.geteuid() != 0 or not shutil.which("trafgen"):
        rec.note("_skipped: needs root and trafgen_")
        print("  skipped: needs root and trafgen")
        return
    from pyroute2 import netns

    from lispctl.datapath import Datapath
    from lispctl.lab.traffic import trafgen_config
    from lispctl.mapping.types import EidPrefix, Rloc

    names = {n: _ns(t) for n, t in (("hostA", "a"), ("xtr1", "x"), ("xtr2", "y"), ("hostB", "b"))}
    pin = Path(f"/sys/fs/bpf/lispctl-bench-xdp-{os.getpid()}")
    dps: dict[str, Datapath] = {}
    samples: dict[str, list[dict[str, float]]] = {m: [] for m in MODES}
    try:
        _build(names)
        for node, ns in names.items():
            _in(ns, _setup_node, node)
        pin.mkdir(parents=True, exist_ok=True)
        for xtr, mine, peer, local, remote in (("xtr1", "192.0.2.1", "192.0.2.2", "10.1.0.0/24", "10.2.0.0/24"),
                                              ("xtr2", "192.0.2.2", "192.0.2.1", "10.2.0.0/24", "10.1.0.0/24")):
            d = dps[xtr] = Datapath(xtr, pin_root=pin)
            d.add_local_rloc(ipaddress.ip_address(mine))
            d.add_local_eid(EidPrefix.parse(local))
            d.set_mapping(EidPrefix.parse(remote), [Rloc(ipaddress.ip_address(peer))])
        cfg = Path("/tmp") / f"lispctl-bench-xdp-{os.getpid()}.trafgen"
        cfg.write_text(trafgen_config(_in(names["hostA"], _mac, "eth0"), _in(names["xtr1"], _mac, "eid0"),
                                      "10.1.0.2", "10.2.0.2", 64))
        for _r, mode in rd.rotation(MODES, ROUNDS):
            for xtr, d in dps.items():
                _in(names[xtr], _attach, d, mode)
            try:
                samples[mode].append(_sample(names, cfg))
                counts = {x: d.counters() for x, d in dps.items()}
            finally:
                for xtr, d in dps.items():
                    _in(names[xtr], d.detach)
            if mode == "xdp":
                xdp_share = (counts["xtr1"].other["xdp_encapsulated"], counts["xtr1"].encapsulated,
                             counts["xtr2"].other["xdp_decapsulated"], counts["xtr2"].decapsulated)
            for d in dps.values():
                d.table("counters").clear()
        cfg.unlink(missing_ok=True)
    finally:
        for xtr, d in dps.items():
            _in(names[xtr], d.close, True)
        for ns in names.values():
            try:
                netns.remove(ns)
            except OSError:
                pass
        shutil.rmtree(pin, ignore_errors=True)
    stats = {m: rd.summarise(v, ("sent_pps", "delivered_pps")) for m, v in samples.items()}
    delivered = {m: st["delivered_pps"] for m, st in stats.items()}
    rec.figure("xdp_pair_udp64_tc_delivered_pps", delivered["tc"].median)
    rec.figure("xdp_pair_udp64_xdp_delivered_pps", delivered["xdp"].median)
    rec.figure("xdp_pair_udp64_xdp_vs_tc_ratio", rd.ratio(delivered["xdp"].median, delivered["tc"].median))
    rec.note(f"64-byte UDP, trafgen in hostA on CPU {CPU}, {ROUNDS} interleaved rounds per mode "
             f"({WARMUP:.0f} s warm-up, {WINDOW:.0f} s window); median, min-max of delivered packets/s.")
    rec.note("")
    for line in rd.header("xTRs", ["sent pkt/s", "delivered pkt/s (min-max)"]):
        rec.note(line)
    for mode, name in (("tc", "tc ITR + tc ETR"), ("xdp", "XDP ITR + XDP ETR (tc behind)")):
        rec.note(rd.row(name, (f"{stats[mode]['sent_pps'].median:,.0f}", rd.cell("delivered_pps", delivered[mode]))))
    rec.note("")
    rec.note(f"In the last XDP round the XDP ITR encapsulated {xdp_share[0]:,} of xtr1's {xdp_share[1]:,} "
             f"encapsulated packets and the XDP ETR decapsulated {xdp_share[2]:,} of xtr2's {xdp_share[3]:,} "
             "(any rest took the tc programs, e.g. first packets before the neighbour is resolved).")
    rec.note("")
    rec.note("What bounds it: on veth every hop runs in softirq context on the sending CPU (tc mode: "
             "netif_rx on each transmit; XDP mode: the veth NAPI poll), so trafgen's send rate and the "
             "chain share one CPU and the delivered rate is the rate of the whole chain, data-path-bound; "
             "sent > delivered means packets were dropped at a full veth ring on the way. On NICs the "
             "XDP gain is larger: no skb is allocated for an XDP-redirected frame at all.")

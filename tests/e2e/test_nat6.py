"""NAT traversal over IPv6 (docs/nat.md, "IPv6"): an xTR whose only uplink
is a private IPv6 address behind an nftables IPv6 masquerade (NAT66) finds
the NAT with an Info-Request over IPv6, registers through an RTR reachable
over IPv6, and its hosts talk both ways through the RTR, whose data plane
re-encapsulates toward the NAT's translated IPv6 address *and port*.

The topology is built here (pyroute2, namespaces named after this process),
with real `lispctl up` daemons (tests/netns_daemons.py):

  hA -- mn --up0/lan0-- nat --wan0/r1-- rt --r2-- ms   (MS/MR, rtr-rlocs = [RTR])
  10.1.0.0/24  fd00:1::10          2001:db8:1::2   |\\-r3-- rtr  2001:db8:3::130
                                                    \\--r4-- pub 2001:db8:4::10 -- hP 10.5.0.0/24

fd00:1::/64 is never routed beyond the NAT. The NAT maps mn's port 4341
endpoint-independently (to 40341, as the draft assumes of a NAT, see
tests/e2e/test_nat.py) and masquerades everything else.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time

import pytest
from pyroute2 import NetNS, netns

from lispctl.lab import dataplane as dp
from lispctl.lab.nsexec import call_in_netns, preexec, write_sysctls
from lispctl.lab.traffic import ping_here, tcp_send_here
from tests.conftest import need_root, unavailable
from tests.netns_daemons import daemon_run

pytestmark = pytest.mark.root

TAG = f"n6{os.getpid()}"
NS = {n: f"{TAG}{n}" for n in ("hA", "mn", "nat", "rt", "ms", "rtr", "pub", "hP")}
PRIVATE = "fd00:1::10"
NAT_PUBLIC = "2001:db8:1::2"
MS_ADDR = "2001:db8:2::10"
RTR_ADDR = "2001:db8:3::130"
PUB_ADDR = "2001:db8:4::10"
MAPPED_PORT = 40341
XTR_ID = "0123456789abcdef0123456789abcdef"
SINK_PORT = 5201 + 17
ZERO_CSUM_V6 = "udp/udp.checksum_tree/_ws.expert: Illegal checksum value (0)"

# (a node, its ifname, address/len) -- (b node, its ifname, address/len), mtu
LINKS = [
    (("hA", "eth0", "10.1.0.2/24"), ("mn", "eid0", "10.1.0.1/24"), 1500),
    (("mn", "up0", f"{PRIVATE}/64"), ("nat", "lan0", "fd00:1::1/64"), 1600),
    (("nat", "wan0", f"{NAT_PUBLIC}/64"), ("rt", "r1", "2001:db8:1::ff/64"), 1600),
    (("rt", "r2", "2001:db8:2::ff/64"), ("ms", "eth0", f"{MS_ADDR}/64"), 1600),
    (("rt", "r3", "2001:db8:3::ff/64"), ("rtr", "eth0", f"{RTR_ADDR}/64"), 1600),
    (("rt", "r4", "2001:db8:4::ff/64"), ("pub", "rloc0", f"{PUB_ADDR}/64"), 1600),
    (("pub", "eid0", "10.5.0.1/24"), ("hP", "eth0", "10.5.0.2/24"), 1500),
]
ROUTES = {
    "hA": ("0.0.0.0/0", "10.1.0.1"), "hP": ("0.0.0.0/0", "10.5.0.1"),
    "mn": ("::/0", "fd00:1::1"), "nat": ("::/0", "2001:db8:1::ff"), "ms": ("::/0", "2001:db8:2::ff"),
    "rtr": ("::/0", "2001:db8:3::ff"), "pub": ("::/0", "2001:db8:4::ff"),
}
FORWARDING = ("mn", "nat", "rt", "rtr", "pub")

NAT66 = f"""table ip6 lab6nat {{
 chain post {{ type nat hook postrouting priority srcnat; policy accept;
  oifname "wan0" udp sport 4341 masquerade to :{MAPPED_PORT}
  oifname "wan0" masquerade
 }}
}}
"""

MS = f"""
instance = "{TAG}-ms"
roles = ["ms", "mr"]
[ms]
rtr-rlocs = ["{RTR_ADDR}"]
rtr-keys = {{ "{RTR_ADDR}" = "ms-rtr-secret" }}     # Map-Notify to the RTR: R bit + MS-RTR MAC
[[site]]
name = "mn"
keys = {{ 1 = "mn-secret" }}
[[site.eid-prefix]]
prefix = "10.1.0.0/24"
[[site]]
name = "pub"
keys = {{ 1 = "pub-secret" }}
[[site.eid-prefix]]
prefix = "10.5.0.0/24"
"""
RTR = f"""
instance = "{TAG}-rtr"
roles = ["rtr"]
[interfaces]
rloc-facing = ["eth0"]
[[map-resolver]]
address = "{MS_ADDR}"
[rtr]
map-servers = ["{MS_ADDR}"]
map-server-keys = {{ "{MS_ADDR}" = "ms-rtr-secret" }}
peer-timeout = 8        # > mn's 5 s keepalive; short so the last test sees a peer expire
"""
XTR = """
instance = "{tag}-{name}"
roles = ["xtr"]
[interfaces]
eid-facing = ["eid0"]
rloc-facing = ["{up}"]
[[database]]
eid-prefix = "{eid}"
[[database.locator]]
interface = "{up}"
family = "ipv6"
[[map-server]]
address = "{ms}"
key-id = 1
key = "{key}"
algorithm = "hmac-sha256"
[[map-resolver]]
address = "{ms}"
[etr]
register-interval = 10
xtr-id = "{xtr_id}"
[nat]
enabled = true
keepalive-interval = 5
"""


def _build() -> None:
    for ns in NS.values():
        netns.create(ns)
    for ns in NS.values():
        with NetNS(ns) as n:
            n.link("set", index=n.link_lookup(ifname="lo")[0], state="up")
    for (an, aif, aaddr), (bn, bif, baddr), mtu in LINKS:
        with NetNS(NS[an]) as a:
            a.link("add", ifname=aif, kind="veth", mtu=mtu, peer={"ifname": bif, "net_ns_fd": NS[bn], "mtu": mtu})
    for node in NS:
        call_in_netns(NS[node], write_sysctls, {
            "net/ipv6/conf/all/forwarding": "1" if node in FORWARDING else "0",
            "net/ipv4/ip_forward": "1" if node in FORWARDING else "0",
            "net/ipv6/conf/all/accept_dad": "0", "net/ipv6/conf/default/accept_dad": "0"})
    for end in [e for a, b, _ in LINKS for e in (a, b)]:
        node, ifname, cidr = end
        addr, plen = cidr.split("/")
        with NetNS(NS[node]) as n:
            idx = n.link_lookup(ifname=ifname)[0]
            # IFA_F_NODAD: usable at once, not after duplicate address detection
            n.addr("add", index=idx, address=addr, prefixlen=int(plen), **({"flags": 0x02} if ":" in addr else {}))
            n.link("set", index=idx, state="up")
    for node, (dst, via) in ROUTES.items():
        with NetNS(NS[node]) as n:
            n.route("add", dst=dst, gateway=via)
    r = subprocess.run(["nft", "-f", "-"], input=NAT66, text=True, capture_output=True,
                       preexec_fn=preexec(NS["nat"]), timeout=10)
    assert r.returncode == 0, r.stderr


@pytest.fixture(scope="module")
def lab():
    need_root()
    if not shutil.which("nft"):
        unavailable("nft is not installed (Debian package nftables; scripts/setup.sh installs it)")
    cfgs = {
        "ms": MS, "rtr": RTR,
        "mn": XTR.format(tag=TAG, name="mn", up="up0", eid="10.1.0.0/24", ms=MS_ADDR, key="mn-secret",
                         xtr_id=XTR_ID),
        "pub": XTR.format(tag=TAG, name="pub", up="rloc0", eid="10.5.0.0/24", ms=MS_ADDR,
                          key="pub-secret", xtr_id="fedcba9876543210fedcba9876543210"),
    }
    with daemon_run(TAG, list(NS.values()), _build) as daemons:
        procs = {name: daemons.start(NS[name], name, cfgs[name]) for name in ("ms", "rtr", "pub", "mn")}
        sink = subprocess.Popen([sys.executable, "-m", "lispctl.lab.traffic", "sink", str(SINK_PORT)],
                                preexec_fn=preexec(NS["hP"]), stdout=subprocess.PIPE, text=True)
        try:
            assert sink.stdout is not None and sink.stdout.readline().strip() == "ready"
            yield {"run_dir": daemons.run_dir, "procs": procs, "daemons": daemons}
        finally:
            sink.terminate()
            sink.wait(10)
            assert sink.stdout is not None
            sink.stdout.close()


def _cli(lab, node: str, *args: str):
    out = subprocess.run([sys.executable, "-m", "lispctl.cli", *args, "--json", "-i", f"{TAG}-{node}",
                          "--run-dir", str(lab["run_dir"])], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr
    return json.loads(out.stdout)


def _eventually(fn, timeout=10.0, interval=0.2):
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def _nat_rloc(lab, node: str, rloc: str):
    snap = _cli(lab, node, "status")["state"].get("nat") or {}
    return next((r for r in snap.get("rlocs", []) if r["rloc"] == rloc), None)


def _log(lab, name: str) -> str:
    return (lab["run_dir"] / f"{name}.log").read_text()[-3000:]


@contextlib.contextmanager
def _capture(lab, node: str, bpf_filter: str, name: str):
    """tcpdump on the node's eth0 while the block runs (stopped by its PID)."""
    pcap = lab["run_dir"] / f"{name}.pcap"
    cap = subprocess.Popen(["tcpdump", "-U", "-n", "-i", "eth0", "-w", str(pcap), bpf_filter],
                           preexec_fn=preexec(NS[node]), stderr=subprocess.PIPE, text=True)
    try:
        assert cap.stderr is not None
        line = cap.stderr.readline()
        assert "listening" in line, line
        yield pcap
    finally:
        time.sleep(0.2)
        cap.terminate()
        cap.wait(10)
        assert cap.stderr is not None
        cap.stderr.close()


def _datapath_counters(instance: str) -> dict[str, int]:
    """Read from the pinned maps (bpffs is outside any namespace), flat as dataplane.counters."""
    from lispctl.datapath.pinned import read_counters
    c = read_counters(instance)
    out = {"encapsulated": c.encapsulated, "decapsulated": c.decapsulated, "miss": c.miss}
    out.update({f"drop_{k}": v for k, v in c.drops.items()})
    out.update(c.other)
    return out


def _rtr_peer(lab):
    peers = _cli(lab, "rtr", "status")["state"]["rtr"]["peers"]
    return peers[0] if peers else None


def test_nat66_detected_and_registration_through_the_rtr_over_ipv6(lab):
    st = _eventually(lambda: (r := _nat_rloc(lab, "mn", PRIVATE)) and r["state"] == "nat" and r, 15)
    assert st, (_nat_rloc(lab, "mn", PRIVATE), _log(lab, "mn"))
    # the MS saw the NAT's IPv6 address and the mapped port, and offered the IPv6 RTR
    assert st["translated"] == f"[{NAT_PUBLIC}]:{MAPPED_PORT}" and st["rtr"] == RTR_ADDR, st
    nat = _eventually(lambda: (c := _cli(lab, "mn", "counters")["roles"]["nat"])
                      .get("map_notify_via_rtr_rx") and c, 15)
    assert nat, (_cli(lab, "mn", "counters"), _log(lab, "rtr"))
    assert nat.get("map_notify_via_rtr_bad_auth", 0) == 0 and nat.get("info_reply_unknown_nonce", 0) == 0
    # the RTR knows mn by its xTR-ID at the NAT's IPv6 address and port
    peer = _eventually(lambda: _rtr_peer(lab), 10)
    assert peer["xtr_id"] == XTR_ID and peer["translated"] == f"[{NAT_PUBLIC}]:{MAPPED_PORT}", peer
    assert peer["private"] == PRIVATE and peer["eids"] == ["10.1.0.0/24"]
    # the MS authenticated its Map-Notify to the RTR (MS-RTR key), the RTR
    # checked it, stripped it and relayed the site-signed notify to mn
    assert _cli(lab, "ms", "counters")["roles"]["ms"]["map_notify_ms_rtr_auth_tx"] >= 1
    rtr = _cli(lab, "rtr", "counters")["roles"]["rtr"]
    assert rtr["notify_relayed"] >= 1, rtr
    assert not {"notify_bad_ms_rtr_auth", "notify_without_ms_rtr_auth", "notify_unknown"} & set(rtr), rtr
    # mn's data keepalive (an Info-Request to the RTR's 4341) passed the
    # RTR's IPv6 ETR to its socket: the data binding (the same port here)
    peer = _eventually(lambda: (p := _rtr_peer(lab)) and p.get("data") and p, 10)
    assert peer and peer["data"] == f"[{NAT_PUBLIC}]:{MAPPED_PORT}", _rtr_peer(lab)
    # the MS holds mn's EID with the RTR as its IPv6 locator, registered by the RTR
    sites = {s["name"]: s for s in _cli(lab, "ms", "sites")}
    [reg] = sites["mn"]["eid_prefixes"][0]["registrations"]
    assert [r["address"] for r in reg["rlocs"]] == [RTR_ADDR] and reg["source"] == RTR_ADDR
    # tshark at the RTR, over one keepalive (5 s): the MS's Map-Notify carries
    # R and the MS-RTR authentication; what goes on to the NAT is an ECM
    # with the notify the xTR would have got directly (no R, no MS-RTR)
    with _capture(lab, "rtr", "udp port 4342", "rtr-control") as pcap:
        relayed = _cli(lab, "rtr", "counters")["roles"]["rtr"]["notify_relayed"]      # from now on
        # two relays: the first may have been in flight while the capture started
        assert _eventually(lambda: _cli(lab, "rtr", "counters")["roles"]["rtr"]["notify_relayed"] > relayed + 1, 15)
    pkts = [p for p in dp.tshark_json(pcap) if "lisp" in p]
    for p in pkts:
        assert not dp.expert_problems(p), dp.expert_problems(p)
    from_ms = [p for p in pkts if _outer(p)[0] == MS_ADDR and "lisp.msrtr.auth" in str(p["lisp"])]
    assert from_ms, pkts
    assert "'lisp.msrtr.keyid': '0x0002'" in str(from_ms[0]["lisp"]), from_ms[0]["lisp"]
    to_nat = [p for p in pkts if _outer(p)[2] == NAT_PUBLIC and "lisp.ecm" in str(p)]
    assert to_nat and all("lisp.msrtr" not in str(p) for p in to_nat), to_nat
    # pub, on a public IPv6 address, finds no NAT
    pub = _eventually(lambda: (r := _nat_rloc(lab, "pub", PUB_ADDR)) and r["state"] == "public" and r, 15)
    assert pub and pub["translated"] == f"[{PUB_ADDR}]:4341", pub


def _udp(p):
    return p["udp"][0] if isinstance(p["udp"], list) else p["udp"]


def _outer(p):
    ip = p["ipv6"][0] if isinstance(p["ipv6"], list) else p["ipv6"]
    u = _udp(p)
    return ip["ipv6.src"], u["udp.srcport"], ip["ipv6.dst"], u["udp.dstport"]


def test_data_both_ways_through_the_rtr_over_ipv6(lab):
    """hA (behind the NAT66'd mn) and hP (behind pub) talk through the RTR:
    mn sends to the RTR from 4341 (leaving the NAT as 40341), the RTR
    re-encapsulates to pub's IPv6 RLOC; pub's replies go to the RTR, which
    re-encapsulates them to [NAT]:40341 from 4341, back through the NAT."""
    assert _eventually(lambda: (_rtr_peer(lab) or {}).get("translated") == f"[{NAT_PUBLIC}]:{MAPPED_PORT}", 15)
    pcap = lab["run_dir"] / "rtr.pcap"
    cap = subprocess.Popen(["tcpdump", "-i", "eth0", "-U", "-w", str(pcap), "udp port 4341"],
                           preexec_fn=preexec(NS["rtr"]), stderr=subprocess.PIPE, text=True)
    try:
        assert cap.stderr is not None
        line = cap.stderr.readline()
        assert "listening" in line, line
        assert _eventually(lambda: call_in_netns(NS["hA"], ping_here, "10.5.0.2", 1, 1.0) == 1, 15), \
            (_cli(lab, "rtr", "counters"), _cli(lab, "rtr", "map-cache"), _log(lab, "rtr"))
        assert call_in_netns(NS["hA"], ping_here, "10.5.0.2", 5, 1.0) == 5
        assert call_in_netns(NS["hP"], ping_here, "10.1.0.2", 5, 1.0) == 5
        res = call_in_netns(NS["hA"], tcp_send_here, "10.5.0.2", SINK_PORT, 1 << 18)
        assert res["intact"], res
    finally:
        cap.terminate()
        cap.wait(10)
        assert cap.stderr is not None
        cap.stderr.close()
    pkts = [p for p in dp.tshark_json(pcap) if "lisp-data" in p]
    assert pkts
    for p in pkts:
        # RFC 9300 5.3 (RFC 6935/6936): a zero outer UDP checksum is allowed
        # over IPv6 (the data plane leaves it zero where it cannot finish it,
        # e.g. GSO); tshark predates that and flags it. The NAT66 passes them.
        # The inner TCP's notes (window full, a D-SACK after a retransmission
        # on this loaded machine) say nothing of the LISP encapsulation.
        assert [x for x in dp.expert_problems(p)
                if x != ZERO_CSUM_V6 and not x.startswith("tcp/")] == [], dp.expert_problems(p)
    flows = {_outer(p) for p in pkts}
    port = str(MAPPED_PORT)
    assert (NAT_PUBLIC, port, RTR_ADDR, "4341") in flows, flows        # mn -> RTR via the NAT
    assert (RTR_ADDR, "4341", NAT_PUBLIC, port) in flows, flows        # RTR -> mn's translated port
    assert any(f[0] == RTR_ADDR and f[2] == PUB_ADDR for f in flows), flows
    assert any(f[0] == PUB_ADDR and f[2] == RTR_ADDR for f in flows), flows
    c = _datapath_counters(f"{TAG}-rtr")
    assert c["reencapsulated"] > 0 and c["decapsulated"] >= c["reencapsulated"], c
    cache = _cli(lab, "rtr", "map-cache")
    [mine] = [e for e in cache if e["prefix"] == "10.1.0.0/24"]
    assert mine["rlocs"][0]["address"] == NAT_PUBLIC and mine["rlocs"][0]["port"] == MAPPED_PORT, mine
    assert any(e["prefix"] == "10.5.0.0/24" for e in cache), cache    # resolved by the RTR itself


def test_data_for_a_gone_peer_is_dropped_and_counted_at_the_rtr(lab):
    """mn stops: its RTR peer expires (peer-timeout 8 s) while the MS still
    holds mn's registration with the RTR as locator. hP's packets for mn's
    EID still reach the RTR, whose ITR resolves the EID to... the RTR
    itself: with no confirmed translated port the RTR drops and counts them
    and sends nothing on (not to the NAT, not to itself). mn comes back: the
    confirmed peer's entry replaces that one and stays."""
    mn = lab["procs"]["mn"]
    mn.terminate()
    assert mn.wait(20) == 0
    assert _eventually(lambda: _rtr_peer(lab) is None, 15), _rtr_peer(lab)
    before = _datapath_counters(f"{TAG}-rtr")
    pcap = lab["run_dir"] / "rtr-gone.pcap"
    cap = subprocess.Popen(["tcpdump", "-i", "eth0", "-U", "-w", str(pcap), "udp port 4341"],
                           preexec_fn=preexec(NS["rtr"]), stderr=subprocess.PIPE, text=True)
    try:
        assert cap.stderr is not None and "listening" in cap.stderr.readline()
        assert call_in_netns(NS["hP"], ping_here, "10.1.0.2", 5, 0.5) == 0
    finally:
        cap.terminate()
        cap.wait(10)
        assert cap.stderr is not None
        cap.stderr.close()
    after = _datapath_counters(f"{TAG}-rtr")
    diff = {k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) != before.get(k, 0)}
    flows = {_outer(p) for p in dp.tshark_json(pcap) if "lisp-data" in p}
    assert flows and all(f[0] == PUB_ADDR and f[2] == RTR_ADDR for f in flows), flows   # nothing leaves
    # handed to re-encapsulation ("reencapsulated"), never encapsulated: dropped, counted
    assert diff["decapsulated"] >= 5 and "encapsulated" not in diff, diff
    assert diff.get("drop_no_locator", 0) + diff.get("drop_miss", 0) >= 5, diff
    assert _cli(lab, "rtr", "counters")["roles"]["rtr"]["map_cache_self_locator"] >= 1

    # mn back: the peer's entry (translated address and port) wins and stays
    cfg = lab["run_dir"] / "mn.toml"
    lab["procs"]["mn"] = lab["daemons"].up(NS["mn"], cfg, "mn-again")      # stopped by the fixture
    # mn's data opens the NAT's binding toward the RTR's port 4341 (the NAT
    # filters by address and port: docs/nat.md), then the RTR's data gets in
    assert _eventually(lambda: call_in_netns(NS["hA"], ping_here, "10.5.0.2", 1, 0.5) == 1, 20), \
        (_cli(lab, "rtr", "map-cache"), _rtr_peer(lab), _nat_rloc(lab, "mn", PRIVATE))
    assert call_in_netns(NS["hP"], ping_here, "10.1.0.2", 3, 1.0) == 3
    [mine] = [e for e in _cli(lab, "rtr", "map-cache") if e["prefix"] == "10.1.0.0/24"]
    assert mine["rlocs"][0]["address"] == NAT_PUBLIC and mine["rlocs"][0]["port"] == MAPPED_PORT, mine
    assert mine["role"] != "itr", mine

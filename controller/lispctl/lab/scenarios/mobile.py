"""The `mobile` topology: a LISP mobile node with two access networks.

Building blocks shared by tests/mobile/ and bench_handover, and the
`make lab TOPO=mobile` demonstration (`run`):

    with Lab(load("mobile")) as lab:
        start(lab)                                   # msmr, xtr2, mn (SMR variant)
        warm_up(lab)                                 # both map-caches resolved
        set_access(lab, "up1", False)                # carrier loss on mn's up1
        wait_locator(lab, UP["up2"][4])              # xtr2 now uses up2

Traffic tools run as processes inside the namespaces
(`python -m lispctl.lab.scenarios.mobile CMD ...`): a long-lived TCP stream
and its sink (each writes a JSON state file), a constant-rate UDP stream,
and a first-packet detector (AF_PACKET) for the handover benchmark.
"""
from __future__ import annotations

import ipaddress
import json
import os
import signal
import socket
import struct
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable

from ..runner import Lab
from . import control as cp

MN, HOST, XTR, MSMR = "mn", "hostB", "xtr2", "msmr"
MN_EID = {4: "10.9.0.9", 6: "fd00:9::9"}
HOST_EID = {4: "10.2.0.2", 6: "fd00:2::2"}
UP = {"up1": {4: "198.51.100.9", 6: "2001:db8:a1::9"},
      "up2": {4: "198.51.100.137", 6: "2001:db8:a2::9"}}
ACCESS = {"up1": "ar1", "up2": "ar2"}     # the access router at the other end (its ifname: acc)
GATEWAY = {"up1": {4: "198.51.100.1", 6: "2001:db8:a1::1"},
           "up2": {4: "198.51.100.129", 6: "2001:db8:a2::1"}}
PLEN = {4: 25, 6: 64}
DEFAULT_UPLINKS = (("up1", 4, 1, 100), ("up1", 6, 1, 100), ("up2", 4, 2, 100), ("up2", 6, 2, 100))


# -- configurations -------------------------------------------------------------
def mn_config(uplinks: Iterable[tuple[str, int, int, int]] = DEFAULT_UPLINKS, *, smr: bool = True) -> str:
    """mn.toml with another locator set: (ifname, family 4/6, priority, weight)
    for each EID; smr=False leaves the peers to publish/subscribe."""
    text = (Path(__file__).resolve().parents[4] / "netns-lab" / "mobile" / "mn.toml").read_text()
    head, _, rest = text.partition("[[database]]")
    tail = rest[rest.index("# One Map-Server"):]
    db = []
    for eid in (MN_EID[4] + "/32", MN_EID[6] + "/128"):
        db.append(f'[[database]]\neid-prefix = "{eid}"\n')
        for ifname, fam, prio, weight in uplinks:
            db.append(f'[[database.locator]]\ninterface = "{ifname}"\nfamily = "ipv{fam}"\n'
                      f"priority = {prio}\nweight = {weight}\n")
        db.append("\n")
    tail = tail.replace("smr = true", f"smr = {'true' if smr else 'false'}")
    return head + "".join(db) + tail


def xtr_config(lab: Lab, *, subscribe: bool = False) -> str:
    text = cp.config_text(lab, XTR)
    return text.replace("subscribe = false", f"subscribe = {'true' if subscribe else 'false'}")


def start(lab: Lab, *, mn_text: str | None = None, subscribe: bool = False, smr: bool = True,
          tag: str = "") -> None:
    """msmr (if not running), then xtr2 and mn in parallel; waits for both registrations."""
    if (MSMR, cp.DAEMON) not in lab.procs:
        cp.start_node(lab, MSMR)
    mn_cfg = cp.render_config(lab, MN, mn_text or mn_config(smr=smr), tag=tag or ("smr" if smr else "nosmr"))
    x_cfg = cp.render_config(lab, XTR, xtr_config(lab, subscribe=subscribe), tag="sub" if subscribe else "")
    cp.start_node(lab, XTR, x_cfg, wait=False)
    cp.start_node(lab, MN, mn_cfg, wait=False)
    cp.wait_node(lab, XTR)
    cp.wait_node(lab, MN)
    cp.wait_registered(lab, ("mobile", "site2"))


def restart(lab: Lab, **kw: Any) -> None:
    """Stop mn and xtr2 (fresh map-caches) and start them with other configs."""
    for node in (MN, XTR):
        if (node, cp.DAEMON) in lab.procs:
            cp.stop_node(lab, node)
    start(lab, **kw)


def warm_up(lab: Lab, families: Iterable[int] = (4, 6), timeout: float = 10.0) -> None:
    """Ping until both directions are resolved (misses drop the first packets)."""
    for fam in families:
        ok = cp.eventually(lambda: cp.ping(lab, HOST, MN_EID[fam], count=1, timeout=0.3), timeout, 0.05)
        if not ok:
            raise AssertionError(f"no reply from {MN_EID[fam]}:\n{cp.log_tail(lab, MN)}")


# -- the access networks ------------------------------------------------------------
def set_access(lab: Lab, uplink: str, up: bool) -> float:
    """Carrier loss/return on mn's uplink: the access router's end goes down/up
    (like a Wi-Fi association ending). Returns time.monotonic() just before."""
    with lab.ipr(ACCESS[uplink]) as ipr:
        idx = ipr.link_lookup(ifname="acc")[0]
        t = time.monotonic()
        ipr.link("set", index=idx, state="up" if up else "down")
        if up:
            # the access router lost its IPv6 address with its link (keep_addr_on_down=0)
            try:
                ipr.addr("add", index=idx, address=GATEWAY[uplink][6], prefixlen=PLEN[6])
            except Exception:
                pass
    return t


def set_uplink_admin(lab: Lab, uplink: str, up: bool) -> None:
    """mn's own interface down/up. Going down the kernel drops its IPv6
    addresses and IPv4 routes; coming up they are put back (as DHCP/SLAAC would)."""
    with lab.ipr(MN) as ipr:
        idx = ipr.link_lookup(ifname=uplink)[0]
        ipr.link("set", index=idx, state="up" if up else "down")
        if up:
            restore_uplink_config(ipr, idx, uplink)


def restore_uplink_config(ipr, idx: int, uplink: str, families: Iterable[int] = (4, 6)) -> None:
    metric = 10 if uplink == "up1" else 20
    for fam in families:
        try:
            ipr.addr("add", index=idx, address=UP[uplink][fam], prefixlen=PLEN[fam])
        except Exception:
            pass                                      # still there (IPv4 survives a link down)
        try:
            ipr.route("add", dst="0.0.0.0/0" if fam == 4 else "::/0", gateway=GATEWAY[uplink][fam],
                      priority=metric, family=socket.AF_INET if fam == 4 else socket.AF_INET6)
        except Exception:
            pass


def remove_address(lab: Lab, uplink: str, fam: int) -> None:
    with lab.ipr(MN) as ipr:
        idx = ipr.link_lookup(ifname=uplink)[0]
        ipr.addr("del", index=idx, address=UP[uplink][fam], prefixlen=PLEN[fam])


def add_address(lab: Lab, uplink: str, fam: int) -> None:
    with lab.ipr(MN) as ipr:
        idx = ipr.link_lookup(ifname=uplink)[0]
        restore_uplink_config(ipr, idx, uplink, (fam,))


def delete_uplink_link(lab: Lab, uplink: str) -> bool:
    """Remove mn's uplink veth (its access router's end goes with it), as
    when a USB modem is unplugged. False if it was not there."""
    with lab.ipr(MN) as ipr:
        idx = ipr.link_lookup(ifname=uplink)
        if not idx:
            return False
        ipr.link("del", index=idx[0])
    return True


def create_uplink_link(lab: Lab, uplink: str, *, configure: bool = True) -> int:
    """(Re-)create mn's uplink veth to its access router (a modem plugged in),
    down and unaddressed; with `configure` then brought up with the topology's
    addresses and mn's default routes through it (what DHCP/SLAAC would do).
    Returns mn's new ifindex. The caller removes it (delete_uplink_link) if
    the lab's own teardown would not (same name: it does)."""
    router = ACCESS[uplink]
    with lab.ipr(MN) as ipr:
        ipr.link("add", ifname=uplink, kind="veth", peer={"ifname": "acc", "net_ns_fd": lab.ns(router)})
        idx = ipr.link_lookup(ifname=uplink)[0]
        ipr.link("set", index=idx, mtu=1600)
    with lab.ipr(router) as ipr:
        ridx = ipr.link_lookup(ifname="acc")[0]
        ipr.link("set", index=ridx, mtu=1600)
        for fam in (4, 6):
            addr = GATEWAY[uplink][fam]
            ipr.addr("add", index=ridx, address=addr, prefixlen=PLEN[fam])
        ipr.link("set", index=ridx, state="up")
    if configure:
        with lab.ipr(MN) as ipr:
            ipr.link("set", index=idx, state="up")
            restore_uplink_config(ipr, idx, uplink)
    return idx


def rx_packets(lab: Lab, uplink: str) -> int:
    from ..traffic import link_stats
    return int(link_stats(lab, MN, uplink)["rx_packets"])


# -- what the correspondent knows ---------------------------------------------------
def mn_entry(lab: Lab, fam: int = 4) -> dict | None:
    return cp.entry_for(cp.map_cache(lab, XTR), MN_EID[fam])


def usable_locators(entry: dict | None) -> list[str]:
    """Addresses the data plane would use: reachable, best priority."""
    if not entry:
        return []
    rl = [r for r in entry["rlocs"] if r["reachable"] and r["priority"] != 255]
    best = min((r["priority"] for r in rl), default=None)
    return sorted(r["address"] for r in rl if r["priority"] == best)


def wait_locator(lab: Lab, address: str, fam: int = 4, timeout: float = 10.0) -> dict | None:
    """Until xtr2's entry for mn's EID uses `address` (and only locators of its priority)."""
    def ok():
        e = mn_entry(lab, fam)
        return e if address in usable_locators(e) else None
    return cp.eventually(ok, timeout, 0.02)


def wait_usable(lab: Lab, addresses: Iterable[str], fam: int = 4, timeout: float = 10.0) -> dict | None:
    """Until xtr2's entry for mn's EID uses exactly `addresses`."""
    want = sorted(addresses)

    def ok():
        e = mn_entry(lab, fam)
        return e if usable_locators(e) == want else None
    return cp.eventually(ok, timeout, 0.02)


# -- traffic processes ------------------------------------------------------------
def _write_state(path: str, state: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(state, f)
    os.replace(tmp, path)


def read_state(path: Path | str) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}


def tcp_sink(port: int, state: str) -> None:
    """Accept one connection, count what arrives; state file every 50 ms."""
    srv = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    srv.bind(("::", port))
    srv.listen(1)
    _write_state(state, {"bytes": 0, "connected": False})
    print("ready", flush=True)
    conn, peer = srv.accept()
    conn.settimeout(0.05)
    st = {"bytes": 0, "connected": True, "peer": peer[0], "error": None, "closed": False, "last_rx": None}
    last_write = 0.0
    while True:
        try:
            data = conn.recv(1 << 16)
            if not data:
                st["closed"] = True
            else:
                st["bytes"] += len(data)
                st["last_rx"] = time.monotonic()
        except socket.timeout:
            pass
        except OSError as exc:
            st["error"] = str(exc)
        now = time.monotonic()
        if now - last_write > 0.05 or st["closed"] or st["error"]:
            _write_state(state, st)
            last_write = now
        if st["closed"] or st["error"]:
            return


def tcp_stream(dst: str, port: int, state: str, chunk: int = 1000, interval: float = 0.002) -> None:
    """Send `chunk` bytes every `interval` until SIGTERM; a reset or error ends it (state file)."""
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    st: dict[str, Any] = {"sent": 0, "error": None, "done": False}
    s = socket.create_connection((dst, port), timeout=10)
    s.settimeout(30)
    print("ready", flush=True)
    block = b"x" * chunk
    last_write = 0.0
    while not stop:
        try:
            s.sendall(block)
            st["sent"] += chunk
        except OSError as exc:
            st["error"] = f"{type(exc).__name__}: {exc}"
            break
        now = time.monotonic()
        if now - last_write > 0.05:
            _write_state(state, st)
            last_write = now
        time.sleep(interval)
    if st["error"] is None:
        s.close()
    st["done"] = True
    _write_state(state, st)


def udp_stream(dst: str, port: int, interval: float = 0.001) -> None:
    """A constant-rate UDP stream (one packet per interval) until SIGTERM."""
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    fam = socket.AF_INET6 if ipaddress.ip_address(dst).version == 6 else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_DGRAM)
    print("ready", flush=True)
    seq = 0
    nxt = time.monotonic()
    while not stop:
        try:
            s.sendto(struct.pack("!Qd", seq, time.monotonic()) + bytes(48), (dst, port))
        except OSError:
            pass
        seq += 1
        nxt += interval
        delay = nxt - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        else:
            nxt = time.monotonic()


def udp_flows_here(dst: str, port: int, flows: int, packets: int = 2, first_sport: int = 20000) -> int:
    """`flows` UDP flows (distinct source ports), `packets` datagrams each; returns datagrams sent."""
    fam = socket.AF_INET6 if ipaddress.ip_address(dst).version == 6 else socket.AF_INET
    sent = 0
    for i in range(flows):
        with socket.socket(fam, socket.SOCK_DGRAM) as s:
            s.bind(("::" if fam == socket.AF_INET6 else "0.0.0.0", first_sport + i))
            for _ in range(packets):
                s.sendto(b"f" * 32, (dst, port))
                sent += 1
    return sent


ETH_P_ALL = 0x0003


def first_packet(ifname: str, addresses: list[str], timeout: float = 10.0) -> None:
    """Print 'ready', then 'first <monotonic>' for the first LISP data packet
    (UDP to 4341, not from 4342) arriving on ifname for one of `addresses`; 'none' on timeout."""
    wanted = {ipaddress.ip_address(a).packed for a in addresses}
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.bind((ifname, 0))
    s.settimeout(0.2)
    print("ready", flush=True)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            frame, addr = s.recvfrom(2048)
        except socket.timeout:
            continue
        now = time.monotonic()
        if addr[2] == socket.PACKET_OUTGOING:
            continue
        eth = struct.unpack("!H", frame[12:14])[0]
        if eth == 0x0800 and len(frame) >= 38 and frame[23] == 17:
            ihl = (frame[14] & 0x0F) * 4
            dst = frame[30:34]
            sport, dport = struct.unpack("!HH", frame[14 + ihl:14 + ihl + 4])
        elif eth == 0x86DD and len(frame) >= 58 and frame[20] == 17:
            dst = frame[38:54]
            sport, dport = struct.unpack("!HH", frame[54:58])
        else:
            continue
        # not from 4342: behind a NAT, control (Info-Reply, the RTR's
        # ECM'd Map-Notify) also arrives on 4341 (docs/nat.md)
        if dport == 4341 and sport != 4342 and dst in wanted:
            print(f"first {now:.6f}", flush=True)
            return
    print("none", flush=True)


def start_tool(lab: Lab, node: str, name: str, *args: object, ready: str | None = "ready",
               timeout: float = 15.0):
    argv = [lab.expand(node, "{python}"), "-m", "lispctl.lab.scenarios.mobile", *map(str, args)]
    return lab.start(node, name, argv, ready=ready, timeout=timeout)


class TcpStream:
    """A long-lived TCP connection hostB -> mn's EID, sending continuously."""

    def __init__(self, lab: Lab, fam: int = 4, port: int = 5201, tag: str = "tcp") -> None:
        self.lab, self.tag = lab, tag
        self.sink_state = str(lab.rundir / f"{tag}-sink.json")
        self.src_state = str(lab.rundir / f"{tag}-stream.json")
        for p in (self.sink_state, self.src_state):
            Path(p).unlink(missing_ok=True)
        start_tool(lab, MN, f"{tag}-sink", "tcp-sink", port, self.sink_state)
        start_tool(lab, HOST, f"{tag}-stream", "tcp-stream", MN_EID[fam], port, self.src_state)

    def received(self) -> int:
        return int(read_state(self.sink_state).get("bytes", 0))

    def sink(self) -> dict:
        return read_state(self.sink_state)

    def source(self) -> dict:
        return read_state(self.src_state)

    def grows(self, timeout: float = 10.0, by: int = 20000) -> bool:
        """True when the sink receives `by` more bytes within timeout (and nothing broke)."""
        start = self.received()
        return bool(cp.eventually(lambda: self.received() >= start + by
                                  or bool(self.sink().get("error") or self.source().get("error")),
                                  timeout, 0.05)) and self.received() >= start + by

    def stop(self) -> dict:
        self.lab.stop(HOST, f"{self.tag}-stream")
        end = cp.eventually(lambda: self.sink().get("closed") or self.sink().get("error"), 10, 0.05)
        self.lab.stop(MN, f"{self.tag}-sink")
        return {"sink": self.sink(), "source": self.source(), "closed_cleanly": bool(end) and
                not self.sink().get("error")}


# -- the demonstration --------------------------------------------------------------
def run(lab: Lab, say: Callable[[str], None]) -> bool:
    """`make lab TOPO=mobile`: steps 2-7 after the runner's [1/7] (building the lab)."""
    say("\n[2/7] Starting msmr (MS+MR), xtr2 (correspondent) and mn (`lispctl up`, roles = [\"mobile-node\"])")
    try:
        start(lab)
    except Exception as exc:
        say(f"      failed: {exc}")
        return False
    say("      both registered (mn from its RLOCs on up1 and up2)")
    say(f"\n[3/7] Ping hostB -> mn's EIDs {MN_EID[4]}, {MN_EID[6]} until both map-caches are resolved")
    try:
        warm_up(lab)
    except Exception as exc:
        say(f"      failed: {exc}")
        return False
    e = mn_entry(lab)
    say(f"      xtr2 reaches mn's EID {MN_EID[4]} via {usable_locators(e)} (up1 preferred)")
    say("\n[4/7] A TCP stream hostB -> mn runs; mn's access network 1 goes away (carrier loss on up1)")
    tcp = TcpStream(lab)
    ok = tcp.grows(5)
    t0 = set_access(lab, "up1", False)
    moved = wait_locator(lab, UP["up2"][4], timeout=10)
    dt = (time.monotonic() - t0) * 1000
    say(f"      xtr2's map-cache now uses {usable_locators(moved)} (seen {dt:.0f} ms after the link went down)")
    ok &= bool(moved) and tcp.grows(10)
    say(f"      TCP stream still flowing: {tcp.received()} bytes received, no reset" if ok else
        "      TCP stream broke")
    say("\n[5/7] Access network 1 comes back: traffic returns to up1")
    set_access(lab, "up1", True)
    back = wait_locator(lab, UP["up1"][4], timeout=10)
    ok &= bool(back) and tcp.grows(10)
    res = tcp.stop()
    say(f"      map-cache: {usable_locators(back)}; stream closed cleanly: {res['closed_cleanly']}")
    ok &= res["closed_cleanly"]
    say(f"\n[6/7] mn's view:   $ lispctl database -i {lab.instance(MN)}")
    for line in cp.cli(lab, MN, "database").stdout.rstrip().splitlines():
        say("      " + line)
    say(f"\n[7/7] xtr2's view:   $ lispctl map-cache -i {lab.instance(XTR)}, and the SMR counters")
    for line in cp.cli(lab, XTR, "map-cache").stdout.rstrip().splitlines():
        say("      " + line)
    try:
        etr = cp.counters(lab, MN)["roles"].get("etr", {})
        itr = cp.counters(lab, XTR)["roles"].get("itr", {})
        say(f"      mn: smr_tx {etr.get('smr_tx', 0)}, map_register_tx {etr.get('map_register_tx', 0)};"
            f" xtr2: smr_rx {itr.get('smr_rx', 0)}")
    except Exception as exc:          # the counters are decoration: the verdict is above
        say(f"      (counters unavailable: {exc})")
    return ok


def _main(argv: list[str]) -> None:
    cmd, args = argv[0], argv[1:]
    if cmd == "tcp-sink":
        tcp_sink(int(args[0]), args[1])
    elif cmd == "tcp-stream":
        tcp_stream(args[0], int(args[1]), args[2])
    elif cmd == "udp-stream":
        udp_stream(args[0], int(args[1]), float(args[2]) if len(args) > 2 else 0.001)
    elif cmd == "first-packet":
        first_packet(args[0], args[1].split(","), float(args[2]) if len(args) > 2 else 10.0)
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    _main(sys.argv[1:])

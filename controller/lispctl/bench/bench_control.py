"""Control plane: Map-Server throughput and miss-to-first-forwarded-packet latency.

1. Map-Registers per second a real `lispctl up` MS daemon processes
   (HMAC-SHA-256 verify, registration update, signed Map-Notify back),
   pinned to CPU 0, loaded from another namespace pinned to CPU 1 with
   pre-signed registers for many sites, a fixed number in flight. Reference
   in the same run: the wire codec's decode + verify of the same message on
   one core (the ratio is what the daemon adds: sockets, event loop, state,
   signing the notify).
2. In the `control` lab: for 100 fresh destinations (100 /32 EIDs that xtr2
   registers), the time from the first packet hostA sends to an unknown EID
   until the first encapsulated packet leaves xtr1, split into its parts
   (miss -> Map-Request on the wire, Map-Request -> Map-Reply, Map-Reply ->
   first encapsulated packet). Timestamps: the sender's clock before
   sendto() and the kernel's receive timestamps of an AF_PACKET socket on the
   router's side of xtr1's link (same host clock, CLOCK_REALTIME).

LISPCTL_BENCH_CONTROL=ms (or =latency) runs only that part, e.g. while
tuning the Map-Server; the section in docs/benchmarks.md then holds only
that part's figures, so run both before committing it.
"""
from __future__ import annotations

import ipaddress
import os
import re
import select
import socket
import statistics
import struct
import time

SECTION = "Control plane (lispctl up: Map-Server, ITR miss resolution)"

N_SITES = 200
WINDOW = 64
RUN_S = 3.0
WARMUP_S = 0.5
N_DESTS = 100
N_FIRST = 50          # further fresh destinations, one packet each (first packet -> sent)

MS_TOPO = """
name = "bench-ms"
description = "a Map-Server and a Map-Register load generator"
[nodes.gen]
[nodes.ms]
[[links]]
a = { node = "gen", ifname = "eth0", addresses = ["192.0.2.1/24"] }
b = { node = "ms", ifname = "eth0", addresses = ["192.0.2.2/24"] }
"""


# -- 1. Map-Server throughput -------------------------------------------------
def _site_key(i: int) -> str:
    return f"bench-site-{i}-key"


def _ms_config(instance: str) -> str:
    lines = [f'instance = "{instance}"', 'roles = ["ms"]', 'log-level = "warning"',
             'control-addresses = ["192.0.2.2"]']
    for i in range(N_SITES):
        lines += ["[[site]]", f'name = "s{i}"', f'keys = {{ 1 = "{_site_key(i)}" }}',
                  "[[site.eid-prefix]]", f'prefix = "10.{i // 256}.{i % 256}.0/24"']
    return "\n".join(lines) + "\n"


def _registers() -> list[bytes]:
    from lispctl import wire as w
    out = []
    for i in range(N_SITES):
        rec = w.EidRecord(ipaddress.IPv4Address(f"10.{i // 256}.{i % 256}.0"), 24,
                          (w.LocatorRecord(ipaddress.IPv4Address("192.0.2.1"), 1, 100),), 1440, 0, True)
        msg = w.MapRegister(0x1000 + i, (rec,), 1, w.ALG_HMAC_SHA256, want_map_notify=True)
        out.append(w.sign(msg, _site_key(i)))
    return out


def _load_here(msgs: list[bytes], dst: str, window: int, warmup: float, seconds: float) -> dict:
    """Runs in the generator's namespace, pinned to CPU 1: keep `window`
    registers in flight; each Map-Notify releases the next one."""
    os.sched_setaffinity(0, {1})
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    s.bind(("192.0.2.1", 0))
    s.setblocking(False)
    n = len(msgs)
    i = 0

    def send(k: int) -> None:
        nonlocal i
        for _ in range(k):
            try:
                s.sendto(msgs[i % n], (dst, 4342))
            except BlockingIOError:
                return
            i += 1
    send(window)
    t0 = time.monotonic()
    start, end = t0 + warmup, t0 + warmup + seconds
    counted = 0
    last_rx = t0
    while (now := time.monotonic()) < end:
        r, _, _ = select.select([s], [], [], 0.02)
        if not r:
            if now - last_rx > 0.05:        # something was lost: refill the window
                send(window)
                last_rx = now
            continue
        got = 0
        while True:
            try:
                data = s.recv(2048)
            except BlockingIOError:
                break
            if data and data[0] >> 4 == 4:      # Map-Notify
                got += 1
        last_rx = time.monotonic()
        if last_rx >= start:
            counted += got
        send(got)
    s.close()
    return {"notifies": counted, "seconds": seconds, "sent": i}


def _ms_throughput(rec) -> dict:
    from lispctl import wire as w
    from lispctl.api.client import ApiClient
    from lispctl.lab import Lab, loads

    from .bench_wire import _rate

    msgs = _registers()
    with Lab(loads(MS_TOPO)) as lab:
        cfg = lab.rundir / "ms.toml"
        cfg.write_text(_ms_config(lab.instance("ms")))
        run_dir = lab.rundir / "run"
        p = lab.start("ms", "lispctl", [lab.expand("ms", "{python}"), "-m", "lispctl.cli", "up", "-c", str(cfg),
                                         "--run-dir", str(run_dir)], timeout=30)
        os.sched_setaffinity(p.pid, {0})
        client = ApiClient.for_instance(lab.instance("ms"), run_dir)
        c0 = client.call("counters")["roles"]["ms"]
        t0 = time.monotonic()
        res = lab.call("gen", _load_here, msgs, "192.0.2.2", WINDOW, WARMUP_S, RUN_S)
        elapsed = time.monotonic() - t0
        c1 = client.call("counters")["roles"]["ms"]
        registered = sum(1 for s in client.call("sites") for p_ in s["eid_prefixes"] if p_["registered"])
    ok = c1.get("map_register_ok", 0) - c0.get("map_register_ok", 0)
    bad = c1.get("map_register_bad_auth", 0) - c0.get("map_register_bad_auth", 0)
    notify_rate = res["notifies"] / res["seconds"]
    daemon_rate = ok / elapsed

    key, raw = _site_key(0), msgs[0]

    def decode_verify():
        if not w.verify(raw, key):
            raise AssertionError("reference message does not verify")
        return w.decode_control(raw)
    os.sched_setaffinity(0, {0})
    try:
        ref = _rate(decode_verify)
    finally:
        os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
    rec.figure("ms_map_registers_per_s", round(notify_rate))
    rec.figure("ms_map_register_ok_per_s_from_counters", round(daemon_rate))
    rec.figure("ms_ref_wire_decode_verify_per_s", round(ref))
    rec.figure("ms_daemon_vs_wire_decode_verify_ratio", round(notify_rate / ref, 3))
    return {"notify_rate": notify_rate, "daemon_rate": daemon_rate, "ref": ref, "bad": bad,
            "registered": registered, "sent": res["sent"]}


# -- 2. miss -> first forwarded packet ---------------------------------------
ETH_P_ALL = 0x0003
SO_TIMESTAMPNS = 35


def _inner_dst_of_data(ip: bytes) -> tuple[str, bytes] | None:
    """(kind, EID) for a LISP packet on the wire: ('data', inner dst) for
    UDP/4341, ('req', EID) for an ECM'd Map-Request, ('rep', EID) for a Map-Reply."""
    v = ip[0] >> 4
    if v == 4:
        l4 = ip[(ip[0] & 0xF) * 4:] if ip[9] == 17 else None
    elif v == 6:
        l4 = ip[40:] if ip[6] == 17 else None
    else:
        return None
    if l4 is None or len(l4) < 16:
        return None
    sport, dport = struct.unpack("!HH", l4[:4])
    payload = l4[8:]
    if dport == 4341:
        inner = payload[8:]
        if inner and inner[0] >> 4 == 4 and len(inner) >= 20:
            return "data", inner[16:20]
        return None
    if 4342 not in (sport, dport) or not payload:
        return None
    t = payload[0] >> 4
    if t == 8 and len(payload) > 4 + 20:       # ECM: LISP hdr, inner IPv4 hdr, UDP, Map-Request
        inner = payload[4:]
        if inner[0] >> 4 == 4:
            return "req", inner[16:20]
    # Map-Reply: 12-byte header, record: TTL, counts, flags, map-version, EID-AFI (offset 22), EID
    if t == 2 and len(payload) >= 28 and payload[22:24] == b"\x00\x01":
        return "rep", payload[24:28]
    return None


def _measure_here(router_ns: str, ifname: str, host_ns: str, dests: list[str], gap_s: float,
                  once: bool = False) -> list[dict]:
    """Runs in a forked child: a packet socket in the router's namespace, a UDP
    socket in hostA's, then for each destination: send until the first
    encapsulated packet for it is seen, recording the kernel timestamps of the
    Map-Request, Map-Reply and that packet. With `once`, send one packet
    only and wait (up to 5 s) for it: the first packet must not be lost."""
    from lispctl.lab.nsexec import enter
    enter(router_ns)
    ps = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    ps.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    ps.bind((ifname, 0))
    ps.setblocking(False)
    enter(host_ns)
    us = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    out = []

    def drain(seen: dict, want: bytes) -> None:
        while True:
            try:
                data, anc, _, _ = ps.recvmsg(4096, 64)
            except BlockingIOError:
                return
            ts = None
            for level, kind, val in anc:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    sec, nsec = struct.unpack("qq", val[:16])
                    ts = sec * 1_000_000_000 + nsec
            if ts is None or len(data) < 15:
                continue
            et = struct.unpack("!H", data[12:14])[0]
            if et not in (0x0800, 0x86DD):
                continue
            hit = _inner_dst_of_data(data[14:])
            if hit is not None and hit[1] == want and hit[0] not in seen:
                seen[hit[0]] = ts

    for dst in dests:
        want = socket.inet_aton(dst)
        seen: dict[str, int] = {}
        drain({}, b"")                           # nothing old counts
        t0 = time.time_ns()
        deadline = time.monotonic() + 5.0
        sent = False
        while "data" not in seen and time.monotonic() < deadline:
            if not (once and sent):
                us.sendto(b"x" * 32, (dst, 9))
                sent = True
            select.select([ps], [], [], 0.05 if once else gap_s)
            drain(seen, want)
        if "data" in seen:
            out.append({"dst": dst, "t0": t0, **seen})
        time.sleep(0.01)
    return out


def _latency(rec) -> dict:
    from lispctl.lab import Lab, load
    from lispctl.lab.scenarios import control as cp

    dests = [f"10.2.0.{100 + i}" for i in range(N_DESTS)]
    firsts = [f"10.2.0.{100 + N_DESTS + i}" for i in range(N_FIRST)]
    with Lab(load("control")) as lab:
        text = cp.config_text(lab, "xtr2")
        extra = "".join(f'\n[[database]]\neid-prefix = "{d}/32"\n[[database.locator]]\ninterface = "rloc0"\n'
                        for d in dests + firsts)
        # the /32s go right after the existing databases (before [[map-server]])
        text = re.sub(r"(?m)^\[\[map-server\]\]", lambda m: extra.lstrip("\n") + "\n" + m.group(0), text, count=1)
        cfg2 = cp.render_config(lab, "xtr2", text, tag="bench")
        cp.start_control_plane(lab, configs={"xtr2": cfg2})
        s = cp.wait_registered(lab, ("site1", "site2"))
        n_regs = sum(len(p["registrations"]) for p in s["site2"]["eid_prefixes"])
        res = lab.call("router", _measure_here, lab.ns("router"), "r1", lab.ns("hostA"), dests, 0.0002)
        first = lab.call("router", _measure_here, lab.ns("router"), "r1", lab.ns("hostA"), firsts, 0.0, True)
        itr = cp.counters(lab, "xtr1")["roles"]["itr"]
    if len(res) < N_DESTS * 0.9:
        raise RuntimeError(f"only {len(res)} of {N_DESTS} destinations were resolved")
    ms = lambda a, b: (b - a) / 1e6        # noqa: E731
    total = sorted(ms(r["t0"], r["data"]) for r in res)
    parts = [r for r in res if "req" in r and "rep" in r]
    to_req = sorted(ms(r["t0"], r["req"]) for r in parts)
    rtt = sorted(ms(r["req"], r["rep"]) for r in parts)
    to_fwd = sorted(ms(r["rep"], r["data"]) for r in parts)

    def p99(xs):
        return xs[min(len(xs) - 1, int(round(0.99 * (len(xs) - 1))))]
    rec.figure("miss_to_first_forwarded_median_ms", round(statistics.median(total), 3))
    rec.figure("miss_to_first_forwarded_p99_ms", round(p99(total), 3))
    rec.figure("miss_to_map_request_median_ms", round(statistics.median(to_req), 3))
    rec.figure("map_request_to_map_reply_median_ms", round(statistics.median(rtt), 3))
    rec.figure("map_reply_to_first_forwarded_median_ms", round(statistics.median(to_fwd), 3))
    once = sorted(ms(r["t0"], r["data"]) for r in first)
    rec.figure(f"first_packets_sent_of_{N_FIRST}", len(first))
    if once:
        rec.figure("first_packet_sent_median_ms", round(statistics.median(once), 3))
        rec.figure("first_packet_sent_p99_ms", round(p99(once), 3))
    return {"once": once, "n_first": N_FIRST, "n": len(res), "parts": len(parts), "total": total, "to_req": to_req, "rtt": rtt,
            "to_fwd": to_fwd, "p99": p99, "regs": n_regs, "map_request_tx": itr.get("map_request_tx", 0)}


def _parts() -> set[str]:
    want = {p.strip() for p in os.environ.get("LISPCTL_BENCH_CONTROL", "ms,latency").split(",") if p.strip()}
    unknown = want - {"ms", "latency"}
    if unknown or not want:
        raise RuntimeError(f"LISPCTL_BENCH_CONTROL: parts are 'ms' and 'latency', not {sorted(unknown)}")
    return want


def run(rec) -> None:
    if os.geteuid() != 0:
        raise RuntimeError("needs root (network namespaces, BPF)")
    parts = _parts()
    if "ms" in parts:
        _run_ms(rec)
    if "latency" in parts:
        _run_latency(rec)


def _run_ms(rec) -> None:
    t = _ms_throughput(rec)
    rec.note("Map-Server daemon (`lispctl up`, roles ms, info logging off) pinned to CPU 0; "
             f"a load generator in another namespace pinned to CPU 1 keeps {WINDOW} pre-signed "
             f"HMAC-SHA-256 Map-Registers (M bit set) for {N_SITES} sites in flight and counts the "
             f"Map-Notifies that come back over {RUN_S:g} s. **Warm figure**: the same {N_SITES} "
             "messages over and over (identical bytes, every cache hit); distinct sites and fresh "
             "nonces, cold and steady: \"Map-Server at scale\" below.")
    rec.note("")
    rec.note("| | per second |")
    rec.note("|---|---:|")
    rec.note(f"| Map-Register -> Map-Notify, daemon on one core (warm: identical messages) | {t['notify_rate']:,.0f} |")
    rec.note(f"| accepted registers (MS counters, incl. warm-up) | {t['daemon_rate']:,.0f} |")
    rec.note(f"| reference: wire decode + verify of the same message, one core | {t['ref']:,.0f} |")
    rec.note("")
    rec.note(f"The daemon reaches {t['notify_rate'] / t['ref']:.0%} of the bare decode+verify rate; "
             f"the rest is socket I/O, the event loop, the registration update and signing the "
             f"Map-Notify. {t['registered']} of {N_SITES} sites registered, {t['bad']} authentication failures.")
    rec.note("")


def _run_latency(rec) -> None:
    lat = _latency(rec)
    p99 = lat["p99"]
    rec.note(f"Miss to first forwarded packet in the `control` lab, {lat['n']} fresh destinations "
             f"(10.2.0.100-199, registered by xtr2 as {lat['regs']} prefixes of site2). hostA sends a "
             "32-byte UDP packet every 0.2 ms until one leaves xtr1 encapsulated (miss-action drop); "
             "kernel receive timestamps on the router's end of xtr1's link:")
    rec.note("")
    rec.note("| ms | median | p99 |")
    rec.note("|---|---:|---:|")
    rec.note(f"| first packet -> first encapsulated packet | {statistics.median(lat['total']):.2f} | {p99(lat['total']):.2f} |")
    rec.note(f"| first packet -> Map-Request on the wire (BPF miss event, ITR) | {statistics.median(lat['to_req']):.2f} | {p99(lat['to_req']):.2f} |")
    rec.note(f"| Map-Request -> Map-Reply (MR, MS forwards to the ETR, ETR answers) | {statistics.median(lat['rtt']):.2f} | {p99(lat['rtt']):.2f} |")
    rec.note(f"| Map-Reply -> first encapsulated packet (install into BPF) | {statistics.median(lat['to_fwd']):.2f} | {p99(lat['to_fwd']):.2f} |")
    rec.note("")
    rec.note("The last row includes up to 0.2 ms of waiting for the sender's next packet.")
    rec.note("")
    once = lat["once"]
    rec.note(f"No lost first packet: for {lat['n_first']} further fresh destinations hostA sends **one** "
             "packet each; the miss hands it to xtr1's daemon, which holds it while the destination "
             "resolves and sends it encapsulated once the mapping is installed "
             f"(docs/datapath.md, \"First packets\"). {len(once)} of {lat['n_first']} first packets "
             "left xtr1 encapsulated" + (f"; first packet -> sent encapsulated: median "
             f"{statistics.median(once):.2f} ms, p99 {p99(once):.2f} ms." if once else "."))

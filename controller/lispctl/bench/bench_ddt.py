"""LISP-DDT: resolutions per second through a DDT Map-Resolver, and latency
through a 3-level tree (root -> DDT node -> Map-Server), in the `ddt` lab.

Daemons: `lispctl up` on root, ddt1, ddt2, ms1-3 and mr (netns-lab/ddt/).
No xTR daemons: a generator in xtr1's namespace registers 10.1-3.0.0/24 with
their Map-Servers (P bit: the Map-Server answers for them), then acts as an
ITR, sending ECM'd Map-Requests for hosts of the three sites to mr and
counting the Map-Replies (proxy replies from the Map-Servers) that come back.

- warm: referral cache filled (every resolution is mr -> Map-Server -> reply);
- cold: the DDT nodes and Map-Servers are restarted with
  `ddt.referral-ttl-minutes = 0`, so nothing is cached and every resolution
  walks root -> ddt1/ddt2 -> Map-Server (three DDT Map-Requests and
  Map-Referrals, then the reply).

Throughput: WINDOW requests in flight for RUN_S seconds. Latency: one request
at a time, N_LAT of them, send -> Map-Reply on the generator's clock. The
machine's two cores run the seven daemons and the generator, so these are
figures for the whole tree on one small box, not for one daemon.
"""
from __future__ import annotations

import ipaddress
import os
import random
import re
import select
import socket
import statistics
import time

SECTION = "LISP-DDT (ddt lab: DDT Map-Resolver, 3-level tree)"

WINDOW = 32
RUN_S = 3.0
WARMUP_S = 0.5
N_LAT = 200
GEN = "172.16.31.2"
MR = "172.16.20.2"
MS = {1: "172.16.11.2", 2: "172.16.12.2", 3: "172.16.13.2"}
INFRA = ("root", "ddt1", "ddt2", "ms1", "ms2", "ms3", "mr")


def _registers() -> list[tuple[str, bytes]]:
    from lispctl import wire as w
    out = []
    for k, ms in MS.items():
        rec = w.EidRecord(ipaddress.IPv4Address(f"10.{k}.0.0"), 24,
                          (w.LocatorRecord(ipaddress.IPv4Address(GEN), 1, 100),), 1440, 0, True)
        msg = w.MapRegister(0x5000 + k, (rec,), 1, w.ALG_HMAC_SHA256, proxy_reply=True, want_map_notify=True)
        out.append((ms, w.sign(msg, f"site{k}-secret")))
    return out


def _request(nonce: int, eid: str, sport: int) -> bytes:
    from lispctl import wire as w
    a = ipaddress.IPv4Address(eid)
    req = w.MapRequest(nonce, (w.RequestRecord(a, 32),), (ipaddress.IPv4Address(GEN),))
    return w.EncapsulatedControlMessage(req, ipaddress.IPv4Address(GEN), a, sport, 4342).encode()


def _gen_here(regs, window: int, warmup: float, seconds: float, n_lat: int) -> dict:
    """In xtr1's namespace: register, then load mr; Map-Replies by nonce."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    s.bind((GEN, 0))
    sport = s.getsockname()[1]
    # registrations (retry until every Map-Server notified us)
    want = {ms for ms, _ in regs}
    deadline = time.monotonic() + 10
    while want and time.monotonic() < deadline:
        for ms, b in regs:
            if ms in want:
                s.sendto(b, (ms, 4342))
        end = time.monotonic() + 0.5
        while want and (left := end - time.monotonic()) > 0:
            if select.select([s], [], [], left)[0]:
                data, (src, _) = s.recvfrom(2048)
                if data and data[0] >> 4 == 4:
                    want.discard(src)
    if want:
        raise RuntimeError(f"no Map-Notify from {sorted(want)}")
    rng = random.Random(7)
    eids = [f"10.{k}.0.{h}" for h in range(1, 255) for k in (1, 2, 3)]
    rng.shuffle(eids)
    nonce = 1 << 40

    def one(i: int) -> bytes:
        return _request(nonce + i, eids[i % len(eids)], sport)

    # latency: one at a time
    lat = []
    s.setblocking(True)
    s.settimeout(2.0)
    for i in range(n_lat):
        t0 = time.perf_counter()
        s.sendto(one(i), (MR, 4342))
        while True:
            try:
                data = s.recv(2048)
            except socket.timeout:
                break
            if data[0] >> 4 == 2 and int.from_bytes(data[4:12], "big") == nonce + i:
                lat.append((time.perf_counter() - t0) * 1000)
                break
    # throughput: `window` in flight; a reply releases the next request
    s.setblocking(False)
    i = n_lat
    for _ in range(window):
        s.sendto(one(i), (MR, 4342))
        i += 1
    t0 = time.monotonic()
    start, end = t0 + warmup, t0 + warmup + seconds
    counted, last_rx = 0, t0
    while (now := time.monotonic()) < end:
        if not select.select([s], [], [], 0.02)[0]:
            if now - last_rx > 0.2:             # lost ones: refill the window
                for _ in range(window):
                    s.sendto(one(i), (MR, 4342))
                    i += 1
                last_rx = now
            continue
        got = 0
        while True:
            try:
                data = s.recv(2048)
            except BlockingIOError:
                break
            if data and data[0] >> 4 == 2:
                got += 1
        last_rx = time.monotonic()
        if last_rx >= start:
            counted += got
        for _ in range(got):
            try:
                s.sendto(one(i), (MR, 4342))
            except BlockingIOError:
                break
            i += 1
    s.close()
    return {"lat": lat, "rate": counted / seconds, "lost_lat": n_lat - len(lat)}


def _phase(lab, cold: bool) -> dict:
    from lispctl.lab.scenarios import control as cp
    for n in INFRA:
        text = cp.config_text(lab, n)
        if cold and n != "mr":
            text = re.sub(r"^\[ddt\]\n", "[ddt]\nreferral-ttl-minutes = 0\n", text, flags=re.M)
        text = text.replace('roles = [', 'log-level = "warning"\nroles = [', 1)
        cp.start_node(lab, n, cp.render_config(lab, n, text, tag="cold" if cold else "warm"), wait=False)
    for n in INFRA:
        cp.wait_node(lab, n)
    try:
        res = lab.call("xtr1", _gen_here, _registers(), WINDOW, WARMUP_S, RUN_S, N_LAT)
        res["mr"] = cp.counters(lab, "mr")["roles"]["mr"]
        res["root"] = cp.counters(lab, "root")["roles"]["ddt-node"]
    finally:
        for n in INFRA:
            cp.stop_node(lab, n)
    return res


def run(rec) -> None:
    if os.geteuid() != 0:
        raise RuntimeError("needs root (network namespaces)")
    from lispctl.lab import Lab, load
    load_before = os.getloadavg()[0]
    with Lab(load("ddt")) as lab:
        warm = _phase(lab, cold=False)
        cold = _phase(lab, cold=True)
    load_after = os.getloadavg()[0]

    def p99(xs):
        xs = sorted(xs)
        return xs[min(len(xs) - 1, int(len(xs) * 0.99))]
    for name, r in (("warm", warm), ("cold", cold)):
        rec.figure(f"ddt_mr_resolutions_{name}_per_s", round(r["rate"], 1))
        rec.figure(f"ddt_resolution_{name}_median_ms", round(statistics.median(r["lat"]), 3))
        rec.figure(f"ddt_resolution_{name}_p99_ms", round(p99(r["lat"]), 3))
    rec.note("The `ddt` lab's root, ddt1, ddt2, ms1-3 and DDT Map-Resolver (`lispctl up`, logging at warning); "
             "a generator in xtr1's namespace registers 10.1-3.0.0/24 (proxy-reply) and sends ECM'd "
             "Map-Requests for hosts of the three sites to mr; the Map-Servers' proxy Map-Replies come back "
             f"to it. Throughput: {WINDOW} requests in flight for {RUN_S:g} s; latency: {N_LAT} requests one "
             "at a time (send -> Map-Reply). All seven daemons and the generator share the machine's cores "
             f"(1-minute load average {load_before:.1f} before the run, {load_after:.1f} after: other work "
             "on the machine shows in these figures).")
    rec.note("")
    rec.note("| referral cache | resolutions/s | latency median (ms) | p99 (ms) | DDT Map-Requests per resolution |")
    rec.note("|---|---:|---:|---:|---:|")
    for name, r, what in (("warm", warm, "mr -> Map-Server"), ("cold", cold, "root -> DDT node -> Map-Server")):
        per = r["mr"].get("ddt_request_tx", 0) / max(1, r["mr"].get("map_request_rx", 1))
        rec.note(f"| {name} ({what}) | {r['rate']:,.0f} | {statistics.median(r['lat']):.2f} | "
                 f"{p99(r['lat']):.2f} | {per:.2f} |")
    rec.note("")
    rec.note("Cold: the DDT nodes and Map-Servers send every referral with TTL 0 (nothing is cached), so each "
             "resolution is three DDT Map-Request/Map-Referral exchanges plus the Map-Server's reply.")

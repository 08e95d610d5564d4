"""Map-Server at scale: 100,000 sites, cold, steady and warm (issue 14 item 2).

A `lispctl up` Map-Server (roles ms) configured with N_SITES sites, each its
own /26 EID prefix and its own key, pinned to CPU 0. A load generator in
another namespace, pinned to CPU 1, plays N_SITES xTRs (distinct xTR-IDs),
each registering its prefix with HMAC-SHA-256 and the M bit, keeping WINDOW
Map-Registers in flight (each Map-Notify releases the next one):

- cold: the first round, every site registers for the first time (empty
  registration table and caches);
- steady: further rounds, every message with a fresh nonce (what sites that
  re-register every 60 s send: the same records, a new nonce and MAC);
- steady, WIDE_WINDOW in flight: one more such round with twice the
  Map-Registers in flight (with workers, each sees half the window);
- warm: the last round sent again, identical bytes (what the 200-site
  `Control plane` figure measures; for these ETRs, which vary their nonce,
  a repeat refreshes nothing but is still authenticated and answered).

Then the same messages against a daemon with `[ms] workers = WORKERS`
(docs/daemon.md, "A Map-Server on several cores"): CPU of the main process
and its workers added up, memory as their proportional set sizes, nothing
pinned (the generator shares the 2 cores with them).

Every message is signed before timing starts. The generator sends and
receives with sendmmsg/recvmmsg (ctypes), batches as large as the Map-Notifies
that came back, so its cost per message is the kernel's. Memory: the
daemon's resident set before the first Map-Register and after each phase.

LISPCTL_BENCH_MS_SITES overrides N_SITES (e.g. 20000 for a quick run), LISPCTL_BENCH_MS_WINDOW
the Map-Registers in flight (64).
"""
from __future__ import annotations

import ctypes
import hashlib
import hmac
import ipaddress
import os
import select
import socket
import struct
import time

SECTION = "Map-Server at scale (100,000 sites)"

N_SITES = int(os.environ.get("LISPCTL_BENCH_MS_SITES", "100000"))
STEADY_ROUNDS = 2
# One more steady round with this many in flight (what more concurrency
# gives, with workers: each sees half the window); the warm round repeats it.
WIDE_WINDOW = 128
WINDOW = int(os.environ.get("LISPCTL_BENCH_MS_WINDOW", "64"))
WORKERS = 2            # the [ms] workers measured beside the single process
MS_ADDR, GEN_ADDR = "192.0.2.2", "192.0.2.1"

TOPO = """
name = "bench-ms-scale"
description = "a Map-Server and a Map-Register load generator"
[nodes.gen]
[nodes.ms]
[[links]]
a = { node = "gen", ifname = "eth0", addresses = ["192.0.2.1/24"] }
b = { node = "ms", ifname = "eth0", addresses = ["192.0.2.2/24"] }
"""


# -- sites and messages ---------------------------------------------------------
def site_key(i: int) -> str:
    return f"site-{i}-{hashlib.sha256(i.to_bytes(4, 'big')).hexdigest()[:16]}"


def site_prefix(i: int) -> tuple[ipaddress.IPv4Address, int]:
    return ipaddress.IPv4Address(0x0A000000 + i * 64), 26        # 10.0.0.0/26, 10.0.0.64/26, ...


def ms_config(instance: str, n: int, workers: int = 1) -> str:
    lines = [f'instance = "{instance}"', 'roles = ["ms"]', 'log-level = "warning"',
             f'control-addresses = ["{MS_ADDR}"]', "[ms]", f"workers = {workers}"]
    for i in range(n):
        a, m = site_prefix(i)
        lines += ["[[site]]", f'name = "s{i}"', f'keys = {{ 1 = "{site_key(i)}" }}',
                  "[[site.eid-prefix]]", f'prefix = "{a}/{m}"']
    return "\n".join(lines) + "\n"


def registers(n: int, rounds: int) -> list[list[bytes]]:
    """rounds x n signed Map-Registers: site i's record, xTR-ID and key, a
    nonce of its own in every round."""
    from lispctl import wire as w
    rloc = (w.LocatorRecord(ipaddress.IPv4Address(GEN_ADDR), 1, 100),)
    out: list[list[bytes]] = [[] for _ in range(rounds)]
    for i in range(n):
        a, m = site_prefix(i)
        msg = w.MapRegister(0, (w.EidRecord(a, m, rloc, 1440, 0, True),), 1, w.ALG_HMAC_SHA256,
                            bytes(32), want_map_notify=True, xtr_id=(0xBE7C << 112) | i, site_id=0)
        raw = bytearray(msg.encode())
        key = site_key(i).encode()
        for r in range(rounds):
            struct.pack_into("!Q", raw, 4, int.from_bytes(hashlib.sha256(b"%d/%d" % (r, i)).digest()[:8], "big"))
            raw[16:48] = bytes(32)
            raw[16:48] = hmac.digest(key, bytes(raw), "sha256")
            out[r].append(bytes(raw))
    return out


# -- the generator: sendmmsg / recvmmsg through ctypes -------------------------------
class _Iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class _Msghdr(ctypes.Structure):
    _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32), ("iov", ctypes.c_void_p),
                ("iovlen", ctypes.c_size_t), ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                ("flags", ctypes.c_int)]


class _Mmsghdr(ctypes.Structure):
    _fields_ = [("hdr", _Msghdr), ("len", ctypes.c_uint)]


_MSG_DONTWAIT = 0x40
_RX_BATCH = 256


def _phase_here(msgs: list[bytes], dst: str, window: int, cpu: int | None) -> dict:
    """Runs in the generator's namespace, pinned to `cpu` (None: wherever
    the scheduler puts it): send every message once, keeping `window` in
    flight; a Map-Notify back releases one more."""
    os.sched_setaffinity(0, {cpu} if cpu is not None else set(range(os.cpu_count() or 1)))
    libc = ctypes.CDLL(None, use_errno=True)
    n = len(msgs)
    blob = ctypes.create_string_buffer(b"".join(msgs))
    base = ctypes.addressof(blob)
    dst_sa = ctypes.create_string_buffer(struct.pack("=HH4s8x", socket.AF_INET, socket.htons(4342),
                                                     socket.inet_aton(dst)))
    iovs = (_Iovec * n)()
    hdrs = (_Mmsghdr * n)()
    off = 0
    for k, m in enumerate(msgs):
        iovs[k].base, iovs[k].len = base + off, len(m)
        off += len(m)
        h = hdrs[k].hdr
        h.name, h.namelen, h.iov, h.iovlen = ctypes.addressof(dst_sa), 16, ctypes.addressof(iovs[k]), 1
    rx_bufs = ctypes.create_string_buffer(2048 * _RX_BATCH)
    rx_iovs = (_Iovec * _RX_BATCH)()
    rx_hdrs = (_Mmsghdr * _RX_BATCH)()
    for k in range(_RX_BATCH):
        rx_iovs[k].base, rx_iovs[k].len = ctypes.addressof(rx_bufs) + 2048 * k, 2048
        rx_hdrs[k].hdr.iov, rx_hdrs[k].hdr.iovlen = ctypes.addressof(rx_iovs[k]), 1
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    s.bind((GEN_ADDR, 0))
    s.setblocking(False)
    fd = s.fileno()
    sendmmsg, recvmmsg = libc.sendmmsg, libc.recvmmsg
    hdr_size = ctypes.sizeof(_Mmsghdr)
    sent = 0

    def send(k: int) -> None:
        nonlocal sent
        k = min(k, n - sent)
        while k > 0:
            got = sendmmsg(fd, ctypes.c_void_p(ctypes.addressof(hdrs) + sent * hdr_size), k, 0)
            if got <= 0:
                return                     # socket buffer full: the window refills it later
            sent += got
            k -= got

    notifies = 0
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    send(window)
    last_rx = t_last = t0
    refills = 0
    while notifies < n:
        r, _, _ = select.select([s], [], [], 0.02)
        now = time.perf_counter()
        if not r:
            if now - last_rx > 1.0:          # (a full GC of the daemon can take most of a second)
                if sent >= n:
                    break                  # the rest was lost
                refills += 1               # lost in flight: keep the window full
                send(window)
                last_rx = now
            continue
        got = 0
        while True:
            k = recvmmsg(fd, rx_hdrs, _RX_BATCH, _MSG_DONTWAIT, None)
            if k <= 0:
                break
            got += k
        if got:
            notifies += got
            last_rx = t_last = time.perf_counter()
            send(got)
    gen_cpu = time.process_time() - cpu0
    s.close()
    return {"sent": sent, "notifies": notifies, "seconds": t_last - t0, "refills": refills,
            "gen_cpu_s": gen_cpu, "wall_s": time.perf_counter() - t0}


def _resolve_neighbours(dst: str) -> None:
    """One datagram to a closed port and its ICMP error back: both ends know
    each other's MAC address before timing (the first Map-Registers would
    otherwise wait in, or overflow, the neighbour queue)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(1.0)
    s.connect((dst, 9))
    s.send(b"x")
    try:
        s.recv(16)
    except OSError:
        pass                               # ECONNREFUSED: the ICMP error came back
    s.close()


# -- the run ------------------------------------------------------------------------
def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _pss_kib(pid: int) -> int:
    """Proportional set size: the workers share pages with the main process
    (forked from it): summing their RSS would count those twice."""
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0


def _cpu_s(pid: int) -> tuple[float, float]:
    """(user, system) CPU time the process has used."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tck = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tck, int(fields[12]) / tck


def _measure(rec, workers: int = 1, rounds: list[list[bytes]] | None = None) -> dict:
    """One daemon, every phase. workers = 1: the daemon pinned to CPU 0 and
    the generator to CPU 1; more: the daemon's processes (main and workers)
    and the generator wherever the scheduler puts them (2 cores: the
    generator takes a share of them)."""
    from lispctl.api.client import ApiClient
    from lispctl.lab import Lab, loads

    t = time.perf_counter()
    if rounds is None:
        rounds = registers(N_SITES, 2 + STEADY_ROUNDS)
    sign_s = time.perf_counter() - t
    res: dict = {"sign_s": sign_s, "load": os.getloadavg()[0], "rounds": rounds, "workers": workers}
    with Lab(loads(TOPO)) as lab:
        cfg = lab.rundir / "ms.toml"
        cfg.write_text(ms_config(lab.instance("ms"), N_SITES, workers))
        run_dir = lab.rundir / "run"
        t = time.perf_counter()
        lab.start("ms", "lispctl", [lab.expand("ms", "{python}"), "-m", "lispctl.cli", "up", "-c", str(cfg),
                                    "--run-dir", str(run_dir)], timeout=300)
        res["start_s"] = time.perf_counter() - t
        client = ApiClient.for_instance(lab.instance("ms"), run_dir)
        status = client.call("status")
        pid = status["pid"]
        pids = [pid] + [w["pid"] for w in status.get("ms_workers", [])]
        gen_cpu: int | None = 1
        if workers == 1:
            os.sched_setaffinity(pid, {0})
        else:
            gen_cpu = None
        lab.call("gen", _resolve_neighbours, MS_ADDR)
        rss0 = _rss_kib(pid) if workers == 1 else sum(_pss_kib(q) for q in pids)
        c0 = client.call("counters")["roles"]["ms"]
        phases = [("cold", rounds[0], WINDOW)] \
            + [(f"steady{r}", rounds[r], WINDOW) for r in range(1, len(rounds) - 1)] \
            + [("wide", rounds[-1], WIDE_WINDOW), ("warm", rounds[-1], WINDOW)]
        for name, msgs, window in phases:
            cpu0 = [_cpu_s(q) for q in pids]
            u0, s0 = (sum(x) for x in zip(*cpu0))
            out = lab.call("gen", _phase_here, msgs, MS_ADDR, window, gen_cpu)
            u1, s1 = (sum(x) for x in zip(*(_cpu_s(q) for q in pids)))
            out["cpu_s"], out["sys_s"] = u1 - u0 + s1 - s0, s1 - s0
            out["rss_kib"] = _rss_kib(pid) if workers == 1 else sum(_pss_kib(q) for q in pids)
            out["main_cpu_s"] = sum(_cpu_s(pid)) - sum(cpu0[0])
            res[name] = out
        c1 = client.call("counters")["roles"]["ms"]
        daemon = client.call("counters").get("daemon", {})
    res["rss0_kib"] = rss0
    res["counters"] = {k: c1.get(k, 0) - c0.get(k, 0) for k in c1}
    res["daemon"] = daemon
    return res


def run(rec) -> None:
    if os.geteuid() != 0:
        raise RuntimeError("needs root (network namespaces)")
    r = _measure(rec)
    n = N_SITES
    r2 = _measure(rec, workers=WORKERS, rounds=r.pop("rounds"))

    def rate(ph: dict) -> float:
        return ph["notifies"] / ph["seconds"] if ph["seconds"] > 0 else 0.0

    def busy(ph: dict) -> float:
        return ph["cpu_s"] / ph["wall_s"] if ph["wall_s"] > 0 else 0.0

    def per_cpu(ph: dict) -> float:
        return ph["notifies"] / ph["cpu_s"] if ph["cpu_s"] > 0 else 0.0
    steady = [r[k] for k in r if k.startswith("steady")]
    steady_rate = sum(p["notifies"] for p in steady) / sum(p["seconds"] for p in steady)
    mib = lambda kib: kib / 1024            # noqa: E731
    per100k = (r["cold"]["rss_kib"] - r["rss0_kib"]) * 100_000 / n
    steady_growth = (steady[-1]["rss_kib"] - r["cold"]["rss_kib"]) * 100_000 / n / len(steady)
    rec.figure("ms_scale_sites", n)
    if max(r["load"], r2["load"]) > 1.0:
        rec.note(f"**Taken under load** (load average {r['load']:.1f} and {r2['load']:.1f} when the two daemons' "
                 "runs started, from other jobs on this 2-core VM): every rate below is lower than on a quiet "
                 "machine, and the wall-clock rates most.")
        rec.note("")
    rec.figure("ms_scale_cold_registrations_per_s", round(rate(r["cold"])))
    rec.figure("ms_scale_steady_registrations_per_s", round(steady_rate))
    rec.figure("ms_scale_warm_identical_per_s", round(rate(r["warm"])))
    rec.figure(f"ms_scale_steady_{WIDE_WINDOW}_in_flight_per_s", round(rate(r["wide"])))
    rec.figure("ms_scale_cold_per_daemon_cpu_s", round(per_cpu(r["cold"])))
    rec.figure("ms_scale_steady_per_daemon_cpu_s",
               round(sum(p["notifies"] for p in steady) / sum(p["cpu_s"] for p in steady)))
    rec.figure("ms_scale_warm_per_daemon_cpu_s", round(per_cpu(r["warm"])))
    rec.figure("ms_scale_rss_configured_mib", round(mib(r["rss0_kib"]), 1))
    rec.figure("ms_scale_rss_per_100k_registrations_mib", round(mib(per100k), 1))
    rec.figure("ms_scale_rss_growth_per_steady_round_per_100k_mib", round(mib(steady_growth), 1))
    rec.figure("ms_scale_daemon_start_s", round(r["start_s"], 1))
    c = r["counters"]
    rec.note(f"A `lispctl up` Map-Server (roles ms) with {n:,} sites, each its own /26 and its own key, pinned "
             f"to CPU 0; a generator in another namespace, pinned to CPU 1, plays {n:,} xTRs (distinct "
             f"xTR-IDs), keeping {WINDOW} HMAC-SHA-256 Map-Registers (M bit) in flight with "
             f"sendmmsg/recvmmsg; a Map-Notify back releases the next one. All messages signed before "
             f"timing ({r['sign_s']:.1f} s).")
    rec.note("")
    rec.note("| phase | messages | Map-Notifies/s | daemon CPU busy | of which kernel | per daemon CPU-second "
             "| generator CPU busy | daemon RSS after (MiB) |")
    rec.note("|---|---:|---:|---:|---:|---:|---:|---:|")
    rec.note(f"| configured, nothing registered | | | | | | | {mib(r['rss0_kib']):.1f} |")

    def row(label: str, ph: dict) -> None:
        rec.note(f"| {label} | {ph['sent']:,} | {rate(ph):,.0f} | {busy(ph):.0%} "
                 f"| {ph['sys_s'] / ph['cpu_s'] if ph['cpu_s'] else 0:.0%} | {per_cpu(ph):,.0f} "
                 f"| {ph['gen_cpu_s'] / ph['wall_s']:.0%} | {mib(ph['rss_kib']):.1f} |")
    row("cold: first registration of every site (empty tables and caches)", r["cold"])
    for k, ph in enumerate(steady, 1):
        row(f"steady {k}: every site again, fresh nonce", ph)
    row(f"steady, {WIDE_WINDOW} in flight: every site again, fresh nonce", r["wide"])
    row("warm: the last round again, identical bytes", r["warm"])
    rec.note("")
    rec.note("*Daemon CPU busy*: the daemon's CPU time (user + system) over the phase's duration "
             "(*of which kernel*: its system time: UDP receive, send, and delivering each Map-Notify "
             "through the veth pair to the generator's socket); "
             "*per daemon CPU-second*: Map-Notifies per second of that CPU time, the rate one core "
             "would give if the daemon had it to itself (on a loaded machine the wall-clock rate is "
             "lower). Where the daemon is well below 100% busy and the generator is not, the daemon "
             "waited for the CPU (other load) or for the round trip; where the generator is near 100% "
             "the figure is generator-bound. Load average when the run started: "
             f"{r['load']:.1f} (2 means both cores were already busy with other work).")
    rec.note("")
    rec.note(f"Memory per 100,000 registrations (RSS after cold - before): {mib(per100k):.1f} MiB; "
             f"each steady round adds {mib(steady_growth):.1f} MiB per 100,000 sites (the MAC each "
             "refresh supersedes is remembered to refuse its replay, docs/ms-security.md). "
             f"Daemon start with {n:,} sites (config validation, tables) to `ready`: {r['start_s']:.1f} s.")
    rec.note("")
    busy_range = f"{min(busy(p) for p in steady):.0%}-{max(busy(p) for p in steady):.0%}"
    gen_range = (f"{min(p['gen_cpu_s'] / p['wall_s'] for p in steady):.0%}-"
                 f"{max(p['gen_cpu_s'] / p['wall_s'] for p in steady):.0%}")
    rec.note(f"Goal (issue 14): 65,000 distinct authenticated registrations/s on one core, OOR 1.3's rate (C). "
             f"Reached in steady state: {steady_rate:,.0f}/s wall clock, "
             f"{sum(p['notifies'] for p in steady) / sum(p['cpu_s'] for p in steady):,.0f} per second of the "
             "daemon's CPU. Steady-state refreshes take the Map-Server's fast path (docs/daemon.md, "
             "\"A Map-Server on several cores\"): no decoding, dispatch or effect objects, one HMAC each way "
             "through hashlib, the expiry heap left alone until an entry comes due. What bounds the figure: "
             + (f"the daemon, not the generator (steady state: daemon {busy_range} busy, generator {gen_range})"
                if min(busy(p) for p in steady) >= 0.9 else
                f"here the CPU the other jobs left the daemon (steady state: it was {busy_range} busy, the "
                f"generator {gen_range}: it waited for its core, so the wall-clock rate is low and per daemon "
                "CPU-second is the figure to read); on a quiet machine the daemon itself, 100% busy while the "
                "generator is well below")
             + "; of the daemon's time the kernel's UDP "
             "send and receive are about a third (on the veth pair the generator's receive of each "
             "Map-Notify runs in the daemon's softirq), the four SHA-256 of the two HMACs a fifth, the fast "
             "path's Python a quarter, the socket loop the rest. The warm phase repeats each site's latest "
             "message: the fast path leaves a repeat to the full path, which refuses to refresh with it "
             "(these ETRs vary their nonce) but answers it. "
             "The cold phase pays for decoding, creating every registration and a few full garbage "
             "collections over the growing table (docs/daemon.md, \"Memory and the garbage collector\"). "
             "The configured RSS is the interpreter and code (about 50 MiB) and about 1.3 KB per site: its "
             "validated [[site]] table and the role's site and prefix objects; a registration adds its "
             "decoded message, its shape and the registration (docs/daemon.md, \"Memory of a large "
             "Map-Server\").")
    rec.note("")
    rec.note(f"MS counters over the run: {c.get('map_register_ok', 0):,} accepted, "
             f"{c.get('map_register_repeat_ignored', 0):,} identical repeats (warm), "
             f"{c.get('map_register_bad_auth', 0):,} authentication failures, "
             f"{c.get('map_notify_tx', 0):,} Map-Notifies; generator refills after losses: "
             + ", ".join(f"{k} {r[k]['refills']}"
                         for k in ("cold", *(f'steady{i}' for i in range(1, len(steady) + 1)), "wide", "warm"))
             + ".")

    # -- [ms] workers = WORKERS beside the single process
    def steady_of(res: dict) -> list[dict]:
        return [res[k] for k in res if k.startswith("steady")]

    def wall(phs: list[dict]) -> float:
        return sum(p["notifies"] for p in phs) / sum(p["seconds"] for p in phs)

    def cpu(phs: list[dict]) -> float:
        return sum(p["notifies"] for p in phs) / sum(p["cpu_s"] for p in phs)
    s2 = steady_of(r2)
    rec.figure(f"ms_scale_workers{WORKERS}_cold_registrations_per_s", round(rate(r2["cold"])))
    rec.figure(f"ms_scale_workers{WORKERS}_steady_registrations_per_s", round(wall(s2)))
    rec.figure(f"ms_scale_workers{WORKERS}_warm_identical_per_s", round(rate(r2["warm"])))
    rec.figure(f"ms_scale_workers{WORKERS}_steady_{WIDE_WINDOW}_in_flight_per_s", round(rate(r2["wide"])))
    rec.figure(f"ms_scale_workers{WORKERS}_steady_per_daemon_cpu_s", round(cpu(s2)))
    rec.figure(f"ms_scale_workers{WORKERS}_pss_after_steady_mib", round(mib(s2[-1]["rss_kib"]), 1))
    rec.note("")
    rec.note(f"**`[ms] workers = {WORKERS}`** (docs/daemon.md, \"A Map-Server on several cores\"): the same "
             f"messages against a daemon with {WORKERS} Map-Register worker processes. This VM has 2 cores and "
             "the generator needs one: the daemon's processes (main and workers) and the generator are not "
             "pinned and share both cores, against one core each for the single process above. So the "
             "wall-clock rate shows what 2 cores give with the generator on them too, and *per daemon "
             "CPU-second* (Map-Notifies per second of the CPU time of all the daemon's processes together) "
             "what the work costs; neither can show the scaling a machine with a core per worker and the "
             "generator elsewhere would. *Daemon CPU busy* adds up its processes (up to 200% on 2 cores). "
             f"Memory: the processes' proportional set sizes added up (pages the workers share with the "
             f"main process, forked from it, counted once). Load average when it started: {r2['load']:.1f}.")
    rec.note("")
    rec.note("| phase | workers | Map-Notifies/s | daemon CPU busy | of which the main process "
             "| per daemon CPU-second | generator CPU busy | daemon memory after (MiB) |")
    rec.note("|---|---:|---:|---:|---:|---:|---:|---:|")
    for label, key in (("cold", "cold"), *((f"steady {k}", f"steady{k}") for k in range(1, len(s2) + 1)),
                       (f"steady, {WIDE_WINDOW} in flight", "wide"), ("warm", "warm")):
        for w, res in ((1, r), (WORKERS, r2)):
            ph = res[key]
            main = f"{ph['main_cpu_s'] / ph['cpu_s']:.0%}" if w > 1 and ph["cpu_s"] else ""
            rec.note(f"| {label} | {w} | {rate(ph):,.0f} | {busy(ph):.0%} | {main} | {per_cpu(ph):,.0f} "
                     f"| {ph['gen_cpu_s'] / ph['wall_s']:.0%} | {mib(ph['rss_kib']):.1f} |")
    c2 = r2["counters"]
    busy2 = [busy(r2[k]) for k in ("cold", *(f"steady{i}" for i in range(1, len(s2) + 1)), "wide", "warm")]
    gen2 = [r2[k]["gen_cpu_s"] / r2[k]["wall_s"] for k in ("cold", "warm")]
    rec.note("")
    rec.note(f"With {WIDE_WINDOW} in flight each worker gets the batches the single process gets with 64: "
             "compare that row with the single process's 64-in-flight rows for what the split costs, and "
             "with its own 128-in-flight row for what two cores give.")
    rec.note("")
    rec.note(f"What bounds the {WORKERS}-worker figures: not the generator (its CPU {min(gen2):.0%}-{max(gen2):.0%} "
             f"busy); the daemon's processes together used {min(busy2):.0%}-{max(busy2):.0%} of a core out of "
             "the 200% the machine has, so they waited: for the cores (the generator and whatever else runs "
             "there) and for each other (64 Map-Registers in flight split between two workers: smaller "
             "batches, more wake-ups, which also raise the CPU each message costs). In steady state the main "
             "process is nearly idle (*of which the main process*); in the cold phase each new registration "
             "costs the worker a pickle and the main process an unpickle and a merge into the union (about "
             "40 us, docs/daemon.md). The memory adds to the main process's what each worker holds of "
             "its own (its share of the registrations, their shapes and replay lists) and the pages it "
             "shares with the main process but has written to (reference counts).")
    rec.note("")
    rec.note(f"With {WORKERS} workers, MS counters over the run (main and workers added up): "
             f"{c2.get('map_register_ok', 0):,} accepted, {c2.get('map_register_repeat_ignored', 0):,} identical "
             f"repeats, {c2.get('map_notify_tx', 0):,} Map-Notifies; registration changes the workers sent the "
             f"main process: {r2['daemon'].get('ms_worker_changes_rx', 0):,} (one per new registration, and "
             "one per registration whose copy there came within half the registration timeout of expiring: "
             "refreshes that change nothing send none); generator refills after losses: "
             + ", ".join(f"{k} {r2[k]['refills']}"
                         for k in ("cold", *(f'steady{i}' for i in range(1, len(s2) + 1)), "wide", "warm"))
             + "; daemon start with "
             f"{n:,} sites to `ready` (workers forked and serving): {r2['start_s']:.1f} s.")

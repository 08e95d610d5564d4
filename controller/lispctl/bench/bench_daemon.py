"""xTR daemon footprint: `lispctl up` -> ready, and resident memory.

In the `control` lab (real `lispctl up` daemons in namespaces):

1. xtr1's first start (no pinned programs: the build child compiles and
   loads them) and a planned restart (`lispctl down --keep-datapath`, then
   `up`: the pinned programs match source and flags and are reused), each
   from spawning the process to its `ready` line.
2. Resident memory (VmRSS, and the peak VmHWM) of the xTR daemons and the
   MS/MR daemon after registration and traffic.
"""
from __future__ import annotations

import os
import time

SECTION = "xTR daemon footprint (lispctl up: ready time, resident memory)"


def _status(pid: int) -> dict[str, int]:
    out = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                out[k] = int(v.split()[0])
    return out


def _measure(rec) -> dict:
    from lispctl.lab import Lab, load
    from lispctl.lab.scenarios import control as cp

    res: dict = {}
    with Lab(load("control")) as lab:
        cp.start_node(lab, "msmr")
        t0 = time.monotonic()
        cp.start_node(lab, "xtr1")
        res["cold_s"] = time.monotonic() - t0
        # taken by the daemon as it prints `ready` (os.times: itself and the
        # build child), so nothing it does after ready counts
        res["cold_cpu_s"] = cp.api(lab, "xtr1", "status")["startup"]["cpu_s"]
        cp.start_node(lab, "xtr2")
        cp.wait_registered(lab)
        b4 = "10.2.0.2"
        cp.ping(lab, "hostA", b4, count=5, timeout=1.0)
        time.sleep(1.0)                       # let the daemons settle after traffic
        res["rss"] = {n: _status(lab.procs[(n, cp.DAEMON)].pid) for n in ("xtr1", "xtr2", "msmr")}
        out = cp.cli(lab, "xtr1", "down", "--keep-datapath")
        if out.returncode != 0:
            raise RuntimeError(f"down --keep-datapath failed: {out.stdout}{out.stderr}")
        lab.procs[(("xtr1", cp.DAEMON))].popen.wait(10)
        lab.stop("xtr1", cp.DAEMON)
        t0 = time.monotonic()
        cp.start_node(lab, "xtr1")
        res["warm_s"] = time.monotonic() - t0
        res["load"] = os.getloadavg()[0]
        status = cp.api(lab, "xtr1", "status")
        res["warm_cpu_s"] = status["startup"]["cpu_s"]
        res["warm_self_s"] = status["startup"]["wall_s"]
        res["compiled_again"] = status.get("datapath_compiled")
        res["replies_after"] = cp.ping(lab, "hostA", b4, count=3, timeout=1.0)
        res["rss_after"] = _status(lab.procs[("xtr1", cp.DAEMON)].pid)
    return res


def run(rec) -> None:
    if os.geteuid() != 0:
        raise RuntimeError("needs root (network namespaces, BPF)")
    # An installed daemon starts from byte-compiled modules; a checkout run
    # with PYTHONDONTWRITEBYTECODE compiles ~500 of them on every start
    # (~0.4 s of a core). The daemons here (they inherit the environment)
    # keep theirs under build/, outside the source tree.
    from lispctl import bench
    saved = {k: os.environ.get(k) for k in ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")}
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ["PYTHONPYCACHEPREFIX"] = str(bench.JSON_PATH.parent / "pycache")
    try:
        r = _measure(rec)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    mb = lambda kb: kb / 1024                    # noqa: E731
    rec.figure("xtr_up_to_ready_compile_s", round(r["cold_s"], 3))
    rec.figure("xtr_up_to_ready_reuse_s", round(r["warm_s"], 3))
    rec.figure("xtr_up_to_ready_compile_cpu_s", round(r["cold_cpu_s"], 3))
    rec.figure("xtr_up_to_ready_reuse_cpu_s", round(r["warm_cpu_s"], 3))
    rec.figure("xtr_rss_mb", round(mb(r["rss"]["xtr1"]["VmRSS"]), 1))
    rec.figure("xtr_rss_peak_mb", round(mb(r["rss"]["xtr1"]["VmHWM"]), 1))
    rec.figure("xtr_rss_after_restart_mb", round(mb(r["rss_after"]["VmRSS"]), 1))
    rec.figure("msmr_rss_mb", round(mb(r["rss"]["msmr"]["VmRSS"]), 1))
    rec.note("Real `lispctl up` daemons in the `control` lab; wall times from spawning the process to its "
             "`ready` line (log polled every 50 ms), CPU as the daemon reports it at `ready` (`lispctl "
             "status`, `startup.cpu_s`: the process and its build child), with byte-compiled modules as "
             "installed (the first start writes them under build/pycache), memory from /proc/<pid>/status "
             "after registration and a few pings. The reuse start is almost all Python start-up "
             "(imports); docs/daemon.md, \"Start-up time\", says what it imports and what remains.")
    rec.note("")
    rec.note(f"Load average during the run: {r['load']:.1f} on 2 cores (other jobs): the wall time "
             "is the CPU time stretched by the share of a core the daemon got.")
    rec.note("")
    rec.note("| | wall | CPU |")
    rec.note("|---|---:|---:|")
    rec.note(f"| xtr1 `up` -> ready, first start (a child compiles and loads the programs) | {r['cold_s']:.2f} s "
             f"| {r['cold_cpu_s']:.2f} s |")
    rec.note(f"| xtr1 `up` -> ready after `down --keep-datapath` (pinned programs reused) | {r['warm_s']:.2f} s "
             f"({r['warm_self_s']:.2f} s from the process's own start) | {r['warm_cpu_s']:.2f} s |")
    rec.note("")
    rec.note("| | |")
    rec.note("|---|---:|")
    rec.note(f"| xtr1 resident memory (peak) | {mb(r['rss']['xtr1']['VmRSS']):.1f} MB "
             f"({mb(r['rss']['xtr1']['VmHWM']):.1f} MB) |")
    rec.note(f"| xtr2 resident memory | {mb(r['rss']['xtr2']['VmRSS']):.1f} MB |")
    rec.note(f"| xtr1 resident memory after the restart | {mb(r['rss_after']['VmRSS']):.1f} MB |")
    rec.note(f"| msmr (MS/MR only, no data plane) resident memory | {mb(r['rss']['msmr']['VmRSS']):.1f} MB |")
    rec.note("")
    rec.note(f"After the restart the daemon reported `datapath_compiled` = {r['compiled_again']} and "
             f"{r['replies_after']}/3 pings were answered. bcc and LLVM live only in the build child "
             "(docs/datapath.md, \"Compile once\").")

"""A controller restart keeps forwarding (the `control` namespace lab).

The data plane forwards on its own: a killed xTR daemon leaves its programs
attached and its maps pinned, and the next `lispctl up` of the instance
adopts them (programs replaced in place, map-cache kept and re-resolved).
A continuous ICMP stream hostA -> hostB (one echo every 10 ms, each with its
sequence number) must not lose a packet across the kill, the dead time and
the restart; nor across a planned restart (`lispctl down --keep-datapath`).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from lispctl.lab import Lab, load
from lispctl.lab.scenarios import control as cp
from tests.conftest import need_root

pytestmark = pytest.mark.root

A4, B4, B6 = "10.1.0.2", "10.2.0.2", "fd00:2::2"
SITE2_V4, SITE2_V6 = "10.2.0.0/24", "fd00:2::/64"
STREAM = "echo-stream"
INTERVAL_S = 0.01

# Runs in hostA: an echo every INTERVAL_S until SIGTERM, then 1 s for late
# replies, then one JSON line: how many were sent/answered and which were lost.
_STREAM_SRC = r'''
import json, os, select, signal, socket, struct, sys, time
dst, interval = sys.argv[1], float(sys.argv[2])
def csum(d):
    s = sum(struct.unpack("!%dH" % (len(d) // 2), d)); s = (s >> 16) + (s & 0xFFFF); s += s >> 16
    return ~s & 0xFFFF
sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
sock.setblocking(False)
ident = os.getpid() & 0xFFFF
stop = []
signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
sent, got = {}, set()
def drain():
    while True:
        try:
            data = sock.recv(2048)
        except BlockingIOError:
            return
        icmp = data[(data[0] & 0x0F) * 4:]
        t, _, _, i, q = struct.unpack("!BBHHH", icmp[:8])
        if t == 0 and i == ident:
            got.add(q)
print("ready", flush=True)
seq, nxt = 0, time.monotonic()
while not stop and seq < 65536:
    if time.monotonic() >= nxt:
        hdr = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + b"restart-stream!!"
        pkt = struct.pack("!BBHHH", 8, 0, csum(hdr), ident, seq) + hdr[8:]
        try:
            sock.sendto(pkt, (dst, 0))
        except OSError:
            pass
        sent[seq] = time.time()
        seq += 1
        nxt += interval
    select.select([sock], [], [], max(0.0, nxt - time.monotonic()))
    drain()
end = time.monotonic() + 1.0
while time.monotonic() < end:
    select.select([sock], [], [], 0.05)
    drain()
lost = sorted(set(sent) - got)
print(json.dumps({"sent": len(sent), "answered": len(got), "lost": [[q, sent[q]] for q in lost]}), flush=True)
'''


@pytest.fixture(scope="module")
def lab():
    need_root()
    with Lab(load("control")) as lab:
        cp.start_control_plane(lab)
        cp.wait_registered(lab, ("site1", "site2"))
        # hostA <-> hostB learnt at both xTRs before any restart
        assert cp.ping(lab, "hostA", B4, count=5, timeout=1.0) >= 3
        assert cp.eventually(lambda: cp.ping(lab, "hostA", B4, count=1, timeout=1.0) == 1, 5)
        yield lab


def _pins(lab) -> Path:
    return Path("/sys/fs/bpf/lispctl") / lab.instance("xtr1")


class _Stream:
    """The echo stream in hostA, started and stopped through the lab (so a
    failing test still has it removed by the lab's teardown)."""

    def __init__(self, lab, dst: str) -> None:
        self.lab = lab
        self.proc = lab.start("hostA", STREAM, [lab.expand("hostA", "{python}"), "-c", _STREAM_SRC,
                                                dst, str(INTERVAL_S)], ready="ready", timeout=15)

    def stop(self) -> dict:
        assert self.lab.stop("hostA", STREAM) == 0, self.proc.output()[-2000:]
        lines = [l for l in self.proc.output().splitlines() if l.startswith("{")]
        assert lines, self.proc.output()[-2000:]
        return json.loads(lines[-1])


def _relearnt(lab) -> dict | None:
    e = cp.map_cache(lab, "xtr1").get(SITE2_V4)
    return e if e and e["role"] == "itr" else None


def _check_works_normally(lab) -> None:
    status = cp.api(lab, "xtr1", "status")
    assert status["datapath_adopted"] is True
    c = cp.counters(lab, "xtr1")["daemon"]
    assert c["adopted"] >= 1 and c.get("adopt_errors", 0) == 0 and c["effect_errors"] == 0
    # the inherited entry was re-resolved by the new ITR and installed in place
    entry = cp.eventually(lambda: _relearnt(lab), 10)
    assert entry, cp.map_cache(lab, "xtr1")
    assert sorted(r["address"] for r in entry["rlocs"]) == ["2001:db8:2::2", "203.0.113.2"]
    assert cp.counters(lab, "xtr1")["roles"]["itr"]["map_request_tx"] >= 1
    # a destination never asked for resolves (miss -> Map-Request -> install)
    got = cp.ping(lab, "hostA", B6, count=5, timeout=1.0)
    assert got >= 3, cp.log_tail(lab, "xtr1")
    assert SITE2_V6 in cp.map_cache(lab, "xtr1")
    cli = cp.cli(lab, "xtr1", "map-cache")
    assert cli.returncode == 0 and SITE2_V4 in cli.stdout and SITE2_V6 in cli.stdout, cli.stdout + cli.stderr


def _restart_and_measure(lab, stop_daemon) -> dict:
    """Stream running: stop xtr1's daemon with stop_daemon(), 1 s without a
    controller, `lispctl up` again, until the new ITR re-learnt site2."""
    stream = _Stream(lab, B4)
    try:
        time.sleep(0.5)
        t_stop = time.time()
        stop_daemon()
        assert _pins(lab).is_dir(), "the data plane must survive its controller"
        time.sleep(1.0)
        t_up = time.time()
        cp.start_node(lab, "xtr1")
        t_ready = time.time()
        assert cp.eventually(lambda: _relearnt(lab), 10), cp.map_cache(lab, "xtr1")
        time.sleep(0.5)
    finally:
        res = stream.stop()
    res["t"] = {"stop": t_stop, "up": t_up, "ready": t_ready}
    return res


def _report(what: str, res: dict) -> str:
    t = res["t"]
    return (f"{what}: {res['sent']} echoes, {res['answered']} answered, lost {len(res['lost'])} "
            f"(restart took {t['ready'] - t['up']:.1f} s, controller absent {t['ready'] - t['stop']:.1f} s); "
            f"lost at {[round(w - t['stop'], 3) for _, w in res['lost'][:20]]} s after the stop")


def test_killed_daemon_keeps_forwarding_and_restart_adopts(lab):
    def kill():
        p = lab.procs[("xtr1", cp.DAEMON)]
        p.popen.kill()                              # SIGKILL: no cleanup runs
        p.popen.wait(10)
        assert lab.stop("xtr1", cp.DAEMON) == -9
    res = _restart_and_measure(lab, kill)
    print(_report("SIGKILL + up", res))
    # the stream spans the whole absence of the controller and the restart
    assert res["sent"] >= (res["t"]["ready"] - res["t"]["stop"]) / INTERVAL_S * 0.5
    assert res["lost"] == [], _report("SIGKILL + up", res)
    _check_works_normally(lab)


def test_planned_restart_keeps_forwarding_and_plain_down_removes_everything(lab):
    def planned():
        out = cp.cli(lab, "xtr1", "down", "--keep-datapath")
        assert out.returncode == 0 and "kept" in out.stdout, out.stdout + out.stderr
        assert lab.procs[("xtr1", cp.DAEMON)].popen.wait(10) == 0   # `down` returns at the lock's release
        lab.stop("xtr1", cp.DAEMON)
    res = _restart_and_measure(lab, planned)
    print(_report("down --keep-datapath + up", res))
    assert res["lost"] == [], _report("down --keep-datapath + up", res)
    _check_works_normally(lab)
    # plain `down` still means the device is gone: no pins, nothing forwarded
    out = cp.cli(lab, "xtr1", "down")
    assert out.returncode == 0, out.stdout + out.stderr
    assert lab.procs[("xtr1", cp.DAEMON)].popen.wait(10) == 0
    lab.stop("xtr1", cp.DAEMON)
    assert not _pins(lab).exists()
    assert cp.ping(lab, "hostA", B4, count=2, timeout=0.5) == 0

"""Live reconfiguration in the `control` namespace lab: while hostA pings
hostB every 10 ms, xtr2's locator weight is changed twice, once with
`lispctl reload` and once with SIGHUP. Each change reaches xtr1's map-cache
(xtr2 re-registers and SMRs, xtr1 asks again) and not one echo is lost."""
from __future__ import annotations

import os
import select
import signal
import socket
import struct
import threading
import time

import pytest

from lispctl.lab import Lab, load
from lispctl.lab.scenarios import control as cp
from tests.conftest import need_root

pytestmark = pytest.mark.root

B4 = "10.2.0.2"
LOCATOR = 'interface = "rloc0"\n'


def ping_stream(dst: str, duration: float, interval: float = 0.01) -> tuple[int, list[int]]:
    """ICMP echo every `interval` for `duration` s (like ping -i 0.01); then 1 s
    for late replies. Returns (requests sent, sequence numbers answered)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    ident = os.getpid() & 0xFFFF
    got: set[int] = set()
    sent = 0

    def csum(b: bytes) -> int:
        s = sum(struct.unpack(f"!{len(b) // 2}H", b))
        s = (s >> 16) + (s & 0xFFFF)
        return ~(s + (s >> 16)) & 0xFFFF

    start = time.monotonic()
    end = start + duration
    with sock:
        while True:
            now = time.monotonic()
            if now < end and now >= start + sent * interval:
                payload = struct.pack("!d", now) + bytes(48)
                hdr = struct.pack("!BBHHH", 8, 0, 0, ident, sent)
                sock.sendto(struct.pack("!BBHHH", 8, 0, csum(hdr + payload), ident, sent) + payload, (dst, 0))
                sent += 1
                continue
            if now >= end + 1.0:
                return sent, sorted(got)
            wait = (start + sent * interval - now) if now < end else (end + 1.0 - now)
            if select.select([sock], [], [], max(0.0, wait))[0]:
                data = sock.recv(2048)
                ihl = (data[0] & 0x0F) * 4
                typ, _, _, rid, seq = struct.unpack("!BBHHH", data[ihl:ihl + 8])
                if typ == 0 and rid == ident:
                    got.add(seq)


@pytest.fixture(scope="module")
def lab():
    need_root()
    with Lab(load("control")) as lab:
        config = cp.render_config(lab, "xtr2")
        cp.start_control_plane(lab, configs={"xtr2": config})
        yield lab, config


def _weights(lab) -> list[int]:
    entry = cp.entry_for(cp.map_cache(lab, "xtr1"), B4)
    return sorted({r["weight"] for r in entry["rlocs"]}) if entry else []


def test_weight_changes_lose_no_packet(lab):
    lab, config = lab
    cp.wait_registered(lab, ("site1", "site2"))
    # both directions resolved before the stream starts
    assert cp.eventually(lambda: cp.ping(lab, "hostA", B4, count=3, timeout=0.5) == 3, timeout=20)
    assert _weights(lab) == [100]

    result: list = []
    stream = threading.Thread(target=lambda: result.append(lab.call("hostA", ping_stream, B4, 6.0)))
    stream.start()
    try:
        time.sleep(1.0)
        text = config.read_text()
        assert text.count(LOCATOR) == 2
        config.write_text(text.replace(LOCATOR, LOCATOR + "weight = 30\n"))
        out = lab.run("xtr2", [lab.expand("xtr2", "{python}"), "-m", "lispctl.cli", "reload", "-i",
                               lab.instance("xtr2"), "--run-dir", str(cp.run_dir(lab))], timeout=30)
        assert out.returncode == 0 and "database" in out.stdout, out.stdout + out.stderr
        assert cp.eventually(lambda: _weights(lab) == [30], timeout=5), (_weights(lab), cp.log_tail(lab, "xtr2"))

        config.write_text(text.replace(LOCATOR, LOCATOR + "weight = 70\n"))
        os.kill(lab.procs[("xtr2", cp.DAEMON)].pid, signal.SIGHUP)
        assert cp.eventually(lambda: _weights(lab) == [70], timeout=5), (_weights(lab), cp.log_tail(lab, "xtr2"))
    finally:
        stream.join(30)
    [(sent, answered)] = result
    assert sent >= 400
    lost = sorted(set(range(sent)) - set(answered))
    assert lost == [], f"{len(lost)} of {sent} echoes lost: {lost[:20]}"
    etr = cp.api(lab, "xtr2", "status")["state"]["etr"]
    assert {r["weight"] for m in etr["database"] for r in m["rlocs"]} == {70}
    assert cp.counters(lab, "xtr2")["roles"]["etr"]["smr_tx"] >= 2

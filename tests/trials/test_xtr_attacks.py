"""Attack trials against a running `lispctl up` xTR (issue 9.3, 9.4), in
network namespaces this module creates; all traffic stays inside them.

    router ns: xTR (wan0 192.0.2.1, lan0 10.1.0.1); its MS/MR (192.0.2.99)
               never answers, so every destination of the storm stays a miss
    host ns:   w1 = the underlay attacker (192.0.2.66, .67), h0 = a site host 10.1.0.2

1. A Map-Request flood at the ETR from one underlay address: answers stay
   within the per-ITR budget and the refusals are counted; a request naming
   a multicast ITR-RLOC is never answered; another ITR is still answered.
2. A host behind the ITR sends to 100,000 destinations: the ITR's
   Map-Request rate stays within map-request-rate, the drops are counted,
   and the local API keeps answering.
Bounded: a few seconds of traffic each, < 60 s with daemon start-up.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from pyroute2 import NetNS, netns

from lispctl.api.client import ApiClient
from lispctl.lab.nsexec import preexec
from tests.conftest import need_root
from tests.netns_daemons import daemon_run

pytestmark = pytest.mark.root

TAG = f"la{os.getpid()}"
ROUTER, HOST = f"{TAG}r", f"{TAG}h"
MAP_REQUEST_RATE = 50          # [itr] map-request-rate of the xTR under test
PER_ITR, OVERALL = 20, 1000    # [etr] map-reply-rate-per-itr / map-reply-rate

XTR = f"""
instance = "{{tag}}-x"
roles = ["xtr"]
log-level = "warning"
control-addresses = ["192.0.2.1"]
[interfaces]
eid-facing = ["lan0"]
rloc-facing = ["wan0"]
[[database]]
eid-prefix = "10.1.0.0/16"
[[database.locator]]
address = "192.0.2.1"
[[map-server]]
address = "192.0.2.99"
key-id = 1
key = "k"
[[map-resolver]]
address = "192.0.2.99"
[itr]
miss-action = "drop"
map-request-rate = {MAP_REQUEST_RATE}
[etr]
map-reply-rate-per-itr = {PER_ITR}
map-reply-rate = {OVERALL}
"""

FLOOD = r"""
import socket, sys, time, threading, ipaddress
from lispctl import wire as w
from lispctl.mapping.types import EidPrefix
src, n, seconds, itr = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
s.bind((src, 4342))
got = []
def rx():
    s.settimeout(0.2)
    end = None
    while True:
        try:
            data, _ = s.recvfrom(4096)
            got.append(data)
        except socket.timeout:
            if done.is_set():
                return
done = threading.Event()
t = threading.Thread(target=rx); t.start()
rec = (w.request_record(EidPrefix.parse("10.1.0.2/32")),)
t0 = time.monotonic()
for i in range(n):
    req = w.MapRequest(i + 1, rec, (ipaddress.ip_address(itr),)).encode()
    s.sendto(req, ("192.0.2.1", 4342))
    lag = t0 + seconds * (i + 1) / n - time.monotonic()
    if lag > 0:
        time.sleep(lag)
sent_s = time.monotonic() - t0
time.sleep(1.0)
done.set(); t.join()
replies = [m for m in got if m[0] >> 4 == 2]
print(len(replies), round(sent_s, 3))
"""

STORM = r"""
import socket, sys, time
n = int(sys.argv[1])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
base = (10 << 24) | (128 << 16)
t0 = time.monotonic()
for i in range(n):
    a = base + i
    try:
        s.sendto(b"x", (f"{a >> 24}.{(a >> 16) & 255}.{(a >> 8) & 255}.{a & 255}", 9))
    except OSError:
        pass
print(round(time.monotonic() - t0, 3))
"""


def _topology():
    netns.create(ROUTER)
    netns.create(HOST)
    with NetNS(ROUTER) as r:
        r.link("set", index=r.link_lookup(ifname="lo")[0], state="up")
        for ours, peer in (("wan0", "w1"), ("lan0", "h0")):
            r.link("add", ifname=ours, kind="veth", peer={"ifname": peer, "net_ns_fd": HOST})
            r.link("set", index=r.link_lookup(ifname=ours)[0], state="up")
        wan, lan = r.link_lookup(ifname="wan0")[0], r.link_lookup(ifname="lan0")[0]
        r.addr("add", index=wan, address="192.0.2.1", prefixlen=24)
        r.addr("add", index=lan, address="10.1.0.1", prefixlen=24)
    with NetNS(HOST) as h:
        h.link("set", index=h.link_lookup(ifname="lo")[0], state="up")
        for name in ("w1", "h0"):
            h.link("set", index=h.link_lookup(ifname=name)[0], state="up")
        w1 = h.link_lookup(ifname="w1")[0]
        h.addr("add", index=w1, address="192.0.2.66", prefixlen=24)
        h.addr("add", index=w1, address="192.0.2.67", prefixlen=24)
        h.addr("add", index=h.link_lookup(ifname="h0")[0], address="10.1.0.2", prefixlen=24)
        h.route("add", dst="10.0.0.0/8", gateway="10.1.0.1")


def _in(ns, argv, **kw):
    return subprocess.Popen(argv, preexec_fn=preexec(ns), **kw)


@pytest.fixture(scope="module")
def lab():
    need_root()
    with daemon_run(TAG, (HOST, ROUTER), _topology) as daemons:
        daemons.start(ROUTER, "x", XTR.format(tag=TAG))
        yield {"run_dir": daemons.run_dir}


def _counters(lab) -> tuple[dict, float]:
    """The xTR's counters through its API socket, and how long the answer took."""
    client = ApiClient(lab["run_dir"] / f"{TAG}-x.sock", timeout=10.0)
    t0 = time.monotonic()
    out = client.call("counters")
    return out, time.monotonic() - t0


def _run_in_host(script: str, *args: str, timeout: float = 30) -> str:
    p = _in(HOST, [sys.executable, "-c", script, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True)
    out, err = p.communicate(timeout=timeout)
    assert p.returncode == 0, err
    return out


def test_map_request_flood_at_the_etr_is_bounded_and_counted(lab):
    before, _ = _counters(lab)
    n, seconds = 10000, 2.0
    replies, sent_s = _run_in_host(FLOOD, "192.0.2.66", str(n), str(seconds), "192.0.2.66").split()
    replies, sent_s = int(replies), float(sent_s)
    # a burst of 2 x PER_ITR, then PER_ITR per second while the flood lasts (+1 s of draining)
    assert PER_ITR <= replies <= 2 * PER_ITR + PER_ITR * (sent_s + 1.5), (replies, sent_s)
    after, _ = _counters(lab)
    etr0, etr1 = before["roles"]["etr"], after["roles"]["etr"]
    limited = etr1.get("map_request_rate_limited_per_source", 0) - etr0.get("map_request_rate_limited_per_source", 0)
    received = after["daemon"]["datagrams_rx"] - before["daemon"]["datagrams_rx"]
    assert limited >= received - replies - 50 and limited > n // 2, (limited, received, replies)

    # another ITR is still answered right after the flood
    replies2, _ = _run_in_host(FLOOD, "192.0.2.67", "3", "0.1", "192.0.2.67").split()
    assert int(replies2) == 3

    # a request naming a multicast ITR-RLOC is never answered, and counted
    _run_in_host(FLOOD, "192.0.2.67", "5", "0.1", "224.0.0.5")
    last, _ = _counters(lab)
    assert last["roles"]["etr"].get("map_request_bad_itr_rloc", 0) - etr1.get("map_request_bad_itr_rloc", 0) == 5


def test_miss_storm_keeps_the_itr_within_its_map_request_rate(lab):
    before, _ = _counters(lab)
    t0 = time.monotonic()
    storm = _in(HOST, [sys.executable, "-c", STORM, "100000"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                text=True)
    latencies = []
    try:
        while storm.poll() is None and time.monotonic() - t0 < 30:
            _, took = _counters(lab)             # the API answers while the storm runs
            latencies.append(took)
            time.sleep(0.2)
        out, err = storm.communicate(timeout=30)
        assert storm.returncode == 0, err
    finally:
        if storm.poll() is None:
            storm.kill()
            storm.wait()
    time.sleep(0.5)
    after, took = _counters(lab)
    elapsed = time.monotonic() - t0
    latencies.append(took)
    itr0, itr1 = before["roles"]["itr"], after["roles"]["itr"]
    sent = itr1.get("map_request_tx", 0) - itr0.get("map_request_tx", 0)
    misses = after["daemon"]["misses"] - before["daemon"]["misses"]
    dropped = itr1.get("miss_dropped_overall_limit", 0) - itr0.get("miss_dropped_overall_limit", 0)
    assert misses > 1000, misses                                  # the storm reached the ITR
    assert sent <= MAP_REQUEST_RATE * (elapsed + 1), (sent, elapsed)
    assert sent > 0 and misses // 2 < dropped <= misses           # retries count in sent, not in misses
    assert len(latencies) >= 3 and max(latencies) < 1.0, latencies

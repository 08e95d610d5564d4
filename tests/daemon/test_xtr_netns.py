"""An xTR and an MS+MR daemon in network namespaces this test creates:
registration, a data-plane miss resolved into the BPF map-cache, lig through
the MR to the ETR, and a clean stop that unpins the data plane."""
from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pyroute2 import NetNS

from lispctl.lab.nsexec import preexec
from tests.conftest import need_root
from tests.netns_daemons import MISS_DROP, ms_toml, router_and_host_daemons, xtr_toml

pytestmark = pytest.mark.root

TAG = f"ld{os.getpid()}"
ROUTER, HOST = f"{TAG}r", f"{TAG}h"

def _in(ns, argv, **kw):
    return subprocess.Popen(argv, preexec_fn=preexec(ns), **kw)


@pytest.fixture(scope="module")
def lab():
    need_root()
    with router_and_host_daemons(TAG) as daemons:
        daemons.start(ROUTER, "ms", ms_toml(TAG))
        daemons.start(ROUTER, "x", xtr_toml(TAG, MISS_DROP))
        yield {"run_dir": daemons.run_dir, "procs": daemons.procs}


def _cli(lab, *args):
    out = subprocess.run([sys.executable, "-m", "lispctl.cli", *args, "--run-dir", str(lab["run_dir"])],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def _eventually(fn, timeout=5.0):
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def test_xtr_registers_resolves_a_miss_and_answers_lig(lab):
    def registered():
        sites = json.loads(_cli(lab, "sites", "--json", "-i", f"{TAG}-ms"))
        return sites[0]["eid_prefixes"][0]["registered"]
    assert _eventually(registered)

    # A packet from the site to a destination nobody registered: the data plane
    # misses, the ITR asks the MR, the negative reply lands in the BPF map-cache.
    subprocess.run([sys.executable, "-c", "import socket; s=socket.socket(2, 2); s.sendto(b'x', ('10.9.9.9', 9))"],
                   preexec_fn=preexec(HOST), check=True, timeout=10)

    def negative_entry():
        cache = json.loads(_cli(lab, "map-cache", "--json", "-i", f"{TAG}-x"))
        return [e for e in cache if e["action"] == "natively-forward" and not e["rlocs"]]
    [entry] = _eventually(negative_entry)
    assert ipaddress.ip_address("10.9.9.9") in ipaddress.ip_network(entry["prefix"])
    counters = json.loads(_cli(lab, "counters", "--json", "-i", f"{TAG}-x"))
    assert counters["datapath"]["miss"] >= 1 and counters["daemon"]["misses"] >= 1

    lig = _in(ROUTER, [sys.executable, "-m", "lispctl.cli", "lig", "10.1.0.2", "--mr", "192.0.2.10",
                       "--source", "192.0.2.10", "--json"], stdout=subprocess.PIPE, text=True)
    out, _ = lig.communicate(timeout=30)
    assert lig.returncode == 0, out
    res = json.loads(out)
    assert res["reply_from"] == "192.0.2.1"         # the MR forwarded to the ETR, which answered
    # the locator is given by interface: every address of wan0, read at start
    assert sorted(l["address"] for l in res["records"][0]["locators"]) == ["192.0.2.1", "192.0.2.10"]


def test_neighbour_change_drops_the_data_planes_cached_next_hops(lab):
    """The running xTR follows rtnetlink: a neighbour appearing on its RLOC
    side bumps the next-hop generation of its data plane (bpf/lisp_nexthop.h;
    tests/datapath/test_nexthop.py shows the next packet then asks the FIB)."""
    import ctypes

    from lispctl.datapath.maps import Table, obj_get
    gen_t = Table(obj_get(str(Path("/sys/fs/bpf/lispctl") / f"{TAG}-x" / "nh_gen")),
                  ctypes.c_uint32, ctypes.c_uint64, "nh_gen")

    def invalidations():
        return json.loads(_cli(lab, "counters", "--json", "-i", f"{TAG}-x"))["daemon"].get(
            "next_hop_invalidations", 0)

    try:
        n0, g0 = invalidations(), gen_t[0].value
        assert g0 >= 1
        with NetNS(ROUTER) as r:
            wan = r.link_lookup(ifname="wan0")[0]
            r.neigh("add", dst="192.0.2.77", lladdr="02:00:00:00:07:07", ifindex=wan, state=0x80)
            try:
                assert _eventually(lambda: invalidations() > n0 and gen_t[0].value > g0)
            finally:
                r.neigh("del", dst="192.0.2.77", ifindex=wan)
    finally:
        os.close(gen_t.map_fd)


def test_sigterm_detaches_and_unpins(lab):
    p, _ = lab["procs"][1]
    pin = Path("/sys/fs/bpf/lispctl") / f"{TAG}-x"
    assert pin.is_dir()
    p.terminate()
    assert p.wait(20) == 0
    assert not pin.exists()
    assert not (lab["run_dir"] / f"{TAG}-x.pid").exists()
    with NetNS(ROUTER) as r:
        for name in ("lan0", "wan0"):
            idx = r.link_lookup(ifname=name)[0]
            assert list(r.get_filters(index=idx, parent=0xFFFFFFF2)) == []   # no tc ingress filters left

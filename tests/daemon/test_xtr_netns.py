"""An xTR and an MS+MR daemon in network namespaces this test creates:
registration, a data-plane miss resolved into the BPF map-cache, lig through
the MR to the ETR, and a clean stop that unpins the data plane."""
from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from pyroute2 import NetNS, netns

from lispctl.lab.nsexec import preexec
from tests.conftest import need_root
from tests.netns_daemons import Daemons, router_and_host

pytestmark = pytest.mark.root

TAG = f"ld{os.getpid()}"
ROUTER, HOST = f"{TAG}r", f"{TAG}h"

MS = """
instance = "{tag}-ms"
roles = ["ms", "mr"]
control-addresses = ["192.0.2.10"]
[[site]]
name = "a"
keys = {{ 1 = "k" }}
[[site.eid-prefix]]
prefix = "10.1.0.0/16"
"""
XTR = """
instance = "{tag}-x"
roles = ["xtr"]
control-addresses = ["192.0.2.1"]
[interfaces]
eid-facing = ["lan0"]
rloc-facing = ["wan0"]
[[database]]
eid-prefix = "10.1.0.0/16"
[[database.locator]]
interface = "wan0"
family = "ipv4"
[[map-server]]
address = "192.0.2.10"
key-id = 1
key = "k"
[[map-resolver]]
address = "192.0.2.10"
[itr]
miss-action = "drop"
"""


def _in(ns, argv, **kw):
    return subprocess.Popen(argv, preexec_fn=preexec(ns), **kw)


@pytest.fixture(scope="module")
def lab():
    need_root()
    run_dir = Path(tempfile.mkdtemp(prefix=f"lispctl-{TAG}-"))
    daemons = Daemons(run_dir)
    try:
        router_and_host(ROUTER, HOST)
        for name, text in (("ms", MS), ("x", XTR)):
            cfg = run_dir / f"{name}.toml"
            cfg.write_text(text.format(tag=TAG))
            daemons.up(ROUTER, cfg, name)
        yield {"run_dir": run_dir, "procs": daemons.procs}
    finally:
        daemons.stop()
        for ns in (HOST, ROUTER):
            if ns in netns.listnetns():
                netns.remove(ns)
        shutil.rmtree(run_dir, ignore_errors=True)


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

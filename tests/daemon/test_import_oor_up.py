"""Converted OOR configurations run: `lispctl import-oor` turns the OOR xTR
and MS files of tests/config/oor/ into TOML, `lispctl up` starts each in its
own network namespace (this test creates them), both reach `ready`, and the
xTR registers at the Map-Server with the converted key (OOR's key-type 1 ->
key ID 0, HMAC-SHA-1)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pyroute2 import NetNS, netns

from tests.conftest import need_root
from tests.netns_daemons import daemon_run

pytestmark = pytest.mark.root

OOR = Path(__file__).resolve().parents[1] / "config" / "oor"
TAG = f"lo{os.getpid()}"
XNS, MNS = f"{TAG}x", f"{TAG}m"


def _topology():
    # xTR: wan0 192.0.2.1 <-> m0 192.0.2.10 (MS/MR); lan0 10.1.0.1 (a veth pair), the EID side
    netns.create(XNS)
    netns.create(MNS)
    with NetNS(XNS) as x:
        x.link("set", index=x.link_lookup(ifname="lo")[0], state="up")
        x.link("add", ifname="wan0", kind="veth", peer={"ifname": "m0", "net_ns_fd": MNS})
        x.link("add", ifname="lan0", kind="veth", peer={"ifname": "lanp"})
        for name, addr in (("wan0", "192.0.2.1"), ("lan0", "10.1.0.1"), ("lanp", None)):
            idx = x.link_lookup(ifname=name)[0]
            x.link("set", index=idx, state="up")
            if addr:
                x.addr("add", index=idx, address=addr, prefixlen=24)
    with NetNS(MNS) as m:
        for name in ("lo", "m0"):
            m.link("set", index=m.link_lookup(ifname=name)[0], state="up")
        m.addr("add", index=m.link_lookup(ifname="m0")[0], address="192.0.2.10", prefixlen=24)


def _cli(run_dir, *args):
    out = subprocess.run([sys.executable, "-m", "lispctl.cli", *args, "--run-dir", str(run_dir)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr
    return json.loads(out.stdout)


def test_converted_xtr_and_ms_start_and_register():
    need_root()
    with daemon_run(TAG, (XNS, MNS), _topology) as daemons:
        run_dir = daemons.run_dir
        for ns, conf, extra in ((MNS, "msmr.conf", []), (XNS, "xtr.conf", ["--eid-facing", "lan0"])):
            conv = subprocess.run([sys.executable, "-m", "lispctl.cli", "import-oor", str(OOR / conf),
                                   "--instance", f"{TAG}-{conf.split('.')[0]}", *extra],
                                  capture_output=True, text=True, timeout=60)
            assert conv.returncode == 0, conv.stderr
            daemons.start(ns, conf.split(".")[0], conv.stdout)

        deadline = time.monotonic() + 10
        while True:
            sites = _cli(run_dir, "sites", "--json", "-i", f"{TAG}-msmr")
            site = next(s for s in sites if s["name"] == "site-1")
            registered = {p["prefix"]: [r["eid"] for r in p["registrations"]] for p in site["eid_prefixes"]}
            if all(registered.values()) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert registered == {"10.1.0.0/16": ["10.1.0.0/24"], "fd00:1::/48": ["fd00:1::/64"]}
        assert site["bad_auth"] == 0
        cache = _cli(run_dir, "map-cache", "--json", "-i", f"{TAG}-xtr")
        assert [(e["prefix"], [r["address"] for r in e["rlocs"]]) for e in cache] == \
            [("10.99.0.0/16", ["203.0.113.9"])]                 # the static-map-cache entry

"""`lispctl up` with eid-mode = rloc-mode = "xdp" on veths: an interface
whose veth peer has GRO on becomes an XDP_REDIRECT target, one whose peer
has neither GRO nor an XDP program does not, with one warning saying what to
do; `lispctl status` shows the decision. (Traffic through both cases:
tests/datapath/test_xdp_attach.py.)"""
from __future__ import annotations

import ctypes
import fcntl
import json
import os
import socket
import struct
import subprocess
import sys

import pytest
from pyroute2 import netns

from tests.conftest import need_root
from tests.netns_daemons import router_and_host_daemons, xtr_toml

pytestmark = pytest.mark.root

TAG = f"lxr{os.getpid()}"
ROUTER, HOST = f"{TAG}r", f"{TAG}h"
XDP_MODES = 'eid-facing = ["lan0"]\neid-mode = "xdp"\nrloc-mode = "xdp"\n'


def _set_gro(ns: str, ifname: str, on: bool) -> None:
    """ETHTOOL_SGRO through SIOCETHTOOL, from a socket of namespace ns."""
    netns.pushns(ns)
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    finally:
        netns.popns()
    val = ctypes.create_string_buffer(struct.pack("=II", 0x2C, 1 if on else 0))
    with s:
        fcntl.ioctl(s.fileno(), 0x8946, struct.pack("16sP", ifname.encode(), ctypes.addressof(val)))


def test_daemon_redirects_into_veths_whose_peer_takes_xdp_frames():
    need_root()
    with router_and_host_daemons(TAG) as daemons:
        # lan0's peer h0 runs NAPI (GRO on); wan0's peer w1 does not
        _set_gro(HOST, "h0", True)
        _set_gro(HOST, "w1", False)
        # the xTR's [interfaces] table, with both modes "xdp"
        daemons.start(ROUTER, "x", xtr_toml(TAG).replace('eid-facing = ["lan0"]\n', XDP_MODES))
        out = subprocess.run([sys.executable, "-m", "lispctl.cli", "status", "--json", "-i", f"{TAG}-x",
                              "--run-dir", str(daemons.run_dir)], capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stdout + out.stderr
        decided = json.loads(out.stdout)["xdp_redirect"]
        assert decided["lan0"]["redirect"] is True and decided["lan0"]["peer"] == "h0"
        assert decided["lan0"]["peer_netns"] == f"/var/run/netns/{HOST}"
        assert decided["wan0"]["redirect"] is False and decided["wan0"]["accepts"] is False
        # the tc programs' hand-over to the veth peers (both in the host's namespace, no XDP there)
        handed = json.loads(out.stdout)["peer_handoff"]
        assert handed["lan0"]["handoff"] is True and handed["lan0"]["peer"] == "h0", handed
        assert handed["wan0"]["handoff"] is True and handed["wan0"]["peer"] == "w1", handed
        log = (daemons.run_dir / "x.log").read_text()
        warned = [ln for ln in log.splitlines() if "XDP_REDIRECT" in ln]
        assert len(warned) == 1 and "wan0:" in warned[0], warned
        assert "ethtool -K w1 gro on" in warned[0]

"""A real Map-Server daemon (`lispctl up`) on loopback answers an Info-Request
from a real socket; tshark reads both messages as the draft lays them out."""
from __future__ import annotations

import ipaddress
import json
import os
import shutil
import socket
import subprocess

import pytest
from typer.testing import CliRunner

from tests.conftest import unavailable
from lispctl.capture.writer import PcapWriter
from lispctl.cli import app
from lispctl.wire import ALG_HMAC_SHA256, NO_ADDRESS, InfoReply, InfoRequest, decode_control, sign, verify
from tests.netns_daemons import daemon_run

runner = CliRunner()
A = ipaddress.ip_address

CONFIG = """
instance = "{instance}"
roles = ["ms"]
control-addresses = ["127.0.0.1"]
[ms]
rtr-rlocs = ["192.0.2.44", "192.0.2.45"]
[[site]]
name = "site-a"
keys = {{ 1 = "site-a-secret" }}
[[site.eid-prefix]]
prefix = "10.1.0.0/16"
"""


@pytest.fixture
def ms_daemon():
    instance = f"natms{os.getpid()}"
    with daemon_run(instance) as daemons:
        daemons.start(None, "ms", CONFIG.format(instance=instance), "--control-port", "0")
        yield daemons.run_dir, daemons.control_port()


def test_info_request_answered_over_real_sockets_and_tshark_agrees(ms_daemon, tmp_path):
    run_dir, port = ms_daemon
    # AFI 0 in the last field, as the draft has it (tshark flags anything else)
    req = sign(InfoRequest(0xA1B2C3D4E5F60718, A("10.1.0.0"), 16, 1, ALG_HMAC_SHA256, ttl=1),
               "site-a-secret")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(5)
        sport = s.getsockname()[1]
        s.sendto(sign(InfoRequest(1, A("10.1.0.0"), 16, 1, ALG_HMAC_SHA256), "wrong"), ("127.0.0.1", port))
        s.sendto(req, ("127.0.0.1", port))
        data, peer = s.recvfrom(2048)          # only the good one is answered
    rep = decode_control(data)
    assert isinstance(rep, InfoReply) and rep.nonce == 0xA1B2C3D4E5F60718
    assert verify(data, "site-a-secret") and peer == ("127.0.0.1", port)
    nat = rep.nat
    assert (nat.ms_port, nat.etr_port) == (port, sport)
    assert (nat.global_etr_rloc, nat.ms_rloc, nat.private_etr_rloc) == \
        (A("127.0.0.1"), A("127.0.0.1"), NO_ADDRESS)
    assert nat.rtr_rlocs == (A("192.0.2.44"), A("192.0.2.45"))
    st = json.loads(runner.invoke(app, ["status", "--json", "--run-dir", str(run_dir)]).output)
    assert "info_request_bad_auth" in json.dumps(st)

    tshark = shutil.which("tshark")
    if not tshark:
        unavailable("tshark is not installed (Debian package tshark)")
    pcap = tmp_path / "info.pcap"
    with open(pcap, "wb") as f:
        w = PcapWriter(f)
        w.write_udp("127.0.0.1", "127.0.0.1", sport, 4342, req)
        w.write_udp("127.0.0.1", "127.0.0.1", 4342, sport, data)
    r = subprocess.run([tshark, "-r", str(pcap), "-T", "json", "--no-duplicate-keys"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    pkts = [p["_source"]["layers"] for p in json.loads(r.stdout)]
    req_l, rep_l = pkts[0]["lisp"], pkts[1]["lisp"]
    assert "_ws.malformed" not in r.stdout and "_ws.expert" not in r.stdout
    assert req_l["lisp.info.r"] in ("0", "False") and rep_l["lisp.info.r"] in ("1", "True")
    assert req_l["lisp.info.afi"] == "0"
    text = json.dumps(rep_l)
    assert '"lisp.lcaf.natt.msport": "%d"' % port in text
    assert '"lisp.lcaf.natt.etrport": "%d"' % sport in text
    for a in ("192.0.2.44", "192.0.2.45"):
        assert a in text

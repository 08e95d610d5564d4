"""`lispctl cpm` sends a signed Change-Priority Message that the xTR's CPM
role accepts (a real UDP socket on loopback receives it)."""
from __future__ import annotations

import ipaddress
import json
import random
import socket
import time

from typer.testing import CliRunner

from lispctl.cli import app
from lispctl.config import loads
from lispctl.mapping.types import EidPrefix
from lispctl.roles import build_roles
from lispctl.roles.base import Endpoint
from lispctl.wire import decode_cpm, verify_cpm

runner = CliRunner()
A = ipaddress.ip_address

XTR = """
instance = "dc2"
roles = ["xtr"]
[[database]]
eid-prefix = "10.9.0.5/32"
[[database.locator]]
address = "192.0.2.2"
priority = 255
[[map-server]]
address = "198.51.100.10"
key = "ms"
[[map-resolver]]
address = "198.51.100.10"
[cpm]
keys = { 4 = "s3cret" }
"""


def receive(args, tmp_path, key="s3cret"):
    kf = tmp_path / "key"
    kf.write_text(key + "\n")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(5)
        port = s.getsockname()[1]
        before = time.time()
        r = runner.invoke(app, ["cpm", "127.0.0.1", *args, "--key-file", str(kf), "--port", str(port), "--json"])
        assert r.exit_code == 0, r.output
        data, peer = s.recvfrom(65535)
    return data, json.loads(r.output), before


def test_sends_what_the_xtr_accepts(tmp_path):
    data, sent, before = receive(["10.9.0.5", "-p", "1", "--key-id", "4", "-c", "10.1.0.2", "-c", "2001:db8::7"],
                                 tmp_path)
    msg = decode_cpm(data)
    assert msg.priority == 1 and msg.key_id == 4 and msg.mask_len == 32
    assert list(msg.correspondents) == [A("10.1.0.2"), A("2001:db8::7")]
    assert before * 1000 - 1 <= msg.timestamp_ms <= time.time() * 1000 + 1
    assert verify_cpm(data, msg, "s3cret")
    assert sent["nonce"] == f"{msg.nonce:016x}" and sent["bytes"] == len(data)
    # the receiving role takes it: the priority changes
    roles = dict(build_roles(loads(XTR), rng=random.Random(1)))
    roles["etr"].start(time.monotonic())
    roles["cpm"].handle(data, Endpoint(A("127.0.0.1"), 40000), Endpoint(A("192.0.2.2")), time.monotonic())
    assert roles["cpm"].counters["cpm_accepted"] == 1
    assert [r.priority for r in roles["etr"].site.db.get(EidPrefix.parse("10.9.0.5/32")).rlocs] == [1]


def test_two_sends_differ_in_nonce(tmp_path):
    a, _, _ = receive(["10.9.0.5", "-p", "1"], tmp_path)
    b, _, _ = receive(["10.9.0.5", "-p", "1"], tmp_path)
    assert decode_cpm(a).nonce != decode_cpm(b).nonce


def test_no_key_is_an_error(monkeypatch):
    monkeypatch.delenv("LISPCTL_CPM_KEY", raising=False)
    r = runner.invoke(app, ["cpm", "127.0.0.1", "10.9.0.5", "-p", "1"])
    assert r.exit_code == 2 and "no key" in r.output

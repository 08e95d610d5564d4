"""A real MS+MR daemon (`lispctl up`) on loopback: lig and Map-Register."""
from __future__ import annotations

import ipaddress
import json
import os
import secrets
import socket

import pytest
from typer.testing import CliRunner

from lispctl.cli import app
from lispctl.mapping.types import EidPrefix, Rloc
from lispctl.wire import (ALG_HMAC_SHA256, MapNotify, MapRegister, decode_control, eid_record,
                          record_prefix, sign, verify)
from tests.netns_daemons import daemon_run

runner = CliRunner()

CONFIG = """
instance = "{instance}"
roles = ["ms", "mr"]
control-addresses = ["127.0.0.1"]

[[site]]
name = "site-a"
keys = {{ 1 = "site-a-secret" }}
[[site.eid-prefix]]
prefix = "10.1.0.0/16"
"""


@pytest.fixture(scope="module")
def msmr():
    instance = f"msmr{os.getpid()}"
    with daemon_run(instance) as daemons:
        proc = daemons.start(None, "daemon", CONFIG.format(instance=instance), "--control-port", "0",
                             "--log-level", "debug")
        yield {"run_dir": daemons.run_dir, "port": daemons.control_port(), "proc": proc, "instance": instance,
               "log": daemons.run_dir / "daemon.log"}


def _lig(env, eid):
    res = runner.invoke(app, ["lig", eid, "--mr", "127.0.0.1", "--port", str(env["port"]),
                              "--timeout", "1", "--json"])
    assert res.exit_code == 0, res.output + env["log"].read_text()[-3000:]
    return json.loads(res.output)


def test_lig_gets_negative_reply_for_unregistered_space(msmr):
    out = _lig(msmr, "10.200.0.1")           # no site holds it
    [rec] = out["records"]
    assert rec["locators"] == [] and rec["ttl_minutes"] == 15
    assert ipaddress.ip_address("10.200.0.1") in ipaddress.ip_network(rec["eid"])
    assert ipaddress.ip_network(rec["eid"]).overlaps(ipaddress.ip_network("10.1.0.0/16")) is False
    out = _lig(msmr, "10.1.2.3")             # configured, not registered
    [rec] = out["records"]
    assert rec["locators"] == [] and rec["ttl_minutes"] == 1 and rec["eid"] == "10.1.0.0/16"


def test_map_register_gets_map_notify_then_lig_sees_the_mapping(msmr):
    nonce = secrets.randbits(64)
    # registering from one of its RLOCs: the Map-Notify comes back to that
    # source (port included); from any other address it would go to an RLOC
    rec = eid_record(EidPrefix.parse("10.1.0.0/16"), [Rloc(ipaddress.ip_address("127.0.0.1"), 1, 100)],
                     ttl=1440)
    reg = MapRegister(nonce, (rec,), key_id=1, alg_id=ALG_HMAC_SHA256, want_map_notify=True,
                      proxy_reply=True)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        s.bind(("127.0.0.1", 0))
        s.sendto(sign(reg, "site-a-secret"), ("127.0.0.1", msmr["port"]))
        data, peer = s.recvfrom(65535)
    notify = decode_control(data)
    assert isinstance(notify, MapNotify) and notify.nonce == nonce
    assert verify(data, "site-a-secret")
    assert [record_prefix(r) for r in notify.records] == [EidPrefix.parse("10.1.0.0/16")]
    assert peer == ("127.0.0.1", msmr["port"])

    sites = json.loads(runner.invoke(app, ["sites", "--json", "--run-dir", str(msmr["run_dir"])]).output)
    assert sites[0]["name"] == "site-a" and sites[0]["eid_prefixes"][0]["registered"] is True
    table = runner.invoke(app, ["sites", "--run-dir", str(msmr["run_dir"])]).output.splitlines()
    assert table[0].split() == ["SITE", "PREFIX", "REGISTERED", "EID", "LOCATORS", "FROM", "PROXY", "EXPIRES"]
    assert table[1].split()[:7] == ["site-a", "10.1.0.0/16", "yes", "10.1.0.0/16", "127.0.0.1",
                                    "p1/w100", "127.0.0.1"]

    out = _lig(msmr, "10.1.2.3")
    [rec] = out["records"]
    assert rec["eid"] == "10.1.0.0/16"
    assert [(l["address"], l["priority"], l["weight"]) for l in rec["locators"]] == [("127.0.0.1", 1, 100)]


def test_bad_datagrams_are_counted_and_the_daemon_keeps_serving(msmr):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for junk in (b"", b"\xff" * 3, b"\x30" + b"\x00" * 10, os.urandom(200)):
            s.sendto(junk, ("127.0.0.1", msmr["port"]))
    out = _lig(msmr, "10.200.0.1")
    assert out["records"][0]["locators"] == []
    counters = json.loads(runner.invoke(app, ["counters", "--json", "--run-dir",
                                              str(msmr["run_dir"])]).output)
    # the empty one and the Map-Register header are malformed; a type no role
    # of an MS/MR takes is "unhandled" (the random one is either)
    assert counters["daemon"]["malformed"] >= 2
    assert counters["daemon"]["malformed"] + counters["daemon"]["unhandled"] >= 3
    assert counters["daemon"]["role_errors"] == 0

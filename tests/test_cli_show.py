"""The show commands and `down` against a running daemon (fake role)."""
from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lispctl.cli import app

from daemon.fakes import DaemonProcess  # tests/daemon, importable as the tests dir is on sys.path

runner = CliRunner()


@pytest.fixture(scope="module")
def run_dir():
    d = Path(tempfile.mkdtemp(prefix=f"lispctl-cli-{os.getpid()}-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def daemon(run_dir):
    d = DaemonProcess(run_dir, f"cli{os.getpid()}")
    try:
        d.wait_ready()
        port = _port(run_dir)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(3)
            s.sendto(b"install [5]10.2.0.0/16", ("127.0.0.1", port))
            s.sendto(b"negative 10.9.0.0/16", ("127.0.0.1", port))
            s.sendto(b"echo", ("127.0.0.1", port))
            s.recvfrom(4096)
        yield d
    finally:
        d.stop()


def _port(run_dir) -> int:
    res = runner.invoke(app, ["status", "--json", "--run-dir", str(run_dir)])
    return int(json.loads(res.output)["control"][0].rsplit(":", 1)[1])


def _run(run_dir, *args):
    res = runner.invoke(app, [*args, "--run-dir", str(run_dir)])
    assert res.exit_code == 0, res.output
    return res.output


def test_status(daemon, run_dir):
    st = json.loads(_run(run_dir, "status", "--json"))
    assert st["pid"] == daemon.proc.pid and st["roles"] == ["fake"]
    text = _run(run_dir, "status", "--instance", daemon.instance)
    assert f"instance    {daemon.instance}" in text
    assert "data plane  none" in text
    assert "map-cache   2 entries" in text


def test_map_cache_json_and_table(daemon, run_dir):
    entries = json.loads(_run(run_dir, "map-cache", "--json"))
    assert [e["eid"] for e in entries] == ["10.9.0.0/16", "[5]10.2.0.0/16"]
    lines = _run(run_dir, "map-cache").splitlines()
    assert lines[0].split() == ["EID", "ACTION", "LOCATORS", "TTL", "EXPIRES", "BY"]
    assert lines[1].split()[:2] == ["10.9.0.0/16", "drop"]
    assert lines[2].split()[:4] == ["[5]10.2.0.0/16", "forward", "192.0.2.1", "p1/w50"]
    # aligned: every column starts at the same offset in each row
    col = lines[0].index("LOCATORS")
    assert lines[2][col:].startswith("192.0.2.1")
    assert lines[1][col:].startswith("-")


def test_database_sites_counters(daemon, run_dir):
    db = json.loads(_run(run_dir, "database", "--json"))
    assert db[0]["eid"] == "10.1.0.0/16"
    table = _run(run_dir, "database")
    assert table.splitlines()[0].split()[:2] == ["EID", "RLOCS"]
    assert "192.0.2.1 p1/w100" in table
    sites = _run(run_dir, "sites")   # an unknown snapshot shape still makes a table
    assert sites.splitlines()[0].split() == ["SITE", "EID", "REGISTERED", "ROLE"]
    assert sites.splitlines()[1].split() == ["site-a", "10.1.0.0/16", "no", "fake"]
    counters = json.loads(_run(run_dir, "counters", "--json"))
    assert counters["daemon"]["installs"] == 2
    text = _run(run_dir, "counters")
    assert any(l.split() == ["daemon", "installs", "2"] for l in text.splitlines())


def test_unknown_instance_and_no_daemon_are_clear_errors(daemon, run_dir, tmp_path):
    res = runner.invoke(app, ["status", "--instance", "nope", "--run-dir", str(run_dir)])
    assert res.exit_code == 1 and "no lispctl daemon for instance 'nope'" in res.output
    res = runner.invoke(app, ["map-cache", "--run-dir", str(tmp_path)])
    assert res.exit_code == 1 and "no lispctl daemon is running" in res.output


def test_down_stops_the_daemon(run_dir):
    d = DaemonProcess(run_dir, f"down{os.getpid()}")
    try:
        d.wait_ready()
        res = runner.invoke(app, ["down", "--instance", d.instance, "--run-dir", str(run_dir)])
        assert res.exit_code == 0, res.output
        assert f"stopped {d.instance}" in res.output
        assert d.proc.wait(5) == 0
        assert not (run_dir / f"{d.instance}.sock").exists()
        assert not (run_dir / f"{d.instance}.pid").exists()
    finally:
        d.stop()


def test_status_text_shows_a_roles_own_section():
    from lispctl.commands.show import _status_text
    text = _status_text({"instance": "px", "roles": ["pitr", "petr"], "state": {
        "pitr": {"map_cache": [], "pitr": {"eid_prefixes": ["10.1.0.0/16"], "announced": True,
                                           "map_resolvers": [{"address": "192.0.2.10", "last_answer_s": 0.4}]}},
        "petr": {"petr": {"accept_eids": ["10.1.0.0/16"], "open_relay": False}}}})
    pitr = next(l for l in text.splitlines() if l.startswith("pitr"))
    petr = next(l for l in text.splitlines() if l.startswith("petr"))
    assert "announced=yes" in pitr and "10.1.0.0/16" in pitr and "192.0.2.10" in pitr
    assert "open_relay=no" in petr and "accept_eids=10.1.0.0/16" in petr

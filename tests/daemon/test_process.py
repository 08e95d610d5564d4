"""A whole daemon process (fake role): API, single instance, clean stop."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import tempfile
from pathlib import Path

import pytest

from lispctl.api.client import ApiClient, ApiError, NoDaemon, resolve_instance
from lispctl.daemon.rundir import running_instances

from .fakes import DaemonProcess


@pytest.fixture
def run_dir():
    # Short path: unix socket paths are limited to 108 bytes.
    d = Path(tempfile.mkdtemp(prefix=f"lispctl-{os.getpid()}-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def daemon(run_dir):
    d = DaemonProcess(run_dir, f"t{os.getpid()}")
    try:
        d.wait_ready()
        yield d
    finally:
        d.stop()


def test_api_answers_every_command(daemon, run_dir):
    api = ApiClient.for_instance(None, run_dir)
    st = api.call("status")
    assert st["instance"] == daemon.instance and st["pid"] == daemon.proc.pid
    assert st["roles"] == ["fake"] and st["datapath"] is False
    port = int(st["control"][0].rsplit(":", 1)[1])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        s.sendto(b"install 10.2.0.0/16", ("127.0.0.1", port))
        s.sendto(b"echo", ("127.0.0.1", port))
        s.recvfrom(4096)                          # echo processed => install was too
    cache = api.call("map-cache")
    assert [(e["eid"], e["rlocs"][0]["address"]) for e in cache] == [("10.2.0.0/16", "192.0.2.1")]
    assert api.call("database")[0]["eid"] == "10.1.0.0/16"
    assert api.call("sites") == [{"role": "fake", "site": "site-a", "eid": "10.1.0.0/16",
                                  "registered": False}]
    counters = api.call("counters")
    assert counters["daemon"]["datagrams_rx"] == 2 and counters["roles"]["fake"]["seen"] == 2
    with pytest.raises(ApiError, match="unknown command"):
        api.call("reboot")


def test_api_socket_is_private_and_garbage_gets_an_error(daemon, run_dir):
    sock = run_dir / f"{daemon.instance}.sock"
    assert stat.S_IMODE(sock.stat().st_mode) == 0o600
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(3)
        s.connect(str(sock))
        s.sendall(b"{not json\n[1]\n")
        data = b""
        while data.count(b"\n") < 2:
            data += s.recv(4096)
    lines = data.splitlines()
    assert b'"ok":false' in lines[0] and b"not JSON" in lines[0]
    assert b'"ok":false' in lines[1]
    assert ApiClient.for_instance(daemon.instance, run_dir).call("status")["pid"] == daemon.proc.pid


def test_second_instance_is_refused(daemon, run_dir):
    again = DaemonProcess(run_dir, daemon.instance)
    try:
        assert again.proc.wait(20) == 3
    finally:
        again.stop()
    assert "already running" in again.log.read_text()
    # the first one is untouched
    assert ApiClient.for_instance(daemon.instance, run_dir).call("status")["pid"] == daemon.proc.pid


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_cleanly_and_removes_files(daemon, run_dir, sig):
    assert running_instances(run_dir) == [daemon.instance]
    daemon.proc.send_signal(sig)
    assert daemon.proc.wait(10) == 0
    assert not (run_dir / f"{daemon.instance}.sock").exists()
    assert not (run_dir / f"{daemon.instance}.pid").exists()
    assert running_instances(run_dir) == []
    assert f"{signal.Signals(sig).name} received" in daemon.log.read_text()


def test_stale_pidfile_of_a_killed_daemon_does_not_block(daemon, run_dir):
    daemon.proc.kill()
    daemon.proc.wait(10)
    assert (run_dir / f"{daemon.instance}.pid").exists()
    with pytest.raises(NoDaemon):
        resolve_instance(daemon.instance, run_dir)
    again = DaemonProcess(run_dir, daemon.instance)
    try:
        again.wait_ready()
        assert ApiClient.for_instance(None, run_dir).call("status")["pid"] == again.proc.pid
    finally:
        again.stop()


def test_no_daemon_is_a_clear_error(run_dir):
    with pytest.raises(NoDaemon, match="no lispctl daemon is running"):
        ApiClient.for_instance(None, run_dir)
    with pytest.raises(NoDaemon, match="instance 'x'"):
        ApiClient.for_instance("x", run_dir)

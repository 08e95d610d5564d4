"""`lispctl reload` and SIGHUP on a running daemon (a Map-Server on loopback,
no BPF, no root): an invalid file or a change that needs a restart is refused
with the messages `up` gives and the running configuration stays; a live
change is applied. The data-plane side (a weight change losing no packets)
is tests/e2e/test_reload.py."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from lispctl.api.client import ApiClient
from lispctl.daemon.rundir import InstancePaths

MS = """instance = "rl{pid}"
roles = ["ms", "mr"]
control-addresses = ["127.0.0.1"]
log-level = "info"
[[site]]
name = "a"
keys = {{ 1 = "k" }}
[[site.eid-prefix]]
prefix = "10.1.0.0/16"
"""


@pytest.fixture
def daemon(tmp_path):
    cfg = tmp_path / "ms.toml"
    cfg.write_text(MS.format(pid=os.getpid()))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(tmp_path / "log", "w")
    p = subprocess.Popen([sys.executable, "-m", "lispctl.cli", "up", "-c", str(cfg), "--run-dir", str(tmp_path),
                          "--control-port", str(port)], stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        assert p.stdout.readline().strip() == "ready", (tmp_path / "log").read_text()
        yield p, cfg, tmp_path
    finally:
        if p.poll() is None:
            p.terminate()
            p.wait(20)
        p.stdout.close()
        log.close()


def _reload(run_dir):
    return subprocess.run([sys.executable, "-m", "lispctl.cli", "reload", "-i", f"rl{os.getpid()}",
                           "--run-dir", str(run_dir)], capture_output=True, text=True, timeout=60)


def _sites(run_dir):
    return ApiClient(InstancePaths(run_dir, f"rl{os.getpid()}").socket).call("sites")


def test_invalid_file_is_refused_with_ups_messages(daemon):
    _, cfg, run_dir = daemon
    good = cfg.read_text()
    cfg.write_text(good.replace('prefix = "10.1.0.0/16"', 'prefix = "10.1.0.1/16"'))
    out = _reload(run_dir)
    assert out.returncode == 1
    up = subprocess.run([sys.executable, "-m", "lispctl.cli", "up", "-c", str(cfg), "--run-dir",
                         str(run_dir / "other")], capture_output=True, text=True, timeout=60)
    assert up.returncode == 2
    # the same file:line: key: message line as `up` prints
    [line] = [x for x in up.stderr.splitlines() if "site[0].eid-prefix[0].prefix" in x]
    assert line in out.stderr and "the running one stays" in out.stderr
    assert _sites(run_dir)[0]["eid_prefixes"][0]["prefix"] == "10.1.0.0/16"


@pytest.mark.parametrize("edit, expected", [
    (lambda t: t.replace('roles = ["ms", "mr"]', 'roles = ["ms"]'), "roles: ['ms', 'mr'] -> ['ms']"),
    (lambda t: t.replace('instance = "rl', 'instance = "other'), "that is another device"),
    (lambda t: t + "[ms]\nregistration-timeout = 30\n", "ms: changed; it cannot be applied live"),
])
def test_changes_needing_a_restart_are_refused(daemon, edit, expected):
    _, cfg, run_dir = daemon
    cfg.write_text(edit(cfg.read_text()))
    out = _reload(run_dir)
    assert out.returncode == 1 and expected in out.stderr, out.stderr
    assert _sites(run_dir)[0]["eid_prefixes"][0]["prefix"] == "10.1.0.0/16"


def test_live_change_and_sighup(daemon):
    p, cfg, run_dir = daemon
    out = _reload(run_dir)
    assert out.returncode == 0 and "nothing changed" in out.stdout
    cfg.write_text(cfg.read_text().replace('log-level = "info"', 'log-level = "debug"'))
    out = _reload(run_dir)
    assert out.returncode == 0 and out.stdout.strip().endswith(": log-level"), out.stdout
    cfg.write_text(cfg.read_text().replace('prefix = "10.1.0.0/16"', 'prefix = "10.2.0.0/16"'))
    out = _reload(run_dir)
    assert out.returncode == 0 and out.stdout.strip().endswith(": site"), out.stdout
    assert _sites(run_dir)[0]["eid_prefixes"][0]["prefix"] == "10.2.0.0/16"
    # SIGHUP: the same path; a refused reload is logged, the daemon keeps serving
    cfg.write_text(cfg.read_text().replace('roles = ["ms", "mr"]', 'roles = ["ms"]'))
    p.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    log = run_dir / "log"
    while "reload refused" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "reload refused" in log.read_text() and "roles:" in log.read_text()
    assert p.poll() is None and _sites(run_dir)

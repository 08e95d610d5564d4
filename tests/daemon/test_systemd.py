"""systemd integration of `lispctl up`, with the notify socket bound by the
test (what systemd does for Type=notify): READY=1 only once the API answers,
WATCHDOG=1 at half of WATCHDOG_USEC, STOPPING=1 on SIGTERM, journal-style
log lines when JOURNAL_STREAM names stderr. A Map-Server-only device on
loopback: no BPF, no root needed."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from lispctl.api.client import ApiClient
from lispctl.daemon.rundir import InstancePaths

MS = """
instance = "sd{pid}"
roles = ["ms", "mr"]
control-addresses = ["127.0.0.1"]
[[site]]
name = "a"
keys = {{ 1 = "k" }}
[[site.eid-prefix]]
prefix = "10.1.0.0/16"
"""


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def notify_sock(tmp_path):
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    yield sock, path
    sock.close()


def _start(tmp_path, env_extra: dict, stderr):
    cfg = tmp_path / "ms.toml"
    cfg.write_text(MS.format(pid=os.getpid()))
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "JOURNAL_STREAM")}
    env.update(env_extra)
    p = subprocess.Popen([sys.executable, "-m", "lispctl.cli", "up", "-c", str(cfg), "--run-dir",
                          str(tmp_path), "--control-port", str(_free_udp_port())],
                         stdout=subprocess.DEVNULL, stderr=stderr, env=env)
    return p, InstancePaths(tmp_path, f"sd{os.getpid()}")


def _messages(sock, until, timeout=30.0):
    """Datagrams as lists of assignments until `until(msgs)` holds."""
    msgs = []
    deadline = time.monotonic() + timeout
    while not until(msgs):
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = sock.recv(4096)
        except socket.timeout:
            break
        msgs.append((time.monotonic(), data.decode().split("\n")))
    return msgs


def test_ready_watchdog_stopping(tmp_path, notify_sock):
    sock, path = notify_sock
    log = open(tmp_path / "log", "w")
    p, paths = _start(tmp_path, {"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "400000"}, log)
    try:
        msgs = _messages(sock, lambda m: any("READY=1" in a for _, a in m))
        assert any("READY=1" in a for _, a in msgs), (tmp_path / "log").read_text()
        # At READY=1 the API answers at once: no retry needed.
        status = ApiClient(paths.socket).call("status")
        assert status["roles"] == ["ms", "mr"]
        before = [a for _, a in msgs[:-1]]
        assert any(x.startswith("STATUS=starting") for a in before for x in a)
        assert any(x.startswith("STATUS=serving") for x in msgs[-1][1])

        # WATCHDOG_USEC=0.4 s: a ping every 0.2 s from the running loop
        pings = _messages(sock, lambda m: len(m) >= 6, timeout=5)
        assert len(pings) >= 6 and all(a == ["WATCHDOG=1"] for _, a in pings)
        gaps = sorted(b[0] - a[0] for a, b in zip(pings, pings[1:]))
        assert 0.15 < gaps[len(gaps) // 2] < 0.3, gaps      # half the watchdog time
        assert gaps[-1] < 0.4, gaps                          # never as late as the timeout

        p.send_signal(signal.SIGTERM)
        rest = _messages(sock, lambda m: any("STOPPING=1" in a for _, a in m), timeout=10)
        assert any("STOPPING=1" in a for _, a in rest)
        assert p.wait(20) == 0
        # no pings after STOPPING=1
        sock.settimeout(0.3)
        with pytest.raises(socket.timeout):
            while True:
                assert b"WATCHDOG" not in sock.recv(4096)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        log.close()


def test_without_watchdog_no_pings_and_plain_logs(tmp_path, notify_sock):
    sock, path = notify_sock
    log = open(tmp_path / "log", "w")
    p, _ = _start(tmp_path, {"NOTIFY_SOCKET": str(path)}, log)
    try:
        assert _messages(sock, lambda m: any("READY=1" in a for _, a in m))
        sock.settimeout(0.5)
        with pytest.raises(socket.timeout):
            sock.recv(4096)
        p.send_signal(signal.SIGTERM)
        assert p.wait(20) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        log.close()
    first = (tmp_path / "log").read_text().splitlines()[0]
    assert first[:4].isdigit()                  # a timestamp: not under the journal


def test_journal_stream_lines_carry_priority_not_time(tmp_path, notify_sock):
    sock, path = notify_sock
    log_path = tmp_path / "log"
    log = open(log_path, "w")
    st = os.fstat(log.fileno())
    p, _ = _start(tmp_path, {"NOTIFY_SOCKET": str(path), "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}, log)
    try:
        assert _messages(sock, lambda m: any("READY=1" in a for _, a in m))
        p.send_signal(signal.SIGTERM)
        assert p.wait(20) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        log.close()
    lines = log_path.read_text().splitlines()
    assert lines and all(line.startswith(("<6>", "<7>", "<4>", "<3>")) for line in lines), lines
    assert any(line.startswith("<6>lispctl.daemon: instance sd") for line in lines)
    assert not any(line[3:7].isdigit() for line in lines)      # no timestamp of our own


def test_abstract_notify_socket(tmp_path):
    name = f"lispctl-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    log = open(tmp_path / "log", "w")
    p, _ = _start(tmp_path, {"NOTIFY_SOCKET": "@" + name}, log)
    try:
        assert any("READY=1" in a for _, a in _messages(sock, lambda m: any("READY=1" in a for _, a in m)))
        p.send_signal(signal.SIGTERM)
        assert p.wait(20) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        log.close()
        sock.close()


def test_installed_unit_verifies(tmp_path):
    out = subprocess.run([sys.executable, "-m", "lispctl.cli", "install-unit", "--dir", str(tmp_path)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    text = (tmp_path / "lispctl@.service").read_text()
    assert f"ExecStart={sys.executable} -m lispctl.cli up -c /etc/lispctl/%i.toml" in text
    assert "Type=notify" in text and "WatchdogSec=" in text and "@LISPCTL@" not in text
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        from tests.conftest import unavailable
        unavailable("systemd-analyze is not installed")
    # an instance of the template, as systemd would load it
    (tmp_path / "lispctl@t.service").write_text(text.replace("ConditionPathExists=/etc/lispctl/%i.toml\n", ""))
    res = subprocess.run([analyze, "verify", str(tmp_path / "lispctl@t.service")],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and not res.stderr.strip(), res.stderr


def test_journal_stream_errors_of_up_carry_error_priority(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('instance = "x"\nroles = ["ms"]\n')
    log_path = tmp_path / "log"
    with open(log_path, "w") as log:
        st = os.fstat(log.fileno())
        env = {**os.environ, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        rc = subprocess.run([sys.executable, "-m", "lispctl.cli", "up", "-c", str(cfg), "--run-dir", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=log, env=env, timeout=60).returncode
    lines = log_path.read_text().splitlines()
    assert rc == 2 and lines and all(line.startswith("<3>") for line in lines), lines
    assert any("site: a Map-Server (ms) needs at least one [[site]]" in line for line in lines)

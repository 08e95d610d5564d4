"""The metrics endpoint's HTTP side on a Map-Server daemon on loopback (no
root): scrapes work, wrong methods and paths are answered, and clients that
stall or send oversized heads cannot block it (bounded reads)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from lispctl.daemon.metrics import MAX_CONNECTIONS, MAX_REQUEST

MS = """instance = "mh{pid}"
roles = ["ms", "mr"]
control-addresses = ["127.0.0.1"]
[metrics]
listen = "127.0.0.1:{mport}"
[[site]]
name = "a"
keys = {{ 1 = "k" }}
[[site.eid-prefix]]
prefix = "10.1.0.0/16"
"""


def _free(kind) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("metrics")
    mport = _free(socket.SOCK_STREAM)
    cfg = tmp / "ms.toml"
    cfg.write_text(MS.format(pid=os.getpid(), mport=mport))
    log = open(tmp / "log", "w")
    p = subprocess.Popen([sys.executable, "-m", "lispctl.cli", "up", "-c", str(cfg), "--run-dir", str(tmp),
                          "--control-port", str(_free(socket.SOCK_DGRAM))],
                         stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        assert p.stdout.readline().strip() == "ready", (tmp / "log").read_text()
        yield f"http://127.0.0.1:{mport}"
    finally:
        p.terminate()
        p.wait(20)
        p.stdout.close()
        log.close()


def _scrape(url: str) -> dict:
    with urllib.request.urlopen(url + "/metrics", timeout=5) as r:
        return {s.name: s.value for f in text_string_to_metric_families(r.read().decode()) for s in f.samples
                if not s.labels}


def test_scrape_and_errors(url):
    s = _scrape(url)
    assert s["lispctl_ms_sites"] == 1 and s["lispctl_ms_sites_registered"] == 0
    assert time.time() - 120 < s["lispctl_start_time_seconds"] <= time.time()
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(urllib.request.Request(url + "/metrics", data=b"x", method="POST"), timeout=5)
    assert e.value.code == 405
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(url + "/other", timeout=5)
    assert e.value.code == 404


def _closed(sock: socket.socket) -> bool:
    """The server closed it without answering (FIN, or RST when our bytes were unread)."""
    try:
        return sock.recv(100) == b""
    except ConnectionResetError:
        return True


def test_stalled_and_oversized_clients_do_not_block(url):
    host, port = url.removeprefix("http://").split(":")
    stalled = []
    for _ in range(MAX_CONNECTIONS + 4):          # more idle connections than it serves at once
        c = socket.create_connection((host, int(port)), timeout=5)
        c.sendall(b"GET /metrics HTTP/1.1\r\n")   # never finishes its head
        stalled.append(c)
    big = socket.create_connection((host, int(port)), timeout=5)
    try:
        big.sendall(b"GET /metrics HTTP/1.1\r\nX: " + b"a" * (MAX_REQUEST + 100) + b"\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass
    assert _closed(big)
    big.close()
    # the stalled ones time out (5 s); then scrapes are served again
    deadline = time.monotonic() + 15
    while True:
        try:
            assert _scrape(url)["lispctl_ms_sites"] == 1
            break
        except (urllib.error.URLError, ConnectionError, socket.timeout, OSError):
            assert time.monotonic() < deadline, "endpoint never recovered from stalled clients"
            time.sleep(0.2)
    for c in stalled:
        assert _closed(c)
        c.close()

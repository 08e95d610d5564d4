"""Prometheus metrics scraped over HTTP from running daemons: an xTR and an
MS/MR in a network namespace this test creates. A data-plane miss must move
the data-plane counter, the ITR's Map-Request histograms and the map-cache
gauge; the MS shows the registered site. Every metric name served is listed
in docs/metrics.md."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from lispctl.lab.nsexec import preexec
from tests.conftest import need_root
from tests.netns_daemons import MISS_DROP, ms_toml, router_and_host_daemons, xtr_toml

pytestmark = pytest.mark.root

TAG = f"lm{os.getpid()}"
ROUTER, HOST = f"{TAG}r", f"{TAG}h"
DOC = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"

MS_METRICS = """[metrics]
listen = "127.0.0.1:9342"
"""
XTR_METRICS = """[metrics]
listen = "[::1]:9343"
"""

SCRAPE = """
import sys, urllib.request, urllib.error
try:
    r = urllib.request.urlopen(sys.argv[1], timeout=5)
    sys.stdout.write(r.headers.get("Content-Type") + "\\n" + r.read().decode())
except urllib.error.HTTPError as e:
    sys.stdout.write(f"HTTP {e.code}\\n")
"""


@pytest.fixture(scope="module")
def lab():
    need_root()
    with router_and_host_daemons(TAG) as daemons:
        daemons.start(ROUTER, "ms", ms_toml(TAG, MS_METRICS))
        daemons.start(ROUTER, "x", xtr_toml(TAG, XTR_METRICS, MISS_DROP))
        yield daemons.run_dir


def _get(url: str) -> str:
    out = subprocess.run([sys.executable, "-c", SCRAPE, url], preexec_fn=preexec(ROUTER),
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout


def _scrape(url: str) -> dict:
    """{(sample name, frozenset of labels): value}"""
    ctype, _, body = _get(url).partition("\n")
    assert ctype.startswith("text/plain; version="), ctype
    return {(s.name, frozenset(s.labels.items())): s.value
            for fam in text_string_to_metric_families(body) for s in fam.samples}


def _value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, frozenset(labels.items())), float("nan"))


def _eventually(fn, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


MS_URL, XTR_URL = "http://127.0.0.1:9342/metrics", "http://[::1]:9343/metrics"


def test_map_server_metrics(lab):
    def registered():
        s = _scrape(MS_URL)
        return s if _value(s, "lispctl_ms_site_registered", site="a") == 1 else None
    s = _eventually(registered)
    assert s, "site a never shown as registered"
    assert _value(s, "lispctl_ms_sites") == 1 and _value(s, "lispctl_ms_sites_registered") == 1
    assert _value(s, "lispctl_ms_registrations", site="a") == 1
    assert _value(s, "lispctl_role_events_total", role="ms", event="map_register_ok") >= 1
    assert _value(s, "lispctl_control_datagrams_received_total") >= 1
    assert _value(s, "lispctl_info", instance=f"{TAG}-ms", roles="ms,mr", datapath="none") == 1
    assert not [k for k in s if k[0].startswith("lispctl_datapath_")]       # no data plane here


def test_a_miss_moves_counters_histograms_and_gauges(lab):
    before = _scrape(XTR_URL)
    assert _value(before, "lispctl_map_request_rtt_seconds_count") == 0
    # both addresses of wan0 are locators
    assert (_value(before, "lispctl_etr_locators", state="up"), _value(before, "lispctl_etr_locators", state="down")) == (2, 0)
    assert _eventually(lambda: _value(_scrape(XTR_URL), "lispctl_etr_registered", map_server="192.0.2.10") == 1)
    subprocess.run([sys.executable, "-c",
                    "import socket; s=socket.socket(2, 2); s.sendto(b'x', ('10.9.9.9', 9))"],
                   preexec_fn=preexec(HOST), check=True, timeout=10)

    def resolved():
        s = _scrape(XTR_URL)
        return s if _value(s, "lispctl_miss_to_install_seconds_count") >= 1 else None
    after = _eventually(resolved)
    assert after, "no miss-to-install observation"
    assert _value(after, "lispctl_map_request_rtt_seconds_count") >= 1
    rtt = _value(after, "lispctl_map_request_rtt_seconds_sum")
    assert 0 < rtt < 5
    assert _value(after, "lispctl_map_request_rtt_seconds_bucket", le="+Inf") >= 1
    assert _value(after, "lispctl_datapath_miss_packets_total") > _value(before, "lispctl_datapath_miss_packets_total")
    assert _value(after, "lispctl_datapath_miss_events_total") >= 1
    assert _value(after, "lispctl_map_cache_entries", family="ipv4", type="negative") >= 1
    assert _value(after, "lispctl_role_events_total", role="itr", event="map_request_tx") >= 1
    assert _value(after, "lispctl_role_events_total", role="itr", event="map_reply_rx") >= 1
    assert _value(after, "lispctl_daemon_events_total", event="misses") >= 1
    assert _value(after, "lispctl_datapath_dropped_packets_total", reason="miss") >= 1   # miss-action drop


def test_every_served_metric_is_documented(lab):
    doc = DOC.read_text()
    names = {re.sub(r"_(total|count|sum|bucket|created)$", "", n) for s in (_scrape(MS_URL), _scrape(XTR_URL))
             for n, _ in s}
    missing = sorted(n for n in names if f"`{n}" not in doc)
    assert not missing, f"not in docs/metrics.md (add them there): {missing}"


def test_http_edges(lab):
    assert _get("http://[::1]:9343/nope").strip() == "HTTP 404"
    assert _get("http://[::1]:9343/").startswith("text/plain; version=")

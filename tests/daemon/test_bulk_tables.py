"""Map-cache tables in bulk through a real xTR daemon in namespaces this test
creates: `datapath.map-cache-files` at start, `lispctl map-cache-load` /
`map-cache-unload` and TTL expiry through the local API, each checked in the
daemon's pinned BPF map-cache."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lispctl.datapath.pinned import PinnedMap
from lispctl.mapping.bulkfile import key_bytes
from lispctl.mapping.types import EidPrefix
from tests.conftest import need_root
from tests.netns_daemons import router_and_host_daemons, xtr_toml

pytestmark = pytest.mark.root

TAG = f"lb{os.getpid()}"
ROUTER, HOST = f"{TAG}r", f"{TAG}h"
N = 100_000

DATAPATH = """[datapath]
max-mappings = 131072
map-cache-files = ["{static}"]
"""


def _v4(i: int) -> str:
    return f"{20 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}.0/24"


@pytest.fixture(scope="module")
def lab():
    need_root()
    with router_and_host_daemons(TAG) as daemons:
        run_dir = daemons.run_dir
        static = run_dir / "static.txt"
        static.write_text("# a static table\n40.0.0.0/8 192.0.2.77\n2001:db8:40::/48 drop\n")
        big = run_dir / "big.txt"
        big.write_text("\n".join(f"{_v4(i)} 192.0.2.{2 + i % 8}" for i in range(N)) + "\n")
        daemons.start(ROUTER, "x", xtr_toml(TAG, DATAPATH.format(static=static)))
        yield {"run_dir": run_dir, "big": big, "pin": Path("/sys/fs/bpf/lispctl") / f"{TAG}-x"}


def _cli(lab, *args):
    out = subprocess.run([sys.executable, "-m", "lispctl.cli", *args, "--run-dir", str(lab["run_dir"])],
                         capture_output=True, text=True, timeout=120)
    return out.returncode, out.stdout + out.stderr


def _in_kernel(lab, prefix: str) -> bool:
    eid = EidPrefix.parse(prefix)
    with PinnedMap(lab["pin"] / f"map_cache{eid.prefix.version}") as m:
        return m.lookup(key_bytes(eid)) is not None


def _status(lab) -> dict:
    rc, out = _cli(lab, "status", "--json")
    assert rc == 0, out
    return json.loads(out)


def test_static_table_loaded_at_start(lab):
    st = _status(lab)
    assert st["map_cache_family_capacity"] == {"ipv4": 131072, "ipv6": 131072}
    assert st["map_cache_capacity"] == 2 * 131072 - 1 - 2       # less the static table's 2
    [t] = st["map_cache_tables"]
    assert (t["name"], t["ipv4"], t["ipv6"], t["expires_in_s"]) == ("static.txt", 1, 1, None)
    assert _in_kernel(lab, "40.0.0.0/8") and _in_kernel(lab, "2001:db8:40::/48")


def test_load_unload_and_expiry_through_the_api(lab):
    capacity = _status(lab)["map_cache_capacity"]
    rc, out = _cli(lab, "map-cache-load", str(lab["big"]), "--name", "big")
    assert rc == 0, out
    assert f"{N} IPv4 + 0 IPv6 mappings installed (0 skipped)" in out
    assert _in_kernel(lab, _v4(0)) and _in_kernel(lab, _v4(N - 1))
    # the ITR's learnt entries get what the tables leave
    assert _status(lab)["map_cache_capacity"] == capacity - N
    rc, out = _cli(lab, "map-cache-load", str(lab["big"]), "--name", "big2")
    assert rc == 0 and f"0 IPv4 + 0 IPv6 mappings installed ({N} skipped)" in out, out
    rc, out = _cli(lab, "map-cache-unload", "big2")
    assert rc == 0 and "0 mappings removed" in out, out
    rc, out = _cli(lab, "map-cache-unload", "big")
    assert rc == 0 and f"{N} mappings removed" in out, out
    assert not _in_kernel(lab, _v4(0)) and not _in_kernel(lab, _v4(N - 1))
    assert _in_kernel(lab, "40.0.0.0/8")                     # the static table stays
    assert _status(lab)["map_cache_capacity"] == capacity

    # a TTL: gone by itself, as completely as an unload
    rc, out = _cli(lab, "map-cache-load", str(lab["big"]), "--name", "short", "--ttl", "2")
    assert rc == 0 and "expires in 2 s" in out, out
    assert _in_kernel(lab, _v4(12345))
    deadline = time.monotonic() + 30
    while _in_kernel(lab, _v4(N - 1)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _in_kernel(lab, _v4(N - 1)) and not _in_kernel(lab, _v4(0))
    names = [t["name"] for t in _status(lab)["map_cache_tables"]]
    assert names == ["static.txt"]


def test_bad_tables_are_refused_with_the_line(lab):
    bad = lab["run_dir"] / "bad.txt"
    bad.write_text("50.0.0.0/8 drop\n50.1.0.1/16 192.0.2.2\n")
    rc, out = _cli(lab, "map-cache-load", str(bad))
    assert rc == 1 and "bad.txt:2:" in out and "host bits" in out, out
    assert not _in_kernel(lab, "50.0.0.0/8")
    rc, out = _cli(lab, "map-cache-load", str(lab["run_dir"] / "missing.txt"))
    assert rc == 1 and "cannot read" in out, out
    rc, out = _cli(lab, "map-cache-unload", "nope")
    assert rc == 1 and "no bulk table named 'nope'" in out, out

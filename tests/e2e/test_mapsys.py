"""One xTR in two independent mapping systems, and Map-Resolver failover, in
the `mapsys` namespace lab: real msA/msB daemons and xtr1 with its BPF data
plane. The single-system sites 2 and 3 register from plain sockets with the
P bit (their Map-Server answers for them) instead of two more BPF xTRs,
which keeps the module well under a minute; xtr1's map-cache shows what it
learnt through which system."""
from __future__ import annotations

import time

import pytest

from lispctl.lab import Lab, load
from lispctl.lab.scenarios import control as cp
from lispctl.lab.scenarios import ddt
from lispctl.lab.scenarios import mapsys as ms
from lispctl.lab.traffic import ping_here
from tests.conftest import need_root

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def lab():
    need_root()
    with Lab(load("mapsys")) as lab:
        ms.start_mapsys(lab, ("msA", "msB", "xtr1"))
        ddt.register_proxied(lab, "xtr2", "172.16.11.2", "10.2.0.0/24", "xtr2-key", "172.16.32.2")
        ddt.register_proxied(lab, "xtr3", "172.16.12.2", "10.3.0.0/24", "xtr3-key", "172.16.33.2")
        ms.wait_registered(lab)
        yield lab


def test_each_prefix_registered_in_its_own_system(lab):
    # site prefixes of the other system would be unknown there (and dropped): they are never sent
    assert ms.registered(lab, "msA") == {"10.1.0.0/24": True, "10.2.0.0/24": True}
    assert ms.registered(lab, "msB") == {"10.11.0.0/24": True, "10.3.0.0/24": True}
    for node in ("msA", "msB"):
        assert cp.counters(lab, node)["roles"]["ms"].get("map_register_bad_prefix", 0) == 0


def _learnt(lab, src: str, dst: str, prefix: str) -> list[str]:
    """Send one packet src -> dst from hostA; the locators xtr1 installs for prefix."""
    lab.call("hostA", ping_here, dst, 1, 0.3, 56, src)
    entry = cp.eventually(lambda: cp.map_cache(lab, "xtr1").get(prefix), 6)
    return [r["address"] for r in entry["rlocs"]] if entry else []


def test_both_systems_resolve_and_silent_resolver_is_skipped(lab):
    # system A: the first Map-Request goes to the silent resolver, the retry (1 s later) to msA
    t_first = time.monotonic()
    assert _learnt(lab, "10.1.0.2", "10.2.0.2", "10.2.0.0/24") == ["172.16.32.2"]
    # system B, from hostA's other EID
    assert _learnt(lab, "10.11.0.2", "10.3.0.2", "10.3.0.0/24") == ["172.16.33.2"]
    r = ms.resolvers(lab)
    assert r["172.16.12.2"]["requests"] >= 1 and r["172.16.12.2"]["answers"] >= 1
    assert r["172.16.11.2"]["answers"] >= 1 and r[ms.DEAD_MR]["answers"] == 0
    # the dead resolver got the first request only; once it has been silent
    # for itr.map-resolver-timeout (2 s in xtr1.toml), a new resolution in
    # system A goes straight to msA. (Waiting out a configured timeout.)
    time.sleep(max(0.0, t_first + 2.5 - time.monotonic()))
    dead_before = ms.resolvers(lab)[ms.DEAD_MR]["requests"]
    live_before = ms.resolvers(lab)["172.16.11.2"]["requests"]
    cp.ping(lab, "hostA", "10.2.9.9", count=1, timeout=0.5)      # not registered: a negative answer from msA
    assert cp.eventually(lambda: ms.resolvers(lab)["172.16.11.2"]["requests"] > live_before, 5)
    r = ms.resolvers(lab)
    assert r[ms.DEAD_MR]["requests"] == dead_before and r[ms.DEAD_MR]["times_skipped"] == 1
    assert r[ms.DEAD_MR]["skipped_for_s"] > 50

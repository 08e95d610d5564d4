"""The lab runner builds what the topology says and removes exactly what it built."""
from __future__ import annotations

import os
import sys

import pytest
from pyroute2 import IPRoute, netns

from lispctl.lab import Lab, LabError, down, loads
from lispctl.lab.nsexec import read_sysctl
from lispctl.lab.procs import start_time
from lispctl.lab.runner import STATE_DIR, new_prefix
from lispctl.lab.traffic import ping_here
from tests.conftest import need_root

SMALL = """
name = "small"
[nodes.left]
forwarding = true
routes = [{ dst = "192.0.2.128/25", via = "192.0.2.2" }]
[nodes.right]
[[links]]
a = { node = "left", ifname = "l0", addresses = ["192.0.2.1/25", "2001:db8:77::1/64"] }
b = { node = "right", ifname = "r0", addresses = ["192.0.2.2/25", "2001:db8:77::2/64"], features = { "tx-checksum-ip-generic" = false } }
"""

PYTHON_READY_SLEEP = [sys.executable, "-c", "import time; print('ready', flush=True); time.sleep(600)"]


@pytest.fixture(autouse=True)
def _root():
    need_root()


def ns_inode(name: str) -> int:
    return os.stat(f"/run/netns/{name}").st_ino


def netns_alive(inode: int) -> bool:
    """Does any process still hold a network namespace with this inode? (links live as long as it does)"""
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if os.stat(f"/proc/{pid}/ns/net").st_ino == inode:
                    return True
            except OSError:
                pass
    return False


@pytest.fixture
def bystander():
    """A namespace the lab did not create, with a link in it; removed by this fixture only."""
    made: list[str] = []

    def make(name: str) -> str:
        netns.create(name)
        made.append(name)
        with IPRoute(netns=name) as ipr:
            ipr.link("add", ifname="keepme", kind="veth", peer="keepme-peer")
        return name

    yield make
    for name in made:
        if name in netns.listnetns():
            netns.remove(name)


def links_in(name: str) -> set[str]:
    with IPRoute(netns=name) as ipr:
        return {link.get("IFLA_IFNAME") for link in ipr.get_links()}


def test_build_configures_and_teardown_removes_everything(bystander):
    prefix = new_prefix()
    # same prefix as the lab, never created by it: must survive
    other = bystander(f"{prefix}-bystander")
    topo = loads(SMALL)
    with Lab(topo, prefix=prefix) as lab:
        left, right = lab.ns("left"), lab.ns("right")
        assert {left, right} <= set(netns.listnetns())
        assert links_in(left) == {"lo", "l0"} and links_in(right) == {"lo", "r0"}
        assert lab.call("left", read_sysctl, "net.ipv4.ip_forward") == "1"
        assert lab.call("right", read_sysctl, "net.ipv4.ip_forward") == "0"
        assert lab.call("right", read_sysctl, "net.ipv6.conf.r0.accept_dad") == "0"
        with lab.ipr("left") as ipr:
            dsts = {(r.get("RTA_DST"), r["dst_len"]) for r in ipr.get_routes(family=2, table=254)}
        assert ("192.0.2.128", 25) in dsts
        # IPv6 usable at once (no DAD wait), IPv4 too
        assert lab.call("left", ping_here, "2001:db8:77::2", 1, 1.0) == 1
        assert lab.call("left", ping_here, "192.0.2.2", 1, 1.0) == 1
        inodes = [ns_inode(left), ns_inode(right)]
        state_dir = lab.rundir
        assert (state_dir / "state.json").exists()
    assert not {left, right} & set(netns.listnetns())
    assert not any(netns_alive(i) for i in inodes), "a lab namespace (and its veths) outlived teardown"
    assert not state_dir.exists()
    assert other in netns.listnetns() and "keepme" in links_in(other)


def test_teardown_on_exception_and_process_is_stopped(bystander):
    with pytest.raises(RuntimeError, match="boom"):
        with Lab(loads(SMALL)) as lab:
            p = lab.start("right", "sleeper", PYTHON_READY_SLEEP)
            pid, names = p.pid, [lab.ns("left"), lab.ns("right")]
            assert p.alive()
            raise RuntimeError("boom")
    assert start_time(pid) is None
    assert not set(names) & set(netns.listnetns())


def test_refuses_to_reuse_an_existing_namespace(bystander):
    prefix = new_prefix()
    taken = bystander(f"{prefix}-right")
    with pytest.raises(LabError, match="already exists"):
        with Lab(loads(SMALL), prefix=prefix):
            pass
    assert taken in netns.listnetns() and "keepme" in links_in(taken)
    assert f"{prefix}-left" not in netns.listnetns()


def test_kept_lab_is_removed_later_from_its_state_file():
    with Lab(loads(SMALL), keep=True) as lab:
        p = lab.start("left", "sleeper", PYTHON_READY_SLEEP)
        prefix, names = lab.prefix, [lab.ns("left"), lab.ns("right")]
    try:
        assert set(names) <= set(netns.listnetns()) and p.alive()
    finally:
        problems = down(prefix)
    p.popen.wait(5)  # reap our own child so its PID is really gone
    assert problems == []
    assert not set(names) & set(netns.listnetns())
    assert not (STATE_DIR / prefix).exists()
    with pytest.raises(LabError, match="no record"):
        down(prefix)


def test_sysfs_remount_shows_own_interfaces_and_keeps_bpffs():
    with Lab(loads(SMALL)) as lab:
        script = "import os; print(sorted(os.listdir('/sys/class/net'))); print(os.path.ismount('/sys/fs/bpf'))"
        cp = lab.run("left", [sys.executable, "-c", script], sysfs=True, check=True)
        assert cp.stdout.split("\n")[:2] == ["['l0', 'lo']", "True"]
        # without the remount, /sys is the root namespace's
        cp = lab.run("left", [sys.executable, "-c", script], check=True)
        assert "l0" not in cp.stdout


def test_process_that_never_gets_ready_is_reported_and_stopped():
    from lispctl.lab import ProcessError
    with Lab(loads(SMALL)) as lab:
        with pytest.raises(ProcessError, match="exited with 3"):
            lab.start("left", "bad", [sys.executable, "-c", "print('starting'); raise SystemExit(3)"])
        with pytest.raises(ProcessError, match="no 'ready' within"):
            lab.start("left", "slow", [sys.executable, "-c", "import time; time.sleep(60)"], timeout=0.5)
        assert lab.procs == {}

"""The data plane on Debian 12's own kernel (6.1), the oldest it supports.

virtme-ng boots Debian's linux-image 6.1 (installed by scripts/setup.sh next
to the running kernel, never booted on the host) in qemu over this machine's
root filesystem, read-only, and runs a subset of tests/datapath inside it
with CI=true, so anything unavailable in the VM fails instead of skipping.
The subset covers every program (tc ITR ingress and egress, tc ETR, XDP
ETR and ITR, the ITR tail call of re-encapsulation and the tc ITR's own tail
calls to its decision and encapsulation) in both address families, plus
real traffic: GSO encapsulation and local delivery of decapsulated packets.
Plain emulation (--disable-kvm): KVM is there on these machines but qemu's
`-cpu host` fails on an MSR.

Deselect locally with `-m "not vm"`; `make test` and CI run it.
"""
from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import need_root, unavailable

pytestmark = [pytest.mark.vm, pytest.mark.root]

REPO = Path(__file__).resolve().parents[2]

# Each Datapath compile costs ~10 s under emulation: the subset reuses the
# session data plane (`dp`) wherever it can.
SUBSET = [
    "tests/datapath/test_compat.py",                        # probe; local delivery, 4 family pairs
    "tests/datapath/test_encap_decap.py::test_encapsulation_exact",     # tc ITR ingress, 4 pairs
    "tests/datapath/test_encap_decap.py::test_decapsulation_exact",     # tc ETR, 4 pairs
    "tests/datapath/test_encap_decap.py::test_decap_lowers_inner_ttl_to_outer",
    "tests/datapath/test_behaviour.py::test_etr_accepts_iid_zero_with_i_bit",
    "tests/datapath/test_behaviour.py::test_reencapsulation_when_enabled",  # ETR -> tail call -> ITR
    "tests/datapath/test_behaviour.py::test_egress_program_reflects_icmp_to_local_stack",  # tc ITR egress
    "tests/datapath/test_behaviour.py::test_too_big_ipv6_gets_packet_too_big",
    "tests/datapath/test_xdp.py::test_xdp_decapsulation_exact",          # XDP ETR, 4 pairs
    "tests/datapath/test_xdp.py::test_xdp_inner_ttl_becomes_min_of_inner_and_outer",
    "tests/datapath/test_xdp_itr.py::test_xdp_itr_encapsulates_like_tc",    # XDP ITR, 4 pairs
    "tests/datapath/test_gso.py",                           # real GSO packets, both outer families
    "tests/datapath/test_bulk.py::test_batched_and_per_element_paths_agree",  # batch ops on 6.1's LPM trie
    "tests/datapath/test_bulk.py::test_conflicts_with_single_mappings",
    "tests/datapath/test_flowcache.py::test_next_packet_sees_every_map_cache_change",  # flow cache, tc + XDP
    "tests/datapath/test_itr_caches.py::test_counts_exact_through_slot_eviction",  # stats in flow slots, tc + XDP
    "tests/datapath/test_itr_caches.py::test_tc_itr_encapsulates_through_the_tail_calls",  # ITR -> route -> encap
    "tests/datapath/test_nexthop.py::test_next_packet_follows_netlink_change",  # next-hop cache: mtu_result, netlink
    "tests/datapath/test_nexthop.py::test_without_daemon_staleness_is_bounded[tc_itr-4]",  # jiffies bound
    "tests/datapath/test_etr_lookups.py::test_caches_spread_consecutive_hosts",  # ETR shortcuts, set index
    "tests/datapath/test_peer_handoff.py",       # bpf_redirect_peer from ITR and ETR (6.1: change_proto decap)
]
# the pre-6.3 path compiled in explicitly is what the 6.1 kernel gets anyway
DESELECT = "not pre-6.3"
TIMEOUT_S = 1200


def _kernel() -> Path:
    images = sorted(glob.glob("/boot/vmlinuz-6.1.0-*-amd64"),
                    key=lambda p: [int(x) for x in re.findall(r"\d+", p)])
    if not images:
        unavailable("Debian's 6.1 kernel is not installed (make setup installs linux-image-amd64)")
    return Path(images[-1])


@pytest.mark.timeout(TIMEOUT_S + 60)
def test_datapath_subset_on_debian_6_1():
    need_root()
    kernel = _kernel()
    kver = kernel.name.removeprefix("vmlinuz-")
    if not Path(f"/lib/modules/{kver}/build/Makefile").exists():
        unavailable(f"no headers for {kver} (make setup installs linux-headers-{kver})")
    bindir = Path(sys.executable).parent
    vng = bindir / "vng"
    if not vng.exists():
        unavailable("virtme-ng is not installed in the venv (make setup)")
    for tool in ("qemu-system-x86_64", "busybox"):
        if not shutil.which(tool):
            unavailable(f"{tool} not found (make setup installs qemu-system-x86 and busybox-static)")

    # The script goes in a file the guest reads over 9p: as a command line it
    # rides on the kernel's (2048 bytes on x86), and a longer one is cut off
    # silently, leaving an idle guest that never prints a line.
    script = REPO / "build" / f"vm-kernel61-{os.getpid()}.sh"
    script.parent.mkdir(exist_ok=True)
    script.write_text(
        "mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf\n"
        "echo LISPCTL_VM_KERNEL=$(uname -r)\n"
        f"CI=true {sys.executable} -m pytest -q -p no:cacheprovider "
        f"-m 'not vm and not slow' -k '{DESELECT}' {' '.join(SUBSET)}\n"
        "echo LISPCTL_VM_RC=$?\n")
    inner = f"sh {script}"
    env = dict(os.environ, PATH=f"{bindir}:{os.environ.get('PATH', '/usr/bin:/bin')}")
    try:
        proc = subprocess.run(
            [str(vng), "-r", str(kernel), "--disable-kvm", "--memory", "2G", "--cwd", str(REPO), "--", inner],
            cwd=REPO, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        script.unlink(missing_ok=True)
        out = (exc.stdout or b"")[-4000:]
        pytest.fail(f"the 6.1 VM did not finish within {TIMEOUT_S} s; last output:\n{out!r}")
    script.unlink(missing_ok=True)
    out = proc.stdout + proc.stderr
    tail = out[-6000:]
    booted = re.search(r"^LISPCTL_VM_KERNEL=(\S+)", out, re.M)
    assert booted, f"the 6.1 VM did not boot (vng exit {proc.returncode}):\n{tail}"
    assert booted.group(1) == kver, f"the VM ran {booted.group(1)}, not {kver}"
    rc = re.search(r"^LISPCTL_VM_RC=(\d+)", out, re.M)
    assert rc, f"pytest inside the VM did not finish:\n{tail}"
    summary = re.findall(r"^=*\s*(\d+ passed.*?)\s*=*$", out, re.M)
    assert rc.group(1) == "0", f"data-plane tests failed on {kver}:\n{tail}"
    assert summary and " failed" not in summary[-1] and "error" not in summary[-1], tail
    assert int(summary[-1].split()[0]) >= 30, f"too few tests ran on {kver}: {summary[-1]}"

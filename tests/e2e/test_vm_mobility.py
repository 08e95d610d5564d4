"""VM mobility end to end in the `vm-mobility` namespace lab: real daemons
(MS/MR, three xTRs with BPF data planes), a real TCP session from the
correspondent to the VM, the VM's NICs moved, real `lispctl cpm` from the
hypervisors. The session must survive; the correspondent's ITR must learn
that DC2 is preferred from the CPM's SMR alone (its entry would otherwise
live 24 h); forged and replayed CPMs change nothing and are counted.
"""
from __future__ import annotations

import socket
import time

import pytest

from lispctl.commands.cpm import build_cpm
from lispctl.lab import Lab, load
from lispctl.lab.scenarios import control as cp
from lispctl.lab.scenarios import vm_mobility as vm
from lispctl.mapping.types import EidPrefix
from tests.conftest import need_root

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def lab():
    need_root()
    with Lab(load("vm-mobility")) as lab:
        vm.start(lab)
        yield lab


def _cpm_counters(lab, node: str) -> dict:
    return cp.counters(lab, node)["roles"].get("cpm", {})


def test_tcp_session_survives_the_move(lab):
    assert vm.dc_locators(lab) == {vm.RLOC["dc1"]: 1, vm.RLOC["dc2"]: 255}
    with vm.Trickle(lab, seconds=5.0) as t:
        assert cp.eventually(lambda: vm.decapsulated(lab, "dc1") > 0, 10, 0.05), cp.log_tail(lab, "xtrc")
        assert vm.corr_view(lab) == {vm.RLOC["dc1"]: 1, vm.RLOC["dc2"]: 255}
        vm.migrate(lab)
        took = vm.send_cpms(lab, timeout=10.0)
        res = t.result(timeout=40)
    assert took["switched"] is not None and took["arrived"] is not None, (took, cp.log_tail(lab, "dc2"))
    assert res["intact"] and res["sent"] > 100_000, res
    # the MS holds both data centres' new priorities; corr's ITR re-asked because of the SMR
    assert vm.dc_locators(lab) == {vm.RLOC["dc1"]: 255, vm.RLOC["dc2"]: 1}
    assert vm.corr_view(lab) == {vm.RLOC["dc1"]: 255, vm.RLOC["dc2"]: 1}
    c1, c2 = _cpm_counters(lab, "dc1"), _cpm_counters(lab, "dc2")
    assert c1["cpm_accepted"] == 1 and c2["cpm_accepted"] == 1
    assert c2["smr_tx"] >= 1                      # to xtrc, the ITR serving the correspondent
    assert cp.counters(lab, "xtrc")["roles"]["itr"]["smr_rx"] >= 1


def _send_here(dst: str, payloads: list[bytes]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for p in payloads:
            s.sendto(p, (dst, 4342))
            time.sleep(0.05)


def test_forged_and_replayed_cpms_change_nothing(lab):
    before = _cpm_counters(lab, "dc1")
    eid = EidPrefix.parse(f"{vm.VM_EID}/32")
    now_ms = time.time_ns() // 1_000_000
    good = build_cpm(eid, 255, [], "hypervisor-dc1-secret", key_id=1, now_ms=now_ms, nonce=7)
    forged = build_cpm(eid, 1, [], "guessed", key_id=1, now_ms=now_ms, nonce=8)
    stale = build_cpm(eid, 1, [], "hypervisor-dc1-secret", key_id=1, now_ms=now_ms - 120_000, nonce=9)
    # from the DC's LAN (the VM's gateway address is the xTR): good (same priority), replay, forged, stale
    lab.call("dc1", _send_here, vm.GATEWAY, [good, good, forged, stale])

    def settled():
        c = _cpm_counters(lab, "dc1")
        return c if c.get("cpm_rx", 0) >= before.get("cpm_rx", 0) + 4 else None
    after = cp.eventually(settled, 5, 0.05)
    assert after, _cpm_counters(lab, "dc1")
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    assert delta["cpm_accepted"] == 1 and delta["cpm_priority_unchanged"] == 1
    assert delta["cpm_replayed"] == 1 and delta["cpm_bad_auth"] == 1 and delta["cpm_stale"] == 1
    time.sleep(0.5)
    assert vm.dc_locators(lab) == {vm.RLOC["dc1"]: 255, vm.RLOC["dc2"]: 1}     # dc1 stays demoted

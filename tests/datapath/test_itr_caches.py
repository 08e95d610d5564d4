"""Per-mapping counters counted in the ITRs' flow-cache slots
(bpf/lisp_flowcache.h, fc_fold): exact through a slot's eviction by other
flows, through a generation change, for a reused mapping id, and in the
pinned reader; the tc ITR runs as three programs chained by tail calls
(lisp_itr_ingress, lisp_itr_route, lisp_itr_encap); and its per-CPU interface -> instance answer follows
eid_ifaces."""
from __future__ import annotations

import ctypes
import ipaddress
import os
import struct
import sys

import pytest

from lispctl.datapath.maps import obj_get
from lispctl.datapath.pinned import read_mapping_stats
from lispctl.datapath.syscall import bpf
from lispctl.datapath.testrun import TC_ACT_REDIRECT, TC_ACT_SHOT, XDP_REDIRECT, run_prog, skb_ctx, xdp_ctx
from lispctl.mapping.types import EidPrefix, Rloc
from tests.datapath import packets as P
from tests.datapath.conftest import EID_MAC, HOST_MAC

ip = ipaddress.ip_address
FC_SETS = 4096          # LISP_FC_SETS


def fc_set(dst: str, iid: int = 0) -> int:
    """bpf/lisp_flowcache.h fc_hash for an IPv4 destination."""
    m = 0xFFFFFFFF
    h = (iid * 0x9E3779B1) & m
    (w0,) = struct.unpack("=I", ip(dst).packed)
    h = ((h ^ w0) * 0x85EBCA77) & m
    # lisp_fmix (bpf/lisp_parse.h): murmur3's finaliser
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & m
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & m
    h ^= h >> 16
    return h & (FC_SETS - 1)


def same_set(dst: str, n: int) -> list[str]:
    """n other hosts of 10.2.0.0/16 whose flow-cache set is dst's."""
    want, out = fc_set(dst), []
    for i in range(1, 65536):
        cand = str(ip("10.2.0.0") + i)
        if cand != dst and fc_set(cand) == want:
            out.append(cand)
            if len(out) == n:
                return out
    raise AssertionError("no colliding destinations")


def _itr(dp, lab, prog):
    if prog == "tc":
        return dp.prog_fd("lisp_itr_ingress"), lambda f: skb_ctx(ifindex=lab.eid_if), TC_ACT_REDIRECT
    dp.set_xdp_redirect("rl0", True)
    return dp.prog_fd("lisp_itr_xdp"), lambda f: xdp_ctx(len(f), lab.eid_if), XDP_REDIRECT


def _frame(dst: str, n: int = 64) -> bytes:
    return P.eth(P.mac(EID_MAC), P.mac(HOST_MAC), P.ETH_IP) + P.ip_packet("10.1.0.10", dst, b"x" * n)


def _raw_map_stats(dp, mid: int) -> int:
    """Packets in map_stats itself (what slots folded), summed over CPUs."""
    t = dp.table("map_stats")
    return sum(int(v.packets) for v in t[t.Key(mid)])


@pytest.mark.parametrize("prog", ["tc", "xdp"])
def test_counts_exact_through_slot_eviction(dp, lab, one_cpu, prog):
    eid = EidPrefix.parse("10.2.0.0/16")
    dp.set_mapping(eid, [Rloc(ip("192.0.2.2"))])
    mid = dp.mappings()[eid]
    fd, ctx, sent = _itr(dp, lab, prog)
    first = "10.2.7.5"
    b, c = same_set(first, 2)
    sent_bytes = 0

    def send(dst, n=64):
        nonlocal sent_bytes
        f = _frame(dst, n)
        assert run_prog(fd, f, ctx=ctx(f)).retval == sent
        sent_bytes += len(f) - 14

    for _ in range(3):
        send(first)
    assert dp.mapping_counters(eid) == (3, sent_bytes)
    assert _raw_map_stats(dp, mid) == 0                  # still in the slot
    send(b, 100)                                         # the set's other way
    send(c, 200)                                         # evicts the older fill: first's slot
    assert _raw_map_stats(dp, mid) == 3                  # folded when the slot was reused
    assert dp.mapping_counters(eid) == (5, sent_bytes)
    dp.set_mapping(EidPrefix.parse("10.9.0.0/16"), [Rloc(ip("192.0.2.3"))])   # every slot stale
    assert dp.mapping_counters(eid) == (5, sent_bytes)   # stale slots still count
    for _ in range(2):
        send(first)                                      # refills a stale slot (folds it)
    assert dp.mapping_counters(eid) == (7, sent_bytes)
    assert dp.all_mapping_counters()[eid] == (7, sent_bytes)
    assert read_mapping_stats(dp.instance, dp.pin_dir.parent)[mid] == (7, sent_bytes)


def test_reused_id_starts_from_zero(lab, pin_root, one_cpu):
    """One mapping id for the whole table: a new mapping gets the id of a
    deleted one whose packets are still in a flow-cache slot, and must not
    inherit them."""
    from lispctl.datapath import Datapath

    d = Datapath("reuse", pin_root=pin_root, max_mappings=1)
    try:
        d.add_local_rloc(ip("192.0.2.1"))
        d.add_local_eid(EidPrefix.parse("10.1.0.0/16"))
        old, new = EidPrefix.parse("10.2.0.0/16"), EidPrefix.parse("10.2.7.0/24")
        d.set_mapping(old, [Rloc(ip("192.0.2.2"))])
        fd = d.prog_fd("lisp_itr_ingress")
        f = _frame("10.2.7.5")
        for _ in range(4):
            assert run_prog(fd, f, ctx=skb_ctx(ifindex=lab.eid_if)).retval == TC_ACT_REDIRECT
        mid = d.mappings()[old]
        assert d.mapping_counters(old) == (4, 4 * (len(f) - 14))
        d.delete_mapping(old)
        d.set_mapping(new, [Rloc(ip("192.0.2.2"))])
        assert d.mappings()[new] == mid                  # the same id again
        assert d.mapping_counters(new) == (0, 0)
        assert run_prog(fd, f, ctx=skb_ctx(ifindex=lab.eid_if)).retval == TC_ACT_REDIRECT
        assert d.mapping_counters(new) == (1, len(f) - 14)
    finally:
        d.close(unpin=True)


@pytest.mark.parametrize("slot,prog", [("LISP_TAIL_ROUTE", "lisp_itr_route"),
                                       ("LISP_TAIL_ENCAP", "lisp_itr_encap")])
def test_tc_itr_encapsulates_through_the_tail_calls(dp, lab, one_cpu, slot, prog):
    """lisp_itr_ingress looks up, lisp_itr_route decides, lisp_itr_encap
    encapsulates (tail_progs): without either the packet is dropped, counted;
    a destination whose flow-cache slot keeps its locator needs neither in
    the common case (itr_fast)."""
    from lispctl.datapath.loader import header_define

    dp.set_mapping(EidPrefix.parse("10.2.0.0/16"), [Rloc(ip("192.0.2.2"))])
    f = _frame("10.2.7.5")
    fd = dp.prog_fd("lisp_itr_ingress")
    ctx = skb_ctx(ifindex=lab.eid_if)
    assert run_prog(fd, f, ctx=ctx).retval == TC_ACT_REDIRECT
    prog_dir = next(dp.pin_dir.glob("prog-*"))
    tail = obj_get(str(prog_dir / "tail_progs"))
    key = ctypes.c_uint32(header_define(slot))
    val = ctypes.c_uint32(dp.prog_fd(prog))
    attr = (tail.to_bytes(4, sys.byteorder) + bytes(4) + ctypes.addressof(key).to_bytes(8, sys.byteorder))
    try:
        bpf(3, attr + bytes(16))                                        # BPF_MAP_DELETE_ELEM
        # a destination whose slot keeps its locator is encapsulated by the lookups' program
        assert run_prog(fd, f, ctx=ctx).retval == TC_ACT_REDIRECT
        f = _frame("10.2.7.6")                                          # one not seen yet needs both
        before = dp.counters().drops.get("encap_failed", 0)
        assert run_prog(fd, f, ctx=ctx).retval == TC_ACT_SHOT
        assert dp.counters().drops.get("encap_failed", 0) == before + 1
    finally:
        bpf(2, attr + ctypes.addressof(val).to_bytes(8, sys.byteorder) + bytes(8))   # BPF_MAP_UPDATE_ELEM
        os.close(tail)
    assert run_prog(fd, f, ctx=ctx).retval == TC_ACT_REDIRECT


@pytest.mark.parametrize("prog", ["tc", "xdp"])
def test_next_packet_sees_new_interface_instance(dp, lab, one_cpu, prog):
    """The ITRs keep the last interface -> instance answer per CPU: a new
    instance ID for the interface applies from the very next packet."""
    dp.set_mapping(EidPrefix.parse("10.2.0.0/16"), [Rloc(ip("192.0.2.2"))])
    dp.set_mapping(EidPrefix.parse("[7]10.2.0.0/16"), [Rloc(ip("192.0.2.3"))])
    f = _frame("10.2.7.5")
    fd, ctx, ok = _itr(dp, lab, prog)

    def locator():
        res = run_prog(fd, f, ctx=ctx(f))
        assert res.retval == ok
        return P.split_encap(res.data).dst

    try:
        for iid, rloc in ((0, "192.0.2.2"), (7, "192.0.2.3"), (0, "192.0.2.2")):
            dp.set_eid_interface("eid0", iid)
            assert [locator() for _ in range(3)] == [ip(rloc)] * 3
    finally:
        dp.set_eid_interface("eid0", 0)


def test_counts_survive_a_new_build(lab, pin_root, one_cpu):
    """A new build (other source or flags) loads programs with a flow cache
    of their own: the counts in the old one's slots are still read (its pin
    is kept), by the new Datapath and by the pinned reader."""
    from lispctl.datapath import Datapath

    eid = EidPrefix.parse("10.2.0.0/16")
    old = Datapath("upgrade", pin_root=pin_root)
    released = False
    try:
        old.add_local_rloc(ip("192.0.2.1"))
        old.add_local_eid(EidPrefix.parse("10.1.0.0/16"))
        old.set_mapping(eid, [Rloc(ip("192.0.2.2"))])
        f = _frame("10.2.7.5")
        for _ in range(3):
            assert run_prog(old.prog_fd("lisp_itr_ingress"), f, ctx=skb_ctx(ifindex=lab.eid_if)).retval \
                == TC_ACT_REDIRECT
        assert old.mapping_counters(eid) == (3, 3 * (len(f) - 14))
        old.release()                                   # hand-over: maps and programs stay
        released = True
        new = Datapath("upgrade", pin_root=pin_root, cflags=("-DLISP_TEST_NEW_BUILD=1",))
        try:
            assert new.compiled
            assert new.mapping_counters(eid) == (3, 3 * (len(f) - 14))
            assert run_prog(new.prog_fd("lisp_itr_ingress"), f, ctx=skb_ctx(ifindex=lab.eid_if)).retval \
                == TC_ACT_REDIRECT
            assert new.mapping_counters(eid) == (4, 4 * (len(f) - 14))
            mid = new.mappings()[eid]
            assert read_mapping_stats("upgrade", pin_root)[mid] == (4, 4 * (len(f) - 14))
            new.reset()
            assert not list(new.pin_dir.glob("flow_cache-*"))   # flushed with the counters
        finally:
            new.close(unpin=True)
    finally:
        if not released:
            old.close(unpin=True)

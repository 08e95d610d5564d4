"""The ETRs' shortcuts past two hash lookups per packet (bpf/lisp_datapath.c):
etr_local_rloc (a packet to the config's outer source of its family is to a
local RLOC without asking local_rlocs) and etr_lookup ("instance ID accepted"
kept in the flow-cache slot of the inner destination). Each must give the
answer the maps give, from the very next packet after a change."""
from __future__ import annotations

import ipaddress

import pytest

from lispctl.datapath.testrun import TC_ACT_OK, TC_ACT_SHOT, XDP_DROP, XDP_PASS, run_prog, skb_ctx
from lispctl.mapping.types import EidPrefix
from tests.datapath import packets as P
from tests.datapath.conftest import EID_MAC, PEER_MAC, RLOC_MAC
from tests.datapath.test_flowcache import _program

ip = ipaddress.ip_address

# peer RLOC, our primary RLOC (the dp fixture's), a second one, inner src, inner dst, site
FAMILIES = {
    4: ("192.0.2.2", "192.0.2.1", "192.0.2.9", "10.2.0.5", "10.1.0.10", "10.1.0.0/16"),
    6: ("2001:db8:1::2", "2001:db8:1::1", "2001:db8:1::9", "fd00:2::5", "fd00:1::10", "fd00:1::/32"),
}
PASSED = {"tc": TC_ACT_OK, "xdp": XDP_PASS}
DROPPED = {"tc": TC_ACT_SHOT, "xdp": XDP_DROP}


def _frame(family: int, peer: str, to: str, src: str, dst: str, iid: int | None = None) -> bytes:
    return P.eth(P.mac(RLOC_MAC), P.mac(PEER_MAC[peer]), P.ETH_IP if family == 4 else P.ETH_IP6) + \
        P.lisp_packet(peer, to, P.ip_packet(src, dst, b"x" * 64), iid=iid)


@pytest.mark.parametrize("prog", ["tc", "xdp"])
@pytest.mark.parametrize("family", [4, 6])
def test_etr_local_rloc_any_of_them_and_never_a_removed_one(dp, lab, one_cpu, family, prog):  # noqa: F811
    peer, first, second, src, dst, _site = FAMILIES[family]
    fd, ctx_of, sent = _program(dp, lab, "etr", prog)

    def verdict(to: str) -> int:
        f = _frame(family, peer, to, src, dst)
        return run_prog(fd, f, ctx=ctx_of(f)).retval

    assert verdict(first) == sent                       # the config's source
    assert verdict(second) == PASSED[prog]              # not local (yet)
    dp.add_local_rloc(ip(second))
    assert verdict(second) == sent                      # a local RLOC that is not the source: the map
    dp.remove_local_rloc(ip(first))                     # the source was `first`: now `second`
    assert verdict(first) == PASSED[prog]
    assert verdict(second) == sent
    dp.reset()                                          # no RLOC at all, no source (counters zeroed)
    assert verdict(second) == PASSED[prog]
    assert dp.counters().decapsulated == 0


@pytest.mark.parametrize("prog", ["tc", "xdp"])
@pytest.mark.parametrize("family", [4, 6])
def test_etr_iid_no_longer_accepted_from_next_packet(dp, lab, one_cpu, family, prog):  # noqa: F811
    """A slot remembers that the instance was accepted; once it is not, the
    very next packet is dropped as unknown-iid (and accepted again after)."""
    peer, first, _second, src, dst, site = FAMILIES[family]
    dp.add_local_eid(EidPrefix.parse(f"[5]{site}"))
    fd, ctx_of, sent = _program(dp, lab, "etr", prog)
    f = _frame(family, peer, first, src, dst, iid=5)
    ctx = ctx_of(f)
    assert all(run_prog(fd, f, ctx=ctx).retval == sent for _ in range(3))
    drops = dp.counters().drops.get("unknown_iid", 0)
    dp.accept_iid(5, False)                             # the local EID's reference goes: not accepted
    assert not dp.iid_accepted(5)
    assert run_prog(fd, f, ctx=ctx).retval == DROPPED[prog]
    assert dp.counters().drops.get("unknown_iid", 0) == drops + 1
    dp.accept_iid(5)
    assert run_prog(fd, f, ctx=ctx).retval == sent


@pytest.mark.parametrize("prog", ["tc", "xdp"])
def test_etr_asks_accepted_iids_on_a_slot_the_itr_filled(dp, lab, one_cpu, prog):  # noqa: F811
    """The ITR fills a local-EID slot (a packet within the site) without the
    ETR's answer: the ETR still asks accepted_iids, and drops an instance
    that is not accepted although its destination is a local EID."""
    peer, first, _second, src, dst, _site = FAMILIES[4]
    while dp.iid_accepted(0):                           # local EIDs stay; instance 0 is no longer accepted
        dp.accept_iid(0, False)
    within = P.eth(P.mac(EID_MAC), P.mac(PEER_MAC[dst]), P.ETH_IP) + P.ip_packet("10.1.0.20", dst, b"y" * 64)
    itr = dp.prog_fd("lisp_itr_ingress")
    assert run_prog(itr, within, ctx=skb_ctx(ifindex=lab.eid_if)).retval == TC_ACT_OK   # slot: local
    fd, ctx_of, sent = _program(dp, lab, "etr", prog)
    f = _frame(4, peer, first, src, dst)
    ctx = ctx_of(f)
    assert run_prog(fd, f, ctx=ctx).retval == DROPPED[prog]
    assert dp.counters().drops.get("unknown_iid", 0) == 1
    dp.accept_iid(0)                                    # added: no generation needed
    assert run_prog(fd, f, ctx=ctx).retval == sent


# ---- the per-CPU caches spread a site's hosts over their sets ---------------

BPF_MAP_GET_FD_BY_ID = 14


def _cpu_sets(prog_fd: int, name: str, cpu: int) -> list[bytes]:
    """This CPU's bytes of every set of the per-CPU array `name` the program
    uses (read raw: only whether a set changed matters here)."""
    import ctypes
    import os

    from lispctl.datapath.maps import BPF_MAP_LOOKUP_ELEM, MapInfo, _u32, _u64, obj_info, prog_map_ids
    from lispctl.datapath.syscall import bpf
    for map_id in prog_map_ids(prog_fd):
        fd = bpf(BPF_MAP_GET_FD_BY_ID, _u32(map_id))
        try:
            info = MapInfo()
            obj_info(fd, info)
            if info.name.decode() != name:
                continue
            text = open("/sys/devices/system/cpu/possible").read().strip()
            ncpu = int(text.split("-")[-1]) + 1
            stride = (info.value_size + 7) // 8 * 8
            buf = ctypes.create_string_buffer(stride * ncpu)
            key = ctypes.c_uint32()
            out = []
            for i in range(info.max_entries):
                key.value = i
                bpf(BPF_MAP_LOOKUP_ELEM, _u32(fd) + _u32(0) + _u64(ctypes.addressof(key))
                    + _u64(ctypes.addressof(buf)) + _u64(0))
                out.append(buf.raw[cpu * stride: cpu * stride + info.value_size])
            return out
        finally:
            os.close(fd)
    raise LookupError(name)


@pytest.mark.parametrize("prog", ["tc", "xdp"])
def test_caches_spread_consecutive_hosts(dp, lab, one_cpu, prog):  # noqa: F811
    """160 site hosts with consecutive addresses (they differ in the last
    octet) take ~150 distinct sets of the next-hop and the flow cache: the
    set index mixes every address bit (before lisp_fmix, a multiplicative
    hash left them in 8 next-hop and 32 flow-cache sets, so most of a site's
    flows evicted each other and asked the FIB every packet)."""
    import os

    from pyroute2 import IPRoute
    hosts = [str(ip("10.1.0.20") + j) for j in range(160)]
    fd, ctx_of, sent = _program(dp, lab, "etr", prog)
    cpu = min(os.sched_getaffinity(0))
    with IPRoute() as ipr:
        for j, h in enumerate(hosts):
            ipr.neigh("add", dst=h, lladdr=f"02:00:00:00:03:{j:02x}", ifindex=lab.eid_if, state=0x80)
    try:
        before = {n: _cpu_sets(fd, n, cpu) for n in ("nh_cache", "flow_cache")}
        for h in hosts:
            f = _frame(4, "192.0.2.2", "192.0.2.1", "10.2.0.5", h)
            assert run_prog(fd, f, ctx=ctx_of(f)).retval == sent
        for n, old in before.items():
            new = _cpu_sets(fd, n, cpu)
            changed = sum(a != b for a, b in zip(old, new))
            assert changed >= 120, f"{n}: {len(hosts)} hosts filled only {changed} sets"
    finally:
        with IPRoute() as ipr:
            for h in hosts:
                ipr.neigh("del", dst=h, ifindex=lab.eid_if)

"""Map-cache tables in bulk (Datapath.load_bulk/unload_bulk): batched
updates land where the programs look (checked by running packets through
lisp_itr_ingress), removal takes everything, conflicts and capacity limits."""
from __future__ import annotations

import ipaddress
import time

import pytest

from lispctl.datapath import DatapathError
from lispctl.datapath.testrun import TC_ACT_REDIRECT, run_prog, skb_ctx
from lispctl.mapping.bulkfile import parse
from lispctl.mapping.types import EidPrefix, MapAction, Rloc
from tests.datapath import packets as P
from tests.datapath.conftest import EID_MAC, HOST_MAC

ip = ipaddress.ip_address
N4 = 100_000
N6 = 20_000
RLOCS4 = ("192.0.2.2", "192.0.2.3", "192.0.2.4", "192.0.2.5")
RLOCS6 = ("2001:db8:1::2", "2001:db8:1::3")


def _v4(i: int) -> str:
    return f"{20 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}.0/24"


def _v6(i: int) -> str:
    return f"fd10:{i >> 16:x}:{i & 0xffff:x}::/48"


def _table_text() -> str:
    lines = [f"{_v4(i)} {RLOCS4[i % 4]}" for i in range(N4)]
    lines += [f"{_v6(i)} {RLOCS6[i % 2]}" for i in range(N6)]
    lines.append("30.0.0.0/8 drop")
    return "\n".join(lines)


def _send(dp, lab, dst: str):
    src = "10.1.0.10" if ip(dst).version == 4 else "fd00:1::10"
    inner = P.ip_packet(src, dst, b"x" * 64)
    et = P.ETH_IP if ip(dst).version == 4 else P.ETH_IP6
    frame = P.eth(P.mac(EID_MAC), P.mac(HOST_MAC), et) + inner
    return run_prog(dp.prog_fd("lisp_itr_ingress"), frame, ctx=skb_ctx(ifindex=lab.eid_if))


def _encapsulated_to(dp, lab, dst: str):
    res = _send(dp, lab, dst)
    return P.split_encap(res.data).dst if res.retval == TC_ACT_REDIRECT else None


@pytest.fixture(scope="module")
def table():
    return parse(_table_text())


def test_bulk_install_and_remove(dp, lab, table):
    t0 = time.perf_counter()
    bs = dp.load_bulk("big", table)
    took = time.perf_counter() - t0
    assert bs.info() == {"name": "big", "ipv4": N4 + 1, "ipv6": N6, "skipped": 0}
    assert took < 30, f"{N4 + N6} mappings took {took:.1f} s"
    # spot checks through the program: first, last, and entries of every locator
    for i in (0, 1, 2, 3, 77_777, N4 - 1):
        dst = _v4(i).replace(".0/24", ".9")
        assert _encapsulated_to(dp, lab, dst) == ip(RLOCS4[i % 4]), dst
    for i in (0, 1, N6 - 1):
        dst = _v6(i).replace("::/48", "::9")
        assert _encapsulated_to(dp, lab, dst) == ip(RLOCS6[i % 2]), dst
    before = dp.counters().drops.get("negative", 0)
    assert _send(dp, lab, "30.1.2.3").retval != TC_ACT_REDIRECT
    assert dp.counters().drops["negative"] == before + 1
    # mappings with the same locators share one locator set (and id): 6 in the kernel
    assert sum(1 for _ in dp.table("locsets").keys()) == len(RLOCS4) + len(RLOCS6)
    assert len(bs.ids) == len(RLOCS4) + len(RLOCS6) + 1              # + the drop entries' id
    assert set(dp.bulk_tables()) == {"big"}

    t0 = time.perf_counter()
    assert dp.unload_bulk("big") == N4 + 1 + N6
    assert time.perf_counter() - t0 < 30
    assert not any(True for _ in dp.table("map_cache4").keys())
    assert not any(True for _ in dp.table("map_cache6").keys())
    assert not any(True for _ in dp.table("locsets").keys())
    assert _encapsulated_to(dp, lab, "20.0.5.9") is None            # a miss now
    with pytest.raises(DatapathError):
        dp.unload_bulk("big")


@pytest.mark.parametrize("batch", [True, False])
def test_batched_and_per_element_paths_agree(dp, batch):
    """The per-element loop is the fallback for kernels without batch ops
    for a map type: same result either way."""
    t = dp.table("map_cache4")
    small = parse("\n".join(f"{_v4(i)} drop" for i in range(3000)))
    leaf = bytes(t.Leaf())
    t.update_many(small.v4.keys, leaf * len(small.v4), batch=batch)
    assert sum(1 for _ in t.keys()) == 3000
    k = t.Key()
    k.prefixlen, k.iid = 32 + 32, 0
    k.addr[:] = [20, 0, 7, 1]
    assert k in t                                                    # LPM: 20.0.7.1 in 20.0.7.0/24
    # deleting skips keys that are not there (ENOENT stops a kernel batch: resumed after it)
    extra = parse("99.0.0.0/8 drop").v4.keys
    assert t.delete_many(small.v4.keys[:12 * 10] + extra + small.v4.keys[12 * 10:], batch=batch) == 3000
    assert not any(True for _ in t.keys())


def test_conflicts_with_single_mappings(dp, lab):
    own = EidPrefix.parse("20.0.1.0/24")
    dp.set_mapping(own, [Rloc(ip("192.0.2.5"))])
    bs = dp.load_bulk("t", parse(f"{_v4(1)} 192.0.2.2\n{_v4(2)} 192.0.2.2\n{_v4(2)} 192.0.2.3\n"))
    assert bs.info()["ipv4"] == 1 and bs.skipped == 2                # taken, and listed twice
    assert _encapsulated_to(dp, lab, "20.0.1.9") == ip("192.0.2.5")  # the single mapping stays
    assert _encapsulated_to(dp, lab, "20.0.2.9") == ip("192.0.2.2")  # first line wins
    with pytest.raises(DatapathError, match="bulk"):
        dp.set_mapping(EidPrefix.parse(_v4(2)), [Rloc(ip("192.0.2.4"))])
    dp.delete_mapping(EidPrefix.parse(_v4(2)))                       # not its entry: no effect
    assert _encapsulated_to(dp, lab, "20.0.2.9") == ip("192.0.2.2")
    with pytest.raises(DatapathError, match="loaded"):
        dp.load_bulk("t", parse("40.0.0.0/8 drop"))
    other = dp.load_bulk("u", parse(f"{_v4(2)} 192.0.2.4\n40.0.0.0/8 drop"))
    assert other.skipped == 1 and other.info()["ipv4"] == 1          # held by table t
    dp.reset()
    assert not dp.bulk_tables() and not any(True for _ in dp.table("map_cache4").keys())


def test_capacity_is_the_configured_size(lab, pin_root):
    """datapath.max-mappings sizes the maps at load time; capacity is read
    back from them; a table that does not fit changes nothing."""
    from lispctl.datapath import Datapath
    with Datapath("cap", pin_root=pin_root, max_mappings=1024) as d:
        assert d.family_capacity(4) == d.family_capacity(6) == 1024
        assert d.capacity == 2 * 1024 - 1
        assert d.table("locsets").max_entries == 2048
        too_many = parse("\n".join(f"{_v4(i)} 192.0.2.2" for i in range(1025)))
        with pytest.raises(DatapathError, match="1024 more fit"):
            d.load_bulk("x", too_many)
        assert not any(True for _ in d.table("map_cache4").keys()) and not d.bulk_tables()
        d.load_bulk("x", parse("\n".join(f"{_v4(i)} 192.0.2.2" for i in range(1023))))
        d.set_mapping(EidPrefix.parse("99.0.0.0/8"), [], MapAction.DROP)
        with pytest.raises(DatapathError, match="full"):
            d.set_mapping(EidPrefix.parse("98.0.0.0/8"), [], MapAction.DROP)
        # IPv6 has its own 1024
        d.load_bulk("y", parse("\n".join(f"{_v6(i)} 2001:db8:1::2" for i in range(1000))))
        assert d.unload_bulk("x") == 1023
        d.set_mapping(EidPrefix.parse("98.0.0.0/8"), [], MapAction.DROP)
        d.close(unpin=True)


def test_a_restart_drops_tables_a_dead_process_left(lab, pin_root):
    """Tables are removed by release(); a process that died leaves them in
    the pinned maps. The next one removes them (they share ids: adopted as
    single mappings, removing one would free an id the others still use)
    and keeps the single mappings."""
    from lispctl.datapath import Datapath
    a = Datapath("dead", pin_root=pin_root, max_mappings=4096)
    own = EidPrefix.parse("99.0.0.0/8")
    a.set_mapping(own, [Rloc(ip("192.0.2.5"))])
    a.load_bulk("t", parse("\n".join(f"{_v4(i)} 192.0.2.2" for i in range(1000))
                           + "\nfd10::/48 192.0.2.3\n30.0.0.0/8 drop"))
    a._loaded.close()                      # dies: no release(), no unload
    with Datapath("dead", pin_root=pin_root, max_mappings=4096) as b:
        assert b.mappings() == {own: b.mappings()[own]}
        assert sum(1 for _ in b.table("map_cache4").keys()) == 1
        assert not any(True for _ in b.table("map_cache6").keys())
        assert sum(1 for _ in b.table("locsets").keys()) == 1       # the single mapping's
        b.load_bulk("t", parse(f"{_v4(5)} 192.0.2.4"))
        assert b.unload_bulk("t") == 1
        b.close(unpin=True)

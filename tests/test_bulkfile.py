"""Map-cache tables in bulk: the text format, ids handed out in O(1), the
[datapath] config section (no kernel needed)."""
from __future__ import annotations

import ipaddress
import struct

import pytest

from lispctl.config import ConfigError, loads
from lispctl.datapath.idpool import IdPool
from lispctl.mapping.bulkfile import BulkFormatError, eid_of_key, format_line, key_bytes, parse
from lispctl.mapping.types import EidPrefix, MapAction, Rloc
from tests.test_config import MINIMAL_XTR

ip = ipaddress.ip_address


def test_rows_are_lpm_keys_in_the_kernel_layout():
    t = parse("10.1.0.0/24 192.0.2.1\n[7]2001:db8:1::/48 2001:db8::1/2/50 192.0.2.9\n")
    assert (len(t.v4), len(t.v6)) == (1, 1)
    # struct lisp_key4: prefixlen (host order, iid bits included), iid big-endian, address
    assert t.v4.key(0) == struct.pack("=I", 32 + 24) + bytes(4) + bytes([10, 1, 0, 0])
    assert t.v6.key(0)[:8] == struct.pack("=I", 32 + 48) + (7).to_bytes(4, "big")
    assert eid_of_key(t.v6.key(0)) == EidPrefix.parse("2001:db8:1::/48", 7)
    assert t.locator_sets[t.v6.groups[0]] == (Rloc(ip("2001:db8::1"), 2, 50), Rloc(ip("192.0.2.9")))
    assert key_bytes(EidPrefix.parse("10.1.0.0/24")) == t.v4.key(0)


def test_actions_and_shared_locator_sets():
    t = parse("# comment\n\n10.0.0.0/8 drop\n10.1.0.0/16 natively-forward  # trailing\n"
              "10.2.0.0/16 192.0.2.1\n10.3.0.0/16 192.0.2.1\n10.4.0.0/16 no-action\n"
              "10.5.0.0/16 192.0.2.1 send-map-request\n10.6.0.1 192.0.2.2\n")
    acts = [MapAction(a) for a in t.v4.actions]
    assert acts == [MapAction.DROP, MapAction.NATIVELY_FORWARD, MapAction.NO_ACTION, MapAction.NO_ACTION,
                    MapAction.NATIVELY_FORWARD,        # no-action without locators: RFC 9301
                    MapAction.SEND_MAP_REQUEST, MapAction.NO_ACTION]
    assert t.v4.groups[2] == t.v4.groups[3]            # same text after the prefix: one locator set
    assert eid_of_key(t.v4.key(6)) == EidPrefix.parse("10.6.0.1/32")
    assert len(t) == 7


@pytest.mark.parametrize("line,words", [
    ("10.1.0.1/24 192.0.2.1", "host bits"),
    ("10.1.0.0/33 192.0.2.1", "prefix length"),
    ("10.1.0.0/24", "no locator and no action"),
    ("10.1.0.0/24 drop natively-forward", "more than one action"),
    ("10.1.0.0/24 192.0.2.1/300", "0..255"),
    ("10.1.0.0/24 192.0.2.1/1/2/3", "ADDR[/PRIORITY[/WEIGHT]]"),
    ("10.1.0.0/24 nonsense", "nonsense"),
    ("[16777216]10.1.0.0/24 drop", "24-bit"),
    ("10.1.0.256/32 drop", "illegal IP address"),
])
def test_bad_lines_name_the_line(line, words):
    with pytest.raises(BulkFormatError) as info:
        parse(f"10.0.0.0/8 drop\n{line}\n", source="t.txt")
    assert str(info.value).startswith("t.txt:2: ") and words in str(info.value)


def test_format_line_round_trips():
    eid = EidPrefix.parse("2001:db8:5::/48", 9)
    rlocs = (Rloc(ip("192.0.2.1")), Rloc(ip("2001:db8::2"), 3, 20))
    t = parse(format_line(eid, rlocs) + "\n" + format_line(EidPrefix.parse("10.9.0.0/16"), (), MapAction.DROP))
    assert eid_of_key(t.v6.key(0)) == eid and t.locator_sets[t.v6.groups[0]] == rlocs
    assert MapAction(t.v4.actions[0]) == MapAction.DROP


def test_id_pool_fresh_ids_first_then_oldest_released():
    pool = IdPool(6, reserved=0)
    assert [pool.take() for _ in range(5)] == [1, 2, 3, 4, 5]
    assert pool.take() is None and len(pool) == 0
    pool.release(4)
    pool.release(2)
    assert pool.take_many(3) is None                   # all or nothing
    assert list(pool.take_many(2)) == [4, 2] and pool.in_use == 5


def test_id_pool_adopts_used_ids():
    pool = IdPool(10, used=[1, 3, 7], reserved=0)
    assert pool.in_use == 3 and len(pool) == 6
    got = sorted(pool.take_many(6))
    assert got == [2, 4, 5, 6, 8, 9]


def test_id_pool_is_linear():
    """A million ids in and out: O(1) each (the old allocator rebuilt a set per id)."""
    import time
    pool = IdPool(1 << 20)
    t = time.perf_counter()
    ids = [pool.take() for _ in range(200_000)]
    for i in ids:
        pool.release(i)
    bulk = pool.take_many(len(pool))
    assert len(bulk) == (1 << 20) - 1 and len(set(bulk)) == len(bulk) and 0 not in bulk
    assert time.perf_counter() - t < 5


def test_datapath_section_defaults_and_limits():
    cfg = loads(MINIMAL_XTR)
    assert cfg.datapath.max_mappings >= 1_000_000 and cfg.datapath.map_cache_files == []
    cfg = loads(MINIMAL_XTR + '\n[datapath]\nmax-mappings = 4096\nmap-cache-files = ["/etc/t.txt"]\n')
    assert cfg.datapath.max_mappings == 4096 and cfg.datapath.map_cache_files == ["/etc/t.txt"]
    for bad, words in (("max-mappings = 100", "greater than or equal to 1024"),
                       ("max-mappings = 100000000", "less than or equal"),
                       ('map-cache-files = ["/a", "/a"]', "listed twice"),
                       ("max-mapping = 5000", "unknown key")):
        with pytest.raises(ConfigError) as info:
            loads(MINIMAL_XTR + f"\n[datapath]\n{bad}\n", source="t.toml")
        assert "datapath." in str(info.value) and words in str(info.value)

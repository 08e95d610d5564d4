"""Counters read from the pinned maps without compiling (lispctl.datapath.pinned)."""
from __future__ import annotations

import ipaddress

import pytest

from lispctl.datapath.errors import DatapathError
from lispctl.datapath.pinned import read_counters, read_mapping_stats
from lispctl.datapath.testrun import run_prog
from lispctl.mapping.types import EidPrefix, Rloc
from tests.datapath import packets as P
from tests.datapath.conftest import EID_MAC, HOST_MAC


def test_pinned_reader_agrees_with_datapath(dp):
    eid = EidPrefix.parse("10.2.0.0/16")
    dp.set_mapping(eid, [Rloc(ipaddress.ip_address("192.0.2.2"))])
    dp.set_mapping(EidPrefix.parse("10.9.0.0/16"), [], action=3)   # drop
    frame = P.eth(P.mac(EID_MAC), P.mac(HOST_MAC), P.ETH_IP) + P.ip_packet("10.1.0.10", "10.2.0.5", b"z" * 50)
    for _ in range(5):
        run_prog(dp.prog_fd("lisp_itr_ingress"), frame)
    dropped = P.eth(P.mac(EID_MAC), P.mac(HOST_MAC), P.ETH_IP) + P.ip_packet("10.1.0.10", "10.9.0.5")
    for _ in range(2):
        run_prog(dp.prog_fd("lisp_itr_ingress"), dropped)
    root = dp.pin_dir.parent
    c = read_counters(dp.instance, root)
    assert c == dp.counters()
    assert c.encapsulated == 5 and c.drops["negative"] == 2
    stats = read_mapping_stats(dp.instance, root)
    mid = dp.mappings()[eid]
    assert stats[mid] == dp.mapping_counters(eid) == (5, 5 * (len(frame) - 14))


def test_missing_instance_is_a_clear_error(dp):
    with pytest.raises(DatapathError, match="cannot open pinned map"):
        read_counters("no-such-instance", dp.pin_dir.parent)

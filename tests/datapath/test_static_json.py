"""The static JSON loader of `python -m lispctl.datapath` (no kernel needed:
a recorder stands in for the Datapath)."""
from __future__ import annotations

import ipaddress

import pytest

from lispctl.datapath.__main__ import load_static
from lispctl.mapping.types import EidPrefix, MapAction


class Recorder:
    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        return lambda *a: self.calls.append((name, *a))


def test_null_lists_count_as_empty():
    rec = Recorder()
    load_static(rec, {"local_rlocs": None, "local_eids": None, "accept_iids": None,
                      "mappings": [{"eid": "10.2.0.0/24", "iid": None, "rlocs": None, "action": "drop"}],
                      "miss_action": "natively-forward", "petr": None, "path_mtu": None,
                      "miss_rate_limit_ms": None, "reencap": None})
    assert rec.calls == [
        ("set_mapping", EidPrefix.parse("10.2.0.0/24"), [], MapAction.DROP),
        ("set_miss_action", MapAction.NATIVELY_FORWARD, []),
    ]


def test_null_miss_action_with_petr_keeps_default_drop():
    rec = Recorder()
    load_static(rec, {"miss_action": None, "petr": ["198.51.100.1"]})
    (name, action, petr), = rec.calls
    assert name == "set_miss_action" and action == MapAction.DROP
    assert [r.address for r in petr] == [ipaddress.ip_address("198.51.100.1")]


def test_wrong_types_are_clear_errors():
    with pytest.raises(ValueError, match="'petr' must be a list"):
        load_static(Recorder(), {"petr": "198.51.100.1"})
    with pytest.raises(ValueError, match="JSON object"):
        load_static(Recorder(), [])

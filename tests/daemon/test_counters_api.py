"""The `counters` command reads each role's counters, not its snapshot: a
Map-Server's snapshot lists every site and registration (100,000s at scale)
and building it on every `lispctl counters` stalled the daemon."""
import random
from types import SimpleNamespace

from lispctl.config import loads
from lispctl.daemon.main import _handlers
from lispctl.daemon.runtime import Runtime
from lispctl.roles import build_roles

CONFIG = """
instance = "counters"
roles = ["ms", "mr"]
[[site]]
name = "site-a"
keys = { 1 = "k" }
[[site.eid-prefix]]
prefix = "10.1.0.0/16"
"""


def test_counters_do_not_build_role_snapshots():
    roles = build_roles(loads(CONFIG), interface_addresses={}, rng=random.Random(1))
    rt = Runtime(roles)
    for _, role in roles:
        role.counters["seen"] += 1

        def no_snapshot():
            raise AssertionError("snapshot built for counters")
        role.snapshot = no_snapshot
    out = _handlers(None, SimpleNamespace(datapath=None), rt, lambda: None)["counters"]({})
    assert {name: c["seen"] for name, c in out["roles"].items()} == {"ms": 1, "mr": 1}
    assert rt.counters["role_errors"] == 0

"""Topology files are validated before anything is built (no root needed)."""
import pytest
from pydantic import ValidationError

from lispctl.lab import available, load, loads

BASE = """
name = "t"
[nodes.a]
[nodes.b]
[[links]]
a = {{ node = "a", ifname = "{ifa}", addresses = ["{addr}"] }}
b = {{ node = "{nb}", ifname = "x0" }}
"""


def make(ifa="x0", addr="192.0.2.1/24", nb="b"):
    return loads(BASE.format(ifa=ifa, addr=addr, nb=nb))


def test_valid():
    t = make()
    assert t.address_of("a") == "192.0.2.1"
    assert t.nodes["a"].all_sysctls()["net.ipv6.conf.default.accept_dad"] == "0"
    assert "net.ipv4.ip_forward" not in t.nodes["a"].all_sysctls()


@pytest.mark.parametrize("kw, msg", [
    ({"ifa": "sixteen-chars-xx"}, "1..15"),
    ({"addr": "192.0.2.1"}, "prefix length"),
    ({"addr": "192.0.2.300/24"}, "does not appear to be an IPv4 or IPv6 interface"),
    ({"nb": "nosuch"}, "no such node"),
])
def test_rejects(kw, msg):
    with pytest.raises(ValidationError, match=msg):
        make(**kw)


def test_route_family_mismatch_rejected():
    with pytest.raises(ValidationError, match="families differ"):
        loads('name="t"\n[nodes.a]\nroutes=[{dst="10.0.0.0/8", via="2001:db8::1"}]\n')


def test_shipped_topologies_load():
    assert "dataplane" in available()
    for name in available():
        topo = load(name)
        assert topo.nodes and topo.links
    dp = load("dataplane")
    # the underlay router must never learn EID routes: EID traffic may only cross by LISP
    assert dp.nodes["router"].routes == []

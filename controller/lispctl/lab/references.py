"""Non-LISP ways across the `dataplane` topology, for comparison with LISP.

plain: EID routes added to the underlay (the router learns the EID
networks), i.e. ordinary IP forwarding over the same path.
vxlan: the kernel's VXLAN tunnel between xtr1 and xtr2 over the same RLOC
addresses, EID routes pointing into it.
Both are configured with pyroute2 on a freshly built lab.
"""
from __future__ import annotations

import socket

from .runner import Lab

VXLAN_PORT = 4789
VXLAN_VNI = 42
# The tunnel's inner link network (documentation range, only inside the lab).
VX_ADDR = {"xtr1": ("192.0.2.1", "2001:db8:ff::1"), "xtr2": ("192.0.2.2", "2001:db8:ff::2")}


def _route(lab: Lab, node: str, dst: str, via: str) -> None:
    fam = socket.AF_INET6 if ":" in dst else socket.AF_INET
    with lab.ipr(node) as ipr:
        ipr.route("add", dst=dst, gateway=via, family=fam)


def setup_plain(lab: Lab) -> None:
    """Route EIDs natively: xTRs and router learn both sites' EID networks."""
    s1 = {4: "10.1.0.0/24", 6: "fd00:1::/64"}
    s2 = {4: "10.2.0.0/24", 6: "fd00:2::/64"}
    r = {4: ("198.51.100.254", "203.0.113.254"), 6: ("2001:db8:1::fe", "2001:db8:2::fe")}
    x = {4: ("198.51.100.1", "203.0.113.2"), 6: ("2001:db8:1::1", "2001:db8:2::2")}
    for v in (4, 6):
        _route(lab, "xtr1", s2[v], r[v][0])
        _route(lab, "xtr2", s1[v], r[v][1])
        _route(lab, "router", s1[v], x[v][0])
        _route(lab, "router", s2[v], x[v][1])


def setup_vxlan(lab: Lab, rloc_family: int = 4) -> None:
    """A VXLAN tunnel xtr1 <-> xtr2 over the RLOC addresses; EID routes into it."""
    rloc = {"xtr1": lab.addr("xtr1", rloc_family, "rloc0"), "xtr2": lab.addr("xtr2", rloc_family, "rloc0")}
    peer = {"xtr1": "xtr2", "xtr2": "xtr1"}
    remote_eids = {"xtr1": ("10.2.0.0/24", "fd00:2::/64"), "xtr2": ("10.1.0.0/24", "fd00:1::/64")}
    for node in ("xtr1", "xtr2"):
        with lab.ipr(node) as ipr:
            under = ipr.link_lookup(ifname="rloc0")[0]
            kw = {"vxlan_id": VXLAN_VNI, "vxlan_port": VXLAN_PORT, "vxlan_link": under}
            if rloc_family == 4:
                kw.update(vxlan_local=rloc[node], vxlan_group=rloc[peer[node]])
            else:
                kw.update(vxlan_local6=rloc[node], vxlan_group6=rloc[peer[node]])
            ipr.link("add", ifname="vx0", kind="vxlan", **kw)
            idx = ipr.link_lookup(ifname="vx0")[0]
            ipr.link("set", index=idx, mtu=1500, state="up")
            ipr.addr("add", index=idx, address=VX_ADDR[node][0], prefixlen=30)
            ipr.addr("add", index=idx, address=VX_ADDR[node][1], prefixlen=64)
        lab.state.links.append((lab.ns(node), "vx0"))  # teardown removes exactly this too
    lab.state.save()
    lab.wait_settled()
    for node in ("xtr1", "xtr2"):
        v4, v6 = VX_ADDR[peer[node]]
        _route(lab, node, remote_eids[node][0], v4)
        _route(lab, node, remote_eids[node][1], v6)

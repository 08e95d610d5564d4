"""SMR targets keep all ITR-RLOCs of a requester: after the mobile node loses
its last RLOC of one family, the SMR to a dual-stack correspondent goes to
that ITR's ITR-RLOC of a family it still has, from its RLOC of that family."""
from lispctl.mapping.types import EidPrefix
from lispctl.roles import etr as etr_mod
from lispctl.wire import MapRequest, decode_control, record_prefix, request_record

from roles_helpers import A, ep, make, sends

P = EidPrefix.parse
MN = """\
instance = "mn-t"
roles = ["mobile-node"]
[[database]]
eid-prefix = "10.9.0.9/32"
[[database.locator]]
interface = "up1"
family = "ipv4"
[[database.locator]]
interface = "up2"
family = "ipv6"
priority = 2
[[map-server]]
address = "192.0.2.10"
key = "k"
[[map-server]]
address = "2001:db8:5::10"
key = "k"
[[map-resolver]]
address = "192.0.2.10"
[etr]
smr = true
"""
V4, V6 = A("198.51.100.9"), A("2001:db8:a2::9")
ITR_V4, ITR_V6 = A("203.0.113.66"), A("2001:db8:b::2")


def started(itr_rlocs=(ITR_V4, ITR_V6)):
    _, roles = make(MN, up1=[V4], up2=[V6])
    etr = roles["etr"]
    etr.start(0.0)
    req = MapRequest(5, (request_record(P("10.9.0.9/32")),), tuple(itr_rlocs))
    etr.handle(req.encode(), ep(str(itr_rlocs[0])), ep(str(V4)), 1.0)
    return etr


def smrs(effects):
    return [(s, m) for s in sends(effects) for m in [decode_control(s.payload)]
            if isinstance(m, MapRequest) and m.smr]


def test_smr_after_last_ipv4_rloc_goes_uses_the_itrs_ipv6_rloc():
    etr = started()
    out = smrs(etr.set_interface_addresses("up1", [], 2.0))
    assert len(out) == 1
    send, smr = out[0]
    assert send.dst.addr == ITR_V6 and send.dst.port == 4342
    assert send.src is not None and send.src.addr == V6          # from the RLOC we still have
    assert record_prefix(smr.records[0]) == P("10.9.0.9/32")
    assert list(smr.itr_rlocs) == [V6]                           # ask us back where we are
    assert etr.counters["smr_tx"] == 1


def test_smr_prefers_the_first_itr_rloc_while_its_family_is_usable():
    etr = started()
    send, _ = smrs(etr.set_link_state("up2", False, 2.0))[0]
    assert send.dst.addr == ITR_V4 and send.src.addr == V4


def test_no_common_family_is_counted_not_sent_to_an_unreachable_family():
    etr = started(itr_rlocs=(ITR_V4,))
    assert smrs(etr.set_interface_addresses("up1", [], 2.0)) == []
    assert etr.counters["smr_no_common_family"] == 1
    assert etr.counters["smr_tx"] == 0


def test_one_target_per_itr_even_when_its_itr_rloc_list_changes():
    etr = started()
    # the same ITR asks again, now listing its IPv6 RLOC first and a new IPv4 one
    new_v4 = A("203.0.113.67")
    req = MapRequest(6, (request_record(P("10.9.0.9/32")),), (ITR_V6, new_v4))
    etr.handle(req.encode(), ep(str(ITR_V6)), ep(str(V6)), 3.0)
    assert len(etr.requesters) == 1
    (r,) = etr.requesters.values()
    assert r.rlocs == (ITR_V6, new_v4)
    send, _ = smrs(etr.set_link_state("up2", False, 4.0))[0]
    assert send.dst.addr == new_v4                               # not the stale 203.0.113.66
    snap = etr.snapshot()["smr_targets"][0]
    assert snap["itr_rlocs"] == [str(ITR_V6), str(new_v4)]


def test_itr_rlocs_kept_per_requester_are_bounded():
    many = tuple(A(f"2001:db8:b::{i:x}") for i in range(1, 33))
    etr = started(itr_rlocs=many)
    (r,) = etr.requesters.values()
    assert r.rlocs == many[:etr_mod._MAX_ITR_RLOCS]

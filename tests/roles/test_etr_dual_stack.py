"""ETR with an IPv4 and an IPv6 EID prefix on one interface locator: a
locator change SMRs an ITR that asked for both (mixed-family prefixes must
not be compared with each other)."""
from lispctl.mapping.types import EidPrefix
from lispctl.wire import MapRequest, decode_control, record_prefix, request_record

from roles_helpers import A, ep, make, sends

DUAL = """\
instance = "xtr-d"
roles = ["xtr"]
[[database]]
eid-prefix = "10.2.0.0/24"
[[database.locator]]
interface = "wan0"
[[database]]
eid-prefix = "fd00:2::/64"
[[database.locator]]
interface = "wan0"
[[map-server]]
address = "198.51.100.10"
key = "k"
[[map-resolver]]
address = "198.51.100.10"
"""


def test_locator_change_smrs_both_families():
    _, roles = make(DUAL, wan0=["203.0.113.2", "2001:db8:2::2"])
    etr = roles["etr"]
    etr.tick(0.0)
    for eid in ("10.2.0.2/32", "fd00:2::2/128"):
        req = MapRequest(7, (request_record(EidPrefix.parse(eid)),), (A("198.51.100.1"),))
        assert sends(etr.handle(req.encode(), ep("198.51.100.1"), ep("203.0.113.2"), 1.0))
    effects = etr.set_interface_addresses("wan0", [A("203.0.113.2"), A("203.0.113.3"), A("2001:db8:2::2")], 2.0)
    smrs = [m for s in sends(effects) for m in [decode_control(s.payload)] if isinstance(m, MapRequest)]
    assert all(m.smr for m in smrs)
    assert [str(record_prefix(m.records[0])) for m in smrs] == ["10.2.0.0/24", "fd00:2::/64"]
    assert etr.counters["smr_tx"] == 2

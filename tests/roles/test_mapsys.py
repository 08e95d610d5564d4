"""Several mapping systems in one xTR (per-prefix / per-IID Map-Servers and
Map-Resolvers) and Map-Resolver failover."""
import ipaddress

import pytest

from lispctl.config import ConfigError, loads
from lispctl.mapping.types import EidPrefix, Rloc
from lispctl.roles.base import MissEvent
from lispctl.wire import MapRegister, MapReply, decode_control, eid_record, record_prefix

from roles_helpers import A, ep, make, sends

TWO = """
instance = "x"
roles = ["xtr"]
[[database]]
eid-prefix = "10.1.0.0/24"
[[database.locator]]
address = "192.0.2.1"
[[database]]
eid-prefix = "10.1.0.0/24"
instance-id = 5
[[database.locator]]
address = "192.0.2.1"
[[database]]
eid-prefix = "10.7.0.0/24"
[[database.locator]]
address = "192.0.2.1"

[[map-server]]                     # mapping system A: instance 0, except 10.7/16
address = "198.51.100.1"
key-id = 1
key = "key-a"
eid-prefix = ["0.0.0.0/0"]
[[map-server]]                     # mapping system B: instance 5 and 10.7/16
address = "198.51.100.2"
key-id = 2
key = "key-b"
eid-prefix = ["[5]0.0.0.0/0", "10.7.0.0/16"]

[[map-resolver]]
address = "198.51.100.11"
eid-prefix = ["0.0.0.0/0"]
[[map-resolver]]
address = "198.51.100.12"
eid-prefix = ["0.0.0.0/0"]
[[map-resolver]]
address = "198.51.100.21"
eid-prefix = ["[5]0.0.0.0/0", "10.7.0.0/16"]
[itr]
map-resolver-timeout = 3
map-resolver-holddown = 30
"""


def miss(dst, iid=0):
    return MissEvent(EidPrefix(iid, ipaddress.ip_network(dst)), A("10.1.0.7"))


def registered_with(etr, now=0.0):
    out = {}
    for s in sends(etr.start(now)):
        msg = decode_control(s.payload)
        assert isinstance(msg, MapRegister)
        out[str(s.dst.addr)] = sorted(str(record_prefix(r)) for r in msg.records)
    return out


def test_each_prefix_registered_with_its_mapping_system():
    roles = make(TWO)[1]
    assert registered_with(roles["etr"]) == {
        "198.51.100.1": ["10.1.0.0/24"],                       # 10.7/24: B's 10.7/16 is more specific
        "198.51.100.2": ["10.7.0.0/24", "[5]10.1.0.0/24"],
    }


def test_resolver_chosen_by_most_specific_scope():
    itr = make(TWO)[1]["itr"]
    itr.start(0.0)
    first = lambda eid, iid=0, t=1.0: str(sends(itr.on_miss(miss(eid, iid), t))[0].dst.addr)
    assert first("10.2.3.4") == "198.51.100.11"
    assert first("10.2.3.4", iid=5) == "198.51.100.21"
    assert first("10.7.9.9") == "198.51.100.21"            # 10.7/16 beats 0/0
    assert itr.counters["map_request_no_resolver"] == 0
    assert sends(itr.on_miss(miss("10.2.3.4", iid=9), 1.0)) == []   # nobody serves instance 9
    assert itr.counters["map_request_no_resolver"] == 1


def test_silent_resolver_skipped_then_retried():
    itr = make(TWO)[1]["itr"]
    itr.start(0.0)
    dst = lambda effects: [str(s.dst.addr) for s in sends(effects)]
    assert dst(itr.on_miss(miss("10.2.0.1"), 1.0)) == ["198.51.100.11"]
    assert dst(itr.tick(2.0)) == ["198.51.100.12"]          # the ITR's own retry goes to the next one
    # .11 silent for 3 s: new resolutions start at .12
    (s1,) = sends(itr.on_miss(miss("10.3.0.1"), 4.5))
    assert str(s1.dst.addr) == "198.51.100.12"
    assert itr.counters["map_resolver_skipped"] == 1
    state = {r["address"]: r for r in itr.snapshot()["map_resolver_state"]}
    assert state["198.51.100.11"]["skipped_for_s"] == pytest.approx(30.0)
    # .12 answers (through an ETR): it stays in use while .11 is held down
    req = decode_control(s1.payload).message
    reply = MapReply(req.nonce, (eid_record(EidPrefix.parse("10.3.0.0/16"), (Rloc(A("203.0.113.9")),)),))
    itr.handle(reply.encode(), ep("203.0.113.9"), ep("192.0.2.1"), 4.6)
    assert dst(itr.on_miss(miss("10.5.0.1"), 20.0))[0] == "198.51.100.12"
    # after the hold-down, .11 is first again
    assert dst(itr.on_miss(miss("10.6.0.1"), 35.0))[0] == "198.51.100.11"


def test_all_resolvers_silent_still_asks():
    itr = make(TWO)[1]["itr"]
    itr.start(0.0)
    sends(itr.on_miss(miss("10.2.0.1"), 1.0))
    sends(itr.on_miss(miss("10.2.0.2", 0), 1.0))
    itr.tick(2.0)
    assert len(sends(itr.on_miss(miss("10.3.0.1"), 10.0))) == 1


def test_database_prefix_outside_every_map_server_is_an_error():
    text = TWO.replace('eid-prefix = ["0.0.0.0/0"]\n[[map-server]]', 'eid-prefix = ["10.1.0.0/16"]\n[[map-server]]')
    with pytest.raises(ConfigError, match="inside no \\[\\[map-server\\]\\]"):
        loads(text.replace('"[5]0.0.0.0/0", "10.7.0.0/16"]\n\n[[map-resolver]]', '"[5]0.0.0.0/0"]\n\n[[map-resolver]]'))

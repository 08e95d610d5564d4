"""Whatever arrives, a role either acts or raises MalformedMessage (which the
daemon counts); it never crashes with anything else."""
import random

from hypothesis import HealthCheck, given, settings, strategies as st

from lispctl.mapping.types import EidPrefix, Rloc
from lispctl.roles.ddt import referral_record
from lispctl.wire import (ALG_HMAC_SHA256, NODE_REFERRAL, EncapsulatedControlMessage, InfoReply, InfoRequest,
                          MalformedMessage, MapNotify, MapReferral, MapRegister, MapReply, MapRequest,
                          NatTraversal, eid_record, request_record, sign)

from roles_helpers import MSMR, XTR, A, ep, make

P = EidPrefix.parse
REC = eid_record(P("10.1.0.0/16"), (Rloc(A("192.0.2.1")),))
SEEDS = [
    sign(MapRegister(1, (REC,), key_id=1, alg_id=ALG_HMAC_SHA256, want_map_notify=True), "secret-a"),
    sign(MapNotify(1, (REC,), key_id=1, alg_id=ALG_HMAC_SHA256), "secret-a"),
    MapReply(5, (REC,)).encode(),
    MapRequest(5, (request_record(P("10.1.2.3/32")),), (A("203.0.113.5"),), smr=True).encode(),
    EncapsulatedControlMessage(MapRequest(5, (request_record(P("10.1.2.3/32")),), (A("203.0.113.5"),)),
                               A("203.0.113.5"), A("10.1.2.3"), 5555, 4342).encode(),
    # DDT: a DDT Map-Request, and a referral answering the DDT MR (whose root is the sender)
    EncapsulatedControlMessage(MapRequest(5, (request_record(P("10.1.2.3/32")),), (A("203.0.113.5"),)),
                               A("203.0.113.5"), A("10.1.2.3"), 5555, 4342, ddt=True).encode(),
    MapReferral(5, (referral_record(P("10.0.0.0/8"), NODE_REFERRAL, 1440, (A("192.0.2.9"), A("2001:db8::9"))),
                    referral_record(P("[5]10.1.0.0/16"), NODE_REFERRAL, 0))).encode(),
    # NAT traversal: Info-Request/-Reply, ECM'd Map-Register (to an RTR) and Map-Notify (from one)
    sign(InfoRequest(7, A("10.1.0.0"), 16, 1, ALG_HMAC_SHA256), "secret-a"),
    sign(InfoReply(7, A("10.1.0.0"), 16, NatTraversal(4342, 61000, A("203.0.113.5"), A("192.0.2.1"),
                                                      A("10.0.0.1"), (A("192.0.2.9"),)), 1, ALG_HMAC_SHA256),
         "secret-a"),
    EncapsulatedControlMessage(MapRegister(9, (REC,), key_id=1, alg_id=ALG_HMAC_SHA256, xtr_id=5, site_id=0),
                               A("10.0.0.1"), A("198.51.100.10"), 4341, 4342, to_ms=True).encode(),
    EncapsulatedControlMessage(MapNotify(9, (REC,), key_id=1, alg_id=ALG_HMAC_SHA256),
                               A("198.51.100.10"), A("10.0.0.1"), 4342, 4341).encode(),
]
RTR = """instance = "rtr"
roles = ["rtr"]
[rtr]
map-servers = ["198.51.100.10"]
"""
DDT_NODE = """instance = "ddt"
roles = ["ddt-node"]
[ddt]
authoritative-prefix = ["10.0.0.0/8", "[5]0.0.0.0/0"]
[[ddt.delegation]]
eid-prefix = "10.1.0.0/16"
address = ["192.0.2.9"]
"""
DDT_MR = """instance = "ddt-mr"
roles = ["mr"]
[mr.ddt]
root = ["203.0.113.5"]
"""


def all_roles():
    roles = list(make(XTR.format(alg="hmac-sha256"), wan1=["192.0.2.2"])[1].values())
    roles += [make(XTR.format(alg="hmac-sha256") + "[nat]\nenabled = true\n", wan1=["192.0.2.2"])[1]["nat"]]
    roles += list(make(RTR)[1].values())
    roles += list(make(MSMR.format(roles='["ms", "mr"]'))[1].values())
    roles += list(make(DDT_NODE)[1].values()) + list(make(DDT_MR)[1].values())
    for r in roles:
        r.tick(0.0)
    return roles


ROLES = all_roles()


def feed(data: bytes, now: float) -> None:
    for role in ROLES:
        try:
            role.handle(data, ep("203.0.113.5", 4342), ep("192.0.2.1"), now)
        except MalformedMessage:
            pass
        role.tick(now)
        role.snapshot()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(SEEDS), st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=6),
       st.integers(0, 60))
def test_mutated_messages(seed, flips, cut):
    data = bytearray(seed)
    for pos, val in flips:
        data[pos % len(data)] = val
    feed(bytes(data[:len(data) - cut] if cut < len(data) else data), 1.0)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes(data):
    feed(data, 2.0)

"""LISP-DDT against OOR 1.3 (captures in tests/interop/captures/, see the
README there): OOR's Map-Referrals drive our DDT Map-Resolver, OOR's DDT
Map-Requests get from our DDT node the referrals it got in the capture."""
import dataclasses
from pathlib import Path

from lispctl.capture import Datagram, lisp_datagrams
from lispctl.mapping.types import EidPrefix
from lispctl.wire import (DELEGATION_HOLE, MS_REFERRAL, EncapsulatedControlMessage, MapReferral,
                          decode_control, record_prefix)

from roles_helpers import A, ep, make, sends

CAPTURES = Path(__file__).resolve().parents[1] / "interop" / "captures"
P = EidPrefix.parse

ROOT = """
instance = "root"
roles = ["ddt-node"]
[ddt]
authoritative-prefix = ["10.0.0.0/8"]
[[ddt.delegation]]
eid-prefix = "10.1.0.0/16"
address = ["172.16.2.2"]
[[ddt.delegation]]
eid-prefix = "10.2.0.0/16"
address = ["172.16.2.2"]
[[ddt.delegation]]
eid-prefix = "10.3.0.0/16"
address = ["172.16.3.2"]
"""


def datagrams(name):
    out = [d for d in lisp_datagrams(CAPTURES / name) if isinstance(d, Datagram)]
    assert out
    return out


def test_oor_referrals_decode_and_round_trip():
    refs = [(d, decode_control(d.payload)) for d in datagrams("oor-ddt-node.pcap") if d.src == "172.16.3.2"]
    assert len(refs) == 3
    for d, m in refs:
        assert isinstance(m, MapReferral) and m.encode() == d.payload
    (rec,) = refs[0][1].records
    assert (str(record_prefix(rec)), rec.act, rec.ttl, rec.incomplete, [str(r.address) for r in rec.referrals]) \
        == ("10.3.0.0/24", MS_REFERRAL, 1440, False, ["172.16.13.2"])
    (hole,) = refs[1][1].records
    assert (str(record_prefix(hole)), hole.act, hole.ttl) == ("11.3.4.0/22", DELEGATION_HOLE, 15)


def test_oor_node_drives_our_resolver_and_its_bad_hole_is_refused():
    mr = make('instance = "mr"\nroles = ["mr"]\n[mr.ddt]\nroot = ["172.16.3.2"]\n')[1]["mr"]
    grams = datagrams("oor-ddt-node.pcap")
    ours = [decode_control(d.payload) for d in grams if d.dst == "172.16.3.2"]
    theirs = [d for d in grams if d.src == "172.16.3.2"]
    # the ITR's request behind our first DDT Map-Request, then OOR's MS-REFERRAL
    itr_req = dataclasses.replace(ours[0], ddt=False).encode()
    (s,) = sends(mr.handle(itr_req, ep("172.16.31.2"), ep("172.16.20.2"), 1.0))
    assert s.dst == ep("172.16.3.2") and decode_control(s.payload).ddt
    (s,) = sends(mr.handle(theirs[0].payload, ep("172.16.3.2"), ep("172.16.20.2"), 1.1))
    assert s.dst == ep("172.16.13.2")                  # on to the Map-Server OOR named
    # OOR's hole for 10.3.7.7 names 11.3.4.0/22: not taken, no negative reply to the ITR
    itr_req = dataclasses.replace(ours[1], ddt=False).encode()
    sends(mr.handle(itr_req, ep("172.16.31.2"), ep("172.16.20.2"), 2.0))
    assert sends(mr.handle(theirs[1].payload, ep("172.16.3.2"), ep("172.16.20.2"), 2.1)) == []
    assert mr.counters["map_referral_not_covering"] == 1 and mr.counters["resolution_failed"] == 1
    assert mr.counters["negative_reply_tx"] == 0


def test_oor_ddt_requests_get_the_referrals_of_the_capture():
    root = make(ROOT)[1]["ddt-node"]
    grams = datagrams("oor-ddt-mr.pcap")
    asked = [d for d in grams if d.dst == "172.16.1.2"]
    answered = [d for d in grams if d.src == "172.16.1.2"]
    assert len(asked) == len(answered) == 3
    for req, ref in zip(asked, answered):
        ecm = decode_control(req.payload)
        assert isinstance(ecm, EncapsulatedControlMessage) and ecm.ddt and not ecm.to_etr
        assert ecm.encode() == req.payload
        (s,) = sends(root.handle(req.payload, ep(req.src, req.sport), ep(req.dst), 1.0))
        assert s.dst == ep(req.src, req.sport) and s.payload == ref.payload
    assert [str(record_prefix(decode_control(d.payload).records[0])) for d in answered] == \
        ["10.1.0.0/16", "10.4.0.0/14", "10.2.0.0/16"]


def test_oor_negative_reply_from_our_hole_and_plain_ecm_to_the_map_server():
    grams = datagrams("oor-ddt-mr.pcap")
    (neg,) = [decode_control(d.payload) for d in grams if d.src == "172.16.20.2" and d.dst == "172.16.31.2"]
    (rec,) = neg.records
    assert (str(record_prefix(rec)), rec.ttl, rec.locators) == ("10.4.0.0/14", 15, ())
    plain = [decode_control(d.payload) for d in grams if d.src == "172.16.20.2" and d.dst in ("172.16.11.2",
                                                                                            "172.16.12.2")]
    plain = [m for m in plain if not m.ddt]
    assert plain and all(m.inner_sport == 4342 and m.inner_src == A("172.16.31.2") for m in plain)

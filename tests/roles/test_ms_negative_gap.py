"""Issue 8 items 5, 7, 8 at the Map-Server/Map-Resolver:
negative replies never cover a registered more-specific (8.5), multicast
(S,G) requests get an answer (8.7), truncated MACs are authentication
failures (8.8)."""
import ipaddress

import pytest

from lispctl.mapping.types import EidPrefix, MapAction, Rloc
from lispctl.wire import (ALG_HMAC_SHA1, ALG_HMAC_SHA256, EncapsulatedControlMessage, InstanceId, MapRegister,
                          MapReply, MapRequest, RequestRecord, SourceDestKey, decode_control, eid_record,
                          record_prefix, sign)

from roles_helpers import MSMR, A, ep, make, only_send, sends
from test_mr import HERE, ecm_request, negative

P = EidPrefix.parse


@pytest.fixture
def msmr():
    return make(MSMR.format(roles='["ms", "mr"]'))[1]


def _register(prefix, rloc="192.0.2.1", nonce=1):
    reg = MapRegister(nonce, (eid_record(P(prefix), (Rloc(A(rloc)),), authoritative=True),),
                      key_id=1, alg_id=ALG_HMAC_SHA256, want_map_notify=True)
    return sign(reg, "secret-a")


@pytest.mark.parametrize("roles", ['["ms", "mr"]', '["ms"]'])
def test_negative_reply_never_covers_a_registered_more_specific(roles):
    r = make(MSMR.format(roles=roles))[1]
    ms, answer = r["ms"], r.get("mr", r["ms"])
    ms.handle(_register("10.1.1.0/24"), ep("192.0.2.1"), HERE, 0.0)
    # 10.1.0.0/16 accepts more-specifics; 10.1.1.0/24 is registered
    eid, act, ttl = negative(answer, "10.1.7.7/32")
    assert (eid, act, ttl) == ("10.1.4.0/22", MapAction.SEND_MAP_REQUEST, 1)
    assert not P(eid).prefix.overlaps(P("10.1.1.0/24").prefix)
    assert negative(answer, "10.1.128.1/32")[0] == "10.1.128.0/17"
    assert negative(answer, "10.1.0.9/32")[0] == "10.1.0.0/24"
    # nothing registered inside: the whole configured prefix, as before
    assert negative(answer, "10.2.9.9/32")[0] == "10.2.0.0/16"


def test_negative_gap_follows_registrations_as_they_come_and_go(msmr):
    ms, mr = msmr["ms"], msmr["mr"]
    assert negative(mr, "10.1.7.7/32")[0] == "10.1.0.0/16"
    ms.handle(_register("10.1.7.0/24"), ep("192.0.2.1"), HERE, 0.0)
    assert negative(mr, "10.1.8.1/32")[0] == "10.1.8.0/21"
    ms.tick(1000.0)                                           # expired
    assert negative(mr, "10.1.8.1/32")[0] == "10.1.0.0/16"


def _sg_request(iid=None):
    sg = SourceDestKey(A("2001:db8:1::5"), A("ff0e::1:2"), 128, 128)
    eid = InstanceId(iid, sg) if iid is not None else sg
    req = MapRequest(0x51, (RequestRecord(eid, 128),), (A("203.0.113.5"),))
    return EncapsulatedControlMessage(req, A("2001:db8:1::5"), A("ff0e::1:2"), 50123, 4342), eid


@pytest.mark.parametrize("iid", [None, 0, 7])
@pytest.mark.parametrize("roles", ['["ms", "mr"]', '["ms"]'])
def test_multicast_sg_request_gets_a_negative_reply(roles, iid):
    r = make(MSMR.format(roles=roles))[1]
    ecm, eid = _sg_request(iid)
    effects = []
    for role in r.values():
        effects += role.handle(ecm.encode(), ep("203.0.113.5"), HERE, 1.0)
    s, reply = only_send(effects)
    assert isinstance(reply, MapReply) and reply.nonce == 0x51 and s.dst == ep("203.0.113.5", 50123)
    (rec,) = reply.records
    assert rec.eid == eid and rec.mask_len == 128 and rec.locators == ()
    assert MapAction(rec.act) is MapAction.NATIVELY_FORWARD and rec.ttl == 1


def test_unicast_source_dest_request_is_still_not_answered(msmr):
    sd = SourceDestKey(A("10.9.0.1"), A("10.1.2.3"), 32, 32)
    req = MapRequest(0x52, (RequestRecord(sd, 32),), (A("203.0.113.5"),))
    data = EncapsulatedControlMessage(req, A("203.0.113.5"), A("10.1.2.3"), 50123, 4342).encode()
    assert sends(msmr["mr"].handle(data, ep("203.0.113.5"), HERE, 1.0)) == []


@pytest.mark.parametrize("alg,length", [(ALG_HMAC_SHA1, 12), (ALG_HMAC_SHA256, 16), (ALG_HMAC_SHA1, 0)])
def test_truncated_mac_is_an_authentication_failure(msmr, alg, length):
    ms = msmr["ms"]
    reg = MapRegister(3, (eid_record(P("10.1.0.0/16"), (Rloc(A("192.0.2.1")),), authoritative=True),),
                      key_id=1, alg_id=alg, want_map_notify=True)
    full = sign(reg, "secret-a")
    full_len = {ALG_HMAC_SHA1: 20, ALG_HMAC_SHA256: 32}[alg]
    raw = bytearray(full[:16] + full[16:16 + length] + full[16 + full_len:])
    raw[14:16] = length.to_bytes(2, "big")
    eff = ms.handle(bytes(raw), ep("192.0.2.1"), HERE, 0.0)      # does not raise MalformedMessage
    assert sends(eff) == [] and len(ms.registered) == 0
    assert ms.counters["map_register_bad_auth"] == 1 and ms.counters["map_register_bad_mac_length"] == 1
    (site,) = [s for s in ms.snapshot()["sites"] if s["name"] == "site-a"]
    assert site["bad_auth"] == 1
    (log,) = [e for e in eff if type(e).__name__ == "Log"]
    assert "authentication failed" in log.text and "site-a" in log.text and log.kind == "map-register-auth-failed"

"""Map-Resolver: local MS, forwarding to remote Map-Servers, negative replies."""
import pytest

from lispctl.mapping.types import EidPrefix, MapAction, Rloc
from lispctl.wire import (ALG_HMAC_SHA256, EncapsulatedControlMessage, MapRegister, MapReply, MapRequest,
                          eid_record, record_prefix, request_record, sign)

from roles_helpers import MSMR, A, ep, make, only_send, sends

P = EidPrefix.parse
HERE = ep("198.51.100.10")


def ecm_request(eid, sport=50123, itr="203.0.113.5", iid=0):
    e = EidPrefix(iid, P(eid).prefix)
    req = MapRequest(0x99, (request_record(e),), (A(itr),))
    inner_dst = A(itr) if A(itr).version != e.prefix.version else e.prefix.network_address
    return EncapsulatedControlMessage(req, A(itr), inner_dst, sport, 4342)


def negative(mr, eid, **kw):
    s, reply = only_send(mr.handle(ecm_request(eid, **kw).encode(), ep("203.0.113.5"), HERE, 1.0))
    assert isinstance(reply, MapReply) and reply.nonce == 0x99 and s.dst == ep("203.0.113.5", 50123)
    (rec,) = reply.records
    assert rec.locators == ()
    return str(record_prefix(rec)), MapAction(rec.act), rec.ttl


@pytest.fixture
def msmr():
    return make(MSMR.format(roles='["ms", "mr"]'))[1]


@pytest.mark.parametrize("eid,want", [
    ("10.3.0.1/32", "10.3.0.0/16"),       # between 10.2/16 and the rest of 10/8
    ("10.0.0.1/32", "10.0.0.0/16"),
    ("10.128.0.1/32", "10.128.0.0/9"),
    ("192.0.2.1/32", "128.0.0.0/1"),
    ("10.1.255.255/32", None),            # configured: not this branch
    ("2001:db8:c::1/128", "2001:db8:c::/46"),
    ("2001:db9::1/128", "2001:db9::/32"),
])
def test_negative_reply_for_non_eid_space(msmr, eid, want):
    if want is None:
        assert negative(msmr["mr"], eid)[1] is MapAction.SEND_MAP_REQUEST
        return
    assert negative(msmr["mr"], eid) == (want, MapAction.NATIVELY_FORWARD, 15)


def test_other_instance_id_is_all_non_eid(msmr):
    assert negative(msmr["mr"], "10.1.2.3/32", iid=5) == ("[5]0.0.0.0/0", MapAction.NATIVELY_FORWARD, 15)


def test_negative_reply_for_configured_unregistered(msmr):
    assert negative(msmr["mr"], "10.2.9.9/32") == ("10.2.0.0/16", MapAction.SEND_MAP_REQUEST, 1)
    _, roles = make(MSMR.format(roles='["ms", "mr"]') + '[mr]\nunregistered-action = "drop"\n'
                    'unregistered-ttl-minutes = 2\n')
    assert negative(roles["mr"], "10.2.9.9/32") == ("10.2.0.0/16", MapAction.DROP, 2)


def test_registered_eid_resolved_by_local_ms_once(msmr):
    reg = MapRegister(1, (eid_record(P("10.1.0.0/16"), (Rloc(A("192.0.2.1")),), authoritative=True),),
                      key_id=1, alg_id=ALG_HMAC_SHA256, want_map_notify=True)
    for name in ("ms", "mr"):
        msmr[name].handle(sign(reg, "secret-a"), ep("192.0.2.1"), HERE, 0.0)
    data = ecm_request("10.1.2.3/32").encode()
    # the daemon gives the datagram to both roles; only one may act on it
    effects = msmr["ms"].handle(data, ep("203.0.113.5"), HERE, 1.0) + msmr["mr"].handle(data, ep("203.0.113.5"), HERE, 1.0)
    s, fwd = only_send(effects)
    assert s.dst == ep("192.0.2.1") and fwd.to_etr


def test_forward_to_remote_map_server():
    text = ('instance = "mr"\nroles = ["mr"]\n[[mr.map-server]]\naddress = "198.51.100.20"\n'
            'eid-prefix = ["10.1.0.0/16", "[5]10.0.0.0/8"]\n')
    mr = make(text)[1]["mr"]
    data = ecm_request("10.1.2.3/32").encode()
    s = sends(mr.handle(data, ep("203.0.113.5"), HERE, 1.0))
    assert [(x.dst, x.payload) for x in s] == [(ep("198.51.100.20"), data)]
    data5 = ecm_request("10.7.0.1/32", iid=5).encode()
    assert sends(mr.handle(data5, ep("203.0.113.5"), HERE, 1.0))[0].dst == ep("198.51.100.20")
    # outside all configured prefixes: negative, computed around the forward prefixes
    assert negative(mr, "10.0.0.1/32") == ("10.0.0.0/16", MapAction.NATIVELY_FORWARD, 15)


def test_non_ecm_and_garbage_are_not_mr_business(msmr):
    req = MapRequest(1, (request_record(P("10.1.2.3/32")),), (A("203.0.113.5"),))
    assert msmr["mr"].handle(req.encode(), ep("203.0.113.5"), HERE, 1.0) == []
    from lispctl.wire import MalformedMessage
    with pytest.raises(MalformedMessage):
        msmr["mr"].handle(b"\x80\x00", ep("203.0.113.5"), HERE, 1.0)

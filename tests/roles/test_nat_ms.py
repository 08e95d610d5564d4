"""Map-Server answers Info-Requests (draft-ietf-lisp-nat-traversal): Info-Reply
with what it saw, its own RLOC, the xTR's private address and its RTRs."""
import pytest

from lispctl.wire import (ALG_HMAC_SHA1, ALG_HMAC_SHA256, NO_ADDRESS, InfoReply, InfoRequest,
                          NatTraversal, sign, verify)

from roles_helpers import MSMR, A, ep, make, only_send, sends

MS_RLOC = ep("198.51.100.10", 4342)
NAT_SIDE = ep("203.0.113.7", 61001)          # the NAT's public address and port


def ms_with(rtrs='["198.51.100.20", "2001:db8:ff::20", "198.51.100.21"]'):
    text = MSMR.format(roles='["ms"]').replace(
        "[[site]]", f"[ms]\nrtr-rlocs = {rtrs}\n\n[[site]]", 1)
    return make(text)[1]["ms"]


def info_request(prefix="10.1.0.0", mask=16, key="secret-a", key_id=1, alg=ALG_HMAC_SHA256,
                 nonce=0x1122334455667788, private=A("192.168.1.10"), ttl=3):
    return sign(InfoRequest(nonce, A(prefix), mask, key_id, alg, ttl=ttl,
                            address=private if private is not None else NO_ADDRESS), key)


@pytest.mark.parametrize("alg", [ALG_HMAC_SHA1, ALG_HMAC_SHA256])
def test_info_reply_reports_what_the_ms_saw(alg):
    ms = ms_with()
    send, reply = only_send(ms.handle(info_request(alg=alg), NAT_SIDE, MS_RLOC, 10.0))
    assert isinstance(reply, InfoReply)
    assert send.dst == NAT_SIDE and send.src.addr == MS_RLOC.addr
    assert reply.nonce == 0x1122334455667788 and reply.key_id == 1 and reply.alg_id == alg
    assert (reply.eid_prefix, reply.eid_mask_len, reply.ttl) == (A("10.1.0.0"), 16, 3)
    assert reply.nat == NatTraversal(4342, 61001, A("203.0.113.7"), A("198.51.100.10"),
                                     A("192.168.1.10"), (A("198.51.100.20"), A("198.51.100.21")))
    assert verify(send.payload, "secret-a")
    assert ms.counters["info_reply_tx"] == 1


def test_private_address_absent_gives_afi_0_and_no_rtrs_configured():
    ms = make(MSMR.format(roles='["ms"]'))[1]["ms"]
    _, reply = only_send(ms.handle(info_request(private=None), NAT_SIDE, MS_RLOC, 1.0))
    assert reply.nat.private_etr_rloc is NO_ADDRESS and reply.nat.rtr_rlocs == ()


def test_ipv6_request_gets_ipv6_rtrs_only():
    ms = ms_with()
    src, dst = ep("2001:db8:1::5", 4341), ep("2001:db8::10", 4342)
    req = info_request("2001:db8:b::", 48, key="secret-b", private=None)
    _, reply = only_send(ms.handle(req, src, dst, 1.0))
    assert reply.nat.rtr_rlocs == (A("2001:db8:ff::20"),) and reply.nat.etr_port == 4341


@pytest.mark.parametrize("kw,counter", [
    (dict(key="wrong"), "info_request_bad_auth"),
    (dict(key_id=9), "info_request_bad_auth"),
    (dict(prefix="10.9.0.0"), "info_request_bad_prefix"),
    (dict(prefix="10.1.0.0", mask=8), "info_request_bad_prefix"),   # wider than the site
])
def test_unauthenticated_or_foreign_request_is_dropped_and_counted(kw, counter):
    ms = ms_with()
    assert sends(ms.handle(info_request(**kw), NAT_SIDE, MS_RLOC, 1.0)) == []
    assert ms.counters[counter] == 1 and ms.counters["info_reply_tx"] == 0


def test_unsigned_request_is_dropped():
    ms = ms_with()
    raw = InfoRequest(5, A("10.1.0.0"), 16, 1, 0).encode()
    assert sends(ms.handle(raw, NAT_SIDE, MS_RLOC, 1.0)) == []
    assert ms.counters["info_request_bad_auth"] == 1


def test_request_on_wildcard_address_is_not_answered():
    ms = ms_with()
    assert sends(ms.handle(info_request(), NAT_SIDE, ep("0.0.0.0"), 1.0)) == []
    assert ms.counters["info_request_no_local_address"] == 1


def test_msmr_answers_too():
    ms = make(MSMR.format(roles='["ms", "mr"]'))[1]["ms"]
    _, reply = only_send(ms.handle(info_request(), NAT_SIDE, MS_RLOC, 1.0))
    assert isinstance(reply, InfoReply)


def test_info_requests_are_rate_limited_per_source():
    ms = ms_with()
    raw = info_request()
    answered = sum(len(sends(ms.handle(raw, NAT_SIDE, MS_RLOC, 5.0))) for _ in range(500))
    assert 0 < answered < 500
    assert ms.counters["info_request_rate_limited"] == 500 - answered
    # another source still gets its answer
    assert sends(ms.handle(raw, ep("203.0.113.8", 1234), MS_RLOC, 5.0))

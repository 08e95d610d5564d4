"""ETR as a reflector (issue 9.3): answers are rate-limited per ITR-RLOC and
overall, never sent to multicast/broadcast/unspecified ITR-RLOCs, nor to
loopback from outside; every refusal is counted."""
import pytest

from lispctl.mapping.types import EidPrefix
from lispctl.wire import MapReply, MapRequest, request_record

from roles_helpers import XTR, A, ep, make, sends

ME = ep("192.0.2.1")


def req(itr="203.0.113.5", nonce=1):
    return MapRequest(nonce, (request_record(EidPrefix.parse("10.1.2.3/32")),), (A(itr),)).encode()


@pytest.fixture
def etr():
    _, roles = make(XTR.format(alg="hmac-sha256") + "[etr]\nmap-reply-rate-per-itr = 10\nmap-reply-rate = 50\n",
                    wan1=["192.0.2.2"])
    return roles["etr"]


def test_flood_from_one_itr_is_answered_at_the_per_itr_rate(etr):
    answered = 0
    for i in range(2000):                                  # 1000 requests/s for 2 s
        answered += len(sends(etr.handle(req(nonce=i), ep("203.0.113.5"), ME, 1.0 + i / 1000)))
    assert 20 <= answered <= 20 + 2 * 10 + 1             # a burst of 2x the rate, then 10/s
    assert etr.counters["map_request_rate_limited_per_source"] == 2000 - answered
    # another ITR is not starved by the first one's flood
    assert len(sends(etr.handle(req("203.0.113.77"), ep("203.0.113.77"), ME, 3.0))) == 1


def test_flood_from_many_itrs_is_capped_overall(etr):
    answered = 0
    for i in range(4000):                                  # 2000/s, each from another address
        itr = f"203.0.{(i >> 8) & 255}.{i & 255}"
        answered += len(sends(etr.handle(req(itr, i), ep(itr), ME, 1.0 + i / 2000)))
    assert 50 <= answered <= 50 + 2 * 50 + 1
    assert etr.counters["map_request_rate_limited_overall"] == 4000 - answered


@pytest.fixture
def plain():
    return make(XTR.format(alg="hmac-sha256"), wan1=["192.0.2.2"])[1]["etr"]


@pytest.mark.parametrize("itr", ["224.0.0.1", "255.255.255.255", "0.0.0.0", "ff02::1", "::", "127.0.0.1", "::1"])
def test_never_reflects_to_group_unspecified_or_outside_loopback(plain, itr):
    etr = plain
    assert sends(etr.handle(req(itr), ep("203.0.113.5"), ME, 1.0)) == []
    assert etr.counters["map_request_bad_itr_rloc"] == 1 and etr.counters["map_request_no_itr_rloc"] == 1


def test_good_itr_rloc_after_a_bad_one_is_answered(etr):
    m = MapRequest(5, (request_record(EidPrefix.parse("10.1.2.3/32")),), (A("224.0.0.1"), A("203.0.113.5")))
    (s,) = sends(etr.handle(m.encode(), ep("203.0.113.5"), ME, 1.0))
    assert s.dst == ep("203.0.113.5") and isinstance(__import__("lispctl.wire", fromlist=["x"]).decode_control(
        s.payload), MapReply)


def test_loopback_itr_rloc_from_loopback_is_answered(etr):
    assert len(sends(etr.handle(req("127.0.0.1"), ep("127.0.0.1"), ep("127.0.0.1"), 1.0))) == 1

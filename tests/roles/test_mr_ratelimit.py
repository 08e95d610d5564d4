"""Issue 9.2 (sans-IO part): the Map-Resolver / Map-Server answer ECM'd
Map-Requests at a bounded rate, per requesting address and overall; a flood
from one address does not take the answers of the others."""
import pytest

from lispctl.roles.base import Log
from lispctl.roles.ratelimit import OVERALL, PER_KEY, RateLimiter
from lispctl.wire import MapReply, decode_control

from roles_helpers import MSMR, ep, make, sends
from test_mr import HERE, ecm_request

FLOODER, LEGIT = ep("203.0.113.66"), ep("203.0.113.5")


def test_bucket_per_key_then_overall():
    rl = RateLimiter(10, 15)
    assert [rl.allow("a", 0.0) for _ in range(12)] == [None] * 10 + [PER_KEY] * 2
    assert [rl.allow("b", 0.0) for _ in range(6)] == [None] * 5 + [OVERALL]
    assert rl.allow("a", 0.1) is None               # refilled 1 token (per key 10/s)
    assert rl.allow("a", 0.1) == PER_KEY
    assert RateLimiter(0, 0).allow("x", 0.0) is None  # 0: no limit


def test_key_table_is_bounded():
    rl = RateLimiter(1, 0, max_keys=100)
    for i in range(1000):
        rl.allow(i, 0.0)
    assert len(rl._keys) <= 100


@pytest.mark.parametrize("roles,who", [('["ms", "mr"]', "mr"), ('["ms"]', "ms")])
def test_flood_from_one_source_leaves_the_others_answered(roles, who):
    role = make(MSMR.format(roles=roles) + "[mr]\nrequest-rate-per-source = 50\nrequest-rate = 1000\n")[1][who]
    flood = ecm_request("10.200.0.1/32", itr="203.0.113.66").encode()
    legit = ecm_request("10.200.0.2/32").encode()
    answered = {"flood": 0, "legit": 0}
    t = 0.0
    for i in range(20000):                       # 20k/s for 1 s from the flooder
        t = i / 20000
        answered["flood"] += len(sends(role.handle(flood, FLOODER, HERE, t)))
        if i % 500 == 0:                         # 40/s legitimate requests from another address
            effects = role.handle(legit, LEGIT, HERE, t)
            (s,) = sends(effects)
            assert isinstance(decode_control(s.payload), MapReply)
            answered["legit"] += 1
    assert answered["legit"] == 40
    assert 50 <= answered["flood"] <= 50 + 50 + 1          # burst + 1 s at 50/s
    assert role.counters["map_request_rate_limited_source"] == 20000 - answered["flood"]


def test_overall_limit_caps_many_sources():
    role = make(MSMR.format(roles='["ms", "mr"]') + "[mr]\nrequest-rate-per-source = 0\nrequest-rate = 100\n")[1]["mr"]
    data = ecm_request("10.200.0.1/32").encode()
    n = sum(len(sends(role.handle(data, ep(f"203.0.113.{i % 250 + 1}"), HERE, 0.0))) for i in range(1000))
    assert n == 100 and role.counters["map_request_rate_limited_total"] == 900


def test_refusals_are_logged_with_a_kind_for_the_daemon_to_summarise():
    role = make(MSMR.format(roles='["ms", "mr"]') + "[mr]\nrequest-rate-per-source = 1\n")[1]["mr"]
    data = ecm_request("10.200.0.1/32").encode()
    role.handle(data, FLOODER, HERE, 0.0)
    (log,) = role.handle(data, FLOODER, HERE, 0.0)
    assert isinstance(log, Log) and log.kind == "map-request-rate-limited-per-source" and log.peer == FLOODER.addr

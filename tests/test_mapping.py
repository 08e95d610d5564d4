"""LPM table, local database, map-cache TTL and usage bookkeeping."""
import ipaddress
import random

from hypothesis import given, settings, strategies as st

from lispctl.mapping.cache import MapCache
from lispctl.mapping.database import LocalDatabase, LocalMapping
from lispctl.mapping.lpm import LpmTable, least_specific_uncovered
from lispctl.mapping.types import EidPrefix, MapAction, Rloc

P = EidPrefix.parse
A = ipaddress.ip_address
R1 = (Rloc(A("192.0.2.1")),)


def table(*prefixes):
    t = LpmTable()
    for i, p in enumerate(prefixes):
        t.insert(P(p), i)
    return t


def test_lpm_longest_wins_and_families_and_iids_are_separate():
    t = table("10.0.0.0/8", "10.1.0.0/16", "10.1.2.0/24", "[7]10.1.2.0/24", "2001:db8::/32", "0.0.0.0/0")
    assert t.lookup(0, A("10.1.2.3"))[0] == P("10.1.2.0/24")
    assert t.lookup(0, A("10.1.3.3"))[0] == P("10.1.0.0/16")
    assert t.lookup(0, A("10.9.3.3"))[0] == P("10.0.0.0/8")
    assert t.lookup(0, A("192.0.2.1"))[0] == P("0.0.0.0/0")
    assert t.lookup(7, A("10.1.2.9"))[0] == P("[7]10.1.2.0/24")
    assert t.lookup(7, A("10.1.3.9")) is None
    assert t.lookup(0, A("2001:db8::1"))[0] == P("2001:db8::/32")
    assert t.lookup(0, A("2001:db9::1")) is None        # ::/0 is not 0.0.0.0/0


def test_lpm_remove_and_exact_get():
    t = table("10.0.0.0/8", "10.1.0.0/16")
    assert t.get(P("10.1.0.0/16")) == 1 and len(t) == 2
    assert t.remove(P("10.1.0.0/16")) == 1 and t.remove(P("10.1.0.0/16")) is None
    assert t.lookup(0, A("10.1.0.1"))[0] == P("10.0.0.0/8") and len(t) == 1


def test_lpm_covering_and_more_specifics():
    t = table("10.0.0.0/8", "10.1.0.0/16", "10.1.2.0/24", "10.2.0.0/16")
    assert [k for k, _ in t.covering(P("10.1.2.0/24"))] == [P("10.1.2.0/24"), P("10.1.0.0/16"), P("10.0.0.0/8")]
    assert sorted(k for k, _ in t.more_specifics(P("10.1.0.0/16"))) == [P("10.1.0.0/16"), P("10.1.2.0/24")]
    assert t.more_specifics(P("10.3.0.0/16")) == []
    assert t.longest_covering(P("10.1.0.0/20"))[0] == P("10.1.0.0/16")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 32)), max_size=30),
       st.integers(0, 2**32 - 1))
def test_lpm_matches_brute_force(prefixes, probe):
    nets = {ipaddress.IPv4Network((a >> (32 - n) << (32 - n) if n else 0, n)) for a, n in prefixes}
    t = LpmTable()
    for n in nets:
        t.insert(EidPrefix(0, n), n)
    addr = ipaddress.IPv4Address(probe)
    want = max((n for n in nets if addr in n), key=lambda n: n.prefixlen, default=None)
    got = t.lookup(0, addr)
    assert (got[1] if got else None) == want


def test_least_specific_uncovered():
    t = table("10.1.0.0/16", "10.128.0.0/9", "[5]192.168.0.0/16", "2001:db8:a::/48")
    # 10.2.3.3: /14 would hold 10.1/16, /15 does not.
    assert least_specific_uncovered(0, A("10.2.3.3"), t) == P("10.2.0.0/15")
    assert least_specific_uncovered(0, A("10.0.0.1"), t) == P("10.0.0.0/16")
    assert least_specific_uncovered(0, A("192.0.2.1"), t) == P("128.0.0.0/1")
    assert least_specific_uncovered(0, A("10.200.0.1"), t) is None
    assert least_specific_uncovered(0, A("10.1.5.5"), t) is None          # configured
    assert least_specific_uncovered(5, A("10.1.5.5"), t) == P("[5]0.0.0.0/1")   # other iid
    assert least_specific_uncovered(0, A("2001:db8:b::1"), t) == P("2001:db8:b::/48")
    assert least_specific_uncovered(0, A("2001:db9::1"), t) == P("2001:db9::/32")


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2**32 - 1), st.integers(1, 32)), min_size=1, max_size=10),
       st.integers(0, 2**32 - 1))
def test_least_specific_uncovered_is_maximal_and_disjoint(prefixes, probe):
    nets = [ipaddress.IPv4Network((a >> (32 - n) << (32 - n), n)) for a, n in prefixes]
    t = LpmTable()
    for n in nets:
        t.insert(EidPrefix(0, n), None)
    addr = ipaddress.IPv4Address(probe)
    got = least_specific_uncovered(0, addr, t)
    if any(addr in n for n in nets):
        assert got is None
        return
    assert addr in got.prefix
    assert not any(got.prefix.overlaps(n) for n in nets)
    if got.prefix.prefixlen:
        wider = got.prefix.supernet()
        assert any(wider.overlaps(n) for n in nets)


def test_database():
    db = LocalDatabase([LocalMapping(P("10.1.0.0/16"), R1)])
    assert db.lookup(0, A("10.1.9.9")).eid == P("10.1.0.0/16")
    assert db.match(P("10.1.2.0/24")).eid == P("10.1.0.0/16")
    assert db.match(P("10.0.0.0/8")) is None
    assert db.set(LocalMapping(P("10.1.0.0/16"), R1)) is False
    assert db.set(LocalMapping(P("10.1.0.0/16"), (Rloc(A("192.0.2.2")),))) is True
    assert db.rlocs() == [A("192.0.2.2")]
    assert db.snapshot()[0]["rlocs"][0]["address"] == "192.0.2.2"


def test_cache_ttl_expiry_and_replacement():
    c = MapCache()
    c.install(P("10.1.0.0/16"), R1, MapAction.NO_ACTION, 60, now=100)
    c.install(P("10.2.0.0/16"), (), MapAction.NATIVELY_FORWARD, 900, now=100)
    c.install(P("10.3.0.0/16"), R1, MapAction.NO_ACTION, None, now=100, source="static")
    assert c.next_expiry() == 160
    assert c.expire(159.9) == []
    # a refresh at 150 moves the expiry; the old timer must not remove it
    c.install(P("10.1.0.0/16"), R1, MapAction.NO_ACTION, 60, now=150)
    assert c.expire(160) == [] and c.next_expiry() == 210
    gone = c.expire(1000)
    assert [e.eid for e in gone] == [P("10.1.0.0/16"), P("10.2.0.0/16")]
    assert len(c) == 1 and c.get(P("10.3.0.0/16")).static
    assert c.next_expiry() is None


def test_cache_usage_survives_refresh_and_snapshot():
    c = MapCache()
    c.install(P("10.1.0.0/16"), R1, MapAction.NO_ACTION, 60, now=0)
    assert c.mark_used(P("10.1.2.3/32"), now=10)          # host inside the prefix
    assert not c.mark_used(P("10.9.0.0/16"), now=10)
    c.install(P("10.1.0.0/16"), R1, MapAction.NO_ACTION, 60, now=20)
    e = c.get(P("10.1.0.0/16"))
    assert e.last_used == 10
    snap = c.snapshot(now=30)[0]
    assert snap["ttl_left_s"] == 50 and snap["last_used_s_ago"] == 20 and snap["negative"] is False


def test_cache_random_against_model():
    rng = random.Random(5)
    c, model = MapCache(), {}
    now = 0.0
    for _ in range(500):
        now += rng.random() * 5
        eid = EidPrefix(0, ipaddress.IPv4Network((rng.randrange(16) << 24, 8)))
        if rng.random() < 0.6:
            ttl = rng.choice([1, 5, 20, None])
            c.install(eid, R1, MapAction.NO_ACTION, ttl, now)
            model[eid] = None if ttl is None else now + ttl
        else:
            c.remove(eid)
            model.pop(eid, None)
        gone = {e.eid for e in c.expire(now)}
        want = {k for k, v in model.items() if v is not None and v <= now}
        assert gone == want
        for k in want:
            del model[k]
        assert {e.eid for e in c.entries()} == set(model)

"""ETR/ITR reconfigure (lispctl reload): what a changed database, Map-Server
list, Map-Resolver list and static map-cache make the roles do."""
from lispctl.config import loads
from lispctl.mapping.types import EidPrefix
from lispctl.wire import MapRegister, MapRequest, decode_control, record_prefix, request_record, verify

from roles_helpers import XTR, A, ep, installs, make, removes, sends

MS = ep("198.51.100.10")
BASE = XTR.format(alg="hmac-sha256")


def _msgs(effects):
    return [(s.dst, decode_control(s.payload), s.payload) for s in sends(effects)]


def _started(text=BASE):
    cfg, roles = make(text, wan1=["192.0.2.2"])
    etr, itr = roles["etr"], roles["itr"]
    etr.tick(0.0)
    itr.tick(0.0)
    # an ITR asks for our mapping: it becomes an SMR target
    req = MapRequest(7, (request_record(EidPrefix.parse("10.1.2.3/32")),), (A("203.0.113.5"),),
                     source_eid=A("10.9.0.1"))
    etr.handle(req.encode(), ep("203.0.113.5"), ep("192.0.2.1"), 1.0)
    return cfg, etr, itr


def test_weight_change_registers_and_smrs_at_once():
    _, etr, itr = _started()
    new = loads(BASE.replace("weight = 60", "weight = 30"))
    msgs = _msgs(etr.reconfigure(new, 5.0))
    regs = [(d, m) for d, m, _ in msgs if isinstance(m, MapRegister)]
    smrs = [(d, m) for d, m, _ in msgs if isinstance(m, MapRequest) and m.smr]
    assert [d for d, _ in regs] == [MS]
    assert [(str(l.address), l.weight) for l in regs[0][1].records[0].locators] == [("192.0.2.1", 30),
                                                                                    ("192.0.2.2", 40)]
    assert [d for d, _ in smrs] == [ep("203.0.113.5")]       # (its content: tests/roles/test_etr.py)
    # the ITR shares the site: nothing for it to do, but it follows the new config
    assert itr.reconfigure(new, 5.0) == []
    assert itr.cfg is new and etr.site.cfg is new
    # nothing changed: nothing sent
    assert etr.reconfigure(new, 6.0) == []


def test_removed_prefix_is_deregistered_added_one_registered():
    text = BASE + '\n[[database]]\neid-prefix = "10.7.0.0/24"\n[[database.locator]]\naddress = "192.0.2.1"\n'
    _, etr, _ = _started(text)
    new_text = BASE.replace('eid-prefix = "10.1.0.0/16"', 'eid-prefix = "10.8.0.0/24"')
    msgs = _msgs(etr.reconfigure(loads(new_text), 5.0))
    regs = [(m, raw) for _, m, raw in msgs if isinstance(m, MapRegister)]
    dereg = [m for m, _ in regs if all(r.ttl == 0 for r in m.records)]
    assert sorted(str(record_prefix(r)) for m in dereg for r in m.records) == ["10.1.0.0/16", "10.7.0.0/24"]
    assert all(verify(raw, "secret-a") for _, raw in regs)
    live = [m for m, _ in regs if m not in dereg]
    assert [str(record_prefix(r)) for r in live[-1].records] == ["10.8.0.0/24"]
    assert [str(e) for e in etr.site.eids()] == ["10.8.0.0/24"]


def test_new_map_server_alone_is_registered_with():
    _, etr, _ = _started()
    new = loads(BASE.replace('[[map-resolver]]', '[[map-server]]\naddress = "198.51.100.20"\nkey = "k2"\n\n'
                             '[[map-resolver]]'))
    msgs = _msgs(etr.reconfigure(new, 5.0))
    assert [(d, type(m).__name__) for d, m, _ in msgs] == [(ep("198.51.100.20"), "MapRegister")]
    assert verify(msgs[0][2], "k2")
    # the key of the first one changes: a fresh state, registered at once
    newer = loads(BASE.replace('key = "secret-a"', 'key = "rotated"'))
    msgs = _msgs(etr.reconfigure(newer, 6.0))
    assert [d for d, _, _ in msgs] == [MS] and verify(msgs[0][2], "rotated")
    assert [str(m["address"]) for m in etr.snapshot()["map_servers"]] == ["198.51.100.10"]


def test_itr_resolvers_and_static_map_cache():
    text = BASE + ('\n[[map-cache]]\neid-prefix = "10.99.0.0/16"\n[[map-cache.locator]]\naddress = "203.0.113.9"\n'
                   '\n[[map-cache]]\neid-prefix = "10.98.0.0/16"\naction = "drop"\n')
    _, _, itr = _started(text)
    assert all(itr.cache.get(EidPrefix.parse(p)) for p in ("10.99.0.0/16", "10.98.0.0/16"))
    new_text = (BASE.replace('[[map-resolver]]\naddress = "198.51.100.10"', '[[map-resolver]]\naddress = "198.51.100.30"')
                + '\n[[map-cache]]\neid-prefix = "10.99.0.0/16"\n[[map-cache.locator]]\naddress = "203.0.113.10"\n'
                + '\n[[map-cache]]\neid-prefix = "10.97.0.0/16"\naction = "natively-forward"\n')
    effects = itr.reconfigure(loads(new_text), 5.0)
    assert [str(r.eid) for r in removes(effects)] == ["10.98.0.0/16"]
    assert sorted((str(i.eid), [str(r.address) for r in i.rlocs]) for i in installs(effects)) == [
        ("10.97.0.0/16", []), ("10.99.0.0/16", ["203.0.113.10"])]
    assert [str(a) for a in itr.resolvers] == ["198.51.100.30"]
    assert itr.cache.get(EidPrefix.parse("10.98.0.0/16")) is None


def _register(ms, eid: str, key: str, now: float, src="192.0.2.1"):
    from lispctl.mapping.types import Rloc
    from lispctl.wire import MapRegister, eid_record, rloc_to_locator, sign
    rec = eid_record(EidPrefix.parse(eid), (rloc_to_locator(Rloc(A(src), 1, 100), local=True),), ttl=10)
    msg = MapRegister(now_nonce(now), (rec,), key_id=1, alg_id=2, want_map_notify=True)
    return ms.handle(sign(msg, key), ep(src), ep("198.51.100.10"), now)


def now_nonce(now: float) -> int:
    return int(now * 1000) + 1


def test_map_server_sites_keep_what_they_still_accept():
    from roles_helpers import MSMR
    _, roles = make(MSMR.format(roles='["ms", "mr"]'))
    ms = roles["ms"]
    assert sends(_register(ms, "10.1.5.0/24", "secret-a", 1.0))           # more specific of site-a
    assert sends(_register(ms, "10.2.0.0/16", "secret-b", 1.0, src="192.0.2.2"))
    # site-a: the prefix stays but more specifics are no longer accepted; site-b: now 10.3.0.0/16
    new = (MSMR.format(roles='["ms", "mr"]').replace("accept-more-specifics = true\n", "")
           .replace('prefix = "10.2.0.0/16"', 'prefix = "10.3.0.0/16"'))
    cfg = loads(new)
    ms.reconfigure(cfg, 2.0)
    snap = {s["name"]: s for s in ms.snapshot()["sites"]}
    assert [p["registrations"] for p in snap["site-a"]["eid_prefixes"]] == [[]]
    assert [p["prefix"] for p in snap["site-b"]["eid_prefixes"]] == ["10.3.0.0/16", "2001:db8:b::/48"]
    assert ms.counters["registration_dropped_by_reload"] == 2
    assert snap["site-a"]["registers"] == 1                                # counters kept by name
    # the new configuration authenticates and accepts from now on
    assert sends(_register(ms, "10.3.0.0/16", "secret-b", 3.0, src="192.0.2.2"))
    assert not sends(_register(ms, "10.1.5.0/24", "secret-a", 3.0))       # more specific refused now
    # a registration the new config still accepts stays
    assert sends(_register(ms, "10.1.0.0/16", "secret-a", 4.0))
    ms.reconfigure(loads(new.replace('secret-a', 'rotated')), 5.0)
    snap = {s["name"]: s for s in ms.snapshot()["sites"]}
    assert [r["eid"] for r in snap["site-a"]["eid_prefixes"][0]["registrations"]] == ["10.1.0.0/16"]

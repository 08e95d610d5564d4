"""LISP-DDT (RFC 8111): DDT node and Map-Server referrals, and the DDT
Map-Resolver walking a tree of real (sans-IO) roles wired by a tiny in-memory
network."""
import dataclasses

import pytest

from lispctl.mapping.types import EidPrefix, MapAction, Rloc
from lispctl.roles.base import Endpoint, Send
from lispctl.wire import (ALG_HMAC_SHA256, DELEGATION_HOLE, MS_ACK, MS_NOT_REGISTERED, MS_REFERRAL,
                          NODE_REFERRAL, NOT_AUTHORITATIVE, EncapsulatedControlMessage, MapReferral,
                          MapRegister, MapReply, MapRequest, decode_control, eid_record, record_prefix,
                          request_record, sign)

from roles_helpers import A, ep, make, only_send, sends

P = EidPrefix.parse
ITR = "203.0.113.5"
MR = "192.0.2.100"

ROOT = """
instance = "root"
roles = ["ddt-node"]
[ddt]
authoritative-prefix = ["10.0.0.0/8", "[7]0.0.0.0/0", "2001:db8::/32"]
[[ddt.delegation]]
eid-prefix = "10.1.0.0/16"
address = ["192.0.2.11", "192.0.2.12"]
[[ddt.delegation]]
eid-prefix = "10.2.0.0/16"
type = "map-server"
address = ["192.0.2.23"]
[[ddt.delegation]]
eid-prefix = "[7]10.0.0.0/8"
type = "map-server"
address = ["192.0.2.23"]
"""

NODE = """
instance = "node"
roles = ["ddt-node"]
[ddt]
authoritative-prefix = ["10.1.0.0/16"]
[[ddt.delegation]]
eid-prefix = "10.1.1.0/24"
type = "map-server"
address = ["192.0.2.21", "192.0.2.22"]
"""

MS = """
instance = "{name}"
roles = ["ms"]
[ddt]
authoritative-prefix = ["{auth}"]
[[site]]
name = "s"
keys = {{ 1 = "k" }}
[[site.eid-prefix]]
prefix = "{site}"
proxy-reply = {proxy}
"""

DDT_MR = f"""
instance = "mr"
roles = ["mr"]
[mr.ddt]
root = ["192.0.2.1"]
request-timeout = 1.0
"""


def request(eid, nonce=0x99, ddt=True, sport=50123):
    e = P(eid)
    req = MapRequest(nonce, (request_record(e),), (A(ITR),))
    dst = e.prefix.network_address if e.prefix.version == 4 else A("192.0.2.250")
    return EncapsulatedControlMessage(req, A(ITR), dst, sport, 4342, ddt=ddt)


def referral_of(role, eid, **kw):
    s, msg = only_send(role.handle(request(eid, **kw).encode(), ep(MR), ep("192.0.2.1"), 1.0))
    assert isinstance(msg, MapReferral) and msg.nonce == 0x99 and s.dst == ep(MR)
    (rec,) = msg.records
    return (str(record_prefix(rec)), rec.act, rec.ttl, rec.incomplete,
            [str(r.address) for r in rec.referrals])


def register(ms, prefix, rloc="198.51.100.1", proxy=False, now=0.0):
    rec = eid_record(P(prefix), (Rloc(A(rloc)),), ttl=1440, authoritative=True)
    ms.handle(sign(MapRegister(1, (rec,), key_id=1, alg_id=ALG_HMAC_SHA256, proxy_reply=proxy), "k"),
              ep(rloc), ep("192.0.2.21"), now)


@pytest.fixture
def root():
    return make(ROOT)[1]["ddt-node"]


# ------------------------------------------------------------------ DDT node

@pytest.mark.parametrize("eid,want", [
    ("10.1.2.3/32", ("10.1.0.0/16", NODE_REFERRAL, 1440, False, ["192.0.2.11", "192.0.2.12"])),
    ("10.2.9.9/32", ("10.2.0.0/16", MS_REFERRAL, 1440, False, ["192.0.2.23"])),
    ("[7]10.9.9.9/32", ("[7]10.0.0.0/8", MS_REFERRAL, 1440, False, ["192.0.2.23"])),
    # holes: the least specific prefix inside 10/8 around the EID clear of every delegation
    ("10.3.0.1/32", ("10.3.0.0/16", DELEGATION_HOLE, 15, False, [])),
    ("10.128.0.1/32", ("10.128.0.0/9", DELEGATION_HOLE, 15, False, [])),
    ("[7]192.0.2.1/32", ("[7]128.0.0.0/1", DELEGATION_HOLE, 15, False, [])),
    ("2001:db8:5::1/128", ("2001:db8::/32", DELEGATION_HOLE, 15, False, [])),
    # outside: the requested EID itself, TTL 0, I bit
    ("192.0.2.1/32", ("192.0.2.1/32", NOT_AUTHORITATIVE, 0, True, [])),
    ("[8]10.1.2.3/32", ("[8]10.1.2.3/32", NOT_AUTHORITATIVE, 0, True, [])),
])
def test_ddt_node_referrals(root, eid, want):
    assert referral_of(root, eid) == want


def test_ddt_node_referral_a_bit_and_wire(root):
    s, msg = only_send(root.handle(request("10.1.2.3/32").encode(), ep(MR, 61000), ep("192.0.2.1"), 1.0))
    assert s.dst == ep(MR, 61000)                     # to the ECM's source port
    assert msg.records[0].authoritative
    assert msg.encode() == s.payload


def test_ddt_node_ignores_non_ddt_and_garbage(root):
    assert root.handle(request("10.1.2.3/32", ddt=False).encode(), ep(ITR), ep("192.0.2.1"), 1.0) == []
    assert root.counters["map_request_not_ddt"] == 1
    assert root.handle(MapReply(1, ()).encode(), ep(ITR), ep("192.0.2.1"), 1.0) == []


def test_ddt_node_rate_limit():
    _, roles = make(ROOT.replace("[ddt]\n", "[ddt]\nmax-referral-rate = 3\n"))
    node = roles["ddt-node"]
    sent = [len(sends(node.handle(request("10.1.2.3/32", nonce=i).encode(), ep(MR), ep("192.0.2.1"), 5.0)))
            for i in range(5)]
    assert sent == [1, 1, 1, 0, 0] and node.counters["rate_limited"] == 2
    assert sends(node.handle(request("10.1.2.3/32").encode(), ep(MR), ep("192.0.2.1"), 5.5))   # refilled


# ------------------------------------------------------------------ Map-Server

@pytest.fixture
def ms():
    return make(MS.format(name="ms", auth="10.1.1.0/24", site="10.1.1.0/26", proxy="false"))[1]["ms"]


def test_ms_ack_and_forward_to_etr(ms):
    register(ms, "10.1.1.0/26")
    eff = ms.handle(request("10.1.1.5/32").encode(), ep(MR), ep("192.0.2.21"), 1.0)
    out = {s.dst.addr: decode_control(s.payload) for s in sends(eff)}
    fwd = out[A("198.51.100.1")]
    assert isinstance(fwd, EncapsulatedControlMessage) and fwd.to_etr and not fwd.ddt
    assert fwd.message.nonce == 0x99 and fwd.message.itr_rlocs == (A(ITR),)
    ref = out[A(MR)]
    assert isinstance(ref, MapReferral) and ref.nonce == 0x99
    (rec,) = ref.records
    assert (str(record_prefix(rec)), rec.act, rec.ttl, rec.incomplete) == ("10.1.1.0/26", MS_ACK, 1440, True)


def test_ms_ack_with_proxy_reply():
    ms = make(MS.format(name="ms", auth="10.1.1.0/24", site="10.1.1.0/26", proxy="true"))[1]["ms"]
    register(ms, "10.1.1.0/26")
    eff = ms.handle(request("10.1.1.5/32").encode(), ep(MR), ep("192.0.2.21"), 1.0)
    out = {s.dst: decode_control(s.payload) for s in sends(eff)}
    assert isinstance(out[ep(ITR, 50123)], MapReply)            # to the ITR, not the MR
    assert out[ep(MR)].records[0].act == MS_ACK


@pytest.mark.parametrize("eid,want", [
    ("10.1.1.5/32", ("10.1.1.0/26", MS_NOT_REGISTERED, 1, True, [])),
    ("10.1.1.200/32", ("10.1.1.128/25", DELEGATION_HOLE, 15, False, [])),
    ("10.1.2.1/32", ("10.1.2.1/32", NOT_AUTHORITATIVE, 0, True, [])),
])
def test_ms_negative_referrals_nothing_to_itr(ms, eid, want):
    assert referral_of(ms, eid) == want          # only_send: no negative Map-Reply to the ITR


def test_plain_ecm_still_answered_as_before(ms):
    s, reply = only_send(ms.handle(request("10.1.1.5/32", ddt=False).encode(), ep(ITR), ep("192.0.2.21"), 1.0))
    assert isinstance(reply, MapReply) and s.dst == ep(ITR, 50123)


# ------------------------------------------------------------------ the tree

class Net:
    """Delivers Send effects between roles by destination address; what goes
    to an address without a role is kept in `outside`."""

    def __init__(self, roles: dict, down=()):
        self.roles = roles
        self.down = set(down)
        self.outside: list[Send] = []
        self.log: list[tuple[str, str]] = []

    def run(self, effects, src_addr, now):
        queue = [(e, src_addr) for e in effects if isinstance(e, Send)]
        while queue:
            s, frm = queue.pop(0)
            dst = str(s.dst.addr)
            self.log.append((frm, dst))
            role = self.roles.get(dst)
            if role is None:
                self.outside.append(s)
                continue
            if dst in self.down:
                continue
            eff = role.handle(s.payload, Endpoint(A(frm), 4342), s.dst, now)
            queue += [(e, dst) for e in eff if isinstance(e, Send)]

    def tick(self, now):
        for addr, role in self.roles.items():
            d = role.next_deadline()
            if d is not None and d <= now and addr not in self.down:
                self.run(role.tick(now), addr, now)


def tree(down=(), mr_extra=""):
    root = make(ROOT)[1]["ddt-node"]
    node = make(NODE)[1]["ddt-node"]
    node2 = make(NODE.replace('"node"', '"node2"'))[1]["ddt-node"]
    ms21 = make(MS.format(name="ms21", auth="10.1.1.0/24", site="10.1.1.0/26", proxy="false"))[1]["ms"]
    ms22 = make(MS.format(name="ms22", auth="10.1.1.0/24", site="10.1.1.0/26", proxy="false"))[1]["ms"]
    ms23 = make(MS.format(name="ms23", auth="10.2.0.0/16", site="10.2.0.0/24", proxy="true"))[1]["ms"]
    register(ms21, "10.1.1.0/26", rloc="198.51.100.1")
    register(ms22, "10.1.1.0/26", rloc="198.51.100.1")
    register(ms23, "10.2.0.0/24", rloc="198.51.100.3")
    mr = make(DDT_MR + mr_extra)[1]["mr"]
    roles = {"192.0.2.1": root, "192.0.2.11": node, "192.0.2.12": node2, "192.0.2.21": ms21,
             "192.0.2.22": ms22, "192.0.2.23": ms23, MR: mr}
    return Net(roles, down), mr


def ask(net, eid, nonce, now=1.0):
    net.outside.clear()
    net.log.clear()
    net.run([Send(request(eid, nonce=nonce, ddt=False).encode(), ep(MR))], ITR, now)
    return [(str(s.dst.addr), decode_control(s.payload)) for s in net.outside]


def test_resolution_across_tree_then_cache():
    net, mr = tree()
    out = ask(net, "10.1.1.7/32", 1)
    # the ETR gets the request from a Map-Server; nothing else leaves the tree
    (dst, fwd), = out
    assert dst == "198.51.100.1" and fwd.to_etr and fwd.message.nonce == 1
    hops = [d for f, d in net.log if f == MR]
    assert hops[0] == "192.0.2.1" and hops[1] in ("192.0.2.11", "192.0.2.12") and hops[2] in ("192.0.2.21",
                                                                                             "192.0.2.22")
    assert mr.counters["resolved"] == 1 and not mr.pending
    assert {e["eid"] for e in mr.snapshot()["referral_cache"]} == {"10.1.0.0/16", "10.1.1.0/24"}
    # warm: straight to a Map-Server
    out = ask(net, "10.1.1.9/32", 2, now=2.0)
    assert [d for f, d in net.log if f == MR][0] in ("192.0.2.21", "192.0.2.22")
    assert out[0][0] == "198.51.100.1" and mr.counters["referral_cache_hit"] == 1


def test_proxy_reply_through_ms_referral():
    net, mr = tree()
    (dst, reply), = ask(net, "10.2.0.9/32", 3)
    assert dst == ITR and isinstance(reply, MapReply) and reply.nonce == 3
    assert mr.counters["resolved"] == 1


def test_delegation_hole_negative_and_cached():
    net, mr = tree()
    (dst, reply), = ask(net, "10.3.0.1/32", 4)
    assert dst == ITR and isinstance(reply, MapReply)
    (rec,) = reply.records
    assert (str(record_prefix(rec)), MapAction(rec.act), rec.ttl) == ("10.3.0.0/16", MapAction.NATIVELY_FORWARD, 15)
    (_, reply), = ask(net, "10.3.200.1/32", 5, now=2.0)
    assert [d for f, d in net.log if f == MR] == [ITR]            # answered from the cache
    assert mr.counters["negative_from_cache"] == 1 and reply.records[0].ttl == 15
    (_, reply), = ask(net, "10.3.0.9/32", 6, now=1.0 + 10.5 * 60)
    assert reply.records[0].ttl == 5                              # what is left of it


def test_not_registered_asks_every_ms_then_negative():
    net, mr = tree()
    (dst, reply), = ask(net, "10.1.1.100/32", 6)     # in 10.1.1.0/24 but outside the site: hole at the MS
    assert reply.records[0].act == MapAction.NATIVELY_FORWARD
    ms21, ms22 = net.roles["192.0.2.21"], net.roles["192.0.2.22"]
    for m in (ms21, ms22):
        m.registered.remove(P("10.1.1.0/26"))
    (dst, reply), = ask(net, "10.1.1.5/32", 7, now=2.0)
    assert dst == ITR
    (rec,) = reply.records
    assert (str(record_prefix(rec)), MapAction(rec.act), rec.ttl) == \
        ("10.1.1.0/26", MapAction.SEND_MAP_REQUEST, 1)
    assert {d for f, d in net.log if f == MR and d != ITR} == {"192.0.2.21", "192.0.2.22"}


@pytest.mark.parametrize("nonce", [8, 9])        # either child node asked first
def test_timeout_retries_next_node_of_set(nonce):
    net, mr = tree(down={"192.0.2.11"})
    ask(net, "10.1.1.7/32", nonce)
    first = [d for f, d in net.log if f == MR][1]
    if first == "192.0.2.11":                        # the dead one: the timer moves on
        assert mr.counters["resolved"] == 0 and mr.next_deadline() == pytest.approx(2.0)
        net.tick(1.9)
        assert mr.counters["ddt_request_timeout"] == 0
        net.tick(2.0)
        assert mr.counters["ddt_request_timeout"] == 1
    assert mr.counters["resolved"] == 1
    assert not mr.pending and mr.next_deadline() is None


def test_ms_down_gives_up_and_forgets_cached_referral():
    net, mr = tree()
    ask(net, "10.2.0.9/32", 9)
    assert any(e["eid"] == "10.2.0.0/16" for e in mr.snapshot()["referral_cache"])
    net.down = {"192.0.2.23"}
    assert ask(net, "10.2.0.9/32", 10, now=2.0) == []
    t = 2.0
    while mr.pending:
        t += 1.0
        net.tick(t)
    # the cached MS-REFERRAL failed: once more from the root (root -> ms23 again), then give up
    assert mr.counters["restart_from_root"] == 1 and mr.counters["resolution_failed"] == 1
    assert [d for f, d in net.log if f == MR] == ["192.0.2.23", "192.0.2.1", "192.0.2.23"]
    assert not any(e["eid"] == "10.2.0.0/16" for e in mr.snapshot()["referral_cache"])
    # the other branch is unaffected
    assert ask(net, "10.1.1.7/32", 11, now=t)[0][0] == "198.51.100.1"


def test_stale_cached_referral_not_authoritative_restarts_at_root():
    net, mr = tree()
    ask(net, "10.1.1.7/32", 30)
    # both Map-Servers of 10.1.1.0/24 stop serving it (re-delegated elsewhere)
    for a in ("192.0.2.21", "192.0.2.22"):
        net.roles[a] = make(MS.format(name="x", auth="10.9.0.0/16", site="10.9.0.0/24", proxy="false"))[1]["ms"]
    assert ask(net, "10.1.1.8/32", 31, now=2.0) == []
    hops = [d for f, d in net.log if f == MR]
    assert hops[0] in ("192.0.2.21", "192.0.2.22") and hops[1] == "192.0.2.1"    # cache, then the root
    assert mr.counters["restart_from_root"] == 1 and mr.counters["resolution_failed"] == 1
    assert not mr.pending


def test_referral_only_from_the_node_asked_and_with_its_nonce():
    mr = make(DDT_MR)[1]["mr"]
    (s,) = sends(mr.handle(request("10.1.1.7/32", nonce=12, ddt=False).encode(), ep(ITR), ep(MR), 1.0))
    sent = decode_control(s.payload)
    assert s.dst == ep("192.0.2.1") and sent.ddt and sent.message.nonce == 12
    forged = MapReferral(12, (dataclasses.replace(
        referral_record_for("10.0.0.0/8", NODE_REFERRAL, ["198.18.0.1"])),)).encode()
    assert mr.handle(forged, ep("198.18.0.66"), ep(MR), 1.1) == []
    assert mr.counters["map_referral_wrong_source"] == 1
    assert mr.handle(MapReferral(13, ()).encode(), ep("192.0.2.1"), ep(MR), 1.1) == []
    assert mr.counters["map_referral_unknown_nonce"] == 1
    # a referral that does not cover the EID: next node (none left: give up)
    bad = MapReferral(12, (referral_record_for("10.9.0.0/16", NODE_REFERRAL, ["198.18.0.1"]),)).encode()
    assert sends(mr.handle(bad, ep("192.0.2.1"), ep(MR), 1.2)) == []
    assert mr.counters["map_referral_not_covering"] == 1 and not mr.pending


def referral_record_for(eid, act, targets, ttl=1440):
    from lispctl.roles.ddt import referral_record
    return referral_record(P(eid), act, ttl, tuple(A(t) for t in targets))


def test_referral_loop_and_depth():
    mr = make(DDT_MR)[1]["mr"]
    mr.handle(request("10.1.1.7/32", nonce=14, ddt=False).encode(), ep(ITR), ep(MR), 1.0)
    r1 = MapReferral(14, (referral_record_for("10.1.0.0/16", NODE_REFERRAL, ["192.0.2.11"]),)).encode()
    (s,) = sends(mr.handle(r1, ep("192.0.2.1"), ep(MR), 1.1))
    assert s.dst == ep("192.0.2.11")
    back = MapReferral(14, (referral_record_for("10.0.0.0/8", NODE_REFERRAL, ["192.0.2.1"]),)).encode()
    assert sends(mr.handle(back, ep("192.0.2.11"), ep(MR), 1.2)) == []
    assert mr.counters["referral_loop"] == 1 and not mr.pending
    # depth: each referral one bit more specific, max-referrals = 3
    mr = make(DDT_MR + "max-referrals = 3\n")[1]["mr"]
    mr.handle(request("10.1.1.7/32", nonce=15, ddt=False).encode(), ep(ITR), ep(MR), 1.0)
    frm = "192.0.2.1"
    for n in range(8, 12):
        nxt = f"192.0.2.{n + 100}"
        eff = mr.handle(MapReferral(15, (referral_record_for(f"10.0.0.0/{n}", NODE_REFERRAL, [nxt]),)).encode(),
                        ep(frm), ep(MR), 1.0 + n / 100)
        frm = nxt
    assert mr.counters["referral_too_deep"] == 1 and not mr.pending and sends(eff) == []


def test_not_authoritative_tries_next_then_gives_up_silently():
    mr = make(DDT_MR.replace('root = ["192.0.2.1"]', 'root = ["192.0.2.1", "192.0.2.2"]'))[1]["mr"]
    (s,) = sends(mr.handle(request("10.1.1.7/32", nonce=16, ddt=False).encode(), ep(ITR), ep(MR), 1.0))
    first = str(s.dst.addr)
    na = MapReferral(16, (referral_record_for("10.1.1.7/32", NOT_AUTHORITATIVE, [], ttl=0),)).encode()
    (s2,) = sends(mr.handle(na, ep(first), ep(MR), 1.1))
    assert str(s2.dst.addr) != first
    assert sends(mr.handle(na, s2.dst, ep(MR), 1.2)) == []
    assert mr.counters["resolution_failed"] == 1 and not mr.pending


def test_tables_are_bounded():
    mr = make(DDT_MR + "max-pending = 2\nreferral-cache-size = 2\n")[1]["mr"]
    for i in range(3):
        mr.handle(request(f"10.1.1.{i}/32", nonce=100 + i, ddt=False).encode(), ep(ITR), ep(MR), 1.0)
    assert len(mr.pending) == 2 and mr.counters["pending_full"] == 1
    # an ITR retry of a pending request sends nothing new
    assert mr.handle(request("10.1.1.0/32", nonce=100, ddt=False).encode(), ep(ITR), ep(MR), 1.0) == []
    for i, n in enumerate((100, 101)):
        mr.handle(MapReferral(n, (referral_record_for(f"10.{i + 1}.0.0/16", NODE_REFERRAL, ["192.0.2.11"]),)
                              ).encode(), ep("192.0.2.1"), ep(MR), 1.1)
    assert mr.counters["map_referral_not_covering"] == 1       # 10.2/16 does not hold 10.1.1.1
    assert [str(k) for k in mr.cache.keys()] == ["10.1.0.0/16"]
    mr.pending.clear()
    mr.handle(request("10.5.0.1/32", nonce=200, ddt=False).encode(), ep(ITR), ep(MR), 2.0)
    mr.handle(MapReferral(200, (referral_record_for("10.5.0.0/16", NODE_REFERRAL, ["192.0.2.11"]),)).encode(),
              ep("192.0.2.1"), ep(MR), 2.1)
    mr.handle(request("10.6.0.1/32", nonce=201, ddt=False).encode(), ep(ITR), ep(MR), 2.0)
    mr.handle(MapReferral(201, (referral_record_for("10.6.0.0/16", NODE_REFERRAL, ["192.0.2.11"]),)).encode(),
              ep("192.0.2.1"), ep(MR), 2.1)
    assert len(mr.cache) == 2 and mr.counters["referral_cache_evicted"] == 1
    assert {str(k) for k in mr.cache.keys()} == {"10.5.0.0/16", "10.6.0.0/16"}


def test_referral_cache_expires():
    net, mr = tree()
    ask(net, "10.1.1.7/32", 20)
    ask(net, "10.1.1.8/32", 21, now=1.0 + 1440 * 60 + 1)
    assert [d for f, d in net.log if f == MR][0] == "192.0.2.1"     # back to the root
    assert mr.counters["referral_cache_expired"] >= 1


def test_config_checks():
    from lispctl.config import ConfigError, loads
    with pytest.raises(ConfigError, match="ddt.authoritative-prefix"):
        loads('instance = "x"\nroles = ["ddt-node"]\n')
    with pytest.raises(ConfigError, match=r"\[mr.ddt\] is only used"):
        loads('instance = "x"\nroles = ["ddt-node"]\n[ddt]\nauthoritative-prefix = ["10.0.0.0/8"]\n'
              '[mr.ddt]\nroot = ["192.0.2.1"]\n')
    with pytest.raises(ConfigError, match="cannot share a process"):
        loads(MS.format(name="x", auth="10.0.0.0/8", site="10.1.0.0/24", proxy="false")
              .replace('roles = ["ms"]', 'roles = ["ms", "ddt-node"]'))
    with pytest.raises(ConfigError, match="only used by the ddt-node and ms roles"):
        loads('instance = "x"\nroles = ["mr"]\n[ddt]\nauthoritative-prefix = ["10.0.0.0/8"]\n'
              '[mr.ddt]\nroot = ["192.0.2.1"]\n')


def test_plain_map_resolver_leaves_ddt_requests_to_the_map_server():
    # before: the MR of an ms+mr process also answered a DDT Map-Request
    # (a second, negative Map-Reply to the ITR next to the Map-Server's referral)
    from roles_helpers import MSMR
    roles = make(MSMR.format(roles='["ms", "mr"]'))[1]
    eff = []
    for name in ("ms", "mr"):
        eff += roles[name].handle(request("10.2.9.9/32").encode(), ep(MR), ep("198.51.100.10"), 1.0)
    (s,) = sends(eff)
    assert s.dst == ep(MR) and isinstance(decode_control(s.payload), MapReferral)
    assert roles["mr"].counters["map_request_rx"] == 0


def test_ipv6_underlay_and_instance_id():
    root = make("""instance = "r6"
roles = ["ddt-node"]
[ddt]
authoritative-prefix = ["[7]0.0.0.0/0", "[7]::/0"]
[[ddt.delegation]]
eid-prefix = "[7]10.0.0.0/8"
type = "map-server"
address = ["2001:db8::23"]
[[ddt.delegation]]
eid-prefix = "[7]2001:db8:e::/48"
type = "map-server"
address = ["2001:db8::23"]
""")[1]["ddt-node"]
    ms = make("""instance = "m6"
roles = ["ms"]
[[site]]
name = "s"
keys = { 1 = "k" }
[[site.eid-prefix]]
prefix = "10.0.0.0/8"
instance-id = 7
proxy-reply = true
[[site.eid-prefix]]
prefix = "2001:db8:e::/48"
instance-id = 7
proxy-reply = true
""")[1]["ms"]
    for eid in ("[7]10.0.0.0/8", "[7]2001:db8:e::/48"):
        rec = eid_record(P(eid), (Rloc(A("2001:db8::99")),), ttl=1440, authoritative=True)
        ms.handle(sign(MapRegister(1, (rec,), key_id=1, alg_id=ALG_HMAC_SHA256), "k"), ep("2001:db8::99"),
                  ep("2001:db8::23"), 0.0)
    mr = make('instance = "mr6"\nroles = ["mr"]\n[mr.ddt]\nroot = ["2001:db8::1"]\n')[1]["mr"]
    net = Net({"2001:db8::1": root, "2001:db8::23": ms, "2001:db8::100": mr})
    itr6 = "2001:db8::5"
    for n, eid in enumerate(("[7]10.1.2.3/32", "[7]2001:db8:e::7/128")):
        e = P(eid)
        req = MapRequest(40 + n, (request_record(e),), (A(itr6),))
        # an IPv4 EID asked over IPv6: the inner header goes to the resolver (RFC 9301 5.8)
        inner_dst = e.prefix.network_address if e.prefix.version == 6 else A("2001:db8::100")
        ecm = EncapsulatedControlMessage(req, A(itr6), inner_dst, 50000, 4342)
        net.outside.clear()
        net.run([Send(ecm.encode(), ep("2001:db8::100"))], itr6, 1.0 + n)
        (s,) = net.outside
        reply = decode_control(s.payload)
        assert s.dst == ep(itr6, 50000) and isinstance(reply, MapReply) and reply.nonce == 40 + n
        assert str(record_prefix(reply.records[0])) == ("[7]10.0.0.0/8", "[7]2001:db8:e::/48")[n]
    assert mr.counters["resolved"] == 2
    assert {e["eid"] for e in mr.snapshot()["referral_cache"]} == {"[7]10.0.0.0/8", "[7]2001:db8:e::/48"}


def test_ms_peers_make_a_complete_set():
    ms = make(MS.format(name="ms", auth="10.1.1.0/24", site="10.1.1.0/26", proxy="false")
              .replace("[[site]]", 'ms-peers = ["192.0.2.22", "192.0.2.29"]\n[[site]]'))[1]["ms"]
    assert referral_of(ms, "10.1.1.5/32") == ("10.1.1.0/26", MS_NOT_REGISTERED, 1, False,
                                               ["192.0.2.1", "192.0.2.22", "192.0.2.29"])
    register(ms, "10.1.1.0/26")
    eff = ms.handle(request("10.1.1.5/32").encode(), ep(MR), ep("192.0.2.21"), 1.0)
    (rec,) = next(m for m in (decode_control(s.payload) for s in sends(eff)) if isinstance(m, MapReferral)).records
    assert (rec.act, rec.incomplete, [str(r.address) for r in rec.referrals]) == \
        (MS_ACK, False, ["192.0.2.21", "192.0.2.22", "192.0.2.29"])


def test_not_registered_peers_are_asked_too():
    mr = make(DDT_MR)[1]["mr"]
    mr.handle(request("10.1.1.5/32", nonce=50, ddt=False).encode(), ep(ITR), ep(MR), 1.0)
    mr.handle(MapReferral(50, (referral_record_for("10.1.1.0/24", MS_REFERRAL, ["192.0.2.21"]),)).encode(),
              ep("192.0.2.1"), ep(MR), 1.1)
    nreg = referral_record_for("10.1.1.0/26", MS_NOT_REGISTERED, ["192.0.2.21", "192.0.2.22"], ttl=1)
    (s,) = sends(mr.handle(MapReferral(50, (nreg,)).encode(), ep("192.0.2.21"), ep(MR), 1.2))
    assert s.dst == ep("192.0.2.22")                     # the peer it named
    (s,) = sends(mr.handle(MapReferral(50, (nreg,)).encode(), ep("192.0.2.22"), ep(MR), 1.3))
    reply = decode_control(s.payload)
    assert s.dst == ep(ITR, 50123) and isinstance(reply, MapReply)
    assert (str(record_prefix(reply.records[0])), reply.records[0].ttl) == ("10.1.1.0/26", 1)

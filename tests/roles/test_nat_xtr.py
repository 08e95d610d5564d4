"""xTR side of NAT traversal (roles/nat.py) driven against the real Map-Server
role: Info-Request per RLOC, NAT detection, registration through the RTR,
keepalive, and bad Info-Replies ignored and counted."""
import random

from lispctl.config import loads
from lispctl.roles import build_roles
from lispctl.mapping.types import Rloc
from lispctl.roles.base import Endpoint, InstallMapping, RemoveMapping, Send
from lispctl.roles.nat import NAT, NAT_NO_RTR, PROBING, PUBLIC, NatRole
from lispctl.wire import (EncapsulatedControlMessage, InfoReply, InfoRequest, MapNotify, MapRegister,
                          NatTraversal, decode_control, sign, verify)

from roles_helpers import MSMR, A, ep, make, sends

XTR = """
instance = "mn"
roles = ["xtr"]
[etr]
xtr-id = "00112233445566778899aabbccddeeff"
[nat]
enabled = true
keepalive-interval = 15
[[database]]
eid-prefix = "10.1.0.0/24"
[[database.locator]]
interface = "wlan0"
[[database.locator]]
address = "192.0.2.50"
[[map-server]]
address = "198.51.100.10"
key-id = 1
key = "secret-a"
[[map-resolver]]
address = "198.51.100.10"
"""
MS_EP = ep("198.51.100.10", 4342)
PRIV, PUB = A("192.168.1.10"), A("192.0.2.50")
NAT_PUBLIC = A("203.0.113.7")


def setup(port=4341):
    cfg = loads(XTR)
    roles = dict(build_roles(cfg, interface_addresses={"wlan0": [PRIV]}, rng=random.Random(3)))
    nat = NatRole(cfg, roles["etr"].site, roles["etr"].nonce, port=port)
    roles["etr"].nat = nat
    ms = make(MSMR.format(roles='["ms"]').replace(
        "[[site]]", '[ms]\nrtr-rlocs = ["198.51.100.20"]\n\n[[site]]', 1))[1]["ms"]
    return cfg, roles, nat, ms


def through_nat(send: Send):
    """What the MS sees of a request: from the private RLOC via the NAT
    (source rewritten), from the public RLOC as sent."""
    if send.src.addr == PRIV:
        return Endpoint(NAT_PUBLIC, 40000 + send.src.port % 1000)
    return send.src


def exchange(nat, ms, sends_, now):
    """Carry Info-Requests to the MS and its replies back (un-NATing them)."""
    for s in sends_:
        msg = decode_control(s.payload)
        if not isinstance(msg, InfoRequest):
            continue
        seen = through_nat(s)
        for r in ms.handle(s.payload, seen, s.dst, now):
            if isinstance(r, Send):
                assert r.dst == seen
                nat.handle(r.payload, r.src, s.src, now)


def test_info_request_per_rloc_from_the_data_port_signed_with_the_ms_key():
    cfg, roles, nat, ms = setup()
    out = sends(nat.tick(0.0))
    assert sorted(str(s.src.addr) for s in out) == sorted([str(PRIV), str(PUB)])
    for s in out:
        msg = decode_control(s.payload)
        assert isinstance(msg, InfoRequest) and s.dst == MS_EP and s.src.port == 4341
        assert (msg.eid_prefix, msg.eid_mask_len, msg.key_id) == (A("10.1.0.0"), 24, 1)
        assert verify(s.payload, "secret-a")


def test_detects_nat_on_one_rloc_and_registers_through_the_rtr():
    cfg, roles, nat, ms = setup()
    exchange(nat, ms, sends(nat.tick(0.0)), 0.0)
    st = {r.address: r for r in nat.rlocs.values()}
    assert st[PUB].state == PUBLIC and st[PUB].rtr is None
    assert st[PRIV].state == NAT and st[PRIV].translated == (NAT_PUBLIC, 40341)
    assert st[PRIV].rtr == A("198.51.100.20") and nat.rtr_for(PRIV) == A("198.51.100.20")
    assert nat.rtr_for(PUB) is None
    # the ETR stops registering directly; the NAT role sends an ECM'd Map-Register to the RTR
    assert not [s for s in sends(roles["etr"].tick(1.0))
                if isinstance(decode_control(s.payload), MapRegister)]
    [reg] = sends(nat.tick(0.0))
    assert reg.dst == Endpoint(A("198.51.100.20"), 4342) and reg.src == Endpoint(PRIV, 4341)
    ecm = decode_control(reg.payload)
    assert isinstance(ecm, EncapsulatedControlMessage) and ecm.to_ms
    assert (ecm.inner_src, ecm.inner_dst, ecm.inner_sport, ecm.inner_dport) == (PRIV, A("198.51.100.10"), 4341, 4342)
    inner = ecm.message
    assert isinstance(inner, MapRegister) and inner.xtr_id == 0x00112233445566778899aabbccddeeff
    assert inner.proxy_reply          # the MS answers for us: the RTR is no ETR
    assert verify(inner.encode(), "secret-a")
    [rec] = inner.records
    # the public RLOC as it is; the NATed one replaced by the RTR
    assert sorted(str(l.address) for l in rec.locators) == ["192.0.2.50", "198.51.100.20"]
    # the MS accepts it (as the RTR will hand it over)
    assert ms.handle(inner.encode(), Endpoint(A("198.51.100.20"), 4342), MS_EP, 1.0)
    assert ms.counters["map_register_ok"] == 1


def test_public_only_keeps_the_etr_registering():
    cfg, roles, nat, ms = setup()
    out = sends(nat.tick(0.0))
    exchange(nat, ms, [s for s in out if s.src.addr == PUB], 0.0)
    assert not nat.behind_nat()
    assert [s for s in sends(roles["etr"].tick(0.0)) if isinstance(decode_control(s.payload), MapRegister)]
    assert not sends(nat.tick(0.5))          # nothing registered via an RTR


def test_keepalive_and_retry_schedule():
    cfg, roles, nat, ms = setup()
    sends(nat.tick(0.0))
    assert nat.next_deadline() == 1.0        # unanswered: info-retry 1 s, doubling
    assert len(sends(nat.tick(1.0))) == 2
    assert nat.next_deadline() == 3.0
    exchange(nat, ms, sends(nat.tick(3.0)), 3.0)
    nat.tick(3.0)                            # the registration through the RTR
    assert nat.next_deadline() == 18.0       # keepalive-interval 15 s after the reply
    out = sends(nat.tick(18.0))
    kinds = sorted(type(decode_control(s.payload)).__name__ for s in out)
    assert kinds == ["EncapsulatedControlMessage", "InfoRequest", "InfoRequest"]


def test_translation_change_re_registers_at_once():
    cfg, roles, nat, ms = setup()
    exchange(nat, ms, sends(nat.tick(0.0)), 0.0)
    nat.tick(0.0)
    global NAT_PUBLIC
    old = NAT_PUBLIC
    try:
        NAT_PUBLIC = A("203.0.113.99")          # the NAT rebooted with a new address
        exchange(nat, ms, sends(nat.tick(15.0)), 15.0)
    finally:
        NAT_PUBLIC = old
    assert nat.rlocs[PRIV].translated[0] == A("203.0.113.99")
    assert nat.next_deadline() == 15.0


def test_address_change_probes_the_new_rloc_at_once():
    cfg, roles, nat, ms = setup()
    exchange(nat, ms, sends(nat.tick(0.0)), 0.0)
    out = roles["etr"].set_interface_addresses("wlan0", [A("10.9.9.9")], 5.0)
    reqs = [s for s in sends(out) if isinstance(decode_control(s.payload), InfoRequest)]
    assert [s.src.addr for s in reqs] == [A("10.9.9.9")]
    assert PRIV not in nat.rlocs and nat.rlocs[A("10.9.9.9")].state == PROBING


def reply_for(nonce, key="secret-a", **nat_kw):
    n = dict(ms_port=4342, etr_port=40341, global_etr_rloc=NAT_PUBLIC, ms_rloc=A("198.51.100.10"),
             private_etr_rloc=PRIV, rtr_rlocs=(A("198.51.100.20"),))
    n.update(nat_kw)
    return sign(InfoReply(nonce, A("10.1.0.0"), 24, NatTraversal(**n), 1, 2), key)


def test_reply_with_unknown_nonce_is_ignored_and_counted():
    cfg, roles, nat, ms = setup()
    nat.tick(0.0)
    assert nat.handle(reply_for(0xDEAD), MS_EP, Endpoint(PRIV, 4341), 0.1) == []
    assert nat.counters["info_reply_unknown_nonce"] == 1
    assert all(r.state == PROBING for r in nat.rlocs.values())


def test_reply_with_bad_mac_is_ignored_and_counted():
    cfg, roles, nat, ms = setup()
    nat.tick(0.0)
    nonce = next(iter(nat.rlocs[PRIV].nonces))
    nat.handle(reply_for(nonce, key="forged"), MS_EP, Endpoint(PRIV, 4341), 0.1)
    assert nat.counters["info_reply_bad_auth"] == 1 and nat.rlocs[PRIV].state == PROBING
    # the genuine reply with the same nonce still counts
    nat.handle(reply_for(nonce), MS_EP, Endpoint(PRIV, 4341), 0.2)
    assert nat.rlocs[PRIV].state == NAT
    # a replay of it does not (its nonce is used up)
    nat.handle(reply_for(nonce), MS_EP, Endpoint(PRIV, 4341), 0.3)
    assert nat.counters["info_reply_unknown_nonce"] == 1


def test_nat_without_rtr_drops_the_rloc_from_registrations():
    cfg, roles, nat, ms = setup()
    nat.tick(0.0)
    nonce = next(iter(nat.rlocs[PRIV].nonces))
    nat.handle(reply_for(nonce, rtr_rlocs=()), MS_EP, Endpoint(PRIV, 4341), 0.1)
    assert nat.rlocs[PRIV].state == NAT_NO_RTR and not nat.behind_nat()
    assert nat.counters["nat_without_rtr"] == 1


def test_map_notify_back_through_the_rtr():
    cfg, roles, nat, ms = setup()
    exchange(nat, ms, sends(nat.tick(0.0)), 0.0)
    [reg] = sends(nat.tick(0.0))
    inner = decode_control(reg.payload).message
    notify = sign(MapNotify(inner.nonce, inner.records, 1, inner.alg_id), "secret-a")
    ecm = EncapsulatedControlMessage(decode_control(notify), A("198.51.100.10"), PRIV).encode()
    nat.handle(ecm, Endpoint(A("198.51.100.20"), 4342), Endpoint(PRIV, 4341), 0.5)
    assert nat.counters["map_notify_via_rtr_rx"] == 1 and nat.last_notify == 0.5
    forged = sign(MapNotify(inner.nonce, inner.records, 1, inner.alg_id), "nope")
    nat.handle(EncapsulatedControlMessage(decode_control(forged), A("198.51.100.10"), PRIV).encode(),
               Endpoint(A("198.51.100.20"), 4342), Endpoint(PRIV, 4341), 0.6)
    assert nat.counters["map_notify_via_rtr_bad_auth"] == 1


def test_build_roles_adds_the_nat_role_only_when_enabled():
    cfg = loads(XTR)
    roles = dict(build_roles(cfg, interface_addresses={"wlan0": [PRIV]}))
    assert isinstance(roles["nat"], NatRole) and roles["etr"].nat is roles["nat"]
    off = dict(build_roles(loads(XTR.replace("enabled = true", "enabled = false")),
                           interface_addresses={"wlan0": [PRIV]}))
    assert "nat" not in off and off["etr"].nat is None


def test_snapshot_shows_state_translation_and_rtr():
    cfg, roles, nat, ms = setup()
    exchange(nat, ms, sends(nat.tick(0.0)), 0.0)
    snap = {r["rloc"]: r for r in nat.snapshot()["rlocs"]}
    assert snap[str(PRIV)]["state"] == "nat" and snap[str(PRIV)]["translated"] == "203.0.113.7:40341"
    assert snap[str(PRIV)]["rtr"] == "198.51.100.20"
    assert snap[str(PUB)]["state"] == "public" and snap[str(PUB)]["rtr"] is None


def test_status_text_lists_nat_state_per_rloc():
    from lispctl.commands.show import _status_text
    cfg, roles, nat, ms = setup()
    exchange(nat, ms, sends(nat.tick(0.0)), 0.0)
    text = _status_text({"instance": "mn", "state": {"nat": nat.snapshot()}})
    assert "192.168.1.10: nat seen as 203.0.113.7:40341, RTR 198.51.100.20" in text
    assert "192.0.2.50: public" in text


NATED_ONLY = XTR.replace('''[[database.locator]]
address = "192.0.2.50"
''', "") + '''
[[map-cache]]
eid-prefix = "10.2.0.0/16"
[[map-cache.locator]]
address = "203.0.113.80"
'''


def test_behind_nat_all_data_goes_to_the_rtr_and_back_when_public():
    from lispctl.roles.base import InstallMapping
    from lispctl.mapping.types import EidPrefix
    cfg = loads(NATED_ONLY)
    roles = dict(build_roles(cfg, interface_addresses={"wlan0": [PRIV]}, rng=random.Random(3)))
    nat, itr = roles["nat"], roles["itr"]
    ms = setup()[3]
    first = [e for e in itr.tick(0.0) if isinstance(e, InstallMapping)]
    assert [r.address for r in first[0].rlocs] == [A("203.0.113.80")]      # not yet known: as today
    out = []
    for s in sends(nat.tick(0.0)):
        seen = through_nat(s)
        for r in ms.handle(s.payload, seen, s.dst, 0.0):
            out += nat.handle(r.payload, r.src, s.src, 0.0)
    [inst] = [e for e in out if isinstance(e, InstallMapping)]
    # port 4341 set: the data plane sends from source port 4341 (docs/nat.md)
    assert inst.eid == EidPrefix.parse("10.2.0.0/16") and inst.rlocs == (Rloc(A("198.51.100.20"), port=4341),)
    # a miss is not resolved (a Map-Reply would go to our private ITR-RLOC):
    # the destination goes to the RTR, which resolves it (docs/nat.md)
    from lispctl.roles.base import MissEvent
    out = itr.on_miss(MissEvent(EidPrefix.parse("10.9.0.1/32"), A("10.1.0.5")), 1.0)
    assert [type(e).__name__ for e in out] == ["InstallMapping"], out
    assert out[0].eid == EidPrefix.parse("10.9.0.1/32") and out[0].rlocs == (Rloc(A("198.51.100.20"), port=4341),)
    assert itr.counters["miss_sent_to_rtr"] == 1
    # the uplink moves to a network without NAT: the RTR is dropped at once
    out = roles["etr"].set_interface_addresses("wlan0", [A("192.0.2.77")], 5.0)
    [inst] = [e for e in out if isinstance(e, InstallMapping)]
    assert [r.address for r in inst.rlocs] == [A("203.0.113.80")] and inst.rlocs[0].port == 0


def test_mobile_node_probes_each_uplink_with_its_family_map_server():
    from test_smr_families import MN
    cfg = loads(MN + "[nat]\nenabled = true\n")
    roles = dict(build_roles(cfg, interface_addresses={"up1": [A("192.168.7.2")], "up2": [A("2001:db8:a2::9")]}))
    reqs = sends(roles["nat"].tick(0.0))
    got = sorted((str(s.src.addr), str(s.dst.addr)) for s in reqs)
    assert got == [("192.168.7.2", "192.0.2.10"), ("2001:db8:a2::9", "2001:db8:5::10")]
    assert all(isinstance(decode_control(s.payload), InfoRequest) for s in reqs)
    assert all(s.src.port == 4341 for s in reqs)        # the data port, as the draft says (docs/nat.md)


# A node with a NATed uplink (home0, preferred) and a public one (pub0), as
# the nat lab's mobile node mob (docs/nat.md).
TWO_UPLINKS = XTR.replace('''[[database.locator]]
interface = "wlan0"
[[database.locator]]
address = "192.0.2.50"
''', '''[[database.locator]]
interface = "wlan0"
priority = 1
[[database.locator]]
interface = "eth1"
priority = 2
''') + '''
[[map-cache]]
eid-prefix = "10.2.0.0/16"
[[map-cache.locator]]
address = "203.0.113.80"
'''
RTR = A("198.51.100.20")


def two_uplinks():
    cfg = loads(TWO_UPLINKS)
    roles = dict(build_roles(cfg, interface_addresses={"wlan0": [PRIV], "eth1": [PUB]}, rng=random.Random(5)))
    ms = setup()[3]
    roles["itr"].tick(0.0)
    roles["etr"].tick(0.0)
    return roles, roles["nat"], roles["etr"], roles["itr"], ms


def answer(nat, ms, effects, now):
    """Carry the Info-Requests among effects through the NAT to the MS and back; the effects that caused."""
    out = []
    for s in sends(effects):
        if isinstance(decode_control(s.payload), InfoRequest):
            seen = through_nat(s)
            for r in ms.handle(s.payload, seen, s.dst, now):
                out += nat.handle(r.payload, r.src, s.src, now)
    return out


def registers(effects):
    """(how sent, {locator: (priority, reachable)}) of each Map-Register among effects."""
    out = []
    for s in sends(effects):
        msg = decode_control(s.payload)
        via = "direct"
        if isinstance(msg, EncapsulatedControlMessage):
            msg, via = msg.message, "rtr"
        if isinstance(msg, MapRegister):
            [rec] = msg.records
            out.append((via, {str(l.address): (l.priority, l.reachable) for l in rec.locators}))
    return out


def test_preferred_nated_uplink_carries_data_through_the_rtr_beside_a_public_one():
    roles, nat, etr, itr, ms = two_uplinks()
    out = answer(nat, ms, nat.tick(0.0), 0.0)
    assert nat.rlocs[PRIV].state == NAT and nat.rlocs[PUB].state == PUBLIC
    # data follows the preferred uplink: home is NATed, so to the RTR (from 4341)
    [inst] = [e for e in out if isinstance(e, InstallMapping)]
    assert inst.rlocs == (Rloc(RTR, port=4341),)
    # one registration, through the RTR: the RTR in place of the NATed RLOC, the public one as it is
    assert registers(nat.tick(0.0)) == [("rtr", {str(RTR): (1, True), str(PUB): (2, True)})]
    assert registers(etr.tick(1.0)) == []              # the ETR does not register meanwhile


def test_nated_uplink_down_then_back_hands_over_to_public_and_back():
    from lispctl.mapping.types import EidPrefix
    from lispctl.roles.base import MissEvent
    roles, nat, etr, itr, ms = two_uplinks()
    answer(nat, ms, nat.tick(0.0), 0.0)
    nat.tick(0.0)
    miss = itr.on_miss(MissEvent(EidPrefix.parse("10.9.0.1/32"), A("10.1.0.5")), 0.5)
    assert [type(e).__name__ for e in miss] == ["InstallMapping"]          # handed to the RTR

    # home0 loses its carrier: no NAT left; data goes directly at once, the
    # ETR registers the public RLOC directly at once, the miss sent to the
    # RTR is taken back (the next packet is resolved from the public RLOC)
    out = etr.set_link_state("wlan0", False, 1.0)
    assert PRIV not in nat.rlocs and not nat.behind_nat() and nat.data_rtr(4) is None
    [inst] = [e for e in out if isinstance(e, InstallMapping)]
    assert [r.address for r in inst.rlocs] == [A("203.0.113.80")] and inst.rlocs[0].port == 0
    assert [e.eid for e in out if isinstance(e, RemoveMapping)] == [EidPrefix.parse("10.9.0.1/32")]
    assert registers(out) == [("direct", {str(PRIV): (1, False), str(PUB): (2, True)})]

    # home0 returns: checked at once; until the answer the ETR announces it
    # unreachable (never the private address to correspondents)
    out = etr.set_link_state("wlan0", True, 5.0)
    assert nat.rlocs[PRIV].state == PROBING and nat.hidden(PRIV) and not nat.hidden(PUB)
    assert registers(out) == [("direct", {str(PRIV): (1, False), str(PUB): (2, True)})]
    assert not [e for e in out if isinstance(e, InstallMapping)]        # data stays direct
    out = answer(nat, ms, out, 5.0)
    assert nat.rlocs[PRIV].state == NAT and nat.data_rtr(4) == RTR
    [inst] = [e for e in out if isinstance(e, InstallMapping)]
    assert inst.rlocs == (Rloc(RTR, port=4341),)
    assert registers(nat.tick(5.0)) == [("rtr", {str(RTR): (1, True), str(PUB): (2, True)})]


def test_an_uplink_found_public_after_a_check_is_registered_at_once():
    roles, nat, etr, itr, ms = two_uplinks()
    first = nat.tick(0.0)
    answer(nat, ms, [s for s in sends(first) if s.src.addr == PUB], 0.0)   # only pub0 answered yet
    assert nat.hidden(PRIV)
    # home0's answer: it is public after all (no NAT in front of it now)
    req = next(s for s in sends(first) if s.src.addr == PRIV)
    out = []
    for r in ms.handle(req.payload, req.src, req.dst, 0.1):      # not through the NAT
        out += nat.handle(r.payload, r.src, req.src, 0.1)
    assert nat.rlocs[PRIV].state == PUBLIC and not nat.hidden(PRIV)
    assert registers(out) == [("direct", {str(PRIV): (1, True), str(PUB): (2, True)})]


def test_no_answer_at_all_hides_nothing():
    roles, nat, etr, itr, ms = two_uplinks()
    nat.tick(0.0)
    assert not nat.hidden(PRIV) and not nat.hidden(PUB)        # an MS without NAT traversal


def test_preferred_rlocs_follow_priority_and_links():
    roles, nat, etr, itr, ms = two_uplinks()
    site = etr.site
    assert site.preferred_rlocs() == [PRIV, PUB]
    site.set_link_state("wlan0", False)
    assert site.preferred_rlocs() == [PUB]


def test_reprobe_checks_every_rloc_again_now():
    """daemon/mobile.py calls it once the uplinks route from their own RLOCs."""
    roles, nat, etr, itr, ms = two_uplinks()
    answer(nat, ms, nat.tick(0.0), 0.0)
    nat.tick(0.0)                                 # the registration through the RTR
    assert nat.next_deadline() > 1.0
    reqs = [s for s in sends(nat.reprobe(1.0)) if isinstance(decode_control(s.payload), InfoRequest)]
    assert sorted(str(s.src.addr) for s in reqs) == sorted([str(PRIV), str(PUB)])

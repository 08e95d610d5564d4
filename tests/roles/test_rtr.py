"""RTR control plane (roles/rtr.py) between the real xTR NAT role and the real
Map-Server role: ECM'd Map-Register forwarded, Map-Notify relayed to the
translated address and port, peers bound to xTR-IDs only on the MS's word."""
import dataclasses

import pytest

from lispctl.config import ConfigError, loads
from lispctl.roles import build_roles
from lispctl.mapping.types import Rloc
from lispctl.roles.base import Endpoint, InstallMapping
from lispctl.wire import EncapsulatedControlMessage, MapNotify, MapRegister, decode_control, sign

from roles_helpers import A, sends
from test_nat_xtr import MS_EP, NAT_PUBLIC, PRIV, exchange, setup

RTR = """
instance = "rtr"
roles = ["rtr"]
[rtr]
map-servers = ["198.51.100.10"]
max-peers = 2
"""
RTR_EP = Endpoint(A("198.51.100.20"), 4342)
XTR_SEEN = Endpoint(NAT_PUBLIC, 40341)        # the NAT's translation of PRIV:4341


def rtr_role(text=RTR):
    return dict(build_roles(loads(text)))["rtr"]


def registered_via_rtr():
    cfg, roles, nat, ms = setup()
    exchange(nat, ms, sends(nat.tick(0.0)), 0.0)
    [reg] = sends(nat.tick(0.0))
    return nat, ms, reg


def test_register_forwarded_and_notify_relayed_back_through_the_nat():
    nat, ms, reg = registered_via_rtr()
    rtr = rtr_role()
    [fwd] = sends(rtr.handle(reg.payload, XTR_SEEN, RTR_EP, 1.0))
    assert fwd.dst == MS_EP and isinstance(decode_control(fwd.payload), MapRegister)
    assert rtr.peers == {}                          # not before the MS confirms
    [notify] = sends(ms.handle(fwd.payload, RTR_EP, MS_EP, 1.0))
    assert notify.dst == RTR_EP and ms.counters["map_register_ok"] == 1
    last_effects = rtr.handle(notify.payload, MS_EP, RTR_EP, 1.1)
    [relay] = sends(last_effects)
    assert relay.dst == XTR_SEEN
    ecm = decode_control(relay.payload)
    assert isinstance(ecm, EncapsulatedControlMessage) and isinstance(ecm.message, MapNotify)
    assert ecm.inner_dst == PRIV
    nat.handle(relay.payload, RTR_EP, Endpoint(PRIV, 4341), 1.2)
    assert nat.counters["map_notify_via_rtr_rx"] == 1
    [inst] = [e for e in last_effects if isinstance(e, InstallMapping)]
    assert str(inst.eid) == "10.1.0.0/24"
    assert inst.rlocs == (Rloc(NAT_PUBLIC, port=40341),) and inst.ttl_s == 180.0
    [peer] = rtr.snapshot()["peers"]
    assert peer["xtr_id"] == "00112233445566778899aabbccddeeff"
    assert peer["translated"] == "203.0.113.7:40341" and peer["eids"] == ["10.1.0.0/24"]


def test_forged_register_with_someone_elses_xtr_id_does_not_move_the_binding():
    nat, ms, reg = registered_via_rtr()
    rtr = rtr_role()
    [fwd] = sends(rtr.handle(reg.payload, XTR_SEEN, RTR_EP, 1.0))
    rtr.handle(sends(ms.handle(fwd.payload, RTR_EP, MS_EP, 1.0))[0].payload, MS_EP, RTR_EP, 1.0)
    # an attacker replays the xTR-ID with its own (wrong) key from elsewhere
    ecm = decode_control(reg.payload)
    forged_reg = decode_control(sign(dataclasses.replace(ecm.message, nonce=99), "not-the-key"))
    forged = dataclasses.replace(ecm, message=forged_reg).encode()
    evil = Endpoint(A("192.0.2.66"), 5555)
    [fwd2] = sends(rtr.handle(forged, evil, RTR_EP, 2.0))
    assert sends(ms.handle(fwd2.payload, RTR_EP, MS_EP, 2.0)) == []       # MS: bad auth
    assert ms.counters["map_register_bad_auth"] == 1
    rtr.tick(20.0)
    assert rtr.peers[0x00112233445566778899aabbccddeeff].translated == XTR_SEEN
    assert rtr.counters["register_unconfirmed"] == 1
    # a Map-Notify for the forged nonce from anyone but the MS is ignored too
    bogus = sign(MapNotify(99, forged_reg.records, 1, forged_reg.alg_id), "x")
    assert sends(rtr.handle(bogus, evil, RTR_EP, 2.1)) == []
    assert rtr.counters["notify_unknown"] == 1


def test_refuses_registers_without_xtr_id_or_to_unknown_map_servers():
    nat, ms, reg = registered_via_rtr()
    rtr = rtr_role()
    ecm = decode_control(reg.payload)
    no_id = dataclasses.replace(ecm, message=dataclasses.replace(ecm.message, xtr_id=None, site_id=None))
    assert sends(rtr.handle(no_id.encode(), XTR_SEEN, RTR_EP, 1.0)) == []
    elsewhere = dataclasses.replace(ecm, inner_dst=A("192.0.2.99"))
    assert sends(rtr.handle(elsewhere.encode(), XTR_SEEN, RTR_EP, 1.0)) == []
    assert rtr.counters["register_without_xtr_id"] == 1
    assert rtr.counters["register_unknown_map_server"] == 1


def test_peer_table_is_bounded_and_peers_expire():
    rtr = rtr_role()
    nat, ms, reg = registered_via_rtr()
    ecm = decode_control(reg.payload)
    for i, xid in enumerate((1, 2, 3)):
        m = dataclasses.replace(ecm.message, xtr_id=xid, nonce=100 + i)
        raw = dataclasses.replace(ecm, message=decode_control(sign(m, "secret-a"))).encode()
        fwd = sends(rtr.handle(raw, Endpoint(NAT_PUBLIC, 40000 + i), RTR_EP, 1.0))
        if fwd:
            rtr.handle(sends(ms.handle(fwd[0].payload, RTR_EP, MS_EP, 1.0))[0].payload, MS_EP, RTR_EP, 1.0)
    assert sorted(rtr.peers) == [1, 2] and rtr.counters["register_peer_table_full"] == 1
    assert rtr.next_deadline() == 181.0
    gone = rtr.tick(181.0)
    assert [str(e.eid) for e in gone if type(e).__name__ == "RemoveMapping"] == ["10.1.0.0/24"] * 2
    assert rtr.peers == {} and rtr.counters["peer_expired"] == 2


def test_config_needs_map_servers():
    with pytest.raises(ConfigError, match="map-servers"):
        loads('instance = "r"\nroles = ["rtr"]\n')


def test_status_text_lists_the_rtrs_peers():
    from lispctl.commands.show import _status_text
    nat, ms, reg = registered_via_rtr()
    rtr = rtr_role()
    [fwd] = sends(rtr.handle(reg.payload, XTR_SEEN, RTR_EP, 1.0))
    rtr.handle(sends(ms.handle(fwd.payload, RTR_EP, MS_EP, 1.0))[0].payload, MS_EP, RTR_EP, 1.0)
    text = _status_text({"instance": "rtr", "state": {"rtr": rtr.snapshot()}})
    assert ("xTR-ID 00112233445566778899aabbccddeeff at 203.0.113.7:40341 (private 192.168.1.10): "
            "10.1.0.0/24") in text


def test_registers_are_rate_limited_per_source():
    nat, ms, reg = registered_via_rtr()
    rtr = rtr_role()
    forwarded = sum(len(sends(rtr.handle(reg.payload, XTR_SEEN, RTR_EP, 3.0))) for _ in range(50))
    assert forwarded == 10 and rtr.counters["register_rate_limited_per_source"] == 40
    assert sends(rtr.handle(reg.payload, Endpoint(NAT_PUBLIC, 40999), RTR_EP, 3.0)) == []  # same address
    assert sends(rtr.handle(reg.payload, XTR_SEEN, RTR_EP, 4.0))        # refilled a second later


def test_rtr_data_plane_plan():
    """With RLOC-facing interfaces the RTR loads the data plane on them with
    re-encapsulation, and an ITR role resolves the destinations it misses;
    without, it stays a control-plane relay."""
    from lispctl.roles import datapath_plan
    cfg = loads(RTR)
    roles = build_roles(cfg)
    plan = datapath_plan(cfg, roles)
    assert not plan.needed and not plan.reencap and "itr" not in dict(roles)
    cfg = loads(RTR + '[interfaces]\nrloc-facing = ["eth0"]\n'
                '[[map-resolver]]\naddress = "192.0.2.10"\n')
    roles = build_roles(cfg, interface_addresses={"eth0": [A("192.0.2.130")]})
    plan = datapath_plan(cfg, roles)
    assert plan.needed and plan.reencap and plan.rloc_interfaces == ("eth0",) and plan.eid_interfaces == ()
    assert plan.local_rlocs == (A("192.0.2.130"),) and plan.local_eids == ()
    assert [n for n, _ in roles] == ["rtr", "itr"]


# ---------------------------------------------------------------- relay security

VICTIM = 0x00112233445566778899aabbccddeeff
EVIL = Endpoint(A("192.0.2.66"), 5555)


def forged_register(reg, nonce=99):
    """An attacker's ECM'd register naming the victim's xTR-ID (signed with a key it has)."""
    ecm = decode_control(reg.payload)
    forged_reg = decode_control(sign(dataclasses.replace(ecm.message, nonce=nonce), "not-the-key"))
    return dataclasses.replace(ecm, message=forged_reg).encode(), forged_reg


def spoofed_notify(forged_reg, **kw):
    """What an underlay attacker sends from the Map-Server's address: a
    Map-Notify echoing the nonce it saw in its own (forged) register."""
    return sign(MapNotify(forged_reg.nonce, forged_reg.records, 1, forged_reg.alg_id,
                          xtr_id=forged_reg.xtr_id, site_id=forged_reg.site_id, **kw), "whatever")


def confirmed(rtr, ms, reg, now=1.0):
    [fwd] = sends(rtr.handle(reg.payload, XTR_SEEN, RTR_EP, now))
    [notify] = sends(ms.handle(fwd.payload, RTR_EP, MS_EP, now))
    return notify, rtr.handle(notify.payload, MS_EP, RTR_EP, now)


def test_notify_with_a_pending_nonce_from_another_source_is_ignored():
    """The nonce alone does not confirm: only the Map-Server the register
    went to can (from anywhere else it is counted and the register stays)."""
    nat, ms, reg = registered_via_rtr()
    rtr = rtr_role()
    [fwd] = sends(rtr.handle(reg.payload, XTR_SEEN, RTR_EP, 1.0))
    [notify] = sends(ms.handle(fwd.payload, RTR_EP, MS_EP, 1.0))
    assert rtr.handle(notify.payload, EVIL, RTR_EP, 1.0) == []
    assert rtr.counters["notify_unknown"] == 1 and rtr.peers == {} and len(rtr.pending) == 1
    assert sends(rtr.handle(notify.payload, MS_EP, RTR_EP, 1.1))            # the real one still counts


def test_unconfirmed_register_never_puts_its_port_in_the_map_cache():
    """Data for an EID goes only to a translated port the Map-Server
    confirmed: a register the MS refuses installs nothing, ever."""
    nat, ms, reg = registered_via_rtr()
    rtr = rtr_role()
    raw, _ = forged_register(reg)
    effects = rtr.handle(raw, EVIL, RTR_EP, 1.0)
    [fwd] = sends(effects)
    assert sends(ms.handle(fwd.payload, RTR_EP, MS_EP, 1.0)) == []         # MS: bad auth
    effects += rtr.tick(11.0)
    assert not [e for e in effects if isinstance(e, InstallMapping)]
    assert rtr.peers == {} and rtr.counters["register_unconfirmed"] == 1


RTR_KEYED = RTR + 'map-server-keys = { "198.51.100.10" = "ms-rtr-key" }\n'


def keyed_ms():
    """The Map-Server of test_nat_xtr.setup() sharing an MS-RTR key with the RTR."""
    from roles_helpers import MSMR, make
    return make(MSMR.format(roles='["ms"]').replace(
        "[[site]]", '[ms]\nrtr-rlocs = ["198.51.100.20"]\nrtr-keys = { "198.51.100.20" = "ms-rtr-key" }\n\n'
        "[[site]]", 1))[1]["ms"]


def test_map_server_authenticates_the_notify_to_the_rtr_which_strips_it_for_the_xtr():
    nat, _, reg = registered_via_rtr()
    ms, rtr = keyed_ms(), rtr_role(RTR_KEYED)
    notify, effects = confirmed(rtr, ms, reg)
    sent = decode_control(notify.payload)
    assert sent.rtr and sent.ms_rtr_key_id == 2 and len(sent.ms_rtr_auth_data) == 32   # key 0, HMAC-SHA-256
    assert ms.counters["map_notify_ms_rtr_auth_tx"] == 1
    [relay] = sends(effects)
    inner = decode_control(relay.payload).message
    assert not inner.rtr and inner.ms_rtr_key_id is None       # as the MS would have sent it directly
    nat.handle(relay.payload, RTR_EP, Endpoint(PRIV, 4341), 1.2)
    assert nat.counters["map_notify_via_rtr_rx"] == 1 and "map_notify_via_rtr_bad_auth" not in nat.counters
    assert VICTIM in rtr.peers


@pytest.mark.parametrize("keyed", [False, True])
def test_forged_notify_from_the_map_servers_address_needs_the_ms_rtr_key(keyed):
    """An underlay attacker registers the victim's xTR-ID from its own
    address and confirms it with a Map-Notify spoofed from the Map-Server's
    address (it knows the nonce: it chose it). Without an MS-RTR key the RTR
    cannot tell and moves the victim's binding (and data) to the attacker;
    with one it refuses: no R bit, or an MS-RTR MAC made without the key."""
    nat, ms, reg = registered_via_rtr()
    if keyed:
        ms = keyed_ms()
    rtr = rtr_role(RTR_KEYED if keyed else RTR)
    confirmed(rtr, ms, reg)
    assert rtr.peers[VICTIM].translated == XTR_SEEN
    raw, forged_reg = forged_register(reg)
    assert sends(rtr.handle(raw, EVIL, RTR_EP, 2.0))                        # forwarded: the MS will refuse it
    from lispctl.wire.auth import add_ms_rtr_auth
    bad_mac = add_ms_rtr_auth(spoofed_notify(forged_reg), "guessed-key")
    effects = rtr.handle(spoofed_notify(forged_reg), MS_EP, RTR_EP, 2.1)
    if not keyed:
        assert rtr.peers[VICTIM].translated == EVIL                          # the attack works
        assert any(isinstance(e, InstallMapping) and e.rlocs == (Rloc(EVIL.addr, port=EVIL.port),)
                   for e in effects)
        return
    effects += rtr.handle(bad_mac, MS_EP, RTR_EP, 2.2)
    assert sends(effects) == [] and not [e for e in effects if isinstance(e, InstallMapping)]
    assert rtr.peers[VICTIM].translated == XTR_SEEN
    assert rtr.counters["notify_without_ms_rtr_auth"] == 1 and rtr.counters["notify_bad_ms_rtr_auth"] == 1
    assert forged_reg.nonce in rtr.pending                # not used up by the forgeries


def test_map_server_keys_must_name_map_servers():
    with pytest.raises(ConfigError, match="map-server-keys"):
        loads(RTR + 'map-server-keys = { "192.0.2.1" = "k" }\n')


def test_rtr_never_encapsulates_to_itself_and_its_peers_entries_win():
    """The MS names the RTR as locator of every NATed xTR it relays for.
    The RTR's ITR resolving such an EID while no peer holds it hands the
    data plane our own RLOC as unusable (dropped, counted: no locator);
    once the peer is confirmed its entry is the RTR's alone: the ITR
    forgets its own, so no refresh or expiry of it replaces the peer's."""
    from lispctl.mapping.types import EidPrefix, MapAction
    import ipaddress
    cfg = loads(RTR.replace("max-peers = 2\n", "") + '[interfaces]\nrloc-facing = ["eth0"]\n'
                '[[map-resolver]]\naddress = "198.51.100.10"\n')
    roles = dict(build_roles(cfg, interface_addresses={"eth0": [RTR_EP.addr]}))
    rtr, itr = roles["rtr"], roles["itr"]
    assert itr.rtr is rtr and rtr.itr is itr
    steered = itr._rlocs_for_dp((Rloc(RTR_EP.addr), Rloc(A("192.0.2.7"))))
    assert steered == (Rloc(RTR_EP.addr, priority=255, reachable=False), Rloc(A("192.0.2.7")))
    assert rtr.counters["map_cache_self_locator"] == 1
    eid = EidPrefix(0, ipaddress.ip_network("10.1.0.0/24"))
    itr._cache_install(eid, (Rloc(RTR_EP.addr),), MapAction.NO_ACTION, 60.0, 0.0)
    assert itr.cache.get(eid) is not None
    nat, ms, reg = registered_via_rtr()
    notify, effects = confirmed(rtr, ms, reg)
    assert [e for e in effects if isinstance(e, InstallMapping)][0].rlocs == (Rloc(NAT_PUBLIC, port=40341),)
    assert itr.cache.get(eid) is None and itr.reinstall_all(2.0) == []


RTR_DATA_EP = Endpoint(RTR_EP.addr, 4341)
XTR_DATA_SEEN = Endpoint(NAT_PUBLIC, 40999)   # PRIV:4341 -> RTR:4341, mapped on its own


def relayed_with_keepalive():
    """Register, confirm, relay; the xTR answers the relayed notify with its
    data keepalive (an Info-Request from its 4341 to the RTR's 4341)."""
    nat, ms, reg = registered_via_rtr()
    rtr = rtr_role()
    [fwd] = sends(rtr.handle(reg.payload, XTR_SEEN, RTR_EP, 1.0))
    [notify] = sends(ms.handle(fwd.payload, RTR_EP, MS_EP, 1.0))
    [relay] = sends(rtr.handle(notify.payload, MS_EP, RTR_EP, 1.1))
    [keepalive] = sends(nat.handle(relay.payload, RTR_EP, Endpoint(PRIV, 4341), 1.2))
    assert keepalive.dst == RTR_DATA_EP and keepalive.src == Endpoint(PRIV, 4341)
    assert keepalive.payload[0] == 0x70           # what the ETR program passes to the stack
    return rtr, keepalive, decode_control(reg.payload).message


def test_data_keepalive_gives_the_rtr_the_nats_data_binding():
    rtr, keepalive, _ = relayed_with_keepalive()
    effects = rtr.handle(keepalive.payload, XTR_DATA_SEEN, RTR_DATA_EP, 1.3)
    [inst] = [e for e in effects if isinstance(e, InstallMapping)]
    assert inst.rlocs == (Rloc(NAT_PUBLIC, port=40999),)
    assert rtr.counters["data_binding_learned"] == 1
    [peer] = rtr.snapshot()["peers"]
    assert peer["translated"] == "203.0.113.7:40341" and peer["data"] == "203.0.113.7:40999"
    # the next keepalive only refreshes
    assert rtr.handle(keepalive.payload, XTR_DATA_SEEN, RTR_DATA_EP, 6.0) == []
    assert rtr.counters["data_keepalive_refresh"] == 1


def test_forged_keepalive_cannot_move_a_confirmed_peers_binding():
    rtr, keepalive, reg = relayed_with_keepalive()
    xid = 0x00112233445566778899aabbccddeeff
    forged = decode_control(keepalive.payload)
    # an unconfirmed nonce (the attacker's own), from the NAT's address
    other = dataclasses.replace(forged, nonce=reg.nonce ^ 1).encode()
    assert rtr.handle(other, Endpoint(NAT_PUBLIC, 6666), RTR_DATA_EP, 1.3) == []
    # the right nonce from another address, or to the control port
    evil = Endpoint(A("192.0.2.66"), 5555)
    assert rtr.handle(keepalive.payload, evil, RTR_DATA_EP, 1.3) == []
    assert rtr.handle(keepalive.payload, Endpoint(NAT_PUBLIC, 6666), RTR_EP, 1.3) == []
    assert rtr.counters["data_keepalive_unknown"] == 2
    assert rtr.peers[xid].data is None
    # the genuine keepalive sets it; a replay of that nonce from another port cannot move it
    rtr.handle(keepalive.payload, XTR_DATA_SEEN, RTR_DATA_EP, 1.4)
    assert rtr.handle(keepalive.payload, Endpoint(NAT_PUBLIC, 6666), RTR_DATA_EP, 1.5) == []
    assert rtr.counters["data_keepalive_moved_refused"] == 1
    assert rtr.peers[xid].data == XTR_DATA_SEEN and rtr.peers[xid].translated == XTR_SEEN
    assert rtr.peers[xid].locator == Rloc(NAT_PUBLIC, port=40999)

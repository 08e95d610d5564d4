"""LISP-SEC through the real roles on the in-memory network of test_system:
ITR (required) -> MR/MS (opens the OTK, vouches with the EID-AD) -> ETR
(signs with the MS-OTK) -> ITR (verifies, installs). A forged Map-Reply
with the right nonce is never installed."""
import dataclasses

from lispctl.mapping.types import EidPrefix, MapAction, Rloc
from lispctl.roles.base import Endpoint, InstallMapping, MissEvent, Send
from lispctl.wire import EncapsulatedControlMessage, LocatorRecord, MapReply, decode_control, eid_record, sign
from lispctl.wire import lispsec as ls

import roles_helpers
from roles_helpers import MSMR, A
from test_system import MS_ADDR, Net

P = EidPrefix.parse
SEC_MR = 'lisp-sec = "{mode}"\nlisp-sec-key = "itr-mr-key"\nlisp-sec-key-id = 4\n'
SEC_MS = '[lisp-sec]\nitr-keys = { 4 = "itr-mr-key" }\n'


def build(mode="required", ms_keys=True, b_key="itr-mr-key"):
    net = Net()
    net.add("ms", MSMR.format(roles='["ms", "mr"]') + (SEC_MS if ms_keys else ""), [MS_ADDR], 1)
    _, a = net.add("a", roles_helpers.xtr_text("a", "10.1.0.0/16", "secret-a", MS_ADDR, SEC_MR.format(mode=mode)),
                   ["192.0.2.1"], 2)
    _, b = net.add("b", roles_helpers.xtr_text("b", "10.2.0.0/16", "secret-b", MS_ADDR,
                                               SEC_MR.format(mode=mode).replace("itr-mr-key", b_key)),
                   ["203.0.113.2"], 3)
    net.run(until=5.0, t0=0.0)
    ms = dict(net.devices[A(MS_ADDR)][1])["ms"]
    return net, dict(a), dict(b), ms


def test_resolution_with_lisp_sec_required():
    net, a, b, ms = build()
    net.miss("b", "10.1.7.7/32", "10.2.0.5", 10.0)
    net.run(until=15.0, t0=10.0)
    got = net.installed["b"][P("10.1.0.0/16")]
    assert got.rlocs == (Rloc(A("192.0.2.1")),)
    assert b["itr"].counters["lisp_sec_reply_ok"] == 1
    assert a["etr"].counters["lisp_sec_reply_signed"] == 1
    assert ms.counters["lisp_sec_request_forwarded"] == 1
    assert b["itr"].sec.outstanding() == 0                 # the <nonce, OTK> pair is spent


def test_proxy_and_negative_replies_are_signed_by_the_ms():
    net, a, b, ms = build()
    net.miss("a", "10.2.7.7/32", "10.1.0.5", 10.0)          # site-b: proxy-reply
    net.miss("a", "192.0.2.200/32", "10.1.0.5", 10.0)       # no site: negative
    net.run(until=15.0, t0=10.0)
    assert net.installed["a"][P("10.2.0.0/16")].rlocs == (Rloc(A("203.0.113.2")),)
    assert net.installed["a"][P("128.0.0.0/1")].action is MapAction.NATIVELY_FORWARD
    assert a["itr"].counters["lisp_sec_reply_ok"] == 2


def _first_request(net, b, t):
    """Make b miss 10.1.7.7 and return the ECM it sends (not yet delivered)."""
    fx = b["itr"].on_miss(MissEvent(P("10.1.7.7/32"), A("10.2.0.5")), t)
    sends = [e for e in fx if hasattr(e, "payload")]
    assert len(sends) == 1
    net.apply("b", fx, t, A("203.0.113.2"))
    return decode_control(sends[0].payload)


def test_forged_reply_with_matching_nonce_is_not_installed():
    net, a, b, ms = build()
    ecm = _first_request(net, b, 10.0)
    assert isinstance(ecm, EncapsulatedControlMessage) and ecm.security and ecm.auth
    nonce = ecm.message.nonce
    evil = LocatorRecord(A("198.18.0.66"), 1, 100, 255, 0, False, False, True)
    forged = MapReply(nonce, (eid_record(P("10.1.0.0/16"), (evil,), ttl=1440),))
    attacker = Endpoint(A("198.18.0.66"), 4342)
    # 1. unsigned
    fx = b["itr"].handle(forged.encode(), attacker, Endpoint(A("203.0.113.2")), 10.0005)
    assert not [e for e in fx if isinstance(e, InstallMapping)]
    # 2. "signed" with a key the attacker made up
    fake = ls.eid_ad_signed(ls.EidAd(2, 0, (ls.EidAdPrefix(A("10.1.0.0"), 16),)), 2, bytes(16))
    raw = ls.sign_map_reply(forged.encode(), fake, 2, ls.derive_ms_otk(2, bytes(16)))
    fx = b["itr"].handle(raw, attacker, Endpoint(A("203.0.113.2")), 10.0006)
    assert not [e for e in fx if isinstance(e, InstallMapping)]
    c = b["itr"].counters
    assert c["lisp_sec_reply_unsigned_dropped"] == 1 and c["lisp_sec_reply_bad_eid_hmac"] == 1
    assert P("10.1.0.0/16") not in net.installed["b"]
    # nor do forgeries count as the resolver answering (they must not keep a dead one in use)
    assert b["itr"].resolver_set.all[0].answers == 0
    # the genuine answer still arrives and is installed
    net.run(until=15.0, t0=10.0)
    assert net.installed["b"][P("10.1.0.0/16")].rlocs == (Rloc(A("192.0.2.1")),)
    assert c["lisp_sec_reply_ok"] == 1


def test_without_lisp_sec_the_same_forgery_is_installed():
    # The attack the tests above defend against: with lisp-sec off, the nonce is all it takes.
    net, a, b, ms = build(mode="off")
    ecm = _first_request(net, b, 10.0)
    assert not ecm.security
    evil = LocatorRecord(A("198.18.0.66"), 1, 100, 255, 0, False, False, True)
    forged = MapReply(ecm.message.nonce, (eid_record(P("10.1.0.0/16"), (evil,), ttl=1440),))
    fx = b["itr"].handle(forged.encode(), Endpoint(A("198.18.0.66")), Endpoint(A("203.0.113.2")), 10.0005)
    assert [e.rlocs for e in fx if isinstance(e, InstallMapping)] == [(Rloc(A("198.18.0.66")),)]


def test_on_mode_refuses_badly_signed_reply():
    net, a, b, ms = build(mode="on")
    ecm = _first_request(net, b, 10.0)
    evil = LocatorRecord(A("198.18.0.66"), 1, 100, 255, 0, False, False, True)
    forged = MapReply(ecm.message.nonce, (eid_record(P("10.1.0.0/16"), (evil,), ttl=1440),))
    fake = ls.eid_ad_signed(ls.EidAd(2, 0, (ls.EidAdPrefix(A("10.1.0.0"), 16),)), 2, bytes(16))
    raw = ls.sign_map_reply(forged.encode(), fake, 2, ls.derive_ms_otk(2, bytes(16)))
    fx = b["itr"].handle(raw, Endpoint(A("198.18.0.66")), Endpoint(A("203.0.113.2")), 10.0005)
    assert not [e for e in fx if isinstance(e, InstallMapping)]
    net.run(until=15.0, t0=10.0)
    assert net.installed["b"][P("10.1.0.0/16")].rlocs == (Rloc(A("192.0.2.1")),)


def test_required_itr_never_installs_from_a_mapping_system_without_lisp_sec():
    net, a, b, ms = build(ms_keys=False)
    net.miss("b", "10.1.7.7/32", "10.2.0.5", 10.0)
    net.run(until=15.0, t0=10.0)
    assert P("10.1.0.0/16") not in net.installed["b"]
    assert b["itr"].counters["lisp_sec_reply_unsigned_dropped"] >= 1
    assert ms.counters["lisp_sec_request_no_keys"] >= 1


def test_ms_refuses_request_wrapped_under_another_key():
    net, a, b, ms = build(b_key="not-the-key")
    net.miss("b", "10.1.7.7/32", "10.2.0.5", 10.0)
    net.run(until=12.0, t0=10.0)
    assert ms.counters["lisp_sec_request_bad_otk"] >= 1
    assert P("10.1.0.0/16") not in net.installed["b"]
    assert not any(d == "192.0.2.1" and t == 8 for tm, s, d, t in net.log if tm >= 10.0)   # not forwarded


def _non_signing_etr(a):
    """a's ETR registers without the S bit, as an ETR without LISP-SEC would:
    its Map-Registers are re-signed with S clear on their way out."""
    etr = a["etr"]
    orig = etr._register

    def register(ms, now, out):
        before = len(out.items)
        orig(ms, now, out)
        for i in range(before, len(out.items)):
            e = out.items[i]
            if isinstance(e, Send) and e.payload[0] >> 4 == 3:
                plain = dataclasses.replace(decode_control(e.payload), security=False)
                out.items[i] = dataclasses.replace(e, payload=sign(plain, ms.cfg.key))
    etr._register = register


def test_no_signing_etr_required_gets_signed_negative_on_downgrades():
    for mode in ("required", "on"):
        net = Net()
        net.add("ms", MSMR.format(roles='["ms", "mr"]') + SEC_MS, [MS_ADDR], 1)
        _, a = net.add("a", roles_helpers.xtr_text("a", "10.1.0.0/16", "secret-a", MS_ADDR,
                                                   SEC_MR.format(mode=mode)), ["192.0.2.1"], 2)
        _, b = net.add("b", roles_helpers.xtr_text("b", "10.2.0.0/16", "secret-b", MS_ADDR,
                                                   SEC_MR.format(mode=mode)), ["203.0.113.2"], 3)
        a, b = dict(a), dict(b)
        _non_signing_etr(a)
        net.run(until=5.0, t0=0.0)
        ms = dict(net.devices[A(MS_ADDR)][1])["ms"]
        net.miss("b", "10.1.7.7/32", "10.2.0.5", 10.0)
        net.run(until=15.0, t0=10.0)
        got = net.installed["b"][P("10.1.0.0/16")]
        assert ms.counters["lisp_sec_negative_etr_cant_sign"] == 1
        if mode == "required":      # the MS's signed negative answer: no traffic to an unverifiable site
            assert got.rlocs == () and got.action is MapAction.SEND_MAP_REQUEST
        else:                       # "on": asked again without LISP-SEC, a's ETR answered
            assert got.rlocs == (Rloc(A("192.0.2.1")),)
            assert b["itr"].counters["lisp_sec_downgrade"] == 1
            assert b["itr"].counters["lisp_sec_reply_unsigned_accepted"] == 0   # the plain request: no OTK


def test_reload_applies_lisp_sec_settings():
    # lispctl reload: a resolver switched to lisp-sec protects the next request;
    # the ETR signs with its Map-Server's new key.
    from lispctl.config import loads
    net, a, b, ms = build(mode="off")
    text = roles_helpers.xtr_text("b", "10.2.0.0/16", "secret-b", MS_ADDR, SEC_MR.format(mode="required"))
    b["itr"].reconfigure(loads(text), 6.0)
    ecm = _first_request(net, b, 10.0)
    assert ecm.security and ecm.auth
    etr_text = roles_helpers.xtr_text("a", "10.1.0.0/16", "secret-a-2", MS_ADDR)
    a["etr"].reconfigure(loads(etr_text), 6.0)
    assert a["etr"].sec.keys == {1: [b"secret-a-2"]}

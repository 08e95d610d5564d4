"""LISP-SEC (RFC 9303) sans-IO pieces: ITR protects and verifies, the
Map-Server opens and vouches, the ETR signs; forged and tampered replies
are refused. The roles' integration is tested in test_lispsec_system.py."""
from __future__ import annotations

import dataclasses
import ipaddress
import itertools

import pytest

from lispctl.mapping.types import EidPrefix
from lispctl.roles import lispsec as sec
from lispctl.roles.common import Counters
from lispctl.wire import (EncapsulatedControlMessage, LocatorRecord, MapReply, MapRequest, decode_control,
                          eid_record, record_prefix, request_record)
from lispctl.wire import lispsec as ls

A = ipaddress.ip_address
P = EidPrefix.parse
ITR_KEY, ETR_KEY = "itr-mr-key", "ms-etr-key"
NONCE = 0xDEADBEEF01020304


def _counter_rng():
    n = itertools.count(1)
    return lambda k: next(n).to_bytes(k, "big")


def _request(nonce=NONCE, eid="10.1.2.3/32"):
    req = MapRequest(nonce, (request_record(P(eid)),), (A("192.0.2.1"),))
    return EncapsulatedControlMessage(req, A("192.0.2.1"), A("10.1.2.3"))


def _reply(nonce=NONCE, eid="10.1.0.0/16", rloc="198.51.100.7"):
    loc = LocatorRecord(A(rloc), 1, 100, 255, 0, False, False, True)
    return MapReply(nonce, (eid_record(P(eid), (loc,), ttl=10),))


def _exchange(mode="required", eid_ad_prefix="10.1.0.0/16", reply=None):
    """ITR -> MS (opens, vouches, forwards) -> ETR (signs): the reply bytes."""
    c = Counters()
    itr = sec.ItrSec(c, random_bytes=_counter_rng())
    sent = itr.protect(_request(), mode, ITR_KEY, 5)
    ecm = decode_control(sent.encode())                      # through the wire
    op, why = sec.open_request(ecm, {5: ITR_KEY}, c)
    assert op is not None and why == ""
    ead = sec.ms_eid_ad(op, [P(eid_ad_prefix)])
    fwd = decode_control(sec.to_etr(ecm, op, ead, 1, ETR_KEY).encode())
    raw = sec.EtrSec([(1, ETR_KEY)], c).reply_bytes(reply or _reply(), fwd)
    return itr, c, raw


def test_protected_request_layout():
    c = Counters()
    itr = sec.ItrSec(c, random_bytes=_counter_rng())
    ecm = itr.protect(_request(), "on", ITR_KEY, 5)
    raw = ecm.encode()
    assert raw[0] & 0x08                                      # ECM S bit
    ad, _ = ls.decode_ecm_ad(ecm.auth)
    assert (ad.requested_hmac_id, ad.key_id, ad.wrap_id) == (ls.HMAC_SHA256_128, 5, ls.WRAP_AES_128_HKDF_SHA256)
    assert ad.eid_ad == ls.EidAd(ls.KDF_HKDF_SHA256) and ad.eid_ad.encode() == bytes.fromhex("00040002")
    assert ad.otk != (1).to_bytes(16, "big")                  # wrapped, not in clear
    assert ls.unwrap_otk(ad.wrap_id, ITR_KEY.encode(), NONCE, ad.preamble, ad.otk) == (1).to_bytes(16, "big")
    assert itr.protect(_request(), "off", ITR_KEY, 5) == _request()


def test_fresh_otk_per_request():
    itr = sec.ItrSec(Counters())
    a = ls.decode_ecm_ad(itr.protect(_request(1), "on", ITR_KEY, 0).auth)[0]
    b = ls.decode_ecm_ad(itr.protect(_request(2), "on", ITR_KEY, 0).auth)[0]
    oa = ls.unwrap_otk(2, ITR_KEY.encode(), 1, a.preamble, a.otk)
    ob = ls.unwrap_otk(2, ITR_KEY.encode(), 2, b.preamble, b.otk)
    assert oa and ob and oa != ob


def test_full_exchange_verifies_and_spends_the_otk():
    itr, c, raw = _exchange()
    reply = decode_control(raw)
    assert reply.security
    v = itr.check(raw, reply)
    assert v.protected and v.records == reply.records and c["lisp_sec_reply_ok"] == 1
    # RFC 9303 7.6: a replay finds no <nonce, ITR-OTK> any more (treated as unprotected here;
    # the ITR drops it anyway: its nonce is no longer outstanding)
    assert itr.outstanding() == 0


def test_forged_reply_with_matching_nonce_is_refused():
    itr, c, raw = _exchange()
    # an attacker who saw the nonce answers first: no authentication data
    forged = _reply(rloc="203.0.113.66")
    v = itr.check(forged.encode(), forged)
    assert v.records is None and c["lisp_sec_reply_unsigned_dropped"] == 1
    # ... or with authentication data of its own (it does not know the OTK)
    fake_ead = ls.eid_ad_signed(ls.EidAd(2, 0, (ls.EidAdPrefix(A("10.1.0.0"), 16),)), 2, bytes(16))
    signed = ls.sign_map_reply(forged.encode(), fake_ead, 2, ls.derive_ms_otk(2, bytes(16)))
    v = itr.check(signed, decode_control(signed))
    assert v.records is None and c["lisp_sec_reply_bad_eid_hmac"] == 1
    # the genuine reply still verifies afterwards (the forgeries did not spend the key)
    assert itr.check(raw, decode_control(raw)).protected


def test_tampered_locator_breaks_the_pkt_hmac():
    itr, c, raw = _exchange()
    i = raw.index(A("198.51.100.7").packed)
    bad = raw[:i] + A("203.0.113.66").packed + raw[i + 4:]
    assert itr.check(bad, decode_control(bad)).records is None
    assert c["lisp_sec_reply_bad_pkt_hmac"] == 1


def test_etr_cannot_overclaim():
    # The MS vouches for 10.1.2.0/24 only; the ETR claims 10.1.0.0/16 and 10.9.0.0/16.
    loc = LocatorRecord(A("198.51.100.7"), 1, 100, 255, 0, False, False, True)
    claim = MapReply(NONCE, (eid_record(P("10.1.0.0/16"), (loc,), ttl=10),
                             eid_record(P("10.9.0.0/16"), (loc,), ttl=10)))
    itr, c, raw = _exchange(eid_ad_prefix="10.1.2.0/24", reply=claim)
    v = itr.check(raw, decode_control(raw))
    assert [record_prefix(r) for r in v.records] == [P("10.1.2.0/24")]       # narrowed
    assert c["lisp_sec_record_not_authorized"] == 1                         # 10.9/16 refused


def test_on_mode_accepts_unsigned_required_does_not():
    for mode, ok in (("on", True), ("required", False)):
        c = Counters()
        itr = sec.ItrSec(c)
        itr.protect(_request(), mode, ITR_KEY, 0)
        plain = _reply()
        assert (itr.check(plain.encode(), plain).records is not None) is ok


def test_unprotected_request_reply_is_untouched():
    itr = sec.ItrSec(Counters())
    plain = _reply()
    assert itr.check(plain.encode(), plain).records == plain.records


def test_wrong_algorithms_are_refused():
    itr, c, raw = _exchange()
    reply = decode_control(raw)
    ad = ls.decode_map_reply_ad(reply.trailer)
    # re-signed by someone holding the MS-OTK but with HMAC-SHA-1: not what we asked for
    st = itr._otks[NONCE]
    sha1 = ls.sign_map_reply(_reply().encode(), ad.eid_ad, ls.HMAC_SHA1_96, ls.derive_ms_otk(2, st.otk))
    assert itr.check(sha1, decode_control(sha1)).records is None
    assert c["lisp_sec_reply_bad_algorithm"] == 1


def test_ms_refuses_clear_otk_unknown_key_and_bad_wrap():
    c = Counters()
    req = _request()
    clear = ls.EcmAuthData(2, 5, ls.WRAP_NULL_128, bytes(8), bytes(16), ls.EidAd(2))
    assert sec.open_request(dataclasses.replace(req, security=True, auth=clear.encode()), {5: ITR_KEY}, c)[0] is None
    assert c["lisp_sec_request_bad_wrap"] == 1
    good = sec.ItrSec(Counters()).protect(req, "on", ITR_KEY, 5)
    op, why = sec.open_request(good, {6: ITR_KEY}, c)
    assert op is None and "key ID 5" in why
    op, why = sec.open_request(good, {5: "another key"}, c)
    assert op is None and c["lisp_sec_request_bad_otk"] == 1
    # no keys at all: answered without LISP-SEC (not dropped)
    assert sec.open_request(good, {}, c) == (None, "")
    assert sec.open_request(req, {5: ITR_KEY}, c) == (None, "")


def test_ms_proxy_reply_is_signed_by_the_ms():
    c = Counters()
    itr = sec.ItrSec(c)
    ecm = decode_control(itr.protect(_request(), "required", ITR_KEY, 5).encode())
    op, _ = sec.open_request(ecm, {5: ITR_KEY}, c)
    raw = sec.ms_signed(_reply(), op, sec.ms_eid_ad(op, [P("10.1.0.0/16")]))
    assert itr.check(raw, decode_control(raw)).protected


def test_etr_without_the_key_answers_plain():
    c = Counters()
    itr = sec.ItrSec(Counters())
    ecm = decode_control(itr.protect(_request(), "required", ITR_KEY, 5).encode())
    op, _ = sec.open_request(ecm, {5: ITR_KEY}, c)
    fwd = sec.to_etr(ecm, op, sec.ms_eid_ad(op, [P("10.1.0.0/16")]), 1, ETR_KEY)
    raw = sec.EtrSec([(1, "not the key")], c).reply_bytes(_reply(), fwd)
    assert not decode_control(raw).security and c["lisp_sec_request_not_opened"] == 1
    # the ITR's ECM reaching an ETR unchanged (no MS-OTK for it) is answered plain too
    raw = sec.EtrSec([(5, ITR_KEY)], c).reply_bytes(_reply(), ecm)
    assert not decode_control(raw).security


def test_outstanding_keys_are_bounded_never_evicted():
    c = Counters()
    itr = sec.ItrSec(c, max_outstanding=4)
    sent = [itr.protect(_request(n), "required", ITR_KEY, 0) for n in range(6)]
    assert all(e is not None for e in sent[:4]) and sent[4] is None and sent[5] is None
    assert itr.outstanding() == 4 and c["lisp_sec_otk_table_full"] == 2
    # "on" still sends, unprotected, when full
    assert itr.protect(_request(7), "on", ITR_KEY, 0) == _request(7)
    # an unsigned reply to a request still outstanding is refused; forgetting frees a slot
    plain = _reply(nonce=0)
    assert itr.check(plain.encode(), plain).records is None
    itr.forget(0)
    assert itr.protect(_request(8), "required", ITR_KEY, 0) is not None


# ---------------------------------------------------------------- split Map-Resolver / Map-Server

MR_ONLY = """
instance = "mr"
roles = ["mr"]
[[mr.map-server]]
address = "198.51.100.20"
eid-prefix = ["10.1.0.0/16"]
[lisp-sec]
itr-keys = { 5 = "itr-mr-key" }
"""

MS_ONLY = """
instance = "ms"
roles = ["ms"]
[[site]]
name = "a"
keys = { 1 = "ms-etr-key" }
[[site.eid-prefix]]
prefix = "10.1.0.0/16"
[lisp-sec]
itr-keys = { 5 = "itr-mr-key" }
"""


def test_split_mr_forwards_unchanged_and_ms_opens_it():
    from roles_helpers import ep, make, only_send
    from lispctl.wire import MapRegister, sign
    _, mr = make(MR_ONLY)
    _, ms = make(MS_ONLY)
    c = Counters()
    itr = sec.ItrSec(c)
    raw = itr.protect(_request(), "required", ITR_KEY, 5).encode()
    send, fwd = only_send(mr["mr"].handle(raw, ep("192.0.2.1"), ep("198.51.100.10"), 1.0))
    assert send.payload == raw and send.dst == ep("198.51.100.20")        # the ECM as received
    # the ETR registers with the S bit, then the MS forwards the request with MS-OTK for it
    loc = LocatorRecord(A("192.0.2.77"), 1, 100, 255, 0, False, False, True)
    reg = MapRegister(9, (eid_record(P("10.1.0.0/16"), (loc,), ttl=10),), key_id=1, alg_id=2, security=True)
    ms["ms"].handle(sign(reg, "ms-etr-key"), ep("192.0.2.77"), ep("198.51.100.20"), 1.0)
    send, out = only_send(ms["ms"].handle(raw, ep("198.51.100.10"), ep("198.51.100.20"), 1.1))
    assert send.dst == ep("192.0.2.77") and out.to_etr and out.security
    ad, _ = ls.decode_ecm_ad(out.auth)
    assert ad.key_id == 1 and [p.mask_len for p in ad.eid_ad.prefixes] == [16] and not ad.eid_ad.etr_cant_sign
    reply = sec.EtrSec([(1, "ms-etr-key")], c).reply_bytes(_reply(), out)
    assert itr.check(reply, decode_control(reply)).protected


def test_ms_answers_signed_negative_when_no_etr_signs():
    from roles_helpers import ep, make, only_send
    from lispctl.wire import MapRegister, sign
    _, ms = make(MS_ONLY)
    itr = sec.ItrSec(Counters())
    raw = itr.protect(_request(), "required", ITR_KEY, 5).encode()
    loc = LocatorRecord(A("192.0.2.77"), 1, 100, 255, 0, False, False, True)
    reg = MapRegister(9, (eid_record(P("10.1.0.0/16"), (loc,), ttl=10),), key_id=1, alg_id=2)   # no S bit
    ms["ms"].handle(sign(reg, "ms-etr-key"), ep("192.0.2.77"), ep("198.51.100.20"), 1.0)
    send, neg = only_send(ms["ms"].handle(raw, ep("198.51.100.10"), ep("198.51.100.20"), 1.1))
    assert send.dst == ep("192.0.2.1") and isinstance(neg, MapReply) and neg.records[0].locators == ()
    assert ls.decode_map_reply_ad(neg.trailer).eid_ad.etr_cant_sign                 # E: ETR-Cant-Sign
    v = itr.check(send.payload, neg)
    assert v.protected and [record_prefix(r) for r in v.records] == [P("10.1.0.0/16")]

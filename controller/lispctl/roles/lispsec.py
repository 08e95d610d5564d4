"""LISP-SEC (RFC 9303) for the roles, sans-IO: bytes in, verdicts out.

Who does what (RFC 9303 section 5):
- ITR (ItrSec): for every Map-Request through a [[map-resolver]] with
  `lisp-sec` "on" or "required", a fresh random 128-bit ITR-OTK, wrapped
  with AES-KEY-WRAP-128+HKDF-SHA256 under that resolver's `lisp-sec-key`
  (the ITR/Map-Resolver pre-shared key), goes into the ECM with the S bit.
  The reply must carry an EID-AD whose EID HMAC verifies under the ITR-OTK
  and a PKT-AD whose PKT HMAC verifies under MS-OTK = HKDF(ITR-OTK), both
  with the algorithms we asked for (HMAC-SHA-256-128, HKDF-SHA256); each
  record is installed only for its intersection with a prefix of the
  EID-AD (what the Map-Server vouches for), so an ETR cannot overclaim.
  "required": an unsigned or badly signed reply is never installed.
  "on": a badly signed one is never installed, an unsigned one is (peers
  without LISP-SEC); both are counted.
- Map-Server / Map-Resolver (open_request, ms_eid_ad, to_etr, ms_signed):
  unwrap the ITR-OTK with [lisp-sec] itr-keys, put the longest registered
  prefix and its EID HMAC in the EID-AD, and either sign a proxy or
  negative Map-Reply itself or forward the request to an ETR that
  registered with the S bit, carrying MS-OTK wrapped under that ETR's
  Map-Register key (RFC 9303 6.5, 6.7, Table 1).
- ETR (EtrSec): unwraps MS-OTK with its Map-Server key and signs its
  Map-Reply (PKT HMAC over the whole reply), copying the EID-AD.

We never send or accept a NULL-wrapped (clear) OTK: without DTLS the RFC
says such a Map-Request MUST be dropped (6.4, 6.7.1).
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping

from lispctl.mapping.types import EidPrefix
from lispctl.roles.common import Counters
from lispctl.wire import EncapsulatedControlMessage, MalformedMessage, MapReply, from_eid_prefix, to_eid_prefix
from lispctl.wire import lispsec as ls
from lispctl.wire.convert import record_prefix

MODES = ("off", "on", "required")
HMAC_ID = ls.HMAC_SHA256_128            # what we ask for and use
KDF_ID = ls.KDF_HKDF_SHA256
WRAP_ID = ls.WRAP_AES_128_HKDF_SHA256
MAX_OUTSTANDING = 8192                  # <nonce, ITR-OTK> pairs kept at most (oldest dropped)


def _key(k: str | bytes) -> bytes:
    return k.encode("utf-8") if isinstance(k, str) else bytes(k)


def _within(a: EidPrefix, b: EidPrefix) -> bool:
    return a.iid == b.iid and a.prefix.version == b.prefix.version and a.prefix.subnet_of(b.prefix)


# ---------------------------------------------------------------- ITR

@dataclass(frozen=True, slots=True)
class _Otk:
    otk: bytes
    required: bool


@dataclass(frozen=True, slots=True)
class ReplyVerdict:
    """records: what may be installed (narrowed to the EID-AD), or None: discard.
    reason: why it was discarded or what was noteworthy ('' if nothing)."""
    records: tuple | None
    reason: str = ""
    protected: bool = False
    downgrade: bool = False            # ask again without LISP-SEC (lisp-sec "on", ETR-Cant-Sign)


class ItrSec:
    """The ITR's side: one-time keys of outstanding protected requests, by nonce."""

    def __init__(self, counters: Counters, random_bytes: Callable[[int], bytes] = os.urandom,
                 max_outstanding: int = MAX_OUTSTANDING) -> None:
        self.counters = counters
        self.random_bytes = random_bytes
        self.max_outstanding = max_outstanding
        self._otks: dict[int, _Otk] = {}

    def protect(self, ecm: EncapsulatedControlMessage, mode: str, key: str | None,
                key_id: int) -> EncapsulatedControlMessage | None:
        """The ECM to send: with a fresh ITR-OTK when mode is not "off". None
        (send nothing) when the table of outstanding keys is full and mode is
        "required": no key is ever evicted, so a reply to a protected request
        can always be checked (the ITR forgets a request's keys when it gives
        up on it, which bounds the table by its pending requests)."""
        if mode == "off" or key is None:
            return ecm
        nonce = ecm.message.nonce
        if len(self._otks) >= self.max_outstanding and nonce not in self._otks:
            self.counters["lisp_sec_otk_table_full"] += 1
            return None if mode == "required" else ecm
        otk = self.random_bytes(ls.OTK_LEN)
        pre, field = ls.wrap_otk(WRAP_ID, _key(key), nonce, otk)
        ad = ls.EcmAuthData(HMAC_ID, key_id, WRAP_ID, pre, field, ls.EidAd(KDF_ID))
        self._otks[nonce] = _Otk(otk, mode == "required")
        self.counters["lisp_sec_request_tx"] += 1
        return dataclasses.replace(ecm, security=True, auth=ad.encode())

    def forget(self, nonce: int) -> None:
        self._otks.pop(nonce, None)

    def outstanding(self) -> int:
        return len(self._otks)

    def check(self, raw: bytes, reply: MapReply) -> ReplyVerdict:
        """Verdict on a Map-Reply whose nonce matched an outstanding request."""
        st = self._otks.get(reply.nonce)
        c = self.counters
        if st is None:                          # the request was not protected
            return ReplyVerdict(reply.records)
        if not reply.security or not reply.trailer:
            if st.required:
                c["lisp_sec_reply_unsigned_dropped"] += 1
                return ReplyVerdict(None, "no LISP-SEC authentication data (lisp-sec required)")
            c["lisp_sec_reply_unsigned_accepted"] += 1
            self.forget(reply.nonce)
            return ReplyVerdict(reply.records, "accepted without LISP-SEC authentication data (lisp-sec on)")
        try:
            ad = ls.decode_map_reply_ad(reply.trailer)
        except MalformedMessage as e:
            c["lisp_sec_reply_malformed"] += 1
            return ReplyVerdict(None, f"malformed LISP-SEC authentication data ({e})")
        ead = ad.eid_ad
        # RFC 9303 6.9: algorithms other than those we asked for cannot be
        # validated (the Map-Reply is discarded; we do not downgrade).
        if ead.hmac_id != HMAC_ID or ad.pkt_hmac_id != HMAC_ID or ead.kdf_id != KDF_ID:
            c["lisp_sec_reply_bad_algorithm"] += 1
            return ReplyVerdict(None, f"LISP-SEC algorithms EID HMAC {ead.hmac_id}, PKT HMAC "
                                      f"{ad.pkt_hmac_id}, KDF {ead.kdf_id} are not the ones requested")
        if not ls.eid_ad_valid(ead, st.otk):
            c["lisp_sec_reply_bad_eid_hmac"] += 1
            return ReplyVerdict(None, "EID HMAC does not verify")
        if not ls.map_reply_pkt_valid(raw, ad, ls.derive_ms_otk(KDF_ID, st.otk)):
            c["lisp_sec_reply_bad_pkt_hmac"] += 1
            return ReplyVerdict(None, "PKT HMAC does not verify")
        # RFC 9303 6.9: discard the <nonce, ITR-OTK> pair once a reply verified
        # (not before: a forged reply must not spend the genuine one's key).
        self.forget(reply.nonce)
        c["lisp_sec_reply_ok"] += 1
        records, refused = authorized_records(reply.records, ead)
        if (not st.required and ead.etr_cant_sign and records
                and all(not getattr(r, "locators", ()) for r in records)):
            # RFC 9303 6.7 Table 1 rule 3: the Map-Server vouches that no ETR of
            # the prefix signs; "on" downgrades to an unprotected request (7.4).
            c["lisp_sec_downgrade"] += 1
            return ReplyVerdict(None, "no ETR of the prefix signs (ETR-Cant-Sign): asking again without "
                                      "LISP-SEC (lisp-sec on)", True, True)
        if refused:
            c["lisp_sec_record_not_authorized"] += refused
            return ReplyVerdict(records, f"{refused} record(s) outside the Map-Server's EID-AD discarded", True)
        return ReplyVerdict(records, "", True)


def _ad_prefixes(ead: ls.EidAd) -> list[EidPrefix]:
    out = []
    for p in ead.prefixes:
        try:
            out.append(to_eid_prefix(p.eid, p.mask_len))
        except (MalformedMessage, ValueError):
            continue
    return out


def authorized_records(records: Iterable, ead: ls.EidAd) -> tuple[tuple, int]:
    """RFC 9303 6.9.1: each record narrowed to its intersection with a prefix
    of the EID-AD (two prefixes intersect iff one holds the other: the
    intersection is the more specific); records with none are refused.
    Returns (records kept, number refused)."""
    allowed = _ad_prefixes(ead)
    kept = []
    refused = 0
    for rec in records:
        try:
            eid = record_prefix(rec)
        except MalformedMessage:
            kept.append(rec)          # the ITR's own checks count and skip it
            continue
        hits = [eid if _within(eid, a) else a for a in allowed if _within(eid, a) or _within(a, eid)]
        if not hits:
            refused += 1
            continue
        for narrow in dict.fromkeys(hits):
            if narrow == eid:
                kept.append(rec)
            else:
                addr, ml = from_eid_prefix(narrow)
                kept.append(dataclasses.replace(rec, eid=addr, mask_len=ml))
    return tuple(kept), refused


# ---------------------------------------------------------------- Map-Server / Map-Resolver

@dataclass(frozen=True, slots=True)
class Opened:
    """A protected Map-Request whose ITR-OTK we recovered."""
    ad: ls.EcmAuthData
    itr_otk: bytes
    nonce: int
    hmac_id: int                      # chosen for the EID HMAC / PKT HMAC
    kdf_id: int                       # chosen for MS-OTK

    @property
    def ms_otk(self) -> bytes:
        return ls.derive_ms_otk(self.kdf_id, self.itr_otk)


def open_request(ecm: EncapsulatedControlMessage, itr_keys: Mapping[int, str],
                 counters: Counters) -> tuple[Opened | None, str]:
    """(Opened, '') for a protected request we can open; (None, '') for an
    unprotected one or when we hold no ITR keys (it is answered without
    LISP-SEC; a "required" ITR will not install that answer); (None, reason)
    when it must be dropped (unknown key ID, clear OTK, failed unwrap)."""
    if not ecm.security or not ecm.auth:
        return None, ""
    if not itr_keys:
        counters["lisp_sec_request_no_keys"] += 1
        return None, ""
    try:
        ad, _ = ls.decode_ecm_ad(ecm.auth)
    except MalformedMessage as e:
        counters["lisp_sec_request_malformed"] += 1
        return None, f"malformed LISP-SEC data ({e})"
    key = itr_keys.get(ad.key_id)
    if key is None:
        counters["lisp_sec_request_unknown_key"] += 1
        return None, f"unknown LISP-SEC key ID {ad.key_id}"
    if ad.wrap_id != WRAP_ID:
        counters["lisp_sec_request_bad_wrap"] += 1
        return None, f"OTK wrapping {ad.wrap_id} refused (only AES-KEY-WRAP-128+HKDF-SHA256)"
    nonce = ecm.message.nonce
    otk = ls.unwrap_otk(ad.wrap_id, _key(key), nonce, ad.preamble, ad.otk)
    if otk is None:
        counters["lisp_sec_request_bad_otk"] += 1
        return None, "ITR-OTK does not unwrap (wrong key or tampered)"
    hmac_id = ad.requested_hmac_id if ls.hmac_supported(ad.requested_hmac_id) else HMAC_ID
    kdf_id = ad.eid_ad.kdf_id if ls.kdf_supported(ad.eid_ad.kdf_id) else KDF_ID
    counters["lisp_sec_request_rx"] += 1
    return Opened(ad, otk, nonce, hmac_id, kdf_id), ""


def ms_eid_ad(op: Opened, prefixes: Iterable[EidPrefix], etr_cant_sign: bool = False) -> ls.EidAd:
    """The Map-Server's EID-AD: the prefixes it vouches for, HMAC'd with the ITR-OTK."""
    items = tuple(ls.EidAdPrefix(*from_eid_prefix(p)) for p in prefixes)
    return ls.eid_ad_signed(ls.EidAd(op.kdf_id, 0, items, etr_cant_sign), op.hmac_id, op.itr_otk)


def ms_signed(reply: MapReply, op: Opened, ead: ls.EidAd) -> bytes:
    """A proxy or negative Map-Reply signed by the Map-Server itself (6.7.2)."""
    plain = dataclasses.replace(reply, security=False, trailer=b"").encode()
    return ls.sign_map_reply(plain, ead, op.hmac_id, op.ms_otk)


def to_etr(ecm: EncapsulatedControlMessage, op: Opened, ead: ls.EidAd, key_id: int,
           etr_key: str) -> EncapsulatedControlMessage:
    """The ECM forwarded to an ETR: MS-OTK wrapped under the key the ETR
    registered with, Key ID of that key, and our EID-AD (6.7.1)."""
    pre, field = ls.wrap_otk(WRAP_ID, _key(etr_key), op.nonce, op.ms_otk)
    ad = ls.EcmAuthData(op.hmac_id, key_id, WRAP_ID, pre, field, ead)
    return dataclasses.replace(ecm, security=True, auth=ad.encode())


# ---------------------------------------------------------------- ETR

class EtrSec:
    """Signs Map-Replies to protected Map-Requests with the MS-OTK."""

    def __init__(self, ms_keys: Iterable[tuple[int, str]], counters: Counters) -> None:
        self.keys: dict[int, list[bytes]] = {}
        for kid, k in ms_keys:
            self.keys.setdefault(kid, []).append(_key(k))
        self.counters = counters

    def reply_bytes(self, reply: MapReply, ecm: EncapsulatedControlMessage | None) -> bytes:
        """The Map-Reply to send: signed when ecm is a protected request
        carrying an MS-OTK we can unwrap, else plain (and counted)."""
        if ecm is None or not ecm.security or not ecm.auth:
            return reply.encode()
        c = self.counters
        try:
            ad, _ = ls.decode_ecm_ad(ecm.auth)
        except MalformedMessage:
            c["lisp_sec_request_malformed"] += 1
            return reply.encode()
        ms_otk = None
        if ad.wrap_id == WRAP_ID and not ad.eid_ad.short:
            for k in self.keys.get(ad.key_id, ()):
                ms_otk = ls.unwrap_otk(ad.wrap_id, k, ecm.message.nonce, ad.preamble, ad.otk)
                if ms_otk is not None:
                    break
        if ms_otk is None:
            c["lisp_sec_request_not_opened"] += 1
            return reply.encode()
        hmac_id = ad.requested_hmac_id if ls.hmac_supported(ad.requested_hmac_id) else HMAC_ID
        c["lisp_sec_reply_signed"] += 1
        plain = dataclasses.replace(reply, security=False, trailer=b"").encode()
        return ls.sign_map_reply(plain, ad.eid_ad, hmac_id, ms_otk)

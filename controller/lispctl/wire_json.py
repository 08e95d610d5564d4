"""LISP messages as JSON-able dicts, keyed by the RFC's field names.

Used by `lispctl decode` and anything else that prints messages. Names follow
RFC 9301/8111/9437 and draft-ietf-lisp-nat-traversal in snake_case
("record_ttl", "eid_mask_len", "m_priority", ...); one-letter flags keep the
RFC's letter and case ("flags": {"S": ..., "s": ...}). 64-bit nonces,
xTR-IDs, site-IDs and opaque bytes are lower-case hex strings.
"""
from __future__ import annotations

import dataclasses
import ipaddress
from ipaddress import IPv4Address, IPv6Address
from typing import Any

from lispctl import wire as w
from lispctl.wire import addresses as wa

TYPE_NAMES = {
    w.MAP_REQUEST: "Map-Request", w.MAP_REPLY: "Map-Reply", w.MAP_REGISTER: "Map-Register",
    w.MAP_NOTIFY: "Map-Notify", w.MAP_NOTIFY_ACK: "Map-Notify-Ack", w.MAP_REFERRAL: "Map-Referral",
    w.INFO: "Info", w.ECM: "Encapsulated-Control-Message", w.SHARED_EXTENSION: "Shared-Extension",
}
ALGORITHM_NAMES = {0: "none", 1: "HMAC-SHA-1-96", 2: "HMAC-SHA-256-128", 3: "HMAC-SHA-256-128+HKDF-SHA-256"}
ACT_NAMES = {0: "no-action", 1: "natively-forward", 2: "send-map-request", 3: "drop/no-reason",
             4: "drop/policy-denied", 5: "drop/auth-failure"}
REFERRAL_ACT_NAMES = {0: "node-referral", 1: "ms-referral", 2: "ms-ack", 3: "ms-not-registered",
                      4: "delegation-hole", 5: "not-authoritative"}


def _hex(value: int, bits: int) -> str:
    return f"0x{value:0{bits // 4}x}"


def address(a: Any) -> Any:
    """An AFI-encoded address: a string for IP/MAC, None for AFI 0, a dict
    naming the LCAF type otherwise."""
    t = type(a)
    if t is IPv4Address or t is IPv6Address:
        return str(a)
    if a is None or t is wa.NoAddress:
        return None
    if t is wa.MacAddress:
        return str(a)
    if t is wa.DistinguishedName:
        return {"distinguished_name": a.name}
    if t is wa.InstanceId:
        return {"lcaf": "instance-id", "instance_id": a.iid, "iid_mask_len": a.mask_len,
                "address": address(a.address)}
    if t is wa.AfiList:
        return {"lcaf": "afi-list", "addresses": [address(x) for x in a.addresses]}
    if t is wa.NatTraversal:
        return {"lcaf": "nat-traversal", "ms_udp_port": a.ms_port, "etr_udp_port": a.etr_port,
                "global_etr_rloc": address(a.global_etr_rloc), "ms_rloc": address(a.ms_rloc),
                "private_etr_rloc": address(a.private_etr_rloc),
                "rtr_rlocs": [address(x) for x in a.rtr_rlocs]}
    if t is wa.ExplicitLocatorPath:
        return {"lcaf": "explicit-locator-path", "hops": [
            {"address": address(h.address), "L": h.lookup, "P": h.probe, "S": h.strict} for h in a.hops]}
    if t is wa.SourceDestKey:
        return {"lcaf": "source-dest-key", "source": address(a.source), "source_mask_len": a.source_mask_len,
                "dest": address(a.dest), "dest_mask_len": a.dest_mask_len}
    if t is wa.ReplicationList:
        return {"lcaf": "replication-list",
                "entries": [{"address": address(e.address), "level": e.level} for e in a.entries]}
    if t is wa.JsonData:
        body: dict[str, Any] = {"lcaf": "json", "B": a.binary}
        if a.binary:
            body["data"] = a.data.hex()
        else:
            body["json"] = a.data.decode("utf-8", "replace")
        if a.address is not None:
            body["address"] = address(a.address)
        return body
    if t is wa.KeyValue:
        return {"lcaf": "key-value", "key": address(a.key), "value": address(a.value)}
    if t is wa.UnknownLcaf:
        return {"lcaf": a.lcaf_type, "flags": a.flags, "rsvd1": a.rsvd1, "rsvd2": a.rsvd2,
                "body": a.body.hex()}
    return _generic(a)


def eid(a: Any, mask_len: int) -> dict[str, Any]:
    """EID fields of a record: 'eid_prefix' as CIDR text (host bits kept as
    sent) plus 'instance_id' when an Instance-ID LCAF wraps an IP prefix."""
    out: dict[str, Any] = {"eid_mask_len": mask_len}
    inner = a
    if type(a) is wa.InstanceId:
        out["instance_id"] = a.iid
        if a.mask_len:
            out["iid_mask_len"] = a.mask_len
        inner = a.address
    if type(inner) in (IPv4Address, IPv6Address):
        out["eid_prefix"] = f"{inner}/{mask_len}"
        out["eid_afi"] = 1 if type(inner) is IPv4Address else 2
    elif type(a) is wa.InstanceId:
        out["eid_prefix"] = address(inner)
    else:
        out["eid_prefix"] = address(a)
    return out


def _request_record(r: w.RequestRecord) -> dict[str, Any]:
    """A Map-Request EID-record; N (RFC 9437) only when set, like other rare bits."""
    out = eid(r.eid, r.mask_len)
    if r.notify:
        out["N"] = True
    if r.reserved & ~w.REQUEST_RECORD_N:
        out["reserved"] = r.reserved & ~w.REQUEST_RECORD_N
    return out


def locator(l: w.LocatorRecord) -> dict[str, Any]:
    out = {"priority": l.priority, "weight": l.weight, "m_priority": l.m_priority, "m_weight": l.m_weight,
           "L": l.local, "p": l.probed, "R": l.reachable, "locator": address(l.address)}
    if l.unused_flags:
        out["unused_flags"] = l.unused_flags
    return out


def eid_record(r: w.EidRecord) -> dict[str, Any]:
    out = {"record_ttl": r.ttl, "locator_count": len(r.locators), **eid(r.eid, r.mask_len),
           "act": r.act, "act_name": ACT_NAMES.get(r.act, "unassigned"), "A": r.authoritative,
           "map_version": r.map_version, "locators": [locator(l) for l in r.locators]}
    if r.reserved or r.rsvd:
        out["reserved"] = r.reserved
        out["rsvd"] = r.rsvd
    return out


def referral_record(r: w.ReferralRecord) -> dict[str, Any]:
    return {"record_ttl": r.ttl, "referral_count": len(r.referrals), **eid(r.eid, r.mask_len),
            "act": r.act, "act_name": REFERRAL_ACT_NAMES.get(r.act, "unassigned"), "A": r.authoritative,
            "I": r.incomplete, "map_version": r.map_version, "sig_count": len(r.signatures),
            "referrals": [locator(l) for l in r.referrals],
            "signatures": [{"original_record_ttl": s.original_ttl, "signature_expiration": s.expiration,
                            "signature_inception": s.inception, "key_tag": s.key_tag,
                            "sig_length": len(s.signature), "sig_algorithm": s.algorithm,
                            "signature": s.signature.hex()} for s in r.signatures]}


def _auth(m: Any) -> dict[str, Any]:
    return {"key_id": m.key_id, "algorithm_id": m.alg_id,
            "algorithm": ALGORITHM_NAMES.get(m.alg_id, "unassigned"),
            "auth_data_length": len(m.auth_data), "auth_data": m.auth_data.hex()}


def _xtr(m: Any) -> dict[str, Any]:
    if m.xtr_id is None:
        return {}
    if m.site_id is None:        # a bare xTR-ID (lispers.net Map-Requests)
        return {"xtr_id": _hex(m.xtr_id, 128)}
    return {"xtr_id": _hex(m.xtr_id, 128), "site_id": _hex(m.site_id, 64)}


def _tail(m: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if getattr(m, "reserved", 0):
        out["reserved"] = _hex(m.reserved, 32)
    if getattr(m, "trailer", b""):
        out["trailing_bytes"] = m.trailer.hex()
    return out


def message(m: Any) -> dict[str, Any]:
    """A control message (any type, ECM included) as a dict."""
    t = type(m)
    num = getattr(m, "TYPE", None)
    head: dict[str, Any] = {"type": TYPE_NAMES.get(num, t.__name__), "type_num": num}
    if t is w.MapRequest:
        body = {"flags": {"A": m.authoritative, "M": m.map_reply_record is not None, "P": m.probe,
                          "S": m.smr, "p": m.pitr, "s": m.smr_invoked, "I": m.xtr_id is not None,
                          "N": m.notification_requested, "L": m.local_xtr, "D": m.dont_map_reply},
                "irc": len(m.itr_rlocs) - 1, "record_count": len(m.records), "nonce": _hex(m.nonce, 64),
                "source_eid": address(m.source_eid), "itr_rlocs": [address(a) for a in m.itr_rlocs],
                "records": [_request_record(r) for r in m.records]}
        if m.map_reply_record is not None:
            body["map_reply_record"] = eid_record(m.map_reply_record)
        body.update(_xtr(m))
    elif t is w.MapReply:
        body = {"flags": {"P": m.probe, "E": m.echo_nonce_capable, "S": m.security},
                "record_count": len(m.records), "nonce": _hex(m.nonce, 64),
                "records": [eid_record(r) for r in m.records]}
    elif t is w.MapRegister:
        flags = {"P": m.proxy_reply, "S": m.security, "I": m.xtr_id is not None, "M": m.want_map_notify}
        if m.rtr:               # NAT-traversal draft; shown only when set, as before the field existed
            flags["R"] = True
        body = {"flags": flags, "record_count": len(m.records), "nonce": _hex(m.nonce, 64), **_auth(m),
                "records": [eid_record(r) for r in m.records], **_xtr(m)}
    elif t is w.MapNotify or t is w.MapNotifyAck:
        body = {"flags": {"I": m.xtr_id is not None, "R": m.rtr},
                "record_count": len(m.records), "nonce": _hex(m.nonce, 64), **_auth(m),
                "records": [eid_record(r) for r in m.records], **_xtr(m)}
        if m.ms_rtr_key_id is not None:
            body.update(ms_rtr_key_id=m.ms_rtr_key_id, ms_rtr_auth_data_length=len(m.ms_rtr_auth_data),
                        ms_rtr_auth_data=m.ms_rtr_auth_data.hex())
    elif t is w.MapReferral:
        body = {"record_count": len(m.records), "nonce": _hex(m.nonce, 64),
                "records": [referral_record(r) for r in m.records]}
    elif t is w.InfoRequest or t is w.InfoReply:
        reply = t is w.InfoReply
        head["type"] = "Info-Reply" if reply else "Info-Request"
        body = {"flags": {"R": reply}, "nonce": _hex(m.nonce, 64), **_auth(m), "ttl": m.ttl,
                **eid(m.eid_prefix, m.eid_mask_len)}
        if reply:
            body["nat_traversal"] = address(m.nat)
        elif m.address is not None:
            body["afi_address"] = address(m.address)
    elif t is w.EncapsulatedControlMessage:
        inner = {"version": 4 if type(m.inner_src) is IPv4Address else 6,
                 "src": str(m.inner_src), "dst": str(m.inner_dst),
                 "sport": m.inner_sport, "dport": m.inner_dport, "ttl": m.ttl, "tos": m.tos}
        if inner["version"] == 4:
            inner.update(ident=m.ident, DF=m.dont_fragment)
            if m.ip_options:
                inner["ip_options"] = m.ip_options.hex()
        else:
            inner["flow_label"] = m.flow_label
        body = {"flags": {"S": m.security, "D": m.ddt, "E": m.to_etr, "M": m.to_ms},
                "inner_header": inner, "message": message(m.message)}
    elif t is w.SharedExtension:
        body = {"sub_type": m.sub_type, "data": m.data.hex()}
        if m.sub_type == w.CPM_SUB_TYPE:         # our Change-Priority Message (docs/cpm.md)
            try:
                c = w.decode_cpm(m.encode())
            except w.MalformedMessage as exc:
                body["change_priority"] = {"malformed": str(exc)}
            else:
                body["change_priority"] = {
                    "eid": address(c.eid), "mask_len": c.mask_len, "priority": c.priority,
                    "timestamp_ms": c.timestamp_ms, "nonce": f"{c.nonce:016x}",
                    "correspondents": [address(a) for a in c.correspondents],
                    "key_id": c.key_id, "alg_id": c.alg_id, "auth_data": c.auth_data.hex()}
    else:
        body = _generic(m)
    body.update(_tail(m))
    return {**head, **body}


def data_header(h: w.DataHeader, inner: bytes = b"") -> dict[str, Any]:
    """A data-plane header (UDP 4341) and a summary of the packet it carries."""
    out: dict[str, Any] = {"type": "Data", "flags": {"N": h.nonce_present, "L": h.lsb_enabled,
                                                     "E": h.echo_nonce, "V": h.map_version,
                                                     "I": h.instance_id_present},
                           "kk": h.key_bits}
    if h.versions_present:
        out["source_map_version"] = h.source_map_version
        out["dest_map_version"] = h.dest_map_version
    else:
        out["nonce"] = _hex(h.nonce, 24)
    if h.instance_id_present:
        out["instance_id"] = h.instance_id
        out["lsb"] = _hex(h.lsb, 8)
    else:
        out["lsb"] = _hex(h.lsb, 32)
    out["inner"] = _inner_ip(inner)
    return out


def _inner_ip(pkt: bytes) -> dict[str, Any]:
    if len(pkt) >= 20 and pkt[0] >> 4 == 4:
        return {"version": 4, "src": str(IPv4Address(pkt[12:16])), "dst": str(IPv4Address(pkt[16:20])),
                "protocol": pkt[9], "length": len(pkt)}
    if len(pkt) >= 40 and pkt[0] >> 4 == 6:
        return {"version": 6, "src": str(IPv6Address(pkt[8:24])), "dst": str(IPv6Address(pkt[24:40])),
                "next_header": pkt[6], "length": len(pkt)}
    return {"length": len(pkt)}


def _generic(obj: Any) -> Any:
    """Fallback for types this module does not know yet: their fields."""
    if dataclasses.is_dataclass(obj):
        return {"kind": type(obj).__name__,
                **{f.name: _generic(getattr(obj, f.name)) for f in dataclasses.fields(obj)}}
    if isinstance(obj, (bytes, bytearray)):
        return bytes(obj).hex()
    if isinstance(obj, (tuple, list)):
        return [_generic(x) for x in obj]
    if isinstance(obj, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return str(obj)
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return str(obj)

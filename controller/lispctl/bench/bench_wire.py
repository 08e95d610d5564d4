"""Wire codec speed: messages per second, single core, typical sizes
(one EID record with two locators). Each figure is the best of several runs;
references measured in the same run give machine-independent ratios:
the bare HMAC-SHA-256 of the same Map-Register bytes (the floor for
decode+verify) and struct.unpack of the 12-byte fixed header (the floor for
any Python decoder)."""
from __future__ import annotations

import struct
import time
from ipaddress import IPv4Address as V4, IPv6Address as V6
from typing import Callable

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as chmac

from lispctl import wire as w

SECTION = "Wire codec (lispctl.wire)"
KEY = b"bench-key-0123456789"
RUNS = 5
RUN_SECONDS = 0.2


def _rate(fn: Callable[[], object]) -> float:
    """Best calls/s over RUNS runs of about RUN_SECONDS each."""
    n = 1
    while True:                                   # calibrate the batch size
        t = time.perf_counter()
        for _ in range(n):
            fn()
        dt = time.perf_counter() - t
        if dt >= 0.02:
            break
        n *= 4
    n = max(1, int(n * RUN_SECONDS / dt))
    best = 0.0
    for _ in range(RUNS):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        best = max(best, n / (time.perf_counter() - t))
    return best


def _messages():
    rec = w.EidRecord(V4("10.1.0.0"), 16, (w.LocatorRecord(V4("192.0.2.1"), 1, 50),
                                           w.LocatorRecord(V6("2001:db8::1"), 1, 50)), 1440, 0, True)
    reg = w.MapRegister(0x0123456789ABCDEF, (rec,), 1, w.ALG_HMAC_SHA256, want_map_notify=True)
    req = w.MapRequest(0xFEDCBA9876543210, (w.RequestRecord(V4("10.1.2.3"), 32),),
                       (V4("192.0.2.9"),), V4("10.9.0.1"))
    rep = w.MapReply(0xFEDCBA9876543210, (rec,))
    return reg, req, rep


def run(rec) -> None:
    reg, req, rep = _messages()
    reg_raw = w.sign(reg, KEY)
    req_raw, rep_raw = req.encode(), rep.encode()
    assert w.verify(reg_raw, KEY) and w.decode_control(req_raw) == req

    def decode_verify():
        if not w.verify(reg_raw, KEY):
            raise AssertionError("bad MAC")
        return w.decode_control(reg_raw)

    def bare_hmac():
        h = chmac.HMAC(KEY, hashes.SHA256())
        h.update(reg_raw)
        return h.finalize()

    hdr = struct.Struct("!IQ")
    rows = [
        ("map_register_decode_verify", "Map-Register decode + HMAC-SHA-256 verify", decode_verify),
        ("map_register_encode_sign", "Map-Register encode + HMAC-SHA-256 sign", lambda: w.sign(reg, KEY)),
        ("map_register_decode", "Map-Register decode only", lambda: w.decode_control(reg_raw)),
        ("map_request_decode", "Map-Request decode", lambda: w.decode_control(req_raw)),
        ("map_request_encode", "Map-Request encode", req.encode),
        ("map_reply_decode", "Map-Reply decode", lambda: w.decode_control(rep_raw)),
        ("map_reply_encode", "Map-Reply encode", rep.encode),
        ("ref_hmac_sha256", "reference: bare HMAC-SHA-256 of the Map-Register bytes", bare_hmac),
        ("ref_struct_unpack_header", "reference: struct.unpack of the 12-byte header",
         lambda: hdr.unpack_from(req_raw, 0)),
    ]
    rates = {}
    for key, _label, fn in rows:
        rates[key] = _rate(fn)
        rec.figure(f"wire_{key}_msgs_per_s", round(rates[key], 1))
    rec.figure("wire_map_register_decode_verify_vs_bare_hmac_ratio",
               round(rates["map_register_decode_verify"] / rates["ref_hmac_sha256"], 3))
    rec.figure("wire_map_request_decode_vs_struct_unpack_ratio",
               round(rates["map_request_decode"] / rates["ref_struct_unpack_header"], 4))

    rec.note(f"Single core, best of {RUNS} runs of ~{RUN_SECONDS}s each; one EID record with two "
             f"locators (Map-Register {len(reg_raw)} B, Map-Request {len(req_raw)} B, "
             f"Map-Reply {len(rep_raw)} B).")
    rec.note("")
    rec.note("| operation | messages/s | vs. reference |")
    rec.note("|---|---:|---:|")
    for key, label, _fn in rows:
        if key.startswith("ref_"):
            ratio = "1 (reference)"
        elif "register" in key and ("verify" in key or "sign" in key):
            ratio = f"{rates[key] / rates['ref_hmac_sha256']:.2f} x bare HMAC"
        else:
            ratio = f"{rates[key] / rates['ref_struct_unpack_header']:.3f} x struct.unpack"
        rec.note(f"| {label} | {rates[key]:,.0f} | {ratio} |")

"""`lispctl decode FILE`: every LISP packet of a pcap/pcapng capture as one
JSON object per line (fields named as in the RFCs, see lispctl.wire_json).

A packet that does not decode becomes {"frame": n, ..., "error": reason} and
decoding goes on; the exit status is 0 whenever the file could be read.

Captures from the field are decoded as far as they go, and marked, like
tshark does: a frame cut short by the capture's snaplen gets "truncated":
{"captured", "missing"} and shows the records that are complete
("records_decoded" of "record_count"); a Map-Register/Notify/Notify-Ack/Info
whose authentication data length does not match its algorithm is decoded
with the bytes it has, marked "auth_data_length_mismatch".
"""
from __future__ import annotations

import json
import os
import sys
from typing import Any, Iterator, Optional, Sequence

import typer

from lispctl import wire as w
from lispctl import wire_json
from lispctl.capture import CaptureFormatError, Datagram, FrameError, lisp_datagrams

_AUTH_TYPES = (w.MapRegister, w.MapNotify, w.MapNotifyAck, w.InfoRequest, w.InfoReply)


def _time(ts_ns: int) -> float:
    # Parsed from the decimal text so the float's shortest repr shows the
    # captured digits (ts_ns / 1e9 would print 1700000000.0019999).
    sec, ns = divmod(ts_ns, 1_000_000_000)
    return float(f"{sec}.{ns:09d}")


def _auth_result(msg: Any, raw: bytes, keys: Sequence[bytes]) -> str | None:
    """'ok' if one of keys verifies raw, 'bad' if none does, 'none' for
    algorithm 0 (nothing to verify); None for types without auth data."""
    if not isinstance(msg, _AUTH_TYPES):
        return None
    if msg.alg_id == w.ALG_NONE:
        return "none"
    return "ok" if any(w.verify(raw, k) for k in keys) else "bad"


def _ecm_inner_raw(raw: bytes) -> bytes:
    """The inner control message's bytes of an ECM that decoded fine."""
    if raw[4] >> 4 == 4:
        start, total = 4 + (raw[4] & 0x0F) * 4 + 8, int.from_bytes(raw[6:8], "big")
        return raw[start:4 + total]
    return raw[52:44 + int.from_bytes(raw[8:10], "big")]


_COUNTED = (w.MAP_REQUEST, w.MAP_REPLY, w.MAP_REGISTER, w.MAP_NOTIFY, w.MAP_NOTIFY_ACK, w.MAP_REFERRAL)
_AUTHED = (w.MAP_REGISTER, w.MAP_NOTIFY, w.MAP_NOTIFY_ACK, w.INFO)
# Bits that promise more after the records (I: xTR-ID, M: Map-Reply record);
# cleared when the capture cut the message before them.
_MORE_BITS = {w.MAP_REQUEST: 0x04100000, w.MAP_REGISTER: 0x02000000, w.MAP_NOTIFY: 0x08000000,
              w.MAP_NOTIFY_ACK: 0x08000000}


def _without_auth(buf: bytes) -> tuple[bytes, dict[str, Any]] | None:
    """An authenticated message whose auth data length does not match its
    algorithm, rewritten with algorithm 0 and no auth data (so the rest
    decodes), and the original auth fields."""
    if len(buf) < 16 or buf[0] >> 4 not in _AUTHED:
        return None
    alg, alen = buf[13], int.from_bytes(buf[14:16], "big")
    if w.AUTH_DATA_LENGTHS.get(alg) == alen:
        return None
    auth = bytes(buf[16:16 + alen])
    mark = {"algorithm_id": alg, "algorithm": wire_json.ALGORITHM_NAMES.get(alg, "unassigned"),
            "auth_data_length": alen, "auth_data": auth.hex(), "expected_length": w.AUTH_DATA_LENGTHS.get(alg)}
    return bytes(buf[:13]) + b"\0\0\0" + bytes(buf[16 + alen:]), mark


def _complete_records(buf: bytes):
    """A message cut short: the decodable prefix with fewer records (and no
    promised tail). (message, records decoded) or None."""
    t = buf[0] >> 4
    if t not in _COUNTED or len(buf) < 4:
        return None
    for n in range(buf[3], -1, -1):
        head = int.from_bytes(buf[:4], "big")
        for clear in (0, _MORE_BITS.get(t, 0)):
            b = ((head & ~clear & ~0xFF) | n).to_bytes(4, "big") + buf[4:]
            try:
                return w.decode_control(b), n
            except w.MalformedMessage:
                continue
    return None


def _lenient(payload: bytes, truncated: int) -> tuple[Any, dict[str, Any]]:
    """decode_control, else as much as a cut-off or mislabelled message holds
    (with marks saying what was done); raises the first MalformedMessage
    when nothing decodes."""
    try:
        return w.decode_control(payload), {}
    except w.MalformedMessage as e:
        first = e
    marks: dict[str, Any] = {}
    buf = payload
    fixed = _without_auth(buf)
    if fixed is not None:
        buf, marks["auth_data_length_mismatch"] = fixed
        try:
            return w.decode_control(buf), marks
        except w.MalformedMessage:
            pass
    if truncated:
        got = _complete_records(buf)
        if got is not None:
            msg, n = got
            marks["records_decoded"] = n
            return msg, marks
    raise first


def datagram_json(d: Datagram, keys: Sequence[bytes] = ()) -> dict[str, Any]:
    """One captured LISP datagram as a dict (never raises for bad payloads)."""
    out: dict[str, Any] = {"frame": d.frame, "time": _time(d.ts_ns), "src": d.src, "dst": d.dst,
                           "sport": d.sport, "dport": d.dport}
    if d.truncated:
        out["truncated"] = {"captured": len(d.payload), "missing": d.truncated}
    try:
        if d.kind == "data":
            out.update(wire_json.data_header(w.decode_data_header(d.payload), d.payload[w.DATA_HEADER_LEN:]))
            return out
        msg, marks = _lenient(d.payload, d.truncated)
    except w.MalformedMessage as e:
        out["error"] = str(e)
        if d.truncated and d.payload:
            num = d.payload[0] >> 4
            out["type"], out["type_num"] = wire_json.TYPE_NAMES.get(num, "unknown"), num
        return out
    out.update(wire_json.message(msg))
    mismatch = marks.get("auth_data_length_mismatch")
    if mismatch is not None:
        out.update({k: v for k, v in mismatch.items() if k != "expected_length"})
        out["auth_data_length_mismatch"] = {"expected": mismatch["expected_length"]}
    if "records_decoded" in marks:
        out["record_count"] = d.payload[3]
        out["records_decoded"] = marks["records_decoded"]
    if keys and mismatch is not None:
        out["auth"] = "bad"                 # a MAC of the wrong length cannot verify
    elif keys:
        verdict = _auth_result(msg, d.payload, keys)
        if verdict is not None:
            out["auth"] = verdict
        elif isinstance(msg, w.EncapsulatedControlMessage):
            verdict = _auth_result(msg.message, _ecm_inner_raw(d.payload), keys)
            if verdict is not None:
                out["message"]["auth"] = verdict
    return out


def decode_capture(path: str | os.PathLike[str], keys: Sequence[str | bytes] = ()) -> Iterator[dict[str, Any]]:
    """Dicts for every LISP datagram and frame error of a capture. Raises
    CaptureFormatError (before yielding) when the file is not a capture."""
    bkeys = [k.encode() if isinstance(k, str) else bytes(k) for k in keys]
    for item in lisp_datagrams(path):
        if isinstance(item, FrameError):
            err: dict[str, Any] = {"frame": item.frame}
            if item.ts_ns is not None:
                err["time"] = _time(item.ts_ns)
            err["error"] = item.reason
            yield err
        else:
            yield datagram_json(item, bkeys)


def register(app: typer.Typer) -> None:
    @app.command("decode")
    def decode(
        file: str = typer.Argument(..., help="pcap or pcapng capture file"),
        key: Optional[list[str]] = typer.Option(
            None, "--key", "-k",
            help="authentication key; verifies Map-Register/Notify/Notify-Ack/Info "
                 "(\"auth\": ok|bad|none). Repeat to try several keys."),
    ) -> None:
        """Print every LISP packet (UDP 4341/4342) of a capture as JSON lines."""
        try:
            items = decode_capture(file, key or ())
            first = next(items, None)
        except CaptureFormatError as e:
            typer.echo(f"lispctl decode: {e}", err=True)
            raise typer.Exit(2)
        if first is None:
            return
        out = sys.stdout
        try:
            out.write(json.dumps(first) + "\n")
            for obj in items:
                out.write(json.dumps(obj) + "\n")
            out.flush()
        except BrokenPipeError:
            # `lispctl decode f | head`: stop quietly like other CLI filters.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())

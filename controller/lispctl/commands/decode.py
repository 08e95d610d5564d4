"""`lispctl decode FILE`: every LISP packet of a pcap/pcapng capture as one
JSON object per line (fields named as in the RFCs, see lispctl.wire_json).

A packet that does not decode becomes {"frame": n, ..., "error": reason} and
decoding goes on; the exit status is 0 whenever the file could be read.
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


def datagram_json(d: Datagram, keys: Sequence[bytes] = ()) -> dict[str, Any]:
    """One captured LISP datagram as a dict (never raises for bad payloads)."""
    out: dict[str, Any] = {"frame": d.frame, "time": _time(d.ts_ns), "src": d.src, "dst": d.dst,
                           "sport": d.sport, "dport": d.dport}
    try:
        if d.kind == "data":
            out.update(wire_json.data_header(w.decode_data_header(d.payload), d.payload[w.DATA_HEADER_LEN:]))
            return out
        msg = w.decode_control(d.payload)
    except w.MalformedMessage as e:
        out["error"] = str(e)
        return out
    out.update(wire_json.message(msg))
    if keys:
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

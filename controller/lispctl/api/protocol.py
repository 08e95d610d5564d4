"""Framing and dispatch of the local API, without I/O.

The daemon's socket server feeds each request line to `handle_line` and
writes back what it returns; the client uses `encode_request` and
`decode_response`. Kept sans-IO so the command table is testable alone.
"""
from __future__ import annotations

import inspect
import json
from typing import Any, Callable, Mapping

COMMANDS = ("status", "map-cache", "map-cache-load", "map-cache-unload", "database", "sites", "counters", "stop")
MAX_LINE = 64 * 1024


class ApiError(RuntimeError):
    """A request the daemon refused, or a daemon that could not be reached."""


Handler = Callable[[dict], Any]


def encode_request(cmd: str, **args: Any) -> bytes:
    return (json.dumps({"cmd": cmd, **args}) + "\n").encode()


def _response(ok: bool, **fields: Any) -> bytes:
    return (json.dumps({"ok": ok, **fields}, default=str, separators=(",", ":")) + "\n").encode()


def _dispatch(line: bytes, handlers: Mapping[str, Handler]) -> tuple[dict | None, Handler | None, bytes]:
    """(request, its handler, b"") or (None, None, the error response)."""
    try:
        req = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, None, _response(False, error=f"request is not JSON: {exc}")
    if not isinstance(req, dict) or not isinstance(req.get("cmd"), str):
        return None, None, _response(False, error='request must be an object with a string "cmd"')
    handler = handlers.get(req["cmd"])
    if handler is None:
        return None, None, _response(False, error=f"unknown command {req['cmd']!r}; known: {', '.join(handlers)}")
    return req, handler, b""


def handle_line(line: bytes, handlers: Mapping[str, Handler]) -> bytes:
    """One request line in, one response line out; never raises for bad input."""
    req, handler, err = _dispatch(line, handlers)
    if handler is None or req is None:
        return err
    try:
        return _response(True, result=handler(req))
    except ApiError as exc:
        return _response(False, error=str(exc))


async def handle_line_async(line: bytes, handlers: Mapping[str, Handler]) -> bytes:
    """handle_line for a server on an event loop: a handler may return an
    awaitable (long work that must not hold the loop), awaited here."""
    req, handler, err = _dispatch(line, handlers)
    if handler is None or req is None:
        return err
    try:
        result = handler(req)
        if inspect.isawaitable(result):
            result = await result
        return _response(True, result=result)
    except ApiError as exc:
        return _response(False, error=str(exc))


def decode_response(line: bytes) -> Any:
    try:
        resp = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(f"daemon sent a response that is not JSON: {exc}") from None
    if not isinstance(resp, dict) or "ok" not in resp:
        raise ApiError("daemon sent a malformed response")
    if not resp["ok"]:
        raise ApiError(str(resp.get("error", "request failed")))
    return resp.get("result")

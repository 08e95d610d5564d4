"""The local API of a running device: JSON lines over a unix socket.

One request per line, {"cmd": "status", ...args}; one response line,
{"ok": true, "result": ...} or {"ok": false, "error": "..."}.
"""
from .protocol import COMMANDS, ApiError  # noqa: F401

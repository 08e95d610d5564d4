"""Blocking client for the local API, used by the CLI and the lab runner."""
from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

from lispctl.daemon.rundir import DEFAULT_RUN_DIR, InstancePaths, running_instances

from .protocol import MAX_LINE, ApiError, decode_response, encode_request


class NoDaemon(ApiError):
    """No running daemon matches the request."""


def resolve_instance(instance: str | None, run_dir: Path = DEFAULT_RUN_DIR) -> InstancePaths:
    """The named instance, or the only running one when no name is given."""
    running = running_instances(run_dir)
    if instance is not None:
        if instance not in running:
            hint = f" (running: {', '.join(running)})" if running else ""
            raise NoDaemon(f"no lispctl daemon for instance {instance!r} in {run_dir}{hint}; "
                           f"start one with `lispctl up -c FILE`")
        return InstancePaths(run_dir, instance)
    if not running:
        raise NoDaemon(f"no lispctl daemon is running (nothing in {run_dir}); "
                       f"start one with `lispctl up -c FILE`")
    if len(running) > 1:
        raise NoDaemon(f"several daemons are running ({', '.join(running)}); choose one with --instance")
    return InstancePaths(run_dir, running[0])


class ApiClient:
    def __init__(self, socket_path: Path | str, timeout: float = 5.0) -> None:
        self.socket_path = str(socket_path)
        self.timeout = timeout

    @classmethod
    def for_instance(cls, instance: str | None = None, run_dir: Path = DEFAULT_RUN_DIR,
                     timeout: float = 5.0) -> "ApiClient":
        return cls(resolve_instance(instance, run_dir).socket, timeout)

    def call(self, cmd: str, **args: Any) -> Any:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(self.timeout)
            try:
                s.connect(self.socket_path)
            except (FileNotFoundError, ConnectionRefusedError) as exc:
                raise NoDaemon(f"cannot reach the daemon at {self.socket_path}: {exc.strerror}") from None
            except PermissionError:
                raise ApiError(f"permission denied on {self.socket_path} (run as root)") from None
            s.sendall(encode_request(cmd, **args))
            buf = bytearray()
            try:
                while not buf.endswith(b"\n"):
                    chunk = s.recv(1 << 16)
                    if not chunk:
                        break
                    buf += chunk
            except socket.timeout:
                raise ApiError(f"the daemon did not answer {cmd!r} within {self.timeout:g} s") from None
        if not buf:
            raise ApiError(f"the daemon closed the connection without answering {cmd!r}")
        return decode_response(bytes(buf))


__all__ = ["ApiClient", "ApiError", "NoDaemon", "resolve_instance", "MAX_LINE"]

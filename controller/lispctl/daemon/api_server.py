"""The asyncio side of the local API: a unix socket, mode 0600."""
from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Mapping

from lispctl.api.protocol import MAX_LINE, Handler, handle_line_async

log = logging.getLogger("lispctl.api")


class ApiServer:
    def __init__(self, path: Path, handlers: Mapping[str, Handler]) -> None:
        self.path = path
        self.handlers = handlers
        self.server: asyncio.AbstractServer | None = None
        self.requests = 0

    async def start(self) -> None:
        try:
            self.path.unlink()          # left by a daemon that was killed; we hold the lock
        except FileNotFoundError:
            pass
        old = os.umask(0o177)           # no window in which the socket is world-accessible
        try:
            self.server = await asyncio.start_unix_server(self._client, path=str(self.path),
                                                          limit=MAX_LINE)
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    line = await reader.readline()
                except (asyncio.LimitOverrunError, ValueError):
                    writer.write(b'{"ok":false,"error":"request line too long"}\n')
                    break
                if not line:
                    break
                self.requests += 1
                try:
                    writer.write(await handle_line_async(line, self.handlers))
                except Exception:                 # a handler bug must not reach the loop
                    log.exception("API request %r failed", line[:200])
                    writer.write(b'{"ok":false,"error":"internal error, see the daemon log"}\n')
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None

"""The local API's dispatch: handlers may return awaitables (long work such
as `map-cache-load` runs off the loop and is awaited)."""
from __future__ import annotations

import asyncio
import json

from lispctl.api.protocol import ApiError, handle_line, handle_line_async


def test_async_handlers_are_awaited_and_errors_answered():
    async def slow(req):
        await asyncio.sleep(0)
        if req.get("bad"):
            raise ApiError("refused")
        return {"n": req["n"] * 2}

    handlers = {"slow": slow, "plain": lambda req: 7}

    def ask(obj) -> dict:
        return json.loads(asyncio.run(handle_line_async(json.dumps(obj).encode(), handlers)))

    assert ask({"cmd": "slow", "n": 21}) == {"ok": True, "result": {"n": 42}}
    assert ask({"cmd": "slow", "bad": True}) == {"ok": False, "error": "refused"}
    assert ask({"cmd": "plain"}) == {"ok": True, "result": 7}
    assert ask({"cmd": "nope"})["error"].startswith("unknown command 'nope'")
    assert json.loads(asyncio.run(handle_line_async(b"{not json", handlers)))["ok"] is False
    # the synchronous form is unchanged
    assert json.loads(handle_line(b'{"cmd": "plain"}', handlers)) == {"ok": True, "result": 7}

"""Decoding Map-Registers that repeat.

An xTR refreshes its registration every minute or so with the same records;
only the nonce and the MAC change. A Map-Server with many sites therefore
decodes the same record bytes over and over, and decoding records (EID,
locators, addresses) costs several times the 16-byte header. RegisterMemo
decodes a Map-Register exactly like decode_control, but re-uses the decoded
records, xTR-ID, site-ID and trailer when the first word and the bytes after
the authentication data were seen before. The result is a pure function of
those bytes, so a memo hit can never differ from a fresh decode; entries
are bounded in number and size (a flood of distinct messages only costs
misses).
"""
from __future__ import annotations

from .codec import ControlMessage, decode_control
from .records import EidRecord
from .control import (_AUTH_HDR, _MREG_M, _MREG_P, _MREG_R, _MREG_S, AUTH_DATA_LENGTHS, MAP_REGISTER,
                      MAP_REGISTER_RESERVED_MASK, MapRegister, _decode_map_register)

__all__ = ["RegisterMemo"]


class RegisterMemo:
    """Callable like decode_control (bytes -> message, raises MalformedMessage);
    only Map-Registers are memoized."""
    __slots__ = ("_memo", "max_entries", "max_tail")

    def __init__(self, max_entries: int = 8192, max_tail: int = 1024) -> None:
        # (first word, bytes after the auth data) -> (records, xtr_id, site_id, trailer)
        self._memo: dict[tuple[int, bytes], tuple[tuple[EidRecord, ...], int | None, int | None, bytes]] = {}
        self.max_entries = max_entries
        self.max_tail = max_tail

    def __call__(self, buf: bytes) -> ControlMessage:
        if type(buf) is not bytes or len(buf) < 16 or buf[0] >> 4 != MAP_REGISTER:
            return decode_control(buf)              # not ours to shortcut (or an error)
        w, nonce, key_id, alg_id, alen = _AUTH_HDR.unpack_from(buf, 0)
        start = 16 + alen
        if AUTH_DATA_LENGTHS.get(alg_id) != alen or start > len(buf):
            return _decode_map_register(buf)        # raises the usual error
        key = (w, buf[start:])
        hit = self._memo.get(key)
        if hit is None:
            msg = _decode_map_register(buf)
            if len(key[1]) <= self.max_tail:
                if len(self._memo) >= self.max_entries:
                    self._memo.clear()
                self._memo[key] = (msg.records, msg.xtr_id, msg.site_id, msg.trailer)
            return msg
        records, xtr_id, site_id, trailer = hit
        return MapRegister(nonce, records, key_id, alg_id, buf[16:start], bool(w & _MREG_P),
                           bool(w & _MREG_S), bool(w & _MREG_M), xtr_id, site_id,
                           w & MAP_REGISTER_RESERVED_MASK, trailer, bool(w & _MREG_R))

"""Top-level dispatch: decode_control(bytes) -> message, encode(message) -> bytes."""
from __future__ import annotations

from typing import Union

from .control import (PLAIN_DECODERS, InfoReply, InfoRequest, MapNotify, MapNotifyAck, MapReferral, MapRegister,
                      MapReply, MapRequest, SharedExtension)
from .ecm import ECM_TYPE, EncapsulatedControlMessage, decode_ecm
from .errors import MalformedMessage

ControlMessage = Union[MapRequest, MapReply, MapRegister, MapNotify, MapNotifyAck, MapReferral,
                       InfoRequest, InfoReply, EncapsulatedControlMessage, SharedExtension]


def _decode_plain(buf: bytes) -> ControlMessage:
    if not buf:
        raise MalformedMessage("empty message", 0)
    t = buf[0] >> 4
    dec = PLAIN_DECODERS.get(t)
    if dec is None:
        if t == ECM_TYPE:
            raise MalformedMessage("ECM nested inside an ECM", 0)
        raise MalformedMessage(f"unknown message type {t}", 0)
    return dec(buf)


def decode_control(buf: bytes) -> ControlMessage:
    """Decode one LISP control message (the UDP payload). Raises only
    MalformedMessage, whatever the bytes."""
    if type(buf) is not bytes:
        buf = bytes(buf)
    if buf and buf[0] >> 4 == ECM_TYPE:
        return decode_ecm(buf, _decode_plain)
    return _decode_plain(buf)


def decode_ecm_message(buf: bytes) -> EncapsulatedControlMessage:
    """Decode bytes that must be an ECM."""
    if type(buf) is not bytes:
        buf = bytes(buf)
    if not buf or buf[0] >> 4 != ECM_TYPE:
        raise MalformedMessage("not an Encapsulated Control Message", 0)
    return decode_ecm(buf, _decode_plain)


def encode(msg: ControlMessage) -> bytes:
    """Wire bytes of any message of this package (same as msg.encode())."""
    return msg.encode()

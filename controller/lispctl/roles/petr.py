"""Proxy-ETR (RFC 6832 section 6): decapsulates for any destination and
forwards the inner packet natively. Everything per packet happens in the
data plane (Datapath.set_petr, bpf/lisp_datapath.c petr_check); this role
has no protocol to speak and exists to carry the PETR's RLOCs (the
LocalSite) and to show its configuration in `lispctl status`."""
from __future__ import annotations

from lispctl.config import Config
from lispctl.roles.base import Effect, Endpoint
from lispctl.roles.local import LocalSite


class PetrRole:
    name = "petr"
    message_types: frozenset = frozenset()   # no control messages: never handed a datagram

    def __init__(self, cfg: Config, site: LocalSite) -> None:
        self.cfg = cfg
        self.site = site
        accept = cfg.petr.accept_eids
        self.accept_eids = tuple(accept) if accept is not None else None

    def handle(self, data: bytes, src: Endpoint, dst: Endpoint, now: float) -> list[Effect]:
        return []

    def tick(self, now: float) -> list[Effect]:
        return []

    def next_deadline(self) -> float | None:
        return None

    def snapshot(self) -> dict:
        return {"petr": {
            "rlocs": [str(a) for a in self.site.rlocs()],
            "accept_eids": None if self.accept_eids is None else [str(e) for e in self.accept_eids],
            "open_relay": self.accept_eids is None,
        }}

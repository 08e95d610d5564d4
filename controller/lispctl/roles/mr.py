"""Map-Resolver: takes ECM'd Map-Requests from ITRs and hands them to the
Map-Server responsible (the one in this process, or one of [[mr.map-server]]),
or answers with a negative Map-Reply for space nobody holds."""
from __future__ import annotations

from lispctl.config import Config
from lispctl.mapping.lpm import LpmTable
from lispctl.mapping.types import IPAddress
from lispctl.roles.base import CONTROL_PORT, Effect, Effects, Endpoint
from lispctl.roles.common import Counters, decode
from lispctl.roles.ms import MapServerRole, multicast_sg, negative_reply, rate_limited, resolver_ecm
from lispctl.roles.ratelimit import RateLimiter
from lispctl.wire import EncapsulatedControlMessage, MalformedMessage, MapRequest, record_prefix


class MapResolverRole:
    name = "mr"
    # what the daemon hands to handle() (its message registry, by type)
    message_types = frozenset({EncapsulatedControlMessage.TYPE})

    def __init__(self, cfg: Config, ms: MapServerRole | None = None) -> None:
        self.cfg = cfg
        self.ms = ms
        self.forward: LpmTable[IPAddress] = LpmTable()
        for fwd in cfg.mr.map_server:
            for eid in fwd.eid_prefix:
                self.forward.insert(eid, fwd.address)
        self.counters = Counters()
        self.limit = RateLimiter(cfg.mr.request_rate_per_source, cfg.mr.request_rate)

    def next_deadline(self) -> float | None:
        return None

    def tick(self, now: float) -> list[Effect]:
        return []

    def handle(self, data: bytes, src: Endpoint, dst: Endpoint, now: float) -> list[Effect]:
        # Before decoding: under a flood the refusals must cost next to nothing.
        if resolver_ecm(data) and (over := self.limit.allow(src.addr, now)) is not None:
            return rate_limited(self.counters, over, src)
        msg = decode(data)
        if not (isinstance(msg, EncapsulatedControlMessage) and isinstance(msg.message, MapRequest)
                and not msg.to_etr and not msg.ddt):     # D bit: for a DDT node or Map-Server
            return []
        self.counters["map_request_rx"] += 1
        if msg.message.smr_invoked:
            self.counters["smr_invoked_rx"] += 1
        if self.ms is not None:
            effects = self.ms.resolve(msg, data, now)
            if effects is not None:
                self.counters["resolved_locally"] += 1
                return effects
        try:
            want = record_prefix(msg.message.records[0]) if msg.message.records else None
        except MalformedMessage:
            want = None
            if multicast_sg(msg.message.records[0]):
                return negative_reply(self.cfg, msg, LpmTable(), None, self.counters)
        if want is None:
            self.counters["map_request_bad_eid"] += 1
            return []
        hit = self.forward.longest_covering(want)
        if hit is not None:
            out = Effects()
            out.send(data, Endpoint(hit[1], CONTROL_PORT))   # the ECM as received
            self.counters["forwarded_to_ms"] += 1
            out.log(f"Map-Request for {want} forwarded to Map-Server {hit[1]}",
                    kind="map-request-forwarded", peer=src.addr)
            return out.items
        configured = self.ms.configured if self.ms is not None else LpmTable()
        registered = self.ms.registered if self.ms is not None else None
        return negative_reply(self.cfg, msg, configured, self.forward, self.counters, registered)

    def snapshot(self) -> dict:
        return {"forward": [{"eid": str(e), "map_server": str(a)} for e, a in self.forward.items()],
                "counters": self.counters.snapshot()}

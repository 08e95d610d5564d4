"""Map-Server side of NAT traversal (draft-ietf-lisp-nat-traversal): answer
an Info-Request with an Info-Reply.

The xTR sends an Info-Request from the RLOC (and port) it wants to learn
about, naming one of its EID prefixes and signed with the key of its site,
exactly like a Map-Register. We answer only when the prefix belongs to a
configured site and the MAC verifies with that site's key: an unauthenticated
responder would tell anyone on the underlay which RTRs we use and would
reflect traffic towards a spoofed source. Drops are counted, never answered;
requests share the Map-Server's per-source and overall rate limits for
Map-Requests ([mr] request-rate-per-source, request-rate).

The Info-Reply copies the nonce, key-id, algorithm, TTL and EID prefix of the
request and carries a NAT-Traversal LCAF (type 7) with:
  MS UDP port / MS RLOC        the port and address the request arrived on,
  ETR UDP port / Global ETR RLOC  the source port and address we saw (after
                               any NAT: comparing them with its own address
                               and port is how the xTR detects the NAT),
  Private ETR RLOC             AFI 0: the draft's Info-Request ends with
                               AFI 0 (tshark flags anything else), so we
                               cannot know it; a peer that nevertheless puts
                               an IP address there gets it echoed,
  RTR RLOCs                    [ms] rtr-rlocs of our configuration.
It is signed with the same site key and sent back to the source address and
port of the request, so it crosses the NAT on the binding the request opened.

A Map-Notify for a registration an RTR forwarded goes to that RTR, which
binds the xTR to the NAT address it saw on its strength. With an MS-RTR key
for that RTR ([ms] rtr-keys) the notify carries the R bit and the MS-RTR MAC
(wire/auth.py add_ms_rtr_auth), so the RTR can refuse a forged one.
"""
from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

from lispctl.roles.base import Effects, Endpoint
from lispctl.wire import (ALG_HMAC_SHA1, ALG_HMAC_SHA256, NO_ADDRESS, InfoReply, InfoRequest,
                          MalformedMessage, NatTraversal, sign, verify)
from lispctl.wire.auth import add_ms_rtr_auth
from lispctl.wire.convert import to_eid_prefix

if TYPE_CHECKING:
    from lispctl.roles.ms import MapServerRole

_ALGS = (ALG_HMAC_SHA1, ALG_HMAC_SHA256)
_IP = (ipaddress.IPv4Address, ipaddress.IPv6Address)


class InfoResponder:
    """Owned by the MapServerRole; it hands over every Info-Request."""

    def __init__(self, ms: "MapServerRole") -> None:
        self.ms = ms
        self.rtr_rlocs = tuple(ms.cfg.ms.rtr_rlocs)
        self.rtr_keys = dict(ms.cfg.ms.rtr_keys)
        self.counters = ms.counters

    def for_rtr(self, notify: bytes, to: Endpoint) -> bytes:
        """The Map-Notify (signed with the site key) as sent to `to`: with the
        R bit and the MS-RTR MAC when `to` is an RTR we share a key with."""
        key = self.rtr_keys.get(to.addr)
        if key is None:
            return notify
        self.counters["map_notify_ms_rtr_auth_tx"] += 1
        return add_ms_rtr_auth(notify, key)

    def on_info_request(self, data: bytes, msg: InfoRequest, src: Endpoint, dst: Endpoint,
                        now: float, out: Effects) -> None:
        c = self.counters
        c["info_request_rx"] += 1
        # each answer costs two MACs: the Map-Request budget ([mr] request-rate*) applies
        if self.ms.limit.allow(src.addr, now) is not None:
            c["info_request_rate_limited"] += 1
            return
        try:
            eid = to_eid_prefix(msg.eid_prefix, msg.eid_mask_len)
        except (MalformedMessage, ValueError):
            c["info_request_bad_prefix"] += 1
            return
        owner = self.ms._site_of(eid)
        if owner is None:
            c["info_request_bad_prefix"] += 1
            out.log(f"dropped Info-Request from {src.addr}:{src.port}: {eid} is in no site")
            return
        site = owner.site
        key = site.cfg.keys.get(msg.key_id)
        if key is None or not verify(data, key, alg_ids=_ALGS):
            site.bad_auth += 1
            c["info_request_bad_auth"] += 1
            out.log(f"dropped Info-Request from {src.addr}:{src.port} for site {site.cfg.name}: "
                    f"{'unknown key-id ' + str(msg.key_id) if key is None else 'authentication failed'}")
            return
        if isinstance(dst.addr, _IP) and dst.addr.is_unspecified:
            # no IP_PKTINFO destination: we cannot name our own RLOC
            c["info_request_no_local_address"] += 1
            return
        private = msg.address if isinstance(msg.address, _IP) else NO_ADDRESS
        nat = NatTraversal(dst.port, src.port, src.addr, dst.addr, private,
                           tuple(a for a in self.rtr_rlocs if a.version == src.addr.version))
        reply = InfoReply(msg.nonce, msg.eid_prefix, msg.eid_mask_len, nat, msg.key_id, msg.alg_id,
                          ttl=msg.ttl)
        out.send(sign(reply, key), src, Endpoint(dst.addr, dst.port))
        c["info_reply_tx"] += 1

"""The Map-Server's refresh fast path with real registrants
(captures/oor-lispctl-xtrs-register-at-lispctl-ms.pcap, taken at a lispctl
MS/MR during the live check of docs/lab.md): an OOR 1.3 xTR (192.0.2.2:
10.2.0.0/24 and fd00:2::/64 in a message each; key ID 0, HMAC-SHA-1, M bit)
and a lispctl xTR (192.0.2.1: 10.1.0.0/24 and fd00:1::/64 in one message;
key ID 1, HMAC-SHA-256, M and S bits) re-registering every 10 s with the
same records and a fresh nonce. After the first of each kind of message,
every refresh must take the fast path, and its Map-Notify must be the very
bytes the live Map-Server sent (which OOR accepted: "Map-Notify message
confirms correct registration", each time)."""
import ipaddress
from pathlib import Path

from lispctl import wire as w
from lispctl.capture import Datagram, lisp_datagrams
from lispctl.config import loads
from lispctl.roles.base import Endpoint, Send
from lispctl.roles.ms import MapServerRole

CAPTURE = Path(__file__).parent / "captures" / "oor-lispctl-xtrs-register-at-lispctl-ms.pcap"
MS = "192.0.2.10"
OOR, LISPCTL = "192.0.2.2", "192.0.2.1"

# the live Map-Server's config (docs/lab.md, "Live check against OOR")
CONFIG = """
instance = "ilv-ms"
roles = ["ms", "mr"]
[ms]
registration-timeout = 30
[[site]]
name = "oor"
keys = { 0 = "oor-secret" }
[[site.eid-prefix]]
prefix = "10.2.0.0/24"
[[site.eid-prefix]]
prefix = "fd00:2::/64"
[[site]]
name = "lx"
keys = { 1 = "lx-secret" }
[[site.eid-prefix]]
prefix = "10.1.0.0/24"
[[site.eid-prefix]]
prefix = "fd00:1::/64"
"""


def _ep(addr: str, port: int) -> Endpoint:
    return Endpoint(ipaddress.ip_address(addr), port)


def _control(src=None, dst=None, kind=None):
    return [d for d in lisp_datagrams(CAPTURE)
            if isinstance(d, Datagram) and d.payload and d.payload[0] >> 4 == kind
            and (src is None or d.src == src) and (dst is None or d.dst == dst)]


def _prefixes(msg) -> tuple[str, ...]:
    return tuple(str(w.record_prefix(r)) for r in msg.records)


def test_the_capture_is_what_the_test_says():
    kinds = {OOR: (0, w.ALG_HMAC_SHA1, False, {("10.2.0.0/24",), ("fd00:2::/64",)}),
             LISPCTL: (1, w.ALG_HMAC_SHA256, True, {("10.1.0.0/24", "fd00:1::/64")})}
    for xtr, (key_id, alg, s_bit, shapes) in kinds.items():
        regs = _control(xtr, MS, w.MAP_REGISTER)
        msgs = [w.decode_control(d.payload) for d in regs]
        assert {(m.key_id, m.alg_id, m.want_map_notify, m.security) for m in msgs} == {(key_id, alg, True, s_bit)}
        assert {_prefixes(m) for m in msgs} == shapes
        assert len(msgs) >= 6 * len(shapes)
        assert len({m.nonce for m in msgs}) == len(msgs)                 # a fresh nonce each time
        for shape in shapes:                                             # the same records each time
            assert len({m.records for m in msgs if _prefixes(m) == shape}) == 1
        assert len(_control(MS, xtr, w.MAP_NOTIFY)) == len(regs)


def test_every_refresh_after_the_first_takes_the_fast_path_with_the_notify_sent_live():
    ms = MapServerRole(loads(CONFIG))
    notifies = {(d.dst, w.decode_control(d.payload).nonce): d.payload for d in _control(MS, None, w.MAP_NOTIFY)}
    first, fast = set(), {OOR: 0, LISPCTL: 0}
    for d in _control(None, MS, w.MAP_REGISTER):
        src, now = _ep(d.src, d.sport), d.ts_ns / 1e9
        msg = w.decode_control(d.payload)
        reply = ms.refresh(d.payload, src, now)
        if (d.src, _prefixes(msg)) not in first:
            assert reply is None                                       # a first registration: handle()
            first.add((d.src, _prefixes(msg)))
            (send,) = [e for e in ms.handle(d.payload, src, _ep(MS, 4342), now) if isinstance(e, Send)]
            reply = send.payload
        else:
            assert reply is not None, f"a refresh from {d.src} (frame {d.frame}) left the fast path"
            fast[d.src] += 1
        assert reply == notifies[(d.src, msg.nonce)]
    assert len(first) == 3 and fast[OOR] >= 10 and fast[LISPCTL] >= 5
    assert ms.counters["map_register_ok"] == ms.counters["map_notify_tx"] == sum(fast.values()) + 3
    assert {str(e) for e, _ in ms.registered.items()} == {"10.2.0.0/24", "fd00:2::/64", "10.1.0.0/24", "fd00:1::/64"}

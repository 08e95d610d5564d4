"""The Map-Server's refresh fast path with real registrants
(captures/oor-lispctl-xtrs-register-at-lispctl-ms.pcap, taken at a lispctl
MS/MR): an OOR 1.3 xTR (192.0.2.2, EID 10.2.0.0/24, key ID 0, HMAC-SHA-1,
M bit) and a lispctl xTR (192.0.2.1, EID 10.1.0.0/24, key ID 1,
HMAC-SHA-256, M and S bits) re-registering every 10 s with the same record
and a fresh nonce. After each one's first message every refresh must take
the fast path, and its Map-Notify must be the very bytes the live Map-Server
sent (which OOR accepted: "Map-Notify message confirms correct
registration", each time)."""
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
[[site]]
name = "lx"
keys = { 1 = "lx-secret" }
[[site.eid-prefix]]
prefix = "10.1.0.0/24"
"""


def _ep(addr: str, port: int) -> Endpoint:
    return Endpoint(ipaddress.ip_address(addr), port)


def _control(src=None, dst=None, kind=None):
    return [d for d in lisp_datagrams(CAPTURE)
            if isinstance(d, Datagram) and d.payload and d.payload[0] >> 4 == kind
            and (src is None or d.src == src) and (dst is None or d.dst == dst)]


def test_the_capture_is_what_the_test_says():
    for xtr, key_id, alg, flags in ((OOR, 0, w.ALG_HMAC_SHA1, {"M"}), (LISPCTL, 1, w.ALG_HMAC_SHA256, {"M", "S"})):
        regs = _control(xtr, MS, w.MAP_REGISTER)
        assert len(regs) >= 10
        msgs = [w.decode_control(d.payload) for d in regs]
        assert {(m.key_id, m.alg_id, m.want_map_notify, m.security) for m in msgs} == \
            {(key_id, alg, "M" in flags, "S" in flags)}
        assert len({m.nonce for m in msgs}) == len(msgs)                 # a fresh nonce each time
        assert len({m.records for m in msgs}) == 1                       # the same record each time
        assert len(_control(MS, xtr, w.MAP_NOTIFY)) == len(regs)


def test_every_refresh_after_the_first_takes_the_fast_path_with_the_notify_sent_live():
    ms = MapServerRole(loads(CONFIG))
    notifies = {(d.dst, w.decode_control(d.payload).nonce): d.payload for d in _control(MS, None, w.MAP_NOTIFY)}
    first, fast = set(), {OOR: 0, LISPCTL: 0}
    for d in _control(None, MS, w.MAP_REGISTER):
        src, now = _ep(d.src, d.sport), d.ts_ns / 1e9
        nonce = w.decode_control(d.payload).nonce
        reply = ms.refresh(d.payload, src, now)
        if d.src not in first:
            assert reply is None                                       # a first registration: handle()
            first.add(d.src)
            (send,) = [e for e in ms.handle(d.payload, src, _ep(MS, 4342), now) if isinstance(e, Send)]
            reply = send.payload
        else:
            assert reply is not None, f"a refresh from {d.src} (frame {d.frame}) left the fast path"
            fast[d.src] += 1
        assert reply == notifies[(d.src, nonce)]
    assert fast[OOR] >= 9 and fast[LISPCTL] >= 9
    assert ms.counters["map_register_ok"] == ms.counters["map_notify_tx"] == sum(fast.values()) + 2

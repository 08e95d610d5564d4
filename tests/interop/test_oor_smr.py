"""SMRs with OOR (captures/oor-smr-after-rloc-change.pcap): OOR puts its
changed prefix in the SMR's Source-EID and the receiver's EID in the record
(nonce 0), and acts only on SMRs whose record is one of its own EIDs.
lispctl's ITR must act on that form (and on its own older one), and what
lispctl's ETR sends must be acted on by an ITR following OOR's rule."""
import ipaddress
import random
from pathlib import Path

from lispctl import wire as w
from lispctl.capture import Datagram, lisp_datagrams
from lispctl.config import loads
from lispctl.mapping.lpm import LpmTable
from lispctl.mapping.types import EidPrefix
from lispctl.roles import build_roles
from lispctl.roles.base import Endpoint, MissEvent, Send

CAPTURES = Path(__file__).parent / "captures"
A = ipaddress.ip_address
P = EidPrefix.parse
MR = A("192.0.2.10")
ME = A("198.51.100.10")          # the lispctl xTR in the capture, EID 10.1.0.0/24
OOR = A("203.0.113.20")          # the OOR xTR after its RLOC change, EID 10.2.0.0/24

XTR = f"""
instance = "xtr"
roles = ["xtr"]
[[database]]
eid-prefix = "10.1.0.0/24"
[[database.locator]]
address = "{ME}"
[[map-server]]
address = "{MR}"
key = "k"
[[map-resolver]]
address = "{MR}"
"""


def xtr():
    return dict(build_roles(loads(XTR), rng=random.Random(3)))


def oor_smr() -> Datagram:
    smrs = [d for d in lisp_datagrams(CAPTURES / "oor-smr-after-rloc-change.pcap")
            if isinstance(d, Datagram) and d.payload[0] >> 4 == w.MAP_REQUEST
            and w.decode_control(d.payload).smr]
    assert len(smrs) == 1
    return smrs[0]


def learn(itr, dst: str, rloc: str, prefix: str, now: float):
    """A miss for dst answered by the mapping system: prefix -> rloc cached."""
    (send,) = [e for e in itr.on_miss(MissEvent(P(dst + "/32"), A("10.1.0.5")), now) if isinstance(e, Send)]
    req = w.decode_control(send.payload).message
    reply = w.MapReply(req.nonce, (w.eid_record(P(prefix), (w.rloc_to_locator(
        __import__("lispctl.mapping.types", fromlist=["Rloc"]).Rloc(A(rloc))),), ttl=1440),))
    itr.handle(reply.encode(), Endpoint(A(rloc), 4342), Endpoint(ME, 4342), now + 0.01)
    assert itr.cache.get(P(prefix)) is not None


def smr_invoked_requests(effects):
    out = []
    for e in effects:
        if isinstance(e, Send):
            m = w.decode_control(e.payload)
            if isinstance(m, w.EncapsulatedControlMessage) and m.message.smr_invoked:
                out.append(m.message)
    return out


def test_itr_acts_on_oor_smr_form():
    d = oor_smr()
    smr = w.decode_control(d.payload)
    assert smr.nonce == 0 and smr.source_eid == A("10.2.0.0")
    assert w.record_prefix(smr.records[0]) == P("10.1.0.0/24")      # our own EID
    itr = xtr()["itr"]
    learn(itr, "10.2.0.7", "203.0.113.10", "10.2.0.0/24", 1.0)
    eff = itr.handle(d.payload, Endpoint(A(d.src), d.sport), Endpoint(ME, 4342), 5.0)
    (req,) = smr_invoked_requests(eff)
    assert w.record_prefix(req.records[0]) == P("10.2.0.0/24")
    assert itr.counters["smr_not_cached"] == 0


def test_itr_still_acts_on_record_form():
    itr = xtr()["itr"]
    learn(itr, "10.2.0.7", "203.0.113.10", "10.2.0.0/24", 1.0)
    smr = w.MapRequest(7, (w.request_record(P("10.2.0.0/24")),), (OOR,),
                       source_eid=A("10.2.0.0"), smr=True)
    (req,) = smr_invoked_requests(itr.handle(smr.encode(), Endpoint(OOR), Endpoint(ME), 5.0))
    assert w.record_prefix(req.records[0]) == P("10.2.0.0/24")


def oor_style_itr_acts(smr: w.MapRequest, own: list[EidPrefix], cache: list[EidPrefix]) -> EidPrefix | None:
    """OOR 1.3's rule (xtr_recv_map_request + tr_reply_to_smr): one record,
    whose EID must fall in the local database (longest match, instance ID
    included); the Source-EID (not AFI 0) is looked up in the map-cache; the
    re-query is for the cached prefix found."""
    if not smr.smr or len(smr.records) != 1:
        return None
    if smr.source_eid == w.NO_ADDRESS:
        return None
    src = w.to_eid_prefix(smr.source_eid, 32 if smr.source_eid.version == 4 else 128)
    own_t, cache_t = LpmTable(), LpmTable()
    for e in own:
        own_t.insert(e, e)
    for e in cache:
        cache_t.insert(e, e)
    if own_t.longest_covering(w.record_prefix(smr.records[0])) is None:
        return None
    hit = cache_t.longest_covering(src)
    return None if hit is None else hit[1]


def test_what_our_etr_sends_makes_an_oor_style_itr_requery():
    """Our ETR answered a Map-Request of an OOR ITR (Source-EID = its host EID,
    as in oor-xtr-ms-smr-proxy.pcap); our locator changes; the SMR we send
    must be acted on by OOR's rule."""
    roles = xtr()
    etr = roles["etr"]
    etr.tick(0.0)
    oor_req = w.MapRequest(0x1234, (w.request_record(P("10.1.0.9/32")),), (OOR,), source_eid=A("10.2.0.2"))
    assert any(isinstance(e, Send) for e in etr.handle(oor_req.encode(), Endpoint(OOR), Endpoint(ME), 1.0))
    eff = etr.mapping_changed([P("10.1.0.0/24")], 2.0)
    smrs = [w.decode_control(e.payload) for e in eff if isinstance(e, Send) and e.dst.addr == OOR]
    assert smrs and all(m.smr for m in smrs)
    for smr in smrs:
        assert oor_style_itr_acts(smr, own=[P("10.2.0.0/24")], cache=[P("10.1.0.0/24")]) == P("10.1.0.0/24")

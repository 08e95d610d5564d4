"""Hypothesis strategies for valid lispctl.wire messages, reusable by other tests.

    from tests.wire.strategies import control_messages, map_registers, eid_records
    (or: import strategies as ws after putting tests/wire on sys.path)

Every generated value satisfies decode(encode(m)) == m.
"""
from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

from hypothesis import strategies as st

from lispctl import wire as w
from lispctl.wire.addresses import _LCAF_DECODERS

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
u64 = st.integers(0, (1 << 64) - 1)
u128 = st.integers(0, (1 << 128) - 1)

ipv4 = st.builds(IPv4Address, u32)
ipv6 = st.builds(IPv6Address, u128)
ips = st.one_of(ipv4, ipv6)
names = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=20)
base_addresses = st.one_of(
    ipv4, ipv6, st.just(w.NO_ADDRESS),
    st.builds(w.DistinguishedName, names),
    st.builds(w.MacAddress, st.binary(min_size=6, max_size=6)),
)


def _lcafs(inner: st.SearchStrategy) -> st.SearchStrategy:
    small = st.lists(inner, max_size=3).map(tuple)
    return st.one_of(
        st.builds(w.AfiList, small),
        st.builds(w.InstanceId, u32, inner, u8),
        st.builds(w.NatTraversal, u16, u16, inner, inner, inner, small),
        st.builds(w.ExplicitLocatorPath, st.lists(
            st.builds(w.ElpHop, inner, st.booleans(), st.booleans(), st.booleans()), max_size=3).map(tuple)),
        st.builds(w.SourceDestKey, inner, inner, u8, u8),
        st.builds(w.ReplicationList, st.lists(st.builds(w.ReplicationEntry, inner, u8), max_size=3).map(tuple)),
        st.builds(w.JsonData, st.binary(max_size=40), st.booleans(), st.one_of(st.none(), inner)),
        st.builds(w.KeyValue, inner, inner),
        st.builds(w.UnknownLcaf, u8.filter(lambda t: t not in _LCAF_DECODERS), st.binary(max_size=30), u8, u8, u8),
    )


def _addresses_to_depth(depth: int) -> st.SearchStrategy:
    s = base_addresses
    for _ in range(depth):
        s = st.one_of(base_addresses, _lcafs(s))
    return s


# Depth 3 keeps examples small; the decoder's own depth bound is tested separately.
addresses = _addresses_to_depth(3)
iid_eids = st.builds(w.InstanceId, st.integers(0, (1 << 24) - 1), ips, st.just(0))


@st.composite
def eid_and_mask(draw):
    """An EID address and a mask length that the decoder accepts for it."""
    a = draw(st.one_of(ipv4, ipv6, iid_eids, addresses))
    if type(a) is IPv4Address:
        return a, draw(st.integers(0, 32))
    if type(a) is IPv6Address:
        return a, draw(st.integers(0, 128))
    return a, draw(u8)


locator_records = st.builds(
    w.LocatorRecord, st.one_of(ipv4, ipv6, addresses), u8, u8, u8, u8,
    st.booleans(), st.booleans(), st.booleans(), st.integers(0, (1 << 13) - 1))


@st.composite
def eid_records(draw, max_locators: int = 4):
    eid, ml = draw(eid_and_mask())
    return w.EidRecord(eid, ml, tuple(draw(st.lists(locator_records, max_size=max_locators))),
                       draw(u32), draw(st.integers(0, 7)), draw(st.booleans()), draw(st.integers(0, 4095)),
                       draw(st.integers(0, 4095)), draw(st.integers(0, 15)))


@st.composite
def request_records(draw):
    eid, ml = draw(eid_and_mask())
    return w.RequestRecord(eid, ml, draw(u8))


records = st.lists(eid_records(), max_size=3).map(tuple)
trailers = st.one_of(st.just(b""), st.binary(max_size=24))
xtr_ids = st.one_of(st.none(), u128)


@st.composite
def _xtr(draw):
    x = draw(xtr_ids)
    return (None, None) if x is None else (x, draw(u64))


@st.composite
def auth(draw):
    alg = draw(st.sampled_from(sorted(w.AUTH_DATA_LENGTHS)))
    return draw(u8), alg, draw(st.binary(min_size=w.AUTH_DATA_LENGTHS[alg], max_size=w.AUTH_DATA_LENGTHS[alg]))


def _reserved(mask: int) -> st.SearchStrategy:
    return st.one_of(st.just(0), u32.map(lambda v: v & mask))


@st.composite
def map_requests(draw):
    xtr, site = draw(_xtr())
    return w.MapRequest(
        draw(u64), tuple(draw(st.lists(request_records(), max_size=3))),
        tuple(draw(st.lists(st.one_of(ipv4, ipv6, addresses), min_size=1, max_size=4))),
        draw(addresses), *draw(st.tuples(*[st.booleans()] * 7)),
        draw(st.one_of(st.none(), eid_records())), xtr, site,
        draw(_reserved(w.control.MAP_REQUEST_RESERVED_MASK)), draw(trailers))


@st.composite
def map_replies(draw):
    return w.MapReply(draw(u64), draw(records), draw(st.booleans()), draw(st.booleans()), draw(st.booleans()),
                      draw(_reserved(w.control.MAP_REPLY_RESERVED_MASK)), draw(trailers))


@st.composite
def map_registers(draw):
    xtr, site = draw(_xtr())
    k, a, d = draw(auth())
    return w.MapRegister(draw(u64), draw(records), k, a, d, draw(st.booleans()), draw(st.booleans()),
                         draw(st.booleans()), xtr, site, draw(_reserved(w.control.MAP_REGISTER_RESERVED_MASK)),
                         draw(trailers), rtr=draw(st.booleans()))


def _notify(cls):
    @st.composite
    def gen(draw):
        xtr, site = draw(_xtr())
        k, a, d = draw(auth())
        rtr = draw(st.booleans())
        # R: MS-RTR authentication (draft-ietf-lisp-nat-traversal), or none at all
        ms_key = draw(st.one_of(st.none(), u16)) if rtr else None
        ms_auth = b"" if ms_key is None else draw(st.binary(max_size=40))
        trailer = b"" if rtr and ms_key is None else draw(trailers)
        return cls(draw(u64), draw(records), k, a, d, rtr, xtr, site,
                   draw(_reserved(w.control.MAP_NOTIFY_RESERVED_MASK)), trailer,
                   ms_rtr_key_id=ms_key, ms_rtr_auth_data=ms_auth)
    return gen()


map_notifies = _notify(w.MapNotify)
map_notify_acks = _notify(w.MapNotifyAck)

signatures = st.builds(w.Signature, u32, u32, u32, u16, u8, st.binary(max_size=40), st.integers(0, (1 << 24) - 1))


@st.composite
def referral_records(draw):
    eid, ml = draw(eid_and_mask())
    return w.ReferralRecord(eid, ml, tuple(draw(st.lists(locator_records, max_size=3))), draw(u32),
                            draw(st.integers(0, 7)), draw(st.booleans()), draw(st.booleans()),
                            draw(st.integers(0, 4095)), tuple(draw(st.lists(signatures, max_size=2))),
                            draw(st.integers(0, 2047)))


@st.composite
def map_referrals(draw):
    return w.MapReferral(draw(u64), tuple(draw(st.lists(referral_records(), max_size=3))),
                         draw(_reserved(w.control.MAP_REFERRAL_RESERVED_MASK)), draw(trailers))


@st.composite
def info_requests(draw):
    k, a, d = draw(auth())
    eid, ml = draw(eid_and_mask())
    last = draw(st.one_of(st.just(w.NO_ADDRESS), st.none(), addresses))
    return w.InfoRequest(draw(u64), eid, ml, k, a, d, draw(u32), last, draw(u8),
                         draw(_reserved(w.control.INFO_RESERVED_MASK)),
                         b"" if last is None else draw(trailers))


nat_lcafs = st.builds(w.NatTraversal, u16, u16, ips, ips, ips, st.lists(ips, max_size=3).map(tuple))


@st.composite
def info_replies(draw):
    k, a, d = draw(auth())
    eid, ml = draw(eid_and_mask())
    return w.InfoReply(draw(u64), eid, ml, draw(st.one_of(nat_lcafs, addresses)), k, a, d, draw(u32), draw(u8),
                       draw(_reserved(w.control.INFO_RESERVED_MASK)), draw(trailers))


shared_extensions = st.builds(w.SharedExtension, st.integers(0, 4095), st.binary(max_size=40))

plain_messages = st.one_of(map_requests(), map_replies(), map_registers(), map_notifies, map_notify_acks,
                           map_referrals(), info_requests(), info_replies(), shared_extensions)


@st.composite
def ecms(draw, inner=plain_messages):
    msg = draw(inner)
    flags = draw(st.tuples(*[st.booleans()] * 4))
    common = dict(inner_sport=draw(u16), inner_dport=draw(u16), security=flags[0], ddt=flags[1],
                  to_etr=flags[2], to_ms=flags[3], reserved=draw(st.one_of(st.just(0), st.integers(0, 0xFFFFFF))),
                  ttl=draw(u8), tos=draw(u8), trailer=draw(trailers))
    if draw(st.booleans()):
        return w.EncapsulatedControlMessage(
            msg, draw(ipv4), draw(ipv4), ident=draw(u16), dont_fragment=draw(st.booleans()),
            ip_options=draw(st.integers(0, 10).flatmap(lambda n: st.binary(min_size=4 * n, max_size=4 * n))),
            udp_checksum=draw(st.booleans()), **common)
    return w.EncapsulatedControlMessage(msg, draw(ipv6), draw(ipv6), flow_label=draw(st.integers(0, (1 << 20) - 1)),
                                        **common)


control_messages = st.one_of(plain_messages, ecms())


@st.composite
def data_headers(draw):
    n, l, e, v, i = draw(st.tuples(*[st.booleans()] * 5))
    versions = v and not n
    return w.DataHeader(
        n, l, e, v, i, draw(st.integers(0, 7)),
        0 if versions else draw(st.integers(0, (1 << 24) - 1)),
        draw(st.integers(0, 4095)) if versions else 0, draw(st.integers(0, 4095)) if versions else 0,
        draw(st.integers(0, (1 << 24) - 1)) if i else 0,
        draw(u8) if i else draw(u32))

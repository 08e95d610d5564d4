"""Locator-status bits of the local site (RFC 9300 5.3): per local EID
prefix, bit i = locator i of that prefix's own mapping, in its order, is up;
a locator whose link is down is down. The data plane sends them for packets
whose source matches (Datapath.add_local_eid(eid, lsb))."""
from lispctl.config import loads
from lispctl.mapping.types import EidPrefix
from lispctl.roles import build_roles, datapath_plan, find_role

from roles_helpers import XTR, A


def test_locator_status_bits_follow_the_database_and_links():
    cfg = loads(XTR.format(alg="hmac-sha256"))
    roles = build_roles(cfg, interface_addresses={"wan1": [A("203.0.113.9")]})
    site = find_role(roles, "etr").site
    eid = EidPrefix.parse("10.1.0.0/16")
    # locator 0: 192.0.2.1, locator 1: wan1's address
    assert site.locator_status_bits() == {eid: 0b11}
    assert dict(datapath_plan(cfg, roles).local_lsb) == {eid: 0b11}
    site.set_link_state("wan1", False)
    assert site.locator_status_bits() == {eid: 0b01}

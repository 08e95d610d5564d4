"""Helpers for driving sans-IO roles with bytes and times."""
import ipaddress
import random


from lispctl.config import loads
from lispctl.roles import build_roles
from lispctl.roles.base import Endpoint, InstallMapping, RemoveMapping, Send
from lispctl.wire import decode_control

A = ipaddress.ip_address

XTR = """\
instance = "xtr-a"
roles = ["xtr"]

[[database]]
eid-prefix = "10.1.0.0/16"
[[database.locator]]
address = "192.0.2.1"
priority = 1
weight = 60
[[database.locator]]
interface = "wan1"
family = "ipv4"
priority = 2
weight = 40

[[map-server]]
address = "198.51.100.10"
key-id = 1
key = "secret-a"
algorithm = "{alg}"

[[map-resolver]]
address = "198.51.100.10"
"""

MSMR = """\
instance = "msmr"
roles = {roles}

[[site]]
name = "site-a"
keys = {{ 1 = "secret-a" }}
[[site.eid-prefix]]
prefix = "10.1.0.0/16"
accept-more-specifics = true

[[site]]
name = "site-b"
keys = {{ 1 = "secret-b", 7 = "secret-b7" }}
[[site.eid-prefix]]
prefix = "10.2.0.0/16"
proxy-reply = true
[[site.eid-prefix]]
prefix = "2001:db8:b::/48"
"""


def xtr_text(name: str, eid: str, key: str, ms: str, resolver: str = "", tail: str = "") -> str:
    """An xTR config with one interface (wan0) locator and one host as MS and
    MR; resolver: more lines of [[map-resolver]]; tail: more sections."""
    return f"""
instance = "{name}"
roles = ["xtr"]
[[database]]
eid-prefix = "{eid}"
[[database.locator]]
interface = "wan0"
[[map-server]]
address = "{ms}"
key-id = 1
key = "{key}"
[[map-resolver]]
address = "{ms}"
{resolver}{tail}"""


def make(text: str, seed: int = 1, **iface):
    cfg = loads(text)
    roles = build_roles(cfg, interface_addresses={k: [A(a) for a in v] for k, v in iface.items()},
                        rng=random.Random(seed))
    return cfg, dict(roles)


def sends(effects):
    return [e for e in effects if isinstance(e, Send)]


def installs(effects):
    return [e for e in effects if isinstance(e, InstallMapping)]


def removes(effects):
    return [e for e in effects if isinstance(e, RemoveMapping)]


def only_send(effects):
    s = sends(effects)
    assert len(s) == 1, effects
    return s[0], decode_control(s[0].payload)


def ep(addr: str, port: int = 4342) -> Endpoint:
    return Endpoint(A(addr), port)

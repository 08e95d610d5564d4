"""Config loading: examples load, mistakes are reported with key path and line."""
import ipaddress
from pathlib import Path

import pytest

from lispctl.config import ConfigError, load, loads
from lispctl.mapping.types import EidPrefix, MapAction

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

MINIMAL_XTR = """\
instance = "x1"
roles = ["xtr"]

[[database]]
eid-prefix = "10.1.0.0/16"
[[database.locator]]
address = "192.0.2.1"

[[map-server]]
address = "198.51.100.10"
key = "k"

[[map-resolver]]
address = "198.51.100.10"
"""


def error_of(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        loads(text, source="t.toml")
    return info.value


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("*.toml")))
def test_every_example_loads(name):
    cfg = load(EXAMPLES / name)
    assert cfg.roles


def test_xtr_example_values():
    cfg = load(EXAMPLES / "xtr.toml")
    assert cfg.is_itr and cfg.is_etr and not cfg.is_ms
    assert cfg.database[0].eid == EidPrefix.parse("10.1.0.0/16")
    loc = cfg.database[0].locator[1]
    assert loc.interface == "wan0" and loc.family == "ipv6" and loc.priority == 2
    assert cfg.map_server[0].algorithm == "hmac-sha256" and cfg.map_server[0].key_id == 1
    assert cfg.miss_action == "petr"
    assert cfg.map_cache[1].map_action is MapAction.DROP
    assert cfg.interfaces.eid_facing == ["lan0"]


def test_ms_mr_example_values():
    cfg = load(EXAMPLES / "ms-mr.toml")
    assert cfg.is_ms and cfg.is_mr and not cfg.is_itr
    assert cfg.site[1].keys == {1: "site-b-secret", 2: "site-b-next-key"}
    assert cfg.site[0].eid_prefix[0].accept_more_specifics is True
    assert cfg.site[1].eid_prefix[0].proxy_reply is True
    assert cfg.control_addresses == [ipaddress.ip_address("198.51.100.10")]


def test_defaults():
    cfg = loads(MINIMAL_XTR)
    assert cfg.etr.register_interval == 60
    assert cfg.ms.registration_timeout == 180
    assert cfg.mr.non_eid_ttl_minutes == 15 and cfg.mr.unregistered_ttl_minutes == 1
    assert [str(a) for a in cfg.control_addresses] == ["0.0.0.0", "::"]
    assert cfg.map_server[0].want_map_notify is True
    assert cfg.miss_action == "drop"
    assert cfg.database[0].locator[0].priority == 1 and cfg.database[0].locator[0].weight == 100


def test_unknown_key_names_key_and_line():
    text = MINIMAL_XTR.replace('address = "192.0.2.1"', 'adress = "192.0.2.1"')
    err = error_of(text)
    assert "t.toml:7: database[0].locator[0].adress: unknown key" in str(err)


def test_unknown_top_level_key_line():
    err = error_of(MINIMAL_XTR.replace('roles = ["xtr"]', 'roles = ["xtr"]\nregister-intervall = 30'))
    assert err.problems[0].path == "register-intervall"
    assert err.problems[0].line == 3
    # after a table header the same key belongs to that table
    err = error_of(MINIMAL_XTR + "register-intervall = 30\n")
    assert err.problems[0].path == "map-resolver[0].register-intervall"


def test_unknown_key_in_second_array_element():
    text = MINIMAL_XTR + '\n[[map-server]]\naddress = "198.51.100.11"\nkey = "k"\nkeyid = 3\n'
    err = error_of(text)
    p = err.problems[0]
    assert p.path == "map-server[1].keyid"
    assert text.splitlines()[p.line - 1] == "keyid = 3"


def test_bad_address_is_clear():
    err = error_of(MINIMAL_XTR.replace("198.51.100.10\"\nkey", "198.51.100.300\"\nkey"))
    assert "t.toml:10: map-server[0].address" in str(err)
    assert "not a valid IPv4 or IPv6 address" in str(err)


def test_prefix_with_host_bits_rejected():
    err = error_of(MINIMAL_XTR.replace("10.1.0.0/16", "10.1.0.1/16"))
    assert "database[0].eid-prefix" in str(err) and "host bits set" in str(err)
    assert err.problems[0].line == 5


@pytest.mark.parametrize("old,new,path", [
    ('address = "192.0.2.1"', 'address = "192.0.2.1"\npriority = 256', "database[0].locator[0].priority"),
    ('address = "192.0.2.1"', 'address = "192.0.2.1"\nweight = -1', "database[0].locator[0].weight"),
    ('eid-prefix = "10.1.0.0/16"', 'eid-prefix = "10.1.0.0/16"\ninstance-id = 16777216',
     "database[0].instance-id"),
    ('key = "k"', 'key = "k"\nalgorithm = "md5"', "map-server[0].algorithm"),
    ('key = "k"', 'key = ""', "map-server[0].key"),
    ('roles = ["xtr"]', 'roles = ["xtr", "bgp"]', "roles[1]"),
])
def test_range_and_enum_errors(old, new, path):
    err = error_of(MINIMAL_XTR.replace(old, new))
    assert path in [p.path for p in err.problems]


def test_locator_needs_exactly_one_source():
    err = error_of(MINIMAL_XTR.replace('address = "192.0.2.1"', 'address = "192.0.2.1"\ninterface = "eth0"'))
    assert "exactly one of 'address' or 'interface'" in str(err)
    assert err.problems[0].path == "database[0].locator[0]"
    assert err.problems[0].line == 6


@pytest.mark.parametrize("cut,path,words", [
    ("[[database]]\neid-prefix = \"10.1.0.0/16\"\n[[database.locator]]\naddress = \"192.0.2.1\"\n",
     "database", "needs at least one [[database]]"),
    ("[[map-server]]\naddress = \"198.51.100.10\"\nkey = \"k\"\n", "map-server", "[[map-server]]"),
    ("[[map-resolver]]\naddress = \"198.51.100.10\"\n", "map-resolver", "[[map-resolver]]"),
])
def test_xtr_cross_field_rules(cut, path, words):
    err = error_of(MINIMAL_XTR.replace(cut, ""))
    assert path in [p.path for p in err.problems]
    assert words in str(err)
    assert all(p.line for p in err.problems)


def test_ms_needs_sites_and_site_needs_ms():
    err = error_of('instance = "m"\nroles = ["ms"]\n')
    assert "needs at least one [[site]]" in str(err) and err.problems[0].line == 2
    err = error_of(MINIMAL_XTR + '[[site]]\nname = "a"\nkeys = {1 = "k"}\n'
                   '[[site.eid-prefix]]\nprefix = "10.9.0.0/16"\n')
    assert "only used by the ms role" in str(err)


def test_petr_miss_action_needs_petr():
    err = error_of(MINIMAL_XTR + '[itr]\nmiss-action = "petr"\n')
    assert err.problems[0].path == "itr.miss-action"


def test_duplicate_site_prefix_rejected():
    text = ('instance = "m"\nroles = ["ms"]\n'
            '[[site]]\nname = "a"\nkeys = {1 = "k"}\n[[site.eid-prefix]]\nprefix = "10.9.0.0/16"\n'
            '[[site]]\nname = "b"\nkeys = {1 = "k"}\n[[site.eid-prefix]]\nprefix = "10.9.0.0/16"\n')
    err = error_of(text)
    assert err.problems[0].path == "site[1].eid-prefix[0].prefix"
    assert err.problems[0].line == 12


def test_mr_forward_prefixes_with_instance_id():
    cfg = loads('instance = "r"\nroles = ["mr"]\n[[mr.map-server]]\naddress = "192.0.2.7"\n'
                'eid-prefix = ["[5]10.0.0.0/8", "2001:db8::/32"]\n')
    assert cfg.mr.map_server[0].eid_prefix == [EidPrefix.parse("[5]10.0.0.0/8"),
                                               EidPrefix.parse("2001:db8::/32")]
    err = error_of('instance = "r"\nroles = ["mr"]\n[[mr.map-server]]\naddress = "192.0.2.7"\n'
                   'eid-prefix = ["[5]10.0.0.1/8"]\n')
    assert err.problems[0].path == "mr.map-server[0].eid-prefix[0]" and err.problems[0].line == 5


def test_toml_syntax_error_has_line():
    err = error_of('instance = "x"\nroles = ["xtr"\nlog-level = 1\n')
    assert "TOML syntax error" in str(err) and err.problems[0].line == 3


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load(tmp_path / "nope.toml")


def test_multiline_array_does_not_confuse_lines():
    text = MINIMAL_XTR.replace('roles = ["xtr"]', 'roles = [\n  "xtr",\n]\ncontrol-addresses = [\n "::1",\n]') \
        + "bogus = 1\n"
    err = error_of(text)
    assert text.splitlines()[err.problems[0].line - 1] == "bogus = 1"


# ---------------------------------------------------------------- mobile node, pubsub, probing

MN = (EXAMPLES / "mobile-node.toml").read_text()


def test_mobile_node_example_values():
    cfg = load(EXAMPLES / "mobile-node.toml")
    assert cfg.is_mobile_node and cfg.is_itr and cfg.is_etr and not cfg.is_ms
    assert cfg.mobile_node.eid_device == "lmn0" and cfg.mobile_node.mtu == 1444
    assert [str(e.eid) for e in cfg.database] == ["10.9.0.7/32", "2001:db8:9::7/128"]
    assert [(l.interface, l.family, l.priority) for l in cfg.database[0].locator] == [
        ("eth0", "ipv4", 1), ("wlan0", "ipv4", 2), ("wlan0", "ipv6", 2)]
    mr = cfg.map_resolver[0]
    assert mr.subscribe and mr.key == "mn1-secret" and mr.key_id == 1
    assert cfg.xtr_id == 0x0123456789ABCDEF0123456789ABCDEF and cfg.site_id == 9
    assert cfg.itr.rloc_probe_interval == 10 and cfg.itr.rloc_probe_retries == 3
    assert cfg.miss_action == "petr"


def test_new_defaults_off_or_safe():
    cfg = loads(MINIMAL_XTR)
    assert cfg.itr.rloc_probe_interval == 0 and cfg.itr.rloc_probe_timeout == 2.0
    assert cfg.map_resolver[0].subscribe is False
    assert cfg.etr.smr is True and cfg.etr.smr_min_interval == 0.1
    assert cfg.ms.pubsub is True and cfg.ms.notify_retries == 3
    assert cfg.xtr_id is None and not cfg.is_mobile_node


@pytest.mark.parametrize("old,new,path,words", [
    ('eid-prefix = "10.9.0.7/32"', 'eid-prefix = "10.9.0.0/24"', "database[0].eid-prefix",
     "one address (/32)"),
    ('interface = "eth0"             # wired: preferred\nfamily = "ipv4"', 'address = "192.0.2.7"',
     "database[0].locator[0].address", "give 'interface'"),
    ('roles = ["mobile-node"]', 'roles = ["mobile-node", "xtr"]', "roles", "cannot be combined"),
    ('roles = ["mobile-node"]', 'roles = ["mobile-node"]\n[interfaces]\neid-facing = ["lan0"]',
     "interfaces.eid-facing", "EID device"),
    ('interface = "wlan0"            # Wi-Fi', 'interface = "lmn0"            # Wi-Fi',
     "database[0].locator[1].interface", "EID device"),
    ('eid-device = "lmn0"', 'eid-device = "a/b"', "mobile-node.eid-device", "pattern"),
    ('xtr-id = "0123456789abcdef0123456789abcdef"\n', '', "map-resolver[0].subscribe", "needs an xTR-ID"),
    ('subscribe = true               # RFC 9437: the Map-Server pushes changes of what we ask for\nkey-id = 1\nkey = "mn1-secret"',
     'subscribe = true', "map-resolver[0]", "needs the 'key'"),
    ('rloc-probe-interval = 10', 'rloc-probe-interval = -1', "itr.rloc-probe-interval", "greater than or equal"),
])
def test_mobile_node_validation(old, new, path, words):
    assert old in MN
    err = error_of(MN.replace(old, new))
    assert path in [p.path for p in err.problems], str(err)
    assert words in str(err)


def test_mobile_node_section_needs_the_role():
    err = error_of(MINIMAL_XTR.replace('roles = ["xtr"]', 'roles = ["xtr"]\n[mobile-node]\nmtu = 1400'))
    assert [p.path for p in err.problems] == ["mobile-node"]
    assert "only used by the mobile-node role" in str(err)


def test_site_pubsub_keys():
    ms = (EXAMPLES / "ms-mr.toml").read_text()
    cfg = loads(ms.replace('name = "site-b"', 'name = "site-b"\nsite-id = 2\npubsub-key-id = 2'))
    assert cfg.site[1].site_id == 2 and cfg.site[1].pubsub_key == (2, "site-b-next-key")
    cfg = loads(ms.replace('name = "site-a"', 'name = "site-a"\nsite-id = 1'))
    assert cfg.site[0].pubsub_key == (1, "site-a-secret")
    err = error_of(ms.replace('name = "site-b"', 'name = "site-b"\npubsub-key-id = 9'))
    assert "pubsub-key-id 9 is not one of the site's keys" in str(err)
    err = error_of(ms.replace('name = "site-b"', 'name = "site-b"\nsite-id = 1')
                   .replace('name = "site-a"', 'name = "site-a"\nsite-id = 1'))
    assert [p.path for p in err.problems] == ["site[1].site-id"]


def test_rloc_mode_defaults_to_auto_and_is_checked():
    assert loads(MINIMAL_XTR, source="t.toml").interfaces.rloc_mode == "auto"
    cfg = loads(MINIMAL_XTR + '\n[interfaces]\nrloc-mode = "xdp"\n', source="t.toml")
    assert cfg.interfaces.rloc_mode == "xdp"
    err = error_of(MINIMAL_XTR + '\n[interfaces]\nrloc-mode = "ebpf"\n')
    assert "interfaces.rloc-mode" in str(err) and "t.toml:17" in str(err)


@pytest.mark.parametrize("listen, ok", [("127.0.0.1:9342", True), ("[::1]:9342", True), (":9342", True),
                                        ("localhost:9342", False), ("127.0.0.1", False),
                                        ("127.0.0.1:0", False), ("[::1]:99999", False)])
def test_metrics_listen(listen, ok):
    text = MINIMAL_XTR + f'\n[metrics]\nlisten = "{listen}"\n'
    if ok:
        assert loads(text).metrics.listen == listen
    else:
        err = error_of(text)
        assert err.problems[0].path == "metrics.listen" and err.problems[0].line == 17, str(err)


def test_eid_mode_defaults_to_auto_and_is_checked():
    assert loads(MINIMAL_XTR, source="t.toml").interfaces.eid_mode == "auto"
    cfg = loads(MINIMAL_XTR + '\n[interfaces]\neid-mode = "xdp"\n', source="t.toml")
    assert cfg.interfaces.eid_mode == "xdp"
    err = error_of(MINIMAL_XTR + '\n[interfaces]\neid-mode = "dpdk"\n')
    assert "interfaces.eid-mode" in str(err)

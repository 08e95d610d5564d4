"""`lispctl import-oor`: the libConfuse reader, the conversion of OOR
configurations of each role, and that the results pass `up`'s validation.

The OOR files in tests/config/oor/ are written for these tests from OOR's
documented oor.conf format (OOR 1.3's oor.conf.example and README)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lispctl.config import ConfigError, loads
from lispctl.config.confuse import ConfuseError, parse
from lispctl.config.oor_import import OorImportError, convert

OOR = Path(__file__).resolve().parent / "config" / "oor"


# ------------------------------------------------------------------ reader

def test_confuse_options_sections_lists_and_comments():
    root = parse("""
# hash comment
Debug = 2          // slash comment
name = "a \\"quoted\\" # not a comment"
single = 'it\\'s'
/* block
   comment */ mode = xTR
list = { 192.0.2.1, 2001:db8::1 }
nl-list = {
    10.0.0.0/8
    10.1.0.0/16   # commas optional between lines
}
outer {
    key = 1
    inner { x = y }
    inner { x = z }
}
titled "one" { a = b }
prefix = 10.1.0.0/24// right after the value
""")
    assert root.get("debug").text == "2"             # names are case-insensitive (CFGF_NOCASE)
    assert root.get("debug").line == 3
    assert root.get("name").text == 'a "quoted" # not a comment'
    assert root.get("single").text == "it's"
    assert root.get("mode").text == "xTR" and root.get("mode").line == 7
    assert root.get("list").items() == ("192.0.2.1", "2001:db8::1")
    assert root.get("nl-list").items() == ("10.0.0.0/8", "10.1.0.0/16")
    [outer] = root.sections("outer")
    assert outer.get("key").text == "1"
    assert [s.get("x").text for s in outer.sections("inner")] == ["y", "z"]
    assert root.sections("titled")[0].title == "one"
    assert root.get("prefix").text == "10.1.0.0/24"


@pytest.mark.parametrize("text, line", [
    ("a = 1\nb {\n c = 2\n", 2),               # section never closed
    ("a = 1\n}\n", 2),
    ("a = \"open\n\n", 1),
    ("a 1\n", 1),
    ("/* never closed\n a = 1", 1),
    ("a = { 1, = }", 1),
])
def test_confuse_syntax_errors_name_the_line(text, line):
    with pytest.raises(ConfuseError) as info:
        parse(text)
    assert info.value.line == line


# ------------------------------------------------------------------ conversion

def _convert(name: str, **kw):
    return convert((OOR / name).read_text(), instance=name.split(".")[0], **kw)


def _notes(conv) -> str:
    return "\n".join(str(n) for n in conv.notes)


def test_xtr():
    conv = _convert("xtr.conf", eid_facing=["lan0"])
    cfg = loads(conv.toml)
    assert cfg.roles == ["xtr"]
    assert cfg.interfaces.eid_facing == ["lan0"] and cfg.interfaces.rloc_facing == ["wan0"]
    by_prefix = {str(d.eid_prefix): d for d in cfg.database}
    [v4] = by_prefix["10.1.0.0/24"].locator
    assert (v4.interface, v4.family, v4.priority, v4.weight) == ("wan0", "ipv4", 1, 100)
    [v6] = by_prefix["fd00:1::/64"].locator
    assert (str(v6.address), v6.priority, v6.weight) == ("192.0.2.1", 2, 50)
    [ms] = cfg.map_server
    # OOR's key-type 1 is key ID 0 + HMAC-SHA-1 on the wire
    assert (str(ms.address), ms.key, ms.key_id, ms.algorithm, ms.proxy_reply) == \
        ("192.0.2.10", "site-a-key", 0, "hmac-sha1", False)
    assert [str(m.address) for m in cfg.map_resolver] == ["192.0.2.10"]
    [mc] = cfg.map_cache
    assert str(mc.eid_prefix) == "10.99.0.0/16" and str(mc.locator[0].address) == "203.0.113.9"
    assert cfg.itr.map_request_retries == 2
    # OOR: 2 retries after the first probe, 5 s apart -> 3 lost probes in a row, 5 s each
    assert (cfg.itr.rloc_probe_interval, cfg.itr.rloc_probe_retries, cfg.itr.rloc_probe_timeout) == (30, 3, 5)
    assert cfg.etr.record_ttl_minutes == 10
    assert cfg.miss_action == "drop"
    assert "log-file" in _notes(conv) and "rloc-facing" in _notes(conv)


def test_xtr_without_eid_facing_says_so():
    conv = _convert("xtr.conf", rloc_facing=["wan0"])
    loads(conv.toml)
    assert "--eid-facing" in _notes(conv)
    assert "rloc-facing: locators" not in _notes(conv)


def test_mobile_node():
    conv = _convert("mn.conf")
    cfg = loads(conv.toml)
    assert cfg.roles == ["mobile-node"] and cfg.log_level == "debug"
    assert [str(d.eid_prefix) for d in cfg.database] == ["10.5.0.7/32", "2001:db8:5::7/128"]
    assert [(loc.interface, loc.family, loc.priority) for loc in cfg.database[0].locator] == \
        [("wlan0", "ipv4", 1), ("wwan0", "ipv4", 2)]
    assert [str(m.address) for m in cfg.map_resolver] == ["192.0.2.10", "2001:db8:ffff::10"]
    assert cfg.map_server[0].key == "mn-key" and cfg.map_server[0].proxy_reply
    assert [str(p.address) for p in cfg.proxy_etr] == ["192.0.2.254"] and cfg.miss_action == "petr"
    assert cfg.itr.rloc_probe_interval == 0
    assert cfg.etr.record_ttl_minutes == 5 and len(cfg.etr.xtr_id) == 32
    assert convert((OOR / "mn.conf").read_text(), instance="mn").toml == conv.toml    # deterministic
    assert conv.notes == []          # override-dns = false loses nothing


def test_ms_mr():
    conv = _convert("msmr.conf")
    cfg = loads(conv.toml)
    assert cfg.roles == ["ms", "mr"]
    # lisp-sites sharing a key become one site
    assert [(s.keys, [(str(p.eid), p.accept_more_specifics, p.proxy_reply) for p in s.eid_prefix])
            for s in cfg.site] == [
        ({0: "site-a-key"}, [("10.1.0.0/16", True, False), ("fd00:1::/48", True, False)]),
        ({0: "site b key"}, [("[7]10.2.0.0/16", False, True)]),
    ]
    notes = _notes(conv)
    assert "ms-static-registered-site: not converted" in notes
    assert "control-iface: not converted" in notes
    assert [str(a) for a in cfg.ddt.ms_peers] == ["192.0.2.11", "192.0.2.12"]


def test_ddt_node():
    conv = _convert("ddt.conf")
    cfg = loads(conv.toml)
    assert cfg.roles == ["ddt-node"]
    assert [str(p) for p in cfg.ddt.authoritative_prefix] == ["10.0.0.0/8", "fd00::/8"]
    assert [(str(d.eid_prefix), d.type, [str(a) for a in d.address]) for d in cfg.ddt.delegation] == [
        ("10.1.0.0/16", "ddt-node", ["192.0.2.21", "192.0.2.22"]),
        ("10.2.0.0/16", "map-server", ["192.0.2.31"]),
        ("[5]10.5.0.0/16", "map-server", ["2001:db8::31"])]
    assert [n.what for n in conv.notes] == ["control-iface"]


def test_ddt_map_resolver():
    conv = _convert("ddtmr.conf")
    cfg = loads(conv.toml)
    assert cfg.roles == ["mr"] and [str(a) for a in cfg.mr.ddt.root] == ["192.0.2.1", "2001:db8::1"]


def test_pxtr_border_xtr():
    conv = _convert("pxtr.conf", eid_facing=["lan0"], rloc_facing=["wan0"])
    cfg = loads(conv.toml)
    assert [(str(p.address), p.priority, p.weight) for p in cfg.proxy_etr] == [
        ("198.51.100.1", 1, 60), ("198.51.100.2", 1, 40), ("2001:db8:100::1", 2, 100)]
    assert cfg.miss_action == "petr"
    assert cfg.map_server[0].proxy_reply
    # no rloc-probing section: OOR probes every 30 s
    assert cfg.itr.rloc_probe_interval == 30
    assert "line 35: proxy-itrs: not converted" in _notes(conv)


def test_rtr():
    conv = _convert("rtr.conf")
    notes = _notes(conv)
    assert "MS-RTR keys" in notes
    cfg = loads(conv.toml)
    assert cfg.roles == ["rtr"]
    assert [str(a) for a in cfg.rtr.map_servers] == ["192.0.2.10"]
    import tomllib
    raw = tomllib.loads(conv.toml)
    assert raw["interfaces"]["rloc-facing"] == ["wan0"]
    assert raw["itr"] == {"map-request-retries": 3, "rloc-probe-interval": 10.0,
                          "rloc-probe-retries": 2, "rloc-probe-timeout": 2.0}


def test_names_what_it_cannot_convert():
    conv = convert("""
operating-mode = xTR
include("other.conf")
ipv6-scope = SITE
encapsulation = VXLAN-GPE
nat_traversal_support = on
map-resolver = { mr.example.net }
lisp-site { eid-prefix = 10.0.0.0/8 }
frobnicate = 1
map-server { address = 192.0.2.10  key = k  key-type = 9 }
database-mapping {
    eid-prefix = 10.1.0.1/24
    rloc-address { address = my-elp }
    rloc-iface { interface = wan0 }
}
database-mapping { eid-prefix = 10.2.0.0/24  ttl = 20  rloc-iface { interface = wan0 } }
""", instance="t", eid_facing=["lan0"])
    notes = _notes(conv)
    for expected in ("encapsulation = VXLAN-GPE", "nat_traversal_support = on",
                     "map-resolver mr.example.net: a name", "lisp-site: not used by OOR in operating-mode XTR",
                     "frobnicate: unknown OOR option", "key-type = 9", "rloc-address my-elp: a name",
                     "has host bits set; converted as 10.1.0.0/24", "one record TTL"):
        assert expected in notes, expected
    cfg_problems = pytest.raises(ConfigError, loads, conv.toml)    # no map-server, no map-resolver left
    assert "map-server" in str(cfg_problems.value)


@pytest.mark.parametrize("text, msg", [
    ("debug = 1\n", "no operating-mode"),
    ("operating-mode = router\n", "unknown"),
    ("operating-mode = xTR\nmap-server {\n", "not a libConfuse file: line 2"),
])
def test_refuses(text, msg):
    with pytest.raises(OorImportError, match=msg):
        convert(text, instance="t")


def test_cli(tmp_path):
    out = subprocess.run([sys.executable, "-m", "lispctl.cli", "import-oor", str(OOR / "msmr.conf"),
                          "--instance", "ms1"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert loads(out.stdout).instance == "ms1"
    assert "msmr.conf: line 31: ms-static-registered-site: not converted" in out.stderr
    bad = tmp_path / "bad.conf"
    bad.write_text("operating-mode = xTR\nx {\n")
    out = subprocess.run([sys.executable, "-m", "lispctl.cli", "import-oor", str(bad)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "line 2" in out.stderr and out.stdout == ""


def test_ddt_delegation_problems_are_named():
    conv = convert("""
operating-mode = DDT
ddt-auth-site { eid-prefix = 10.0.0.0/8 }
ddt-deleg-site { eid-prefix = 10.1.0.0/16  delegation-type = SIDEWAYS  deleg-nodes = { 192.0.2.1 } }
ddt-deleg-site { eid-prefix = 10.2.0.0/16  delegation-type = CHILD_DDT_NODE  deleg-nodes = { ddt.example } }
""", instance="t")
    notes = _notes(conv)
    assert "delegation-type = sideways: must be CHILD_DDT_NODE or MAP_SERVER_DDT_NODE" in notes
    assert "deleg-nodes ddt.example: a name" in notes and "no deleg-nodes address" in notes
    assert not loads(conv.toml).ddt.delegation and loads(conv.toml).ddt.authoritative_prefix


@pytest.mark.parametrize("name", ["msmr.conf", "ddt.conf", "ddtmr.conf"])
def test_converted_devices_without_data_plane_start(tmp_path, name):
    """No BPF needed for these: `up` on an ephemeral control port, no root."""
    import os
    import signal
    import socket
    conv = convert((OOR / name).read_text(), instance=f"oi{os.getpid()}-{name.split('.')[0]}")
    cfg = tmp_path / "device.toml"
    # bind loopback only (a top-level key, before the first table)
    cfg.write_text(conv.toml.replace("log-level = ", 'control-addresses = ["127.0.0.1"]\nlog-level = ', 1))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    p = subprocess.Popen([sys.executable, "-m", "lispctl.cli", "up", "-c", str(cfg), "--run-dir", str(tmp_path),
                          "--control-port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "ready", p.stderr.read() if p.poll() is not None else ""
        p.send_signal(signal.SIGTERM)
        assert p.wait(20) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        p.stdout.close()
        p.stderr.close()

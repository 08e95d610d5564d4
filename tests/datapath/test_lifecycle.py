"""Pinning across reloads, layout agreement with bpf/lisp_maps.h, attach and
the static runner."""
from __future__ import annotations

import ctypes
import ipaddress
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lispctl.datapath import DatapathError
from lispctl.datapath.loader import bpf_dir, header_enum
from lispctl.datapath.testrun import TC_ACT_REDIRECT, run_prog
from lispctl.mapping.types import EidPrefix, MapAction, Rloc
from tests.datapath import packets as P
from tests.datapath.conftest import EID_MAC, HOST_MAC, NS

ip = ipaddress.ip_address
E = EidPrefix.parse
ROOT = Path(__file__).resolve().parents[2]


def _struct_fields(name: str) -> list[str]:
    text = re.sub(r"/\*.*?\*/", "", (bpf_dir() / "lisp_maps.h").read_text(), flags=re.S)
    body = re.search(r"struct\s+" + name + r"\s*\{(.*?)\};", text, re.S).group(1)
    return [re.search(r"(\w+)\s*(\[[^\]]*\])?\s*$", decl.strip()).group(1)
            for decl in body.split(";") if decl.strip()]


@pytest.mark.parametrize("table,kind,struct", [
    ("map_cache4", "Key", "lisp_key4"), ("map_cache6", "Key", "lisp_key6"),
    ("map_cache4", "Leaf", "lisp_mapping"), ("locsets", "Leaf", "lisp_locset"),
    ("local_rlocs", "Key", "lisp_rloc_key"), ("eid_ifaces", "Leaf", "lisp_eid_if"),
    ("config", "Leaf", "lisp_config"), ("miss_rl", "Key", "lisp_miss_key"),
])
def test_python_view_matches_header(loaded, table, kind, struct):
    ctype = getattr(loaded.table(table), kind)
    names = [f[0] for f in ctype._fields_ if not f[0].startswith("__pad")]
    assert names == _struct_fields(struct)


def test_locset_sizes_match_header_constants(loaded):
    from lispctl.datapath.datapath import LEVELS, MAX_LOCATORS, SLOTS
    leaf = loaded.table("locsets").Leaf
    assert len(leaf().loc) == MAX_LOCATORS and len(leaf().slots) == LEVELS * SLOTS
    assert ctypes.sizeof(leaf().loc[0]) == 22          # addr, family, priority, weight, up, port
    assert ctypes.sizeof(loaded.table("map_cache6").Key) == 24


def test_capacity_comes_from_the_loaded_maps(loaded):
    """The ITR's eviction threshold and the static-entry check (issue 9.5)
    use what the loaded program holds: one locator-set id per mapping, the
    PETR set's reserved."""
    from lispctl.datapath.loader import header_define
    assert loaded.capacity == 2 * header_define("LISP_MAX_MAPPINGS") - 1     # both families
    assert loaded.family_capacity(4) == loaded.family_capacity(6) == header_define("LISP_MAX_MAPPINGS")
    assert loaded.capacity == loaded.table("locsets").max_entries - 1


def test_map_action_values_match_header():
    acts = header_enum("lisp_action")
    for a in MapAction:
        assert acts["LISP_ACT_" + a.name] == a.value


def test_pinned_maps_survive_reload(lab, pin_root):
    from lispctl.datapath import Datapath
    eid = E("10.2.0.0/16", 3)
    with Datapath("pin", pin_root=pin_root) as a:
        a.add_local_rloc(ip("192.0.2.1"))
        a.add_local_eid(E("10.1.0.0/16", 3))
        a.set_mapping(eid, [Rloc(ip("192.0.2.2"), 1, 60), Rloc(ip("192.0.2.3"), 1, 40)])
        a.set_path_mtu(1400)
        frame = P.eth(P.mac(EID_MAC), P.mac(HOST_MAC), P.ETH_IP) + P.ip_packet("10.1.0.10", "10.2.0.5")
    assert (pin_root / "pin" / "map_cache4").exists()
    b = Datapath("pin", pin_root=pin_root)
    try:
        assert b.mappings() == {eid: 1}
        assert b.local_rlocs() == [ip("192.0.2.1")]
        assert b.config()["path_mtu"] == 1400
        b.table("eid_ifaces")[b.table("eid_ifaces").Key(1)] = b.table("eid_ifaces").Leaf(3)
        res = run_prog(b.prog_fd("lisp_itr_ingress"), frame)
        assert res.retval == TC_ACT_REDIRECT
        assert b.mapping_counters(eid) == (1, len(frame) - 14)
        # a new mapping gets a fresh id, not the reloaded one
        b.set_mapping(E("10.4.0.0/16"), [Rloc(ip("192.0.2.2"))])
        assert b.mappings()[E("10.4.0.0/16")] != 1
    finally:
        b.close(unpin=True)
    assert not (pin_root / "pin").exists()


def test_not_root_or_no_bpffs_is_a_clear_error(tmp_path):
    from lispctl.datapath import Datapath
    with pytest.raises(DatapathError, match="bpf filesystem"):
        Datapath("x", pin_root=tmp_path)


def test_compile_error_reports_compiler_lines(lab, pin_root, tmp_path, monkeypatch):
    from lispctl.datapath import Datapath
    for f in bpf_dir().iterdir():
        (tmp_path / f.name).write_text(f.read_text())
    src = tmp_path / "lisp_datapath.c"
    src.write_text(src.read_text().replace("return itr(skb, 0);", "return itr(skb, 0) + undefined_symbol;"))
    monkeypatch.setenv("LISPCTL_BPF_DIR", str(tmp_path))
    with pytest.raises(DatapathError, match="undefined_symbol"):
        Datapath("bad", pin_root=pin_root)
    assert not (pin_root / "bad").exists(), "a new instance that failed to load leaves no pins"


def test_verifier_rejection_leaves_no_pins(lab, pin_root, tmp_path, monkeypatch):
    """Maps are pinned before the programs load; a program the verifier
    rejects must not leave the new instance's pins behind."""
    from lispctl.datapath import Datapath
    for f in bpf_dir().iterdir():
        (tmp_path / f.name).write_text(f.read_text())
    src = tmp_path / "lisp_datapath.c"
    # compiles, but reads past the packet without a bounds check
    src.write_text(src.read_text().replace("return itr(skb, 0);",
                                           "return itr(skb, 0) + *(__u8 *)(long)(skb->data + 100);"))
    monkeypatch.setenv("LISPCTL_BPF_DIR", str(tmp_path))
    with pytest.raises(DatapathError):
        Datapath("rejected", pin_root=pin_root)
    assert not (pin_root / "rejected").exists()


def test_attach_and_detach_tc(dp, lab):
    from pyroute2 import IPRoute
    dp.attach_eid_interface("eid0", 4)
    dp.attach_rloc_interface("rl0")
    with IPRoute() as ipr:
        ing = [f for f in ipr.get_filters(index=lab.rl_if, parent=0xFFFFFFF2) if f.get_attr("TCA_KIND") == "bpf"]
        assert ing, "bpf filter on rl0 ingress"
    assert dp.config()["path_mtu"] == 1500
    dp.detach()
    with IPRoute() as ipr:
        left = [f for f in ipr.get_filters(index=lab.rl_if, parent=0xFFFFFFF2) if f.get_attr("TCA_KIND") == "bpf"]
    assert not left
    with pytest.raises(DatapathError, match="no such interface"):
        dp.attach_eid_interface("nonexistent0")


def test_static_runner_in_netns(lab, pin_root, tmp_path):
    cfg = {
        "local_rlocs": ["192.0.2.1"],
        "local_eids": ["10.1.0.0/16"],
        "mappings": [
            {"eid": "10.2.0.0/16", "rlocs": [{"address": "192.0.2.2", "priority": 1, "weight": 100}]},
            {"eid": "10.9.0.0/16", "rlocs": [], "action": "drop"},
        ],
        "miss_action": "natively-forward",
        "petr": None,          # null is accepted as "none" (it used to crash the runner)
    }
    f = tmp_path / "static.json"
    f.write_text(json.dumps(cfg))
    env = dict(os.environ, PYTHONPATH=str(ROOT / "controller") + os.pathsep + str(ROOT))
    cmd = [sys.executable, "-c",
           f"from pyroute2 import netns; netns.setns({NS!r}); import sys; "
           "from lispctl.datapath.__main__ import main; sys.exit(main(sys.argv[1:]))",
           "--instance", "st", "--eid-if", "eid0", "--rloc-if", "rl0", "--static", str(f),
           "--pin-root", str(pin_root)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline().strip()
        assert line == "ready", proc.stderr.read() if proc.poll() is not None else line
        from lispctl.datapath.datapath import Datapath
        assert (pin_root / "st" / "map_cache4").exists()
    finally:
        proc.terminate()
        rc = proc.wait(timeout=20)
    assert rc == 0, proc.stderr.read()
    assert not (pin_root / "st").exists(), "unpinned on exit"
    del Datapath


def test_prefer_local_rloc_makes_it_the_outer_source(dp):
    """A mobile node's preferred uplink, back after another took over, is
    the outer source again (daemon/mobile.py); both stay local RLOCs."""
    import ipaddress
    a, b = ipaddress.ip_address("192.0.2.1"), ipaddress.ip_address("192.0.2.2")
    dp.add_local_rloc(b)
    assert bytes(dp._config().src4) == a.packed
    dp.prefer_local_rloc(b)
    assert bytes(dp._config().src4) == b.packed and dp.local_rlocs()[:2] == [b, a]
    assert dp.local_rlocs()[2:] == [ipaddress.ip_address("2001:db8:1::1")]
    keys = {bytes(k.addr)[:4] for k in dp._t["local_rlocs"].keys() if k.family == 4}
    assert {a.packed, b.packed} <= keys

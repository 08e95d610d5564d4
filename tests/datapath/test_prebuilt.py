"""Programs compiled by a short-lived child and reused while source and flags
match (lispctl.datapath.prebuilt): no bcc in the process that uses them.
One test, three compiles (each costs seconds)."""
from __future__ import annotations

import subprocess
import sys
import textwrap
import time

from lispctl.datapath import Datapath
from lispctl.datapath.prebuilt import PREFIX, build_key

FLAG = ("-DLISP_PREBUILT_TEST=1",)


def _prog_dirs(root, instance):
    return sorted(p.name for p in (root / instance).glob(f"{PREFIX}*"))


def _use_in_child(pin_root) -> tuple[str, str, int]:
    code = textwrap.dedent(f"""
        import ipaddress, sys
        from lispctl.datapath import Datapath
        from lispctl.mapping.types import EidPrefix, Rloc
        d = Datapath("pb", pin_root={str(pin_root)!r})
        d.set_mapping(EidPrefix.parse("10.2.0.0/16"), [Rloc(ipaddress.ip_address("192.0.2.2"))])
        d.counters(); d.poll_misses(0)
        rss = [int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS")][0]
        print(d.compiled, "bcc" in sys.modules, rss)
        d.release()
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    compiled, has_bcc, rss_kb = out.stdout.split()
    return compiled, has_bcc, int(rss_kb)


def test_reused_while_source_flags_and_maps_match(pin_root):
    d = Datapath("pb", pin_root=pin_root)
    assert d.compiled
    d.release()                                       # pins stay, as on `down --keep-datapath`
    t0 = time.monotonic()
    d2 = Datapath("pb", pin_root=pin_root)
    took = time.monotonic() - t0
    assert not d2.compiled and took < 1.0, took
    assert _prog_dirs(pin_root, "pb") == [PREFIX + build_key(pin_root / "pb")]
    d2.release()
    # another process reuses them too, and never loads bcc (nor its memory)
    compiled, has_bcc, rss_kb = _use_in_child(pin_root)
    assert (compiled, has_bcc) == ("False", "False")
    assert rss_kb < 80 * 1024, rss_kb
    # any flag is part of the key: a different one compiles again and the
    # programs of the old key are unpinned
    d3 = Datapath("pb", pin_root=pin_root, cflags=FLAG)
    assert d3.compiled
    assert _prog_dirs(pin_root, "pb") == [PREFIX + build_key(pin_root / "pb", FLAG)]
    d3.release()
    # programs bound to maps that are gone are not reused
    for p in (pin_root / "pb").iterdir():
        if p.name == "locsets":
            p.unlink()
    d4 = Datapath("pb", pin_root=pin_root, cflags=FLAG)
    assert d4.compiled
    d4.close(unpin=True)
    assert not (pin_root / "pb").exists()

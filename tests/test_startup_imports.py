"""What a start imports: each command only its own module's dependencies, a
daemon only the roles its config enables, pyroute2 without its package
__init__ (issue 14: `lispctl up` -> ready with reused programs in < 1 s;
imports were most of its CPU time). Each case runs in a fresh interpreter."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _modules(code: str) -> set[str]:
    script = textwrap.dedent(code) + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))\n"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                         cwd=REPO)
    assert out.returncode == 0, out.stderr
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def _cli(*argv: str) -> set[str]:
    return _modules(f"""
        import io, contextlib
        from lispctl import cli
        with contextlib.redirect_stdout(io.StringIO()):
            try:
                cli.main({list(argv)!r})
            except SystemExit:
                pass
    """)


def test_down_imports_neither_daemon_nor_config():
    mods = _cli("down", "--help")
    assert "lispctl.commands.down" in mods
    # (typer itself validates parameters with pydantic: that one stays)
    for heavy in ("lispctl.config", "lispctl.config.models", "lispctl.roles", "lispctl.wire", "lispctl.daemon.main",
                  "lispctl.commands.lig", "lispctl.commands.decode"):
        assert heavy not in mods, heavy


def test_up_imports_only_its_command():
    mods = _cli("up", "--help")
    assert "lispctl.commands.up" in mods
    assert not {m for m in mods if m.startswith("lispctl.commands.") and m != "lispctl.commands.up"}
    assert "lispctl.capture" not in mods


def test_command_in_another_module_still_found():
    # `status` lives in show.py: every module is registered
    mods = _cli("status", "--help")
    assert "lispctl.commands.show" in mods


def _roles_of(config: str) -> set[str]:
    return _modules(f"""
        from lispctl.config import loads
        from lispctl.roles import build_roles
        roles = build_roles(loads({config!r}), interface_addresses={{}})
        assert roles
    """)


def test_ms_daemon_imports_no_xtr_roles():
    mods = _roles_of('instance = "m"\nroles = ["ms"]\n[[site]]\nname = "s"\nkeys = { 1 = "k" }\n'
                     '[[site.eid-prefix]]\nprefix = "10.1.0.0/24"\n')
    assert "lispctl.roles.ms" in mods
    assert not {"lispctl.roles.itr", "lispctl.roles.etr", "lispctl.roles.pitr", "lispctl.roles.rtr"} & mods


def test_xtr_daemon_imports_no_map_server():
    mods = _roles_of('instance = "x"\nroles = ["xtr"]\n[[database]]\neid-prefix = "10.1.0.0/24"\n'
                     '[[database.locator]]\naddress = "192.0.2.1"\n[[map-resolver]]\naddress = "192.0.2.9"\n'
                     '[[map-server]]\naddress = "192.0.2.9"\nkey = "k"\n')
    assert {"lispctl.roles.itr", "lispctl.roles.etr"} <= mods
    assert not {"lispctl.roles.ms", "lispctl.roles.mr", "lispctl.roles.ddt_resolver"} & mods


def test_roles_by_name_still_importable():
    from lispctl.roles import EtrRole, MapServerRole
    from lispctl.roles.ms import MapServerRole as Ms
    assert MapServerRole is Ms and EtrRole.__name__ == "EtrRole"

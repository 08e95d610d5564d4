"""The `lispctl` command line.

Each module in lispctl.commands defines `register(app)`; adding a command is
adding a module there, so parallel work on commands never edits this file.

`main()` (the `lispctl` script, `python -m lispctl.cli`) first imports only
the module named after the command (`up` -> commands/up.py, `import-oor` ->
commands/import_oor.py): a command does not pay for the imports of the
others (`lispctl up` for `decode`'s capture readers, `lispctl down` for the
roles, the config models and the wire codecs; ~0.2 s of a core). When that
module does not provide the command (`status` lives in show.py) or no
command is named (`--help`), every module is registered, as `app` does.
"""
from __future__ import annotations

import importlib
import pkgutil
import sys
from typing import Any

import typer

from lispctl import commands


def _new_app() -> typer.Typer:
    app = typer.Typer(no_args_is_help=True, add_completion=False,
                      help="LISP (RFC 9300/9301) for Linux: eBPF data plane, asyncio control plane.")

    @app.callback()
    def _main() -> None:
        """lispctl: run and inspect LISP devices."""
    return app


def _modules() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(commands.__path__))


def _register(app: typer.Typer, names: list[str]) -> None:
    for name in names:
        importlib.import_module(f"{commands.__name__}.{name}").register(app)


def build_app() -> typer.Typer:
    """The CLI with every command."""
    app = _new_app()
    _register(app, _modules())
    return app


def main(argv: list[str] | None = None) -> Any:
    argv = sys.argv[1:] if argv is None else argv
    app = _new_app()
    modules = _modules()
    first = argv[0].replace("-", "_") if argv and not argv[0].startswith("-") else None
    if first in modules:
        _register(app, [first])
        if not any(c.name == argv[0] for c in app.registered_commands):
            _register(app, [m for m in modules if m != first])
    else:
        _register(app, modules)
    return app(args=argv)


def __getattr__(name: str) -> Any:
    # `from lispctl.cli import app` (tests, typer's CliRunner): every command
    if name == "app":
        app = globals()["app"] = build_app()
        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":
    main()

"""The `lispctl` command line.

Each module in lispctl.commands defines `register(app)`; adding a command is
adding a module there, so parallel work on commands never edits this file.
"""
import importlib
import pkgutil

import typer

from lispctl import commands

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="LISP (RFC 9300/9301) for Linux: eBPF data plane, asyncio control plane.")

for _info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
    importlib.import_module(f"{commands.__name__}.{_info.name}").register(app)


@app.callback()
def _main() -> None:
    """lispctl: run and inspect LISP devices."""


if __name__ == "__main__":
    app()

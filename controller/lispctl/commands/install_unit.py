"""`lispctl install-unit`: install the systemd unit lispctl@.service.

The unit ships with the package (lispctl/systemd/lispctl@.service); its
ExecStart names this very interpreter (`python -m lispctl.cli`), so the unit
runs the lispctl that installed it, venv included. docs/systemd.md.
"""
from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path

import typer

UNIT = "lispctl@.service"


def register(app: typer.Typer) -> None:
    app.command("install-unit")(install_unit)


def unit_text(command: str | None = None) -> str:
    template = resources.files("lispctl").joinpath("systemd", UNIT).read_text(encoding="utf-8")
    return template.replace("@LISPCTL@", command or f"{sys.executable} -m lispctl.cli")


def install_unit(
    directory: Path = typer.Option(Path("/etc/systemd/system"), "--dir",
                                   help="Where to write lispctl@.service."),
    stdout: bool = typer.Option(False, "--stdout", help="Print the unit instead of writing it."),
) -> None:
    """Install the systemd unit lispctl@.service (then: systemctl enable --now lispctl@NAME)."""
    text = unit_text()
    if stdout:
        typer.echo(text, nl=False)
        return
    path = directory / UNIT
    try:
        directory.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        typer.echo(f"error: cannot write {path}: {exc}", err=True)
        raise typer.Exit(1)
    typer.echo(f"wrote {path}\nnext: put the device's config in /etc/lispctl/NAME.toml, then\n"
               f"  systemctl daemon-reload && systemctl enable --now lispctl@NAME", err=True)

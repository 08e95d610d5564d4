"""`lispctl import-oor oor.conf > device.toml`: convert an OOR configuration.

The TOML goes to stdout; what was not converted, and whether the result
passes the same validation as `lispctl up`, go to stderr. Exit status: 0 the
result validates, 1 it was written but does not validate yet (e.g. a role
lispctl does not have), 2 the OOR file could not be read or converted.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import List, Optional

import typer


def register(app: typer.Typer) -> None:
    app.command("import-oor")(import_oor)


def import_oor(
    oor_conf: Path = typer.Argument(..., help="OOR configuration file (libConfuse syntax, oor.conf)."),
    instance: Optional[str] = typer.Option(None, "--instance", "-i",
                                           help="Instance name (default: from the file name)."),
    eid_facing: List[str] = typer.Option([], "--eid-facing",
                                         help="Interface whose hosts are the site (repeat for several)."),
    rloc_facing: List[str] = typer.Option([], "--rloc-facing",
                                          help="Underlay interface (repeat); added to those named by rloc-iface."),
) -> None:
    """Convert an OOR (xTR, MN, MS, RTR, DDT, DDT-MR) configuration into lispctl's TOML on stdout."""
    from lispctl.config import ConfigError, loads
    from lispctl.config.oor_import import OorImportError, convert

    try:
        text = oor_conf.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        typer.echo(f"error: cannot read {oor_conf}: {exc}", err=True)
        raise typer.Exit(2)
    name = instance or re.sub(r"[^A-Za-z0-9_.-]", "-", oor_conf.stem)[:64] or "oor"
    try:
        result = convert(text, instance=name, eid_facing=eid_facing, rloc_facing=rloc_facing)
    except OorImportError as exc:
        typer.echo(f"error: {oor_conf}: {exc}", err=True)
        raise typer.Exit(2)
    typer.echo(result.toml, nl=False)
    for note in result.notes:
        typer.echo(f"{oor_conf}: {note}", err=True)
    try:
        loads(result.toml, source="<converted>")
    except ConfigError as exc:
        typer.echo(f"import-oor: the converted configuration does not pass validation yet:\n{exc}", err=True)
        raise typer.Exit(1)

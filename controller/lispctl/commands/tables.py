"""`lispctl map-cache-load` / `map-cache-unload`: map-cache tables in bulk."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from lispctl.daemon.rundir import DEFAULT_RUN_DIR

InstanceOpt = typer.Option(None, "--instance", "-i", help="Instance to ask (default: the only running one).")
RunDirOpt = typer.Option(DEFAULT_RUN_DIR, "--run-dir", help="Where the pidfile and API socket live.")
TIMEOUT_S = 600.0         # a table of millions of mappings takes seconds to load


def register(app: typer.Typer) -> None:
    app.command("map-cache-load")(load)
    app.command("map-cache-unload")(unload)


def _call(cmd: str, instance: str | None, run_dir: Path, **args) -> dict:
    from lispctl.api.client import ApiClient, ApiError
    try:
        return ApiClient.for_instance(instance, run_dir, timeout=TIMEOUT_S).call(cmd, **args)
    except ApiError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1)


def load(
    file: Path = typer.Argument(..., help="Table file: one 'EID-PREFIX [LOCATOR[/PRIO[/WEIGHT]]...] [ACTION]' per line."),
    name: Optional[str] = typer.Option(None, "--name", help="Table name (default: the file name); "
                                       "loading a name again replaces that table."),
    ttl: Optional[float] = typer.Option(None, "--ttl", help="Seconds until the table is removed (default: never)."),
    instance: Optional[str] = InstanceOpt, run_dir: Path = RunDirOpt,
) -> None:
    """Install a map-cache table in bulk (batched BPF map updates; docs/config.md).

    The daemon reads FILE itself (give a path it can read). Prefixes already in the
    map-cache are left out and counted as skipped."""
    r = _call("map-cache-load", instance, run_dir, path=str(file.resolve()), name=name, ttl=ttl)
    typer.echo(f"table {r['name']}: {r['ipv4']} IPv4 + {r['ipv6']} IPv6 mappings installed "
               f"({r['skipped']} skipped) in {r['parse_s'] + r['install_s']:.2f} s"
               + (f", replacing {r['replaced']}" if r.get("replaced") else "")
               + (f", expires in {r['ttl_s']:g} s" if r.get("ttl_s") else ""))


def unload(
    name: str = typer.Argument(..., help="Table name (see `lispctl status`)."),
    instance: Optional[str] = InstanceOpt, run_dir: Path = RunDirOpt,
) -> None:
    """Remove a map-cache table loaded with map-cache-load or datapath.map-cache-files."""
    r = _call("map-cache-unload", instance, run_dir, name=name)
    typer.echo(f"table {r['name']}: {r['removed']} mappings removed in {r['remove_s']:.2f} s")

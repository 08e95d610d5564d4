"""`lispctl reload`: make a running device apply its changed config file."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from lispctl.daemon.rundir import DEFAULT_RUN_DIR


def register(app: typer.Typer) -> None:
    app.command("reload")(reload)


def reload(
    instance: Optional[str] = typer.Option(None, "--instance", "-i",
                                           help="Instance to reload (default: the only running one)."),
    run_dir: Path = typer.Option(DEFAULT_RUN_DIR, "--run-dir", help="Where the pidfile and API socket live."),
) -> None:
    """Re-read the device's config file and apply what changed (same as SIGHUP).

    Applied live: [[database]] prefixes, locators, priorities and weights (re-register,
    SMRs), [[map-server]], [[map-resolver]], [[map-cache]], [[site]] and log-level. An invalid
    file, or a change that needs a restart (roles, instance, interfaces...), is refused
    and the running configuration stays (exit status 1).
    """
    from lispctl.api.client import ApiClient, ApiError
    try:
        result = ApiClient.for_instance(instance, run_dir, timeout=30).call("reload")
    except ApiError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1)
    changed = result.get("changed") or []
    typer.echo(f"reloaded {result.get('config')}: " + (", ".join(changed) if changed else "nothing changed"))

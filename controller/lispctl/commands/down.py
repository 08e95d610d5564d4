"""`lispctl down`: stop a running device and wait until it has cleaned up."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Optional

import typer

from lispctl.daemon.rundir import DEFAULT_RUN_DIR


def register(app: typer.Typer) -> None:
    app.command("down")(down)


def down(
    instance: Optional[str] = typer.Option(None, "--instance", "-i",
                                           help="Instance to stop (default: the only running one)."),
    run_dir: Path = typer.Option(DEFAULT_RUN_DIR, "--run-dir", help="Where the pidfile and API socket live."),
    timeout: float = typer.Option(15.0, "--timeout", help="Seconds to wait for the daemon to finish."),
    keep_datapath: bool = typer.Option(
        False, "--keep-datapath",
        help="Planned restart: leave the BPF programs attached and maps pinned, so traffic keeps "
             "flowing on the installed map-cache until the next `lispctl up` adopts them."),
) -> None:
    """Stop a running device: detach its programs, remove its routes and sockets."""
    from lispctl.api.client import ApiClient, ApiError, NoDaemon, resolve_instance
    from lispctl.daemon.rundir import is_locked, read_pid

    try:
        paths = resolve_instance(instance, run_dir)
    except NoDaemon as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1)
    pid = read_pid(paths.pidfile)
    try:
        if keep_datapath:
            res = ApiClient(paths.socket, timeout=5.0).call("stop", keep_datapath=True)
            if not (isinstance(res, dict) and res.get("keep_datapath")):
                typer.echo(f"warning: {paths.instance} has no data plane to keep (or its daemon "
                           "predates --keep-datapath); it stops completely", err=True)
        else:
            ApiClient(paths.socket, timeout=5.0).call("stop")
    except ApiError as exc:
        # The API may be wedged or gone while the process lives: fall back to a
        # signal, except for a planned restart (SIGTERM removes the data plane).
        if keep_datapath:
            typer.echo(f"error: {exc}; not signalling (SIGTERM would remove the data plane): "
                       "use plain `lispctl down`, or SIGKILL keeps it", err=True)
            raise typer.Exit(1)
        if pid is None:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1)
        typer.echo(f"API did not take the stop request ({exc}); sending SIGTERM to {pid}", err=True)
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    while is_locked(paths.pidfile):
        if time.monotonic() > deadline:
            typer.echo(f"error: instance {paths.instance} (pid {pid}) still running after {timeout:g} s",
                       err=True)
            raise typer.Exit(1)
        time.sleep(0.05)
    typer.echo(f"stopped {paths.instance}" + (" (data plane kept for the next up)" if keep_datapath else ""))

"""`lispctl up -c FILE`: run a device in the foreground until stopped."""
from __future__ import annotations

import gc
import logging
from pathlib import Path
from typing import Optional

import typer

from lispctl.daemon.rundir import DEFAULT_RUN_DIR


def register(app: typer.Typer) -> None:
    app.command("up")(up)


def _error(text: str) -> None:
    """On stderr; under systemd each line with the journal's error priority."""
    from lispctl.daemon.sdnotify import under_journal
    if under_journal():
        text = "\n".join(f"<3>{line}" for line in text.split("\n"))
    typer.echo(text, err=True)


def up(
    config: Path = typer.Option(..., "-c", "--config", help="Device configuration (TOML).",
                                exists=False, dir_okay=False),
    foreground: bool = typer.Option(True, "--foreground/--no-foreground", hidden=True,
                                    help="Always foreground; accepted for compatibility."),
    log_level: Optional[str] = typer.Option(None, "--log-level",
                                            help="debug, info, warning or error (default: the config's log-level)."),
    run_dir: Path = typer.Option(DEFAULT_RUN_DIR, "--run-dir", help="Where the pidfile and API socket live."),
    control_port: Optional[int] = typer.Option(None, "--control-port", hidden=True,
                                               help="Bind the control sockets to this port instead of 4342 (tests)."),
) -> None:
    """Start the device described by a config file and serve until SIGTERM, SIGINT or `lispctl down`.

    Runs in the foreground and prints a line `ready` on stdout once it serves.
    """
    # Start-up (imports, config, roles, data plane) allocates objects that
    # nearly all live as long as the daemon; the cyclic collector would scan
    # them again and again (~15% of a start's CPU). Off until `ready`, when
    # the daemon collects once and freezes them (daemon/main.py).
    gc.disable()
    try:
        _up(config, foreground, log_level, run_dir, control_port)
    finally:
        gc.enable()


def _up(config: Path, foreground: bool, log_level: Optional[str], run_dir: Path,
        control_port: Optional[int]) -> None:
    from lispctl.config import ConfigError, load
    from lispctl.daemon.build import build_device
    from lispctl.daemon.main import serve, setup_logging
    from lispctl.daemon.rundir import AlreadyRunning, InstancePaths

    if not foreground:
        _error("lispctl up always runs in the foreground; use systemd or & to background it")
        raise typer.Exit(2)
    try:
        cfg = load(config)
    except ConfigError as exc:
        _error(f"error: invalid configuration:\n{exc}")
        raise typer.Exit(2)
    level = (log_level or cfg.log_level).lower()
    if level not in ("debug", "info", "warning", "error"):
        _error(f"error: --log-level {log_level!r}: use debug, info, warning or error")
        raise typer.Exit(2)
    setup_logging(level)
    try:
        status = serve(InstancePaths(run_dir, cfg.instance),
                       lambda: build_device(cfg, control_port=control_port,
                                            config_path=config.resolve()))
    except AlreadyRunning as exc:
        _error(f"error: {exc}")
        raise typer.Exit(1)
    except PermissionError as exc:
        _error(f"error: {exc} (lispctl up needs root)")
        raise typer.Exit(1)
    except Exception as exc:       # start-up failed (bind, BPF load, attach...): undo already ran
        if level == "debug":
            logging.getLogger("lispctl.daemon").exception("start-up failed")
        _error(f"error: {type(exc).__name__}: {exc}")
        raise typer.Exit(1)
    raise typer.Exit(status)

"""What a daemon runs: named roles, an optional data plane, and the undo list."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable

from lispctl.roles.base import CONTROL_PORT, Role

log = logging.getLogger("lispctl.daemon")


@dataclass
class Device:
    instance: str
    roles: list[tuple[str, Role]]
    datapath: Any = None                      # None: no BPF at all (MS/MR-only devices)
    announcer: Any = None                     # PITR: lispctl.net.announce.RouteAnnouncer
    bulk: Any = None                          # map-cache tables loaded in bulk (daemon/bulk.py)
    binds: list[str] = field(default_factory=lambda: ["0.0.0.0", "::"])
    control_port: int = CONTROL_PORT
    # Undo actions (detach programs, remove routes...), run newest first at stop.
    cleanups: list[tuple[str, Callable[[], None]]] = field(default_factory=list)
    info: dict = field(default_factory=dict)  # extra facts for `lispctl status`
    # `lispctl down --keep-datapath`: leave programs attached and maps pinned
    # at stop, for the next `up` of the instance to adopt.
    keep_datapath: bool = False
    metrics_listen: str | None = None         # [metrics] listen: Prometheus endpoint
    config: Any = None                        # the running Config (lispctl reload compares)
    config_path: Any = None                   # the file it came from (Path), reread by reload

    def on_stop(self, what: str, fn: Callable[[], None]) -> None:
        self.cleanups.append((what, fn))

    def teardown(self) -> list[str]:
        """Run every cleanup even if some fail; returns the failures."""
        failed = []
        while self.cleanups:
            what, fn = self.cleanups.pop()
            try:
                fn()
            except Exception as exc:
                log.exception("cleanup %s failed", what)
                failed.append(f"{what}: {exc}")
        return failed

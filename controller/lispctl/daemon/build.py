"""Turn a validated Config into a Device: roles, data plane, undo list."""
from __future__ import annotations

from lispctl.roles.base import CONTROL_PORT

from .device import Device


def build_device(cfg, *, control_port: int | None = None) -> Device:
    from lispctl.roles import build_roles  # lands with the roles
    roles = build_roles(cfg)
    return Device(instance=cfg.instance, roles=list(roles),
                  binds=[str(a) for a in cfg.control_addresses],
                  control_port=CONTROL_PORT if control_port is None else control_port)

"""`lispctl cpm XTR EID --priority N --correspondent ADDR ... --key-file F`:
send one Change-Priority Message from a hypervisor to its xTR (docs/cpm.md).

The hypervisor runs this when a VM's migration is complete. The message
carries the VM's EID, the new priority of the xTR's locators for it, the
addresses the VM was talking with, the current time in milliseconds and a
random nonce (the replay guard), and an HMAC-SHA-256 with the key shared
with the xTR's [cpm] keys. UDP has no answer to wait for; send it again
(a new timestamp and nonce) if in doubt: a repeated CPM with the same
priority only sends the SMRs again.
"""
from __future__ import annotations

import ipaddress
import json
import os
import secrets
import socket
import time
from pathlib import Path
from typing import Optional

import typer

from lispctl.mapping.types import EidPrefix
from lispctl.roles.base import CONTROL_PORT
from lispctl.wire import ChangePriority, InstanceId, from_eid_prefix, sign_cpm

KEY_ENV = "LISPCTL_CPM_KEY"


def build_cpm(eid: EidPrefix, priority: int, correspondents, key: str | bytes, *, key_id: int = 0,
              now_ms: int, nonce: int) -> bytes:
    """Wire bytes of a signed CPM. Correspondents of a non-zero instance
    are sent in the EID's instance (an Instance-ID LCAF)."""
    addr, ml = from_eid_prefix(eid)
    corr = tuple(InstanceId(eid.iid, a) if eid.iid else a for a in correspondents)
    return sign_cpm(ChangePriority(addr, ml, priority, now_ms, nonce, corr, key_id=key_id), key)


def _key(key_file: Optional[Path]) -> str:
    if key_file is not None:
        text = key_file.read_text().strip()
    else:
        text = os.environ.get(KEY_ENV, "")
    if not text:
        raise ValueError(f"no key: give --key-file or set {KEY_ENV}")
    return text


def register(app: typer.Typer) -> None:
    app.command("cpm")(cpm)


def cpm(
    xtr: str = typer.Argument(..., help="The xTR's address (where its control plane listens)."),
    eid: str = typer.Argument(..., help="The VM's EID, e.g. 10.9.0.5 (a /32) or 2001:db8::5."),
    priority: int = typer.Option(..., "--priority", "-p", min=0, max=255,
                                 help="New priority of the xTR's locators for the EID (1 best, 255 do not use)."),
    correspondent: list[str] = typer.Option([], "--correspondent", "-c",
                                            help="An address the VM was talking with (repeat)."),
    key_file: Optional[Path] = typer.Option(None, "--key-file",
                                            help=f"File holding the shared key (else ${KEY_ENV})."),
    key_id: int = typer.Option(0, "--key-id", min=0, max=0xFFFF, help="Key ID the xTR knows the key by."),
    iid: int = typer.Option(0, "--iid", min=0, max=(1 << 24) - 1, help="Instance ID."),
    port: int = typer.Option(CONTROL_PORT, "--port", hidden=True, help="xTR control port (tests)."),
    json_out: bool = typer.Option(False, "--json", help="Print what was sent as JSON."),
) -> None:
    """Tell an xTR the new priority of its locators for a VM's EID after a migration."""
    try:
        target = ipaddress.ip_address(xtr)
        prefix = EidPrefix.parse(eid, iid)
        corr = [ipaddress.ip_address(c) for c in correspondent]
        now_ms = time.time_ns() // 1_000_000
        nonce = secrets.randbits(64)
        raw = build_cpm(prefix, priority, corr, _key(key_file), key_id=key_id, now_ms=now_ms, nonce=nonce)
        fam = socket.AF_INET if target.version == 4 else socket.AF_INET6
        with socket.socket(fam, socket.SOCK_DGRAM) as s:
            s.sendto(raw, (str(target), port))
    except (ValueError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2)
    sent = {"xtr": str(target), "eid": str(prefix), "priority": priority, "correspondents": [str(c) for c in corr],
            "key_id": key_id, "timestamp_ms": now_ms, "nonce": f"{nonce:016x}", "bytes": len(raw)}
    typer.echo(json.dumps(sent) if json_out else
               f"Change-Priority Message to {target}: {prefix} priority {priority}, "
               f"{len(corr)} correspondent(s), {len(raw)} bytes")

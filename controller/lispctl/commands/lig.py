"""`lispctl lig EID --mr ADDRESS`: ask a Map-Resolver for a mapping (RFC 6835).

Sends an ECM'd Map-Request from an ephemeral port (ITR-RLOC = our source
address, inner source port = that port) and waits at that socket for a
Map-Reply carrying the nonce. A plain socket tool: no daemon, no asyncio.
The message work (build, decode, match, describe) is in the pure functions
below so it is testable without sockets. With --lisp-sec-key the request is
LISP-SEC protected and the reply verified (RFC 9303, docs/security.md).
"""
from __future__ import annotations

import dataclasses
import ipaddress
import json
import secrets
import socket
import time
from dataclasses import dataclass
from typing import Optional

import typer

from lispctl.mapping.types import EidPrefix, MapAction
from lispctl.roles.base import CONTROL_PORT
from lispctl.roles.common import Counters
from lispctl.roles.lispsec import ItrSec
from lispctl.wire import (EncapsulatedControlMessage, MalformedMessage, MapReply, MapRequest,
                          decode_control, locator_to_rloc, record_prefix, request_record)


# ---------------------------------------------------------------- pure part

def parse_eid(text: str, iid: int) -> EidPrefix:
    """'10.1.1.1', '10.1.0.0/16', '[5]10.1.1.1' or '2001:db8::1' (a host prefix without a mask)."""
    eid = EidPrefix.parse(text, iid)
    if "[" in text and iid and eid.iid != iid:
        raise ValueError(f"instance ID {eid.iid} in {text!r} contradicts --iid {iid}")
    return eid


def build_request(eid: EidPrefix, source: ipaddress._BaseAddress, sport: int,
                  nonce: int, sec: "tuple[ItrSec, str, int] | None" = None) -> bytes:
    """The ECM'd Map-Request for eid, with source as the ITR-RLOC; with sec
    (ItrSec, key, key ID) protected by LISP-SEC (RFC 9303)."""
    req = MapRequest(nonce=nonce, records=(request_record(eid),), itr_rlocs=(source,))
    target = eid.prefix.network_address
    # The inner header needs one family; when the RLOC is of the other family
    # the inner source carries no information anyway (replies go to ITR-RLOC).
    inner_src = source if source.version == target.version else ipaddress.ip_address(
        "0.0.0.0" if target.version == 4 else "::")
    ecm = EncapsulatedControlMessage(req, inner_src, target, inner_sport=sport, inner_dport=CONTROL_PORT)
    if sec is not None:
        ecm = sec[0].protect(ecm, "required", sec[1], sec[2])
    return ecm.encode()


def match_reply(data: bytes, nonces: set[int]) -> MapReply | None:
    """The Map-Reply in data if it answers one of our nonces, else None."""
    try:
        msg = decode_control(data)
    except MalformedMessage:
        return None
    if isinstance(msg, MapReply) and msg.nonce in nonces:
        return msg
    return None


def describe_reply(reply: MapReply) -> list[dict]:
    out = []
    for rec in reply.records:
        try:
            eid = str(record_prefix(rec))
        except MalformedMessage:
            eid = f"{rec.eid!r}/{rec.mask_len}"
        try:
            action = MapAction(rec.act).name.lower().replace("_", "-")
        except ValueError:
            action = f"unknown-{rec.act}"
        locs = []
        for loc in rec.locators:
            try:
                addr = str(locator_to_rloc(loc).address)
            except MalformedMessage:
                addr = repr(loc.address)
            locs.append({"address": addr, "state": "up" if loc.reachable else "down",
                         "priority": loc.priority, "weight": loc.weight,
                         "m_priority": loc.m_priority, "m_weight": loc.m_weight,
                         "local": loc.local, "probed": loc.probed})
        out.append({"eid": eid, "ttl_minutes": rec.ttl, "action": action,
                    "authoritative": rec.authoritative, "map_version": rec.map_version,
                    "locators": locs})
    return out


def format_result(result: dict) -> str:
    lines = [f"Send map-request to {result['map_resolver']} for {result['eid']} ...",
             f"Received map-reply from {result['reply_from']} with rtt "
             f"{result['rtt_ms'] / 1000:.5f} secs", ""]
    if "lisp_sec" in result:
        sec = result["lisp_sec"]
        lines[-1:-1] = [f"LISP-SEC: {'verified' if sec['verified'] else 'NOT VERIFIED'}"
                        + (f" ({sec['reason']})" if sec["reason"] else "")]
    for rec in result["records"]:
        lines.append(f"Mapping entry for EID '{result['eid']}':")
        head = (f"{rec['eid']}, record ttl: {rec['ttl_minutes']} min, "
                f"auth bit: {int(rec['authoritative'])}, map-version: {rec['map_version']}")
        if not rec["locators"]:
            lines.append(f"{head}, negative, action: {rec['action']}")
            continue
        lines.append(head)
        rows = [("Locator", "State", "Priority/Weight")] + [
            (l["address"], l["state"], f"{l['priority']}/{l['weight']}") for l in rec["locators"]]
        w0 = max(len(r[0]) for r in rows)
        lines += [f"  {a.ljust(w0)}  {b.ljust(5)}  {c}" for a, b, c in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------- I/O part

@dataclass
class _Attempt:
    nonce: int
    sent: float


def _source_for(mr: ipaddress._BaseAddress, port: int) -> ipaddress._BaseAddress:
    """The address the kernel would use toward the Map-Resolver."""
    fam = socket.AF_INET if mr.version == 4 else socket.AF_INET6
    with socket.socket(fam, socket.SOCK_DGRAM) as s:
        s.connect((str(mr), port))          # no packet: only a route lookup
        return ipaddress.ip_address(s.getsockname()[0])


def query(eid: EidPrefix, mr: ipaddress._BaseAddress, *, source=None, count: int = 3,
          timeout: float = 2.0, port: int = CONTROL_PORT, lisp_sec_key: str | None = None,
          lisp_sec_key_id: int = 0) -> dict | None:
    """Ask mr up to `count` times; the first matching reply as a dict, or None.
    With lisp_sec_key the requests are LISP-SEC protected and the result says
    whether the reply verified ('lisp_sec': {'verified', 'reason'}); a
    verified reply's records are shown as far as the EID-AD vouches for them."""
    sec = (ItrSec(Counters()), lisp_sec_key, lisp_sec_key_id) if lisp_sec_key else None
    source = source or _source_for(mr, port)
    if source.version != mr.version:
        raise ValueError(f"--source {source} and --mr {mr} are of different families")
    with socket.socket(socket.AF_INET if source.version == 4 else socket.AF_INET6,
                       socket.SOCK_DGRAM) as s:
        s.bind((str(source), 0))
        sport = s.getsockname()[1]
        attempts: dict[int, _Attempt] = {}
        for _ in range(count):
            nonce = secrets.randbits(64)
            attempts[nonce] = _Attempt(nonce, time.monotonic())
            s.sendto(build_request(eid, source, sport, nonce, sec), (str(mr), port))
            deadline = time.monotonic() + timeout
            while (left := deadline - time.monotonic()) > 0:
                s.settimeout(left)
                try:
                    data, peer = s.recvfrom(65535)
                except socket.timeout:
                    break
                except ConnectionRefusedError:      # ICMP port unreachable from the MR
                    continue
                reply = match_reply(data, set(attempts))
                if reply is None:
                    continue
                rtt = time.monotonic() - attempts[reply.nonce].sent
                out = {"eid": str(eid), "map_resolver": str(mr), "source": str(source),
                       "reply_from": peer[0], "rtt_ms": round(rtt * 1000, 3),
                       "nonce": f"{reply.nonce:016x}", "records": describe_reply(reply)}
                if sec is not None:
                    v = sec[0].check(data, reply)
                    ok = v.records is not None and v.protected
                    out["lisp_sec"] = {"verified": ok, "reason": v.reason}
                    if ok:
                        out["records"] = describe_reply(dataclasses.replace(reply, records=v.records))
                return out
    return None


def register(app: typer.Typer) -> None:
    app.command("lig")(lig)


def lig(
    eid: str = typer.Argument(..., help="EID address or prefix, e.g. 10.1.1.1 or [5]10.1.0.0/16."),
    mr: str = typer.Option(..., "--mr", help="Map-Resolver address."),
    count: int = typer.Option(3, "--count", "-c", min=1, help="Map-Requests to send before giving up."),
    timeout: float = typer.Option(2.0, "--timeout", "-t", min=0.01, help="Seconds to wait after each."),
    iid: int = typer.Option(0, "--iid", min=0, max=(1 << 24) - 1, help="Instance ID."),
    source: Optional[str] = typer.Option(None, "--source", help="Source address and ITR-RLOC "
                                         "(default: the address routed toward the Map-Resolver)."),
    port: int = typer.Option(CONTROL_PORT, "--port", hidden=True, help="Map-Resolver port (tests)."),
    json_out: bool = typer.Option(False, "--json", help="Print the reply as JSON."),
    lisp_sec_key: Optional[str] = typer.Option(None, "--lisp-sec-key", help="Protect the request with "
                                               "LISP-SEC (RFC 9303) under this ITR/Map-Resolver key."),
    lisp_sec_key_id: int = typer.Option(0, "--lisp-sec-key-id", min=0, max=255, help="Its key ID."),
) -> None:
    """Look up an EID at a Map-Resolver (LISP Internet Groper, RFC 6835). Exit 1 without a reply,
    3 when --lisp-sec-key is given and the reply does not verify."""
    try:
        target = parse_eid(eid, iid)
        mr_addr = ipaddress.ip_address(mr)
        src = ipaddress.ip_address(source) if source else None
        result = query(target, mr_addr, source=src, count=count, timeout=timeout, port=port,
                       lisp_sec_key=lisp_sec_key, lisp_sec_key_id=lisp_sec_key_id)
    except (ValueError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2)
    if result is None:
        msg = f"no map-reply from {mr_addr} for {target} after {count} request(s)"
        typer.echo(json.dumps({"eid": str(target), "map_resolver": str(mr_addr), "error": msg})
                   if json_out else msg, err=not json_out)
        raise typer.Exit(1)
    typer.echo(json.dumps(result, indent=2) if json_out else format_result(result))
    if "lisp_sec" in result and not result["lisp_sec"]["verified"]:
        raise typer.Exit(3)

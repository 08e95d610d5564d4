"""Read-only views of a running device: status, map-cache, database, sites, counters."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

import typer

from lispctl.api import render
from lispctl.daemon.rundir import DEFAULT_RUN_DIR

InstanceOpt = typer.Option(None, "--instance", "-i", help="Instance to ask (default: the only running one).")
JsonOpt = typer.Option(False, "--json", help="Print the daemon's JSON answer.")
RunDirOpt = typer.Option(DEFAULT_RUN_DIR, "--run-dir", help="Where the pidfile and API socket live.")


def _ask(cmd: str, instance: str | None, run_dir: Path) -> Any:
    from lispctl.api.client import ApiClient, ApiError
    try:
        return ApiClient.for_instance(instance, run_dir).call(cmd)
    except ApiError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1)


def _show(cmd: str, instance, json_out: bool, run_dir: Path, human: Callable[[Any], str]) -> None:
    result = _ask(cmd, instance, run_dir)
    typer.echo(render.dump_json(result) if json_out else human(result))


def _status_text(st: dict) -> str:
    rows = [
        ("instance", st.get("instance")), ("pid", st.get("pid")),
        ("uptime", render.duration(st.get("uptime_s"))), ("started", st.get("started")),
        ("roles", st.get("roles")), ("control", st.get("control")), ("api", st.get("api")),
        ("data plane", "attached" if st.get("datapath") else "none"),
        ("map-cache", f"{st.get('map_cache_entries', 0)} entries"),
    ]
    for t in st.get("map_cache_tables") or []:
        left = f", expires in {render.duration(t['expires_in_s'])}" if t.get("expires_in_s") is not None else ""
        rows.append(("table", f"{t['name']}: {t['ipv4']} IPv4 + {t['ipv6']} IPv6 mappings from {t.get('path')}{left}"))
    for w in st.get("ms_workers") or []:      # [ms] workers: Map-Register worker processes
        rows.append(("ms worker", f"{w['worker']}: pid {w['pid']}, {'serving' if w['serving'] else 'starting'}, "
                                  f"{w['map_register_rx']} Map-Registers"))
    width = max(len(k) for k, _ in rows)
    lines = [f"{k.ljust(width)}  {render.cell(v)}" for k, v in rows]
    for role, snap in (st.get("state") or {}).items():
        summary = {k: v for k, v in (snap or {}).items()
                   if not isinstance(v, (list, dict))}
        # a role's own section (pitr, petr: announcement, allow-list) in full
        own = (snap or {}).get(role) if isinstance(snap, dict) else None
        if isinstance(own, dict):
            summary.update(own)
        if summary:
            lines.append(f"{role.ljust(width)}  {render.cell(summary)}")
        if role == "nat":            # NAT traversal per RLOC (docs/nat.md)
            for r in snap.get("rlocs") or []:
                via = f" seen as {r['translated']}" if r.get("state") != "public" and r.get("translated") else ""
                rtr = f", RTR {r['rtr']}" if r.get("rtr") else ""
                lines.append(f"{'  rloc'.ljust(width)}  {r['rloc']}: {r['state']}{via}{rtr}")
        if role == "rtr":            # the RTR's NATed xTRs
            for p in snap.get("peers") or []:
                lines.append(f"{'  peer'.ljust(width)}  xTR-ID {p['xtr_id']} at {p['translated']} "
                             f"(private {p['private']}): {', '.join(p['eids'])}")
    return "\n".join(lines)


def _map_cache_text(entries: list[dict[str, Any]]) -> str:
    return render.table(entries, [
        ("EID", lambda e: e.get("eid")),
        ("ACTION", lambda e: e.get("action") if not e.get("rlocs") else "forward"),
        ("LOCATORS", lambda e: render.rlocs_cell(e.get("rlocs"))),
        ("TTL", lambda e: render.duration(e.get("ttl_s"))),
        ("EXPIRES", lambda e: render.duration(e.get("expires_in_s"))),
        ("BY", lambda e: e.get("role")),
    ], empty="map-cache is empty")


def _generic(rows: list, first: tuple[str, ...], empty: str) -> str:
    flat = []
    for r in rows:
        r = dict(r)
        for key in ("rlocs", "locators"):
            if isinstance(r.get(key), list) and all(isinstance(x, dict) for x in r[key]):
                r[key] = render.rlocs_cell(r[key])
        flat.append(r)
    return render.table(flat, render.auto_columns(flat, first), empty=empty)


def _sites_text(sites: list) -> str:
    """One row per registration (or per configured prefix without one)."""
    if not all(isinstance(x, dict) and "eid_prefixes" in x for x in sites):
        return _generic(sites, ("site", "name", "eid", "prefix", "registered"), "no sites")
    rows = []
    for site in sites:
        for p in site["eid_prefixes"]:
            regs = p.get("registrations") or [{}]
            for r in regs:
                rows.append({"site": site.get("name"), "prefix": p.get("prefix"),
                             "registered": p.get("registered"), "eid": r.get("eid"),
                             "rlocs": r.get("rlocs"), "from": r.get("source"),
                             "expires": r.get("expires_in_s"), "proxy": r.get("proxy_reply")})
    return render.table(rows, [
        ("SITE", lambda r: r["site"]), ("PREFIX", lambda r: r["prefix"]),
        ("REGISTERED", lambda r: r["registered"]), ("EID", lambda r: r["eid"]),
        ("LOCATORS", lambda r: render.rlocs_cell(r["rlocs"]) if r["rlocs"] is not None else None),
        ("FROM", lambda r: r["from"]), ("PROXY", lambda r: r["proxy"]),
        ("EXPIRES", lambda r: render.duration(r["expires"])),
    ], empty="no sites")


def _counters_text(c: dict) -> str:
    rows = []
    for section in ("daemon", "datapath"):
        for k, v in _flatten(c.get(section) or {}):
            rows.append({"section": section, "counter": k, "value": v})
    for role, counters in (c.get("roles") or {}).items():
        for k, v in _flatten(counters):
            rows.append({"section": role, "counter": k, "value": v})
    return render.table(rows, [("SECTION", lambda r: r["section"]), ("COUNTER", lambda r: r["counter"]),
                               ("VALUE", lambda r: r["value"])], empty="no counters")


def _flatten(d: dict, prefix: str = ""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _flatten(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def status(instance: Optional[str] = InstanceOpt, json_out: bool = JsonOpt, run_dir: Path = RunDirOpt) -> None:
    """Instance, roles, sockets, uptime and a summary of each role's state."""
    _show("status", instance, json_out, run_dir, _status_text)


def map_cache(instance: Optional[str] = InstanceOpt, json_out: bool = JsonOpt, run_dir: Path = RunDirOpt) -> None:
    """Mappings installed in the data plane (EID, locators, TTL)."""
    _show("map-cache", instance, json_out, run_dir, _map_cache_text)


def database(instance: Optional[str] = InstanceOpt, json_out: bool = JsonOpt, run_dir: Path = RunDirOpt) -> None:
    """The ETR's local EID-prefixes and their locators."""
    _show("database", instance, json_out, run_dir,
          lambda rows: _generic(rows, ("eid", "eid_prefix", "rlocs", "locators"), "database is empty"))


def sites(instance: Optional[str] = InstanceOpt, json_out: bool = JsonOpt, run_dir: Path = RunDirOpt) -> None:
    """The Map-Server's sites and registrations."""
    _show("sites", instance, json_out, run_dir, _sites_text)


def counters(instance: Optional[str] = InstanceOpt, json_out: bool = JsonOpt, run_dir: Path = RunDirOpt) -> None:
    """Daemon, role and data-plane counters."""
    _show("counters", instance, json_out, run_dir, _counters_text)


def register(app: typer.Typer) -> None:
    app.command("status")(status)
    app.command("map-cache")(map_cache)
    app.command("database")(database)
    app.command("sites")(sites)
    app.command("counters")(counters)

"""Static-mapping data plane, for the lab and for trying things by hand.

    python -m lispctl.datapath --instance NAME --eid-if IF --rloc-if IF --static FILE.json \
        [--rloc-mode tc|xdp|auto] [--eid-mode tc|xdp|auto] [--xdp-redirect]
        [--rloc-checksum auto|complete|offload]

Loads and attaches the programs, installs what FILE.json says (format in
docs/datapath.md), prints "ready" and waits; SIGTERM/SIGINT detach and exit
(unpinning the maps unless --keep-pins).
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import select
import signal
import sys
import threading
from typing import Any

from lispctl.datapath.errors import DatapathError
from lispctl.mapping.types import EidPrefix, MapAction, Rloc
from lispctl.datapath.attach import CHECKSUM_MODES


def parse_action(value: Any) -> MapAction:
    if value is None:
        return MapAction.NO_ACTION
    if isinstance(value, int):
        return MapAction(value)
    name = str(value).strip().upper().replace("-", "_")
    aliases = {"NATIVE": "NATIVELY_FORWARD", "FORWARD": "NATIVELY_FORWARD", "MAP_REQUEST": "SEND_MAP_REQUEST",
               "NONE": "NO_ACTION", "ENCAP": "NO_ACTION", "PETR": "NO_ACTION"}
    try:
        return MapAction[aliases.get(name, name)]
    except KeyError:
        raise ValueError(f"unknown action {value!r}") from None


def parse_rloc(obj: Any) -> Rloc:
    if isinstance(obj, str):
        return Rloc(ipaddress.ip_address(obj))
    return Rloc(ipaddress.ip_address(obj["address"]), int(obj.get("priority", 1)),
                int(obj.get("weight", 100)), bool(obj.get("reachable", True)), int(obj.get("port", 0)))


def _items(obj: dict, key: str) -> list:
    """A list-valued key; absent and null both mean empty."""
    value = obj.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValueError(f"{key!r} must be a list, not {type(value).__name__}")
    return value


def load_static(dp, data: dict) -> None:
    """Install a static configuration (the JSON format of docs/datapath.md).
    A key set to null counts as absent (lists: empty)."""
    if not isinstance(data, dict):
        raise ValueError("the static configuration must be a JSON object")
    for a in _items(data, "local_rlocs"):
        dp.add_local_rloc(ipaddress.ip_address(a))
    for e in _items(data, "local_eids"):
        if isinstance(e, str):
            dp.add_local_eid(EidPrefix.parse(e))
        else:       # {"eid", "iid", "lsb"}: lsb = our locator-status bits for that prefix
            dp.add_local_eid(EidPrefix.parse(e["eid"], int(e.get("iid") or 0)), int(e.get("lsb", 1)))
    for iid in _items(data, "accept_iids"):
        dp.accept_iid(int(iid))
    for m in _items(data, "mappings"):
        eid = EidPrefix.parse(m["eid"], int(m.get("iid") or 0))
        dp.set_mapping(eid, [parse_rloc(r) for r in _items(m, "rlocs")], parse_action(m.get("action")))
    if data.get("miss_action") is not None or data.get("petr") is not None:
        dp.set_miss_action(parse_action(data.get("miss_action") or "drop"),
                           [parse_rloc(r) for r in _items(data, "petr")])
    if data.get("path_mtu") is not None:
        dp.set_path_mtu(int(data["path_mtu"]))
    if data.get("miss_rate_limit_ms") is not None:
        dp.set_miss_rate_limit_ms(int(data["miss_rate_limit_ms"]))
    if data.get("reencap") is not None:
        dp.set_reencap(bool(data["reencap"]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lispctl.datapath", description=__doc__.split("\n\n")[0])
    ap.add_argument("--instance", required=True)
    ap.add_argument("--eid-if", action="append", default=[], help="EID-facing interface (ITR), repeatable")
    ap.add_argument("--eid-dev", action="append", default=[], help="host EID device (mobile node, tc egress)")
    ap.add_argument("--rloc-if", action="append", default=[], help="RLOC-facing interface (ETR), repeatable")
    ap.add_argument("--rloc-mode", choices=("tc", "xdp", "auto"), default="tc",
                    help="ETR hook of the RLOC interfaces: tc (default), xdp (XDP ETR in front of "
                         "tc; native, else generic), auto (xdp on physical NICs, tc otherwise)")
    ap.add_argument("--eid-mode", choices=("tc", "xdp", "auto"), default="tc",
                    help="ITR hook of the EID interfaces: tc (default), xdp (XDP ITR in front of "
                         "tc; native, else generic), auto (xdp on physical NICs, tc otherwise)")
    ap.add_argument("--xdp-redirect", action="store_true",
                    help="let the XDP programs redirect into every --eid-if and --rloc-if, unchecked (default: "
                         "physical NICs running our XDP program natively, and veths running it natively "
                         "whose peer has an XDP program or GRO on, checked at attach)")
    ap.add_argument("--rloc-checksum", choices=tuple(CHECKSUM_MODES), default="auto",
                    help="complete: tx checksum offload off on the RLOC interfaces, so inner checksums "
                         "are complete on the wire for any ETR; offload: keep it (GSO super-packets "
                         "cross veth whole; only kernel ETRs then); auto: complete on virtual devices")
    ap.add_argument("--iid", type=int, default=0, help="instance ID of packets from the EID interfaces")
    ap.add_argument("--static", help="JSON file with local RLOCs/EIDs and mappings")
    ap.add_argument("--pin-root", default=None, help="bpffs directory (default /sys/fs/bpf/lispctl)")
    ap.add_argument("--keep-pins", action="store_true", help="leave maps pinned on exit")
    args = ap.parse_args(argv)

    from lispctl.datapath.datapath import Datapath

    stop = threading.Event()
    rx = None
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        data = {}
        if args.static:
            with open(args.static) as fh:
                data = json.load(fh)
        dp = Datapath(args.instance, pin_root=args.pin_root)
    except (DatapathError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        load_static(dp, data)
        redirect = True if args.xdp_redirect else None     # None: the device decides
        for ifname in args.eid_if:
            used = dp.attach_eid_interface(ifname, args.iid, mode=args.eid_mode, xdp_redirect=redirect)
            if used != "tc":
                print(f"{ifname}: {used}", file=sys.stderr, flush=True)
        for ifname in args.eid_dev:
            dp.attach_eid_device(ifname, args.iid)
        for ifname in args.rloc_if:
            used = dp.attach_rloc_interface(ifname, mode=args.rloc_mode, xdp_redirect=redirect,
                                            complete_checksums=CHECKSUM_MODES[args.rloc_checksum])
            if used != "tc":
                print(f"{ifname}: {used}", file=sys.stderr, flush=True)
        if data.get("path_mtu") is not None:
            dp.set_path_mtu(int(data["path_mtu"]))
        # outer fragments to our RLOCs: reassembled by the stack, decapsulated here
        rx = dp.open_reassembly() if args.rloc_if else None
        fds = [dp.miss_fd(), *(rx.fds() if rx else ())]
        print("ready", flush=True)
        while not stop.is_set():
            ready, _, _ = select.select(fds, [], [], 0.2)
            for ev in dp.poll_misses(0):
                print(f"miss {ev.eid} from {ev.source}", flush=True)
            for fd in ready:
                if rx is not None and fd in rx.fds():
                    rx.handle(fd)
    except (DatapathError, OSError, ValueError, KeyError, TypeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        dp.close(unpin=not args.keep_pins)
        return 1
    if rx is not None:
        rx.close()
    dp.close(unpin=not args.keep_pins)
    return 0


if __name__ == "__main__":
    sys.exit(main())

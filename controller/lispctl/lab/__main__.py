"""`make lab`: build a topology, show traffic crossing it, tear it down.

    python -m lispctl.lab [--topology NAME] [--keep]
    python -m lispctl.lab --down PREFIX        # remove a kept lab
    python -m lispctl.lab --list               # topologies and kept labs
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import signal
import sys

from . import available, down, kept_labs, load
from .runner import Lab


def say(text: str) -> None:
    print(text, flush=True)


_MAIN_PID = os.getpid()


def _sigterm(signum, frame):
    # Teardown runs on SIGTERM too, like on Ctrl-C. Forked helpers (pyroute2's
    # netns children, call_in_netns) inherit this handler: they must just die.
    if os.getpid() != _MAIN_PID:
        os._exit(128 + signum)
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lispctl.lab", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--topology", default="control", help=f"one of: {', '.join(available())}")
    ap.add_argument("--keep", action="store_true", help="leave the lab running for inspection")
    ap.add_argument("--down", metavar="PREFIX", help="tear down a lab kept by an earlier run")
    ap.add_argument("--list", action="store_true", help="list topologies and kept labs")
    args = ap.parse_args(argv)

    if os.geteuid() != 0:
        say("the lab needs root (network namespaces, BPF)")
        return 2
    if args.list:
        say("topologies: " + ", ".join(available()))
        say("kept labs:  " + (", ".join(kept_labs()) or "none"))
        return 0
    if args.down:
        problems = down(args.down)
        say(f"lab {args.down} removed" if not problems else f"lab {args.down}: {len(problems)} problem(s)")
        return 1 if problems else 0

    signal.signal(signal.SIGTERM, _sigterm)
    topo = load(args.topology)
    scenario = None
    module = f"lispctl.lab.scenarios.{topo.name.replace('-', '_')}"     # vm-mobility -> vm_mobility
    if importlib.util.find_spec(module) is not None:
        scenario = importlib.import_module(module)

    lab = Lab(topo, keep=args.keep)
    say(f"[1/7] Building topology '{topo.name}' as lab {lab.prefix}: {topo.description}")
    ok = False
    try:
        with lab:
            say(lab.describe())
            if scenario is not None:
                ok = scenario.run(lab, say)
            else:
                lab.start_all()
                say("started: " + (", ".join(f"{n}/{p}" for n, p in lab.procs) or "nothing"))
                ok = True
            say(f"\nresult: {'traffic flowed as expected' if ok else 'FAILED: traffic did not flow as expected'}")
            if args.keep:
                _explain_keep(lab)
    except KeyboardInterrupt:
        say("\ninterrupted; lab removed" if not args.keep else "\ninterrupted")
        return 130
    if not args.keep:
        say(f"lab {lab.prefix} removed")
    return 0 if ok else 1


def _explain_keep(lab: Lab) -> None:
    first = next(iter(lab.topo.nodes))
    say(f"\nThe lab stays up. Enter a node:\n"
        f"    nsenter --net=/run/netns/{lab.ns(first)} bash      (or: ip netns exec {lab.ns(first)} bash)\n"
        f"Logs of its processes: {lab.rundir}/logs/\n"
        f"Tear it down later:\n"
        f"    .venv/bin/python -m lispctl.lab --down {lab.prefix}")


if __name__ == "__main__":
    sys.exit(main())

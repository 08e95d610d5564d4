"""UDP from trafgen in a lab node, and the packet rates it reaches.

trafgen sends as fast as one CPU allows (pinned to UDP_CPU, so every mode
is measured the same way); the rates are read from interface counters over
a window after a warm-up, so start-up and neighbour resolution are not in
them.
"""
from __future__ import annotations

import os
import signal
import time
from collections.abc import Sequence
from pathlib import Path

from lispctl.lab import Lab
from lispctl.lab.traffic import link_stats

UDP_CPU = 0
UDP_WARMUP, UDP_WINDOW = 1.0, 2.0


def stop_group(pgid: int) -> None:
    """Stop trafgen with its worker: trafgen forks one sender per CPU, and a
    signal to the parent alone leaves the sender running (and taking a
    whole CPU from every later sample). The lab starts each program as a
    session leader, so its process group is exactly trafgen and its workers."""
    for sig in (signal.SIGINT, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        for _ in range(20):
            time.sleep(0.05)
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return


def udp_rates(lab: Lab, src: str, cfg: Path, counted: Sequence[tuple[str, str]],
              warmup: float = UDP_WARMUP, window: float = UDP_WINDOW) -> list[float]:
    """Run trafgen in `src` with the packets of `cfg` out of its eth0; for
    each (node, counter) of `counted`, e.g. ("hostB", "rx_packets"), that
    counter's packets/s on the node's eth0 over `window` s after `warmup` s."""
    # sysfs=True: trafgen inspects the device under /sys/class/net
    proc = lab.start(src, "trafgen", ["taskset", "-c", str(UDP_CPU), "trafgen", "-i", str(cfg), "-o", "eth0",
                                      "--cpus", "1", "-q"], ready=None, sysfs=True)
    try:
        time.sleep(warmup)
        c0, t0 = [link_stats(lab, node, "eth0")[k] for node, k in counted], time.monotonic()
        time.sleep(window)
        c1, t1 = [link_stats(lab, node, "eth0")[k] for node, k in counted], time.monotonic()
    finally:
        stop_group(proc.pid)
        lab.stop(src, "trafgen")
    return [(b - a) / (t1 - t0) for a, b in zip(c0, c1)]

"""Fields of a capture as tshark decodes them (the e2e tests' independent
reading of what crossed the wire)."""
from __future__ import annotations

import subprocess


def fields(pcap, names: list[str], display_filter: str = "") -> list[list[str]]:
    """One row a packet (matching `display_filter`), the fields in the order
    of `names`; a field tshark finds several times is comma-separated."""
    argv = ["tshark", "-r", str(pcap), "-n", "-T", "fields", "-E", "separator=|"]
    if display_filter:
        argv += ["-Y", display_filter]
    for f in names:
        argv += ["-e", f]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True).stdout
    return [line.split("|") for line in out.splitlines() if line]

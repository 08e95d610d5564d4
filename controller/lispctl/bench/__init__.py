"""Benchmarks (`make bench`).

Each module bench_*.py in this package has `run(rec: Recorder)`. Figures go to
build/bench.json (one key per figure, unit in the key name) and a section per
module in docs/benchmarks.md, stamped with the machine and the date.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
JSON_PATH = ROOT / "build" / "bench.json"
DOC_PATH = ROOT / "docs" / "benchmarks.md"


def machine() -> str:
    cpu = "unknown cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Linux {platform.release()}"


class Recorder:
    """Collects the figures of one benchmark module."""

    def __init__(self, section: str) -> None:
        self.section = section
        self.figures: dict[str, float] = {}
        self.lines: list[str] = []

    def figure(self, key: str, value: float) -> None:
        """key carries its unit, e.g. 'map_register_decode_msgs_per_s'."""
        self.figures[key] = value
        print(f"  {key} = {value:,.3f}" if isinstance(value, float) else f"  {key} = {value}")

    def note(self, text: str) -> None:
        """A line of markdown for docs/benchmarks.md (tables, explanations)."""
        self.lines.append(text)

    def save(self) -> None:
        JSON_PATH.parent.mkdir(parents=True, exist_ok=True)
        data = json.loads(JSON_PATH.read_text()) if JSON_PATH.exists() else {}
        data.update(self.figures)
        data["_machine"] = machine()
        data["_date"] = _dt.date.today().isoformat()
        JSON_PATH.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        self._write_doc()

    def _write_doc(self) -> None:
        text = DOC_PATH.read_text() if DOC_PATH.exists() else "# Benchmarks\n\nWritten by `make bench`; figures also in build/bench.json.\n"
        body = [f"## {self.section}", "",
                f"Measured {_dt.date.today().isoformat()} on {machine()}.", ""]
        body += self.lines
        block = "\n".join(body).rstrip() + "\n"
        start, end = f"<!-- bench:{self.section} -->", f"<!-- /bench:{self.section} -->"
        new = f"{start}\n{block}{end}"
        pat = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
        text = pat.sub(lambda _m: new, text) if pat.search(text) else text.rstrip() + "\n\n" + new + "\n"
        DOC_PATH.write_text(text)

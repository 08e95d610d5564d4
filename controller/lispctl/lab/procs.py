"""Processes started inside a lab node: recorded by PID, stopped by PID.

Output goes straight to a log file in the run directory (not through a pipe to
us), so a kept lab's processes outlive the runner without dying of SIGPIPE.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Sequence

from .nsexec import preexec


class ProcessError(RuntimeError):
    pass


def start_time(pid: int) -> int | None:
    """Kernel start time of a pid (field 22 of /proc/PID/stat): tells a reused PID from ours."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] in ("Z", "X") else int(fields[19])  # a zombie is already dead


class LabProcess:
    def __init__(self, ns: str, name: str, argv: Sequence[str], log: Path, *,
                 sysfs: bool = False, env: dict[str, str] | None = None) -> None:
        self.ns, self.name, self.argv, self.log_path = ns, name, [str(a) for a in argv], log
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "w") as out:
            out.write(f"# netns {ns}: {' '.join(self.argv)}\n")
            out.flush()
            self.popen = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                preexec_fn=preexec(ns, sysfs), start_new_session=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
        self.pid = self.popen.pid
        self.started = start_time(self.pid)
        self.ready_word: str | None = None
        self.ready_timeout = 30.0

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def wait_ready(self, word: str = "ready", timeout: float = 30.0) -> None:
        """Until a line of output starts with `word`; raises if the process exits or time runs out."""
        deadline = time.monotonic() + timeout
        while True:
            if any(line.strip().startswith(word) for line in self.output().splitlines()[1:]):
                return
            if self.popen.poll() is not None:
                raise ProcessError(f"{self.name} in {self.ns} exited with {self.popen.returncode} "
                                   f"before printing '{word}'; output:\n{self.output()[-3000:]}")
            if time.monotonic() > deadline:
                raise ProcessError(f"{self.name} in {self.ns}: no '{word}' within {timeout:.0f} s; "
                                   f"output so far:\n{self.output()[-3000:]}")
            time.sleep(0.05)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, grace: float = 5.0) -> int | None:
        """SIGTERM, then SIGKILL after `grace` seconds. Returns the exit status."""
        if self.popen.poll() is None:
            try:
                self.popen.send_signal(signal.SIGTERM)
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        return self.popen.returncode


def run(ns: str, argv: Sequence[str], *, timeout: float = 60.0, check: bool = False,
        sysfs: bool = False, input: str | None = None) -> subprocess.CompletedProcess[str]:
    """A short command in a namespace; output captured."""
    argv = [str(a) for a in argv]
    cp = subprocess.run(argv, preexec_fn=preexec(ns, sysfs), capture_output=True, text=True,
                        timeout=timeout, input=input,
                        stdin=None if input is not None else subprocess.DEVNULL)
    if check and cp.returncode != 0:
        raise ProcessError(f"{' '.join(argv)} in {ns} failed ({cp.returncode}):\n{cp.stdout}{cp.stderr}")
    return cp


def kill_recorded(pid: int, started: int | None, grace: float = 3.0) -> bool:
    """Stop a process recorded by an earlier run, only if that PID is still the same process."""
    if started is None or start_time(pid) != started:
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if start_time(pid) != started:
            return True
        time.sleep(0.05)
    if start_time(pid) == started:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return True

"""Where a running device leaves its pidfile and API socket, and the lock
that keeps a second `lispctl up` for the same instance out."""
from __future__ import annotations

import fcntl
import os
import re
from dataclasses import dataclass
from pathlib import Path

DEFAULT_RUN_DIR = Path(os.environ.get("LISPCTL_RUN_DIR", "/run/lispctl"))
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class AlreadyRunning(RuntimeError):
    pass


def check_instance_name(name: str) -> str:
    if not _NAME.match(name):
        raise ValueError(f"instance name {name!r}: use letters, digits, '.', '_' or '-' (max 64)")
    return name


@dataclass(frozen=True)
class InstancePaths:
    run_dir: Path
    instance: str

    @property
    def pidfile(self) -> Path:
        return self.run_dir / f"{self.instance}.pid"

    @property
    def socket(self) -> Path:
        return self.run_dir / f"{self.instance}.sock"


class PidLock:
    """An flock'ed pidfile. The lock, not the file's existence, says whether
    the instance runs: a pidfile left by a killed daemon does not block."""

    def __init__(self, paths: InstancePaths) -> None:
        self.paths = paths
        self.fd: int | None = None

    def acquire(self) -> None:
        self.paths.run_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
        for _ in range(10):
            fd = self._try_lock()
            # The previous holder unlinks the file before unlocking; if we locked
            # such an orphaned inode, start over with the current file.
            try:
                if os.stat(self.paths.pidfile).st_ino == os.fstat(fd).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        else:
            raise AlreadyRunning(f"could not lock {self.paths.pidfile}")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd

    def _try_lock(self) -> int:
        fd = os.open(self.paths.pidfile, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise AlreadyRunning(
                f"instance {self.paths.instance!r} is already running (pid {other}, "
                f"pidfile {self.paths.pidfile}); stop it with `lispctl down --instance "
                f"{self.paths.instance}`") from None
        return fd

    def release(self) -> None:
        if self.fd is None:
            return
        # Unlink while still holding the lock so a starting daemon never sees a
        # file we are about to delete under it.
        for p in (self.paths.socket, self.paths.pidfile):
            try:
                p.unlink()
            except FileNotFoundError:
                pass
        os.close(self.fd)
        self.fd = None


def is_locked(pidfile: Path) -> bool:
    try:
        fd = os.open(pidfile, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None


def running_instances(run_dir: Path = DEFAULT_RUN_DIR) -> list[str]:
    """Names of instances whose pidfile is locked by a live daemon."""
    if not run_dir.is_dir():
        return []
    return sorted(p.stem for p in run_dir.glob("*.pid") if is_locked(p))

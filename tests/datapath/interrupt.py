"""SIGTERM as Ctrl-C, so fixture teardown (namespaces, pins, labs) runs when
a test run is stopped with `kill` or by a timeout, not only on Ctrl-C."""
from __future__ import annotations

import contextlib
import os
import signal
import threading
from typing import Iterator

import pytest


_owner: list[int] = []


def _raise(signum, frame):
    # Forked children (pyroute2, lab helpers, subprocess before exec) inherit
    # this handler; in them SIGTERM must kill as usual, or the child would
    # unwind into pytest's teardown and remove the parent's namespaces.
    if not _owner or os.getpid() != _owner[-1]:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """While active (main thread only), SIGTERM raises KeyboardInterrupt.
    Scope it to the fixtures that own something: forked helpers (pyroute2,
    lab runners) inherit Python's handler, and some tests signal their own
    children."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _owner.append(os.getpid())
    old = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)
        _owner.pop()


@pytest.fixture(scope="session", autouse=True)
def sigterm_runs_teardown():
    with sigterm_as_interrupt():
        yield

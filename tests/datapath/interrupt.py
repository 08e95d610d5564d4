"""SIGTERM as Ctrl-C, so fixture teardown (namespaces, pins, labs) runs when
a test run is stopped with `kill` or by a timeout, not only on Ctrl-C."""
from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

import pytest


def _raise(signum, frame):
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
    old = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


@pytest.fixture(scope="session", autouse=True)
def sigterm_runs_teardown():
    with sigterm_as_interrupt():
        yield

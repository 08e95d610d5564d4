"""Namespaces for the net tests: each test gets its own, named with our pid, and removes exactly it."""
import asyncio
import itertools
import os

import pytest
from pyroute2 import netns

from tests.conftest import need_root

_counter = itertools.count()


@pytest.fixture
def ns():
    need_root()
    name = f"lispnet-{os.getpid()}-{next(_counter)}"
    netns.create(name)
    try:
        yield name
    finally:
        netns.remove(name)


def run(coro, timeout: float = 30.0):
    """Run one coroutine with an overall bound, so a hung netlink call fails instead of hanging."""
    return asyncio.run(asyncio.wait_for(coro, timeout))

"""Shared test policy.

Tests that need root, BPF or namespaces call `need_root()` (or use the
`root` fixture). Off CI they skip with the reason; under CI=true they FAIL,
so a CI machine that cannot run them can never look green.
"""
import os

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"required under CI=true but unavailable: {reason}", pytrace=False)
    pytest.skip(reason)


def need_root() -> None:
    if os.geteuid() != 0:
        unavailable("needs root")
    if not os.path.ismount("/sys/fs/bpf"):
        unavailable("bpffs is not mounted on /sys/fs/bpf (run `make setup`)")


@pytest.fixture
def root() -> None:
    need_root()

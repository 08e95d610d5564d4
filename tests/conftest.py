"""Shared test policy.

Tests that need root, BPF or namespaces call `need_root()` (or use the
`root` fixture). Off CI they skip with the reason; under CI=true they FAIL,
so a CI machine that cannot run them can never look green.
"""
import os
import shutil
import tempfile

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# Layouts of compiled BPF programs (lispctl.datapath.prebuilt) go to a
# directory of this run, not /run/lispctl/bpf, and leave with it.
# Test modules also `import conftest`, which runs this again: make the
# directory only the first time (setdefault would evaluate mkdtemp anyway
# and leave an unused directory behind each time).
if "LISPCTL_BPF_CACHE" not in os.environ:
    os.environ["LISPCTL_BPF_CACHE"] = tempfile.mkdtemp(prefix="lispctl-test-bpf-")
_BPF_CACHE = os.environ["LISPCTL_BPF_CACHE"]


def pytest_sessionfinish(session, exitstatus) -> None:
    if _BPF_CACHE.startswith(tempfile.gettempdir() + "/lispctl-test-bpf-"):
        shutil.rmtree(_BPF_CACHE, ignore_errors=True)


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

"""ruff and mypy as part of the suite, so `make test` and CI enforce them.

Configuration lives in pyproject.toml: ruff's rule set, and mypy strict for
lispctl.wire and lispctl.roles (non-strict elsewhere). Both tools are test
dependencies; if one is missing, the environment is broken, so the test fails.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_ruff_clean():
    r = run("ruff", "check", "--no-cache", "controller", "tests")
    assert r.returncode == 0, f"ruff check controller tests:\n{r.stdout}{r.stderr}"


def test_mypy_clean():
    # Files and strictness come from [tool.mypy] in pyproject.toml.
    r = run("mypy")
    assert r.returncode == 0, f"mypy:\n{r.stdout}{r.stderr}"

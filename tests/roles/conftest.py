"""Fixtures for the role tests (helpers live in roles_helpers)."""
import pytest

from roles_helpers import MSMR, XTR, make


@pytest.fixture
def xtr():
    return make(XTR.format(alg="hmac-sha256"), wan1=["192.0.2.2"])


@pytest.fixture
def msmr():
    return make(MSMR.format(roles='["ms", "mr"]'))

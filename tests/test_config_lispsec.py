"""LISP-SEC configuration: per-resolver mode and key, [lisp-sec] itr-keys."""
import pytest

from lispctl.config import ConfigError, loads

from tests.test_config import MINIMAL_XTR, error_of

MSMR = ('instance = "m"\nroles = ["ms", "mr"]\n'
        '[[site]]\nname = "a"\nkeys = {1 = "site-key"}\n[[site.eid-prefix]]\nprefix = "10.9.0.0/16"\n')


def test_defaults_off():
    cfg = loads(MINIMAL_XTR)
    assert cfg.map_resolver[0].lisp_sec == "off" and cfg.lisp_sec.itr_keys == {}


@pytest.mark.parametrize("mode", ["on", "required"])
def test_resolver_modes(mode):
    cfg = loads(MINIMAL_XTR + f'lisp-sec = "{mode}"\nlisp-sec-key = "itr-key"\nlisp-sec-key-id = 3\n')
    mr = cfg.map_resolver[0]
    assert (mr.lisp_sec, mr.lisp_sec_key, mr.lisp_sec_key_id) == (mode, "itr-key", 3)


def test_mode_needs_key_and_known_value():
    err = error_of(MINIMAL_XTR + 'lisp-sec = "required"\n')
    assert "lisp-sec-key" in str(err) and err.problems[0].line
    err = error_of(MINIMAL_XTR + 'lisp-sec = "strict"\nlisp-sec-key = "x"\n')
    assert err.problems[0].path == "map-resolver[0].lisp-sec"


def test_itr_key_must_differ_from_register_key():
    # MINIMAL_XTR registers with key "k"
    err = error_of(MINIMAL_XTR + 'lisp-sec = "on"\nlisp-sec-key = "k"\n')
    assert err.problems[0].path == "map-resolver[0].lisp-sec-key" and "RFC 9303" in str(err)
    err = error_of(MSMR + '[lisp-sec]\nitr-keys = {1 = "site-key"}\n')
    assert err.problems[0].path == "lisp-sec.itr-keys"


def test_itr_keys_on_ms_mr_only():
    cfg = loads(MSMR + '[lisp-sec]\nitr-keys = {1 = "itr-key", 2 = "next"}\n')
    assert cfg.lisp_sec.itr_keys == {1: "itr-key", 2: "next"}
    err = error_of(MINIMAL_XTR + '[lisp-sec]\nitr-keys = {1 = "itr-key"}\n')
    assert "only used by the ms and mr roles" in str(err)


def test_algorithm_3_for_map_register():
    cfg = loads(MINIMAL_XTR.replace('key = "k"', 'key = "k"\nalgorithm = "hmac-sha256-hkdf"'))
    assert cfg.map_server[0].algorithm == "hmac-sha256-hkdf"


def test_examples_use_lisp_sec():
    from tests.test_config import EXAMPLES
    from lispctl.config import load
    xtr, msmr = load(EXAMPLES / "xtr.toml"), load(EXAMPLES / "ms-mr.toml")
    assert xtr.map_resolver[0].lisp_sec == "required"
    assert msmr.lisp_sec.itr_keys[xtr.map_resolver[0].lisp_sec_key_id] == xtr.map_resolver[0].lisp_sec_key


def test_algorithm_3_refused_with_nat_traversal():
    text = MINIMAL_XTR.replace('key = "k"', 'key = "k"\nalgorithm = "hmac-sha256-hkdf"') + "[nat]\nenabled = true\n"
    err = error_of(text)
    assert err.problems[0].path == "map-server[0].algorithm" and "Info-Request" in str(err)

"""LISP-SEC (RFC 9303) end to end in the `control` namespace lab: real
`lispctl up` daemons (MS/MR on msmr, xTRs on xtr1/xtr2) with every
[[map-resolver]] at `lisp-sec = "required"`; an attacker on the router
forges Map-Replies with the nonce it sniffed. Resolution works, only the
mapping system's signed answers are installed."""
from __future__ import annotations

from pathlib import Path

import pytest

from lispctl.lab import Lab, load
from lispctl.lab.scenarios import control as cp
from tests.conftest import need_root

pytestmark = pytest.mark.root

A4, B4 = "10.1.0.2", "10.2.0.2"
XTR1_RLOCS = ["198.51.100.1", "2001:db8:1::1"]
XTR2_RLOCS = ["2001:db8:2::2", "203.0.113.2"]
EVIL = "198.51.100.254"                      # the router's own address on xtr1's link
ITR_KEY = "lab-itr-mr-key"
RESOLVER = 'address = "192.0.2.10"\n'
SEC = f'lisp-sec = "required"\nlisp-sec-key = "{ITR_KEY}"\nlisp-sec-key-id = 4\n'
FORGER = str(Path(__file__).with_name("lispsec_forger.py"))


def _role(counters: dict, role: str) -> dict:
    return counters["roles"].get(role, {})


@pytest.fixture(scope="module")
def lab():
    need_root()
    with Lab(load("control")) as lab:
        configs = {"msmr": cp.render_config(lab, "msmr", cp.config_text(lab, "msmr")
                                            + f'\n[lisp-sec]\nitr-keys = {{ 4 = "{ITR_KEY}" }}\n', "lispsec")}
        for node in ("xtr1", "xtr2"):
            text = cp.config_text(lab, node)
            assert text.count(RESOLVER) == 2                # [[map-server]] and [[map-resolver]]
            head, tail = text.rsplit(RESOLVER, 1)
            configs[node] = cp.render_config(lab, node, head + RESOLVER + SEC + tail, "lispsec")
        cp.start_control_plane(lab, configs=configs)
        cp.wait_registered(lab, ("site1", "site2"))
        yield lab


def test_forged_replies_are_never_installed(lab):
    """The router, on path, sniffs xtr1's protected Map-Request and answers it
    with forgeries. So that the forgeries (not the genuine answer) meet the
    outstanding request, the router first blackholes the Map-Resolver: the
    request is seen but never answered by the mapping system."""
    blackhole = ["ip", "route", "add", "blackhole", f"{cp.MSMR_ADDR}/32"]
    assert lab.run("router", blackhole).returncode == 0
    try:
        forger = lab.start("router", "forger", [lab.expand("router", "{python}"), FORGER, cp.MSMR_ADDR,
                                                "10.2.0.0/24", EVIL, "20"], ready="ready", timeout=15)
        assert cp.ping(lab, "hostA", B4, count=1, timeout=0.2) == 0      # the miss: xtr1 asks
        forger.wait_ready("forged", 10)

        def refused():
            itr = _role(cp.counters(lab, "xtr1"), "itr")
            return itr if (itr.get("lisp_sec_reply_unsigned_dropped", 0) >= 1
                           and itr.get("lisp_sec_reply_bad_eid_hmac", 0) >= 1) else None
        itr = cp.eventually(refused, 5)
        assert itr, (_role(cp.counters(lab, "xtr1"), "itr"), forger.output())
        assert itr.get("lisp_sec_reply_ok", 0) == 0
        assert "10.2.0.0/24" not in cp.map_cache(lab, "xtr1")
    finally:
        lab.run("router", ["ip", "route", "del", "blackhole", f"{cp.MSMR_ADDR}/32"])
    # the mapping system is back: xtr1's next try (a new nonce and OTK) gets the signed answer
    got = cp.eventually(lambda: cp.ping(lab, "hostA", B4, count=1, timeout=0.5), 15)
    assert got == 1
    entry = cp.map_cache(lab, "xtr1")["10.2.0.0/24"]
    assert sorted(r["address"] for r in entry["rlocs"]) == XTR2_RLOCS
    assert _role(cp.counters(lab, "xtr1"), "itr").get("lisp_sec_reply_ok", 0) >= 1
    assert _role(cp.counters(lab, "xtr2"), "etr").get("lisp_sec_reply_signed", 0) >= 1
    ms = _role(cp.counters(lab, "msmr"), "ms")
    assert ms.get("lisp_sec_request_forwarded", 0) >= 1 and ms.get("lisp_sec_request_rx", 0) >= 1


def test_proxy_reply_is_signed_by_the_map_server(lab):
    # site1 registered with proxy-reply: xtr2 learns hostA's site from the MS's signed answer
    got = cp.eventually(lambda: cp.ping(lab, "hostB", A4, count=1, timeout=0.5), 10)
    assert got == 1
    entry = cp.map_cache(lab, "xtr2")["10.1.0.0/24"]
    assert sorted(r["address"] for r in entry["rlocs"]) == XTR1_RLOCS
    assert _role(cp.counters(lab, "xtr2"), "itr").get("lisp_sec_reply_ok", 0) >= 1
    assert _role(cp.counters(lab, "xtr1"), "etr").get("lisp_sec_reply_signed", 0) == 0


def _lig(lab, node: str, eid: str, *extra: str):
    return lab.run(node, [lab.expand(node, "{python}"), "-m", "lispctl.cli", "lig", eid, "--mr", cp.MSMR_ADDR,
                          "--json", "--timeout", "1", "--count", "2", *extra], timeout=30)


def test_lig_verifies_and_a_wrong_key_gets_no_answer(lab):
    import json
    out = _lig(lab, "xtr1", B4, "--lisp-sec-key", ITR_KEY, "--lisp-sec-key-id", "4")
    assert out.returncode == 0, out.stdout + out.stderr
    res = json.loads(out.stdout)
    assert res["lisp_sec"]["verified"] is True and res["reply_from"] == "203.0.113.2"   # xtr2's ETR signed
    before = _role(cp.counters(lab, "msmr"), "ms").get("lisp_sec_request_bad_otk", 0)
    out = _lig(lab, "xtr1", B4, "--lisp-sec-key", "a-guessed-key", "--lisp-sec-key-id", "4")
    assert out.returncode == 1, out.stdout + out.stderr        # the Map-Server drops what it cannot open
    assert _role(cp.counters(lab, "msmr"), "ms").get("lisp_sec_request_bad_otk", 0) >= before + 2

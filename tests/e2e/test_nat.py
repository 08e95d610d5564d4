"""NAT traversal end to end in the `nat` namespace lab: a real `lispctl up`
xTR behind an nftables masquerade NAT detects it with an Info-Request to a
real Map-Server daemon and sends its Map-Register to the RTR inside an ECM;
tshark reads every message on the wire. (The RTR role and data through it
are not implemented yet: the RTR node only has an address.)"""
from __future__ import annotations

import pytest

from lispctl.lab import Lab, load
from lispctl.lab import dataplane as dp
from lispctl.lab.scenarios import control as cp
from lispctl.lab.scenarios import nat as nt
from tests.conftest import need_root, unavailable

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def lab():
    need_root()
    import shutil
    if not shutil.which("nft"):
        unavailable("nft is not installed (Debian package nftables; scripts/setup.sh installs it)")
    with Lab(load("nat")) as lab:
        nt.nat_rules(lab)
        cp.start_node(lab, "msmr")
        yield lab


def _lisp(pkts):
    return [p for p in pkts if "lisp" in p]


def test_nat_detected_and_registration_sent_through_the_rtr(lab):
    with dp.capture(lab, "msmr", "eth0", "udp port 4342") as ms_pcap, \
            dp.capture(lab, "rtr", "eth0", "udp") as rtr_pcap:
        cp.start_node(lab, "mn")
        st = nt.wait_nat_state(lab, nt.PRIVATE_RLOC, "nat")
        assert st is not None, (nt.nat_state(lab), cp.log_tail(lab, "mn"))
        host, port = st["translated"].rsplit(":", 1)
        assert host == nt.NAT_PUBLIC and st["rtr"] == nt.RTR_RLOC
        nat = cp.eventually(lambda: (c := cp.counters(lab, "mn")["roles"].get("nat", {}))
                            .get("map_register_via_rtr_tx") and c, 10)
        assert nat and nat["info_reply_ok"] >= 1 and nat.get("info_reply_unknown_nonce", 0) == 0
        text = cp.cli(lab, "mn", "status").stdout
        assert f"{nt.PRIVATE_RLOC}: nat seen as {nt.NAT_PUBLIC}:{port}, RTR {nt.RTR_RLOC}" in text
    ms = cp.counters(lab, "msmr")["roles"]["ms"]
    assert ms["info_reply_tx"] >= 1 and ms.get("info_request_bad_auth", 0) == 0

    # At the MS: the Info-Request arrives from the NAT's address; the reply says so.
    pkts = _lisp(dp.tshark_json(ms_pcap))
    infos = [p for p in pkts if "lisp.info.r" in str(p["lisp"])]
    assert infos, pkts
    for p in infos:
        assert not dp.expert_problems(p), dp.expert_problems(p)
    req = next(p for p in infos if p["lisp"].get("lisp.info.r") in ("0", "False"))
    rep = next(p for p in infos if p["lisp"].get("lisp.info.r") in ("1", "True"))
    assert req["ip"]["ip.src"] == nt.NAT_PUBLIC and req["udp"]["udp.srcport"] == port
    text = str(rep["lisp"])
    assert f"'lisp.lcaf.natt.etrport': '{port}'" in text
    assert nt.NAT_PUBLIC in text and nt.RTR_RLOC in text and rep["ip"]["ip.dst"] == nt.NAT_PUBLIC

    # At the RTR: an ECM (NAT'd source) carrying the Map-Register with the
    # xTR-ID and the RTR as locator, as tshark reads it.
    pkts = _lisp(dp.tshark_json(rtr_pcap))
    def outer_src(p):
        ip = p["ip"][0] if isinstance(p["ip"], list) else p["ip"]
        return ip["ip.src"]
    ecms = [p for p in pkts if outer_src(p) == nt.NAT_PUBLIC and "lisp.ecm" in str(p)]
    assert ecms, pkts
    for p in ecms:
        assert not dp.expert_problems(p), dp.expert_problems(p)
    text = str(ecms[0])
    assert "0123456789abcdef0123456789abcdef" in text.replace(":", "")
    assert nt.RTR_RLOC in text and nt.PRIVATE_RLOC in text      # locator; inner source

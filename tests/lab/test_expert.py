"""What counts as a problem in a tshark dissection (lispctl.lab.dataplane.expert_problems)."""
from lispctl.lab import dataplane as dp

WARN, ERROR, NOTE = "6291456", "8388608", "4194304"


def _expert(sev: str, msg: str) -> dict:
    return {"_ws.expert": {"_ws.expert.severity": sev, "_ws.expert.message": msg}}


def test_malformed_and_bad_checksums_are_problems():
    pkt = {"lisp-data": {"_ws.malformed": ""},
           "udp": {"udp.checksum_tree": _expert(ERROR, "Bad checksum")},
           "ip": {"ip.flags_tree": _expert(NOTE, "a note")}}
    assert dp.expert_problems(pkt) == ["lisp-data/_ws.malformed",
                                       "udp/udp.checksum_tree/_ws.expert: Bad checksum"]


def test_tcp_sequence_analysis_is_not_a_wire_problem():
    # a segment the capture ring dropped on a busy machine shows as "previous
    # segment not captured" on the next one: the bytes are fine
    pkt = {"tcp": {"tcp.analysis": {"tcp.analysis.flags": _expert(WARN, "Previous segment(s) not captured")},
                   "tcp.checksum_tree": _expert(WARN, "Bad checksum")}}
    assert dp.expert_problems(pkt) == ["tcp/tcp.checksum_tree/_ws.expert: Bad checksum"]

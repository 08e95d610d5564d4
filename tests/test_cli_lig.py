"""`lispctl lig` against a scripted Map-Resolver on loopback."""
from __future__ import annotations

import ipaddress
import json

from typer.testing import CliRunner

from lispctl.cli import app
from lispctl.commands.lig import build_request, match_reply
from lispctl.mapping.types import EidPrefix, MapAction, Rloc
from lispctl.wire import (EncapsulatedControlMessage, MapReply, MapRequest, decode_control,
                          eid_record, record_prefix)
from tests.loopback_resolver import LoopbackResolver

runner = CliRunner()


class ScriptedResolver(LoopbackResolver):
    """Answers ECM'd Map-Requests like a Map-Resolver: to ITR-RLOC[0] at the
    inner source port. `drop_first` requests are ignored (to test retries);
    a stray reply with a wrong nonce is sent before every real one."""

    def __init__(self, negative: bool, drop_first: int = 0, answer: bool = True):
        self.negative, self.drop_first, self.answer = negative, drop_first, answer
        self.requests: list[EncapsulatedControlMessage] = []
        super().__init__()

    def on_request(self, ecm):
        self.requests.append(ecm)
        if len(self.requests) <= self.drop_first or not self.answer:
            return
        req: MapRequest = ecm.message
        prefix = record_prefix(req.records[0])
        if self.negative:
            rec = eid_record(EidPrefix(prefix.iid, ipaddress.ip_network("10.0.0.0/8")),
                             ttl=15, act=MapAction.NATIVELY_FORWARD)
        else:
            rec = eid_record(EidPrefix(prefix.iid, ipaddress.ip_network("10.1.0.0/16")),
                             [Rloc(ipaddress.ip_address("192.0.2.1"), 1, 60),
                              Rloc(ipaddress.ip_address("192.0.2.2"), 2, 40, reachable=False)],
                             ttl=1440, authoritative=True)
        self.to_itr(ecm, MapReply(req.nonce ^ 1, (rec,)).encode())
        self.to_itr(ecm, MapReply(req.nonce, (rec,)).encode())


def _lig(port, *args):
    return runner.invoke(app, ["lig", *args, "--mr", "127.0.0.1", "--port", str(port),
                               "--timeout", "0.5"])


def test_request_is_an_ecm_with_our_rloc_port_and_nonce():
    src = ipaddress.ip_address("192.0.2.7")
    ecm = decode_control(build_request(EidPrefix.parse("[5]10.1.1.1/32"), src, 40000, 0xABCDEF))
    assert isinstance(ecm, EncapsulatedControlMessage)
    assert (ecm.inner_src, str(ecm.inner_dst), ecm.inner_sport, ecm.inner_dport) == \
        (src, "10.1.1.1", 40000, 4342)
    assert ecm.message.nonce == 0xABCDEF and ecm.message.itr_rlocs == (src,)
    assert record_prefix(ecm.message.records[0]) == EidPrefix.parse("[5]10.1.1.1/32")
    reply = MapReply(0xABCDEF, ()).encode()
    assert match_reply(reply, {0xABCDEF}) is not None
    assert match_reply(reply, {0xABCDEE}) is None
    assert match_reply(b"\x20garbage", {0xABCDEF}) is None


def test_positive_reply_table_and_json():
    mr = ScriptedResolver(negative=False)
    try:
        res = _lig(mr.port, "10.1.1.1")
        assert res.exit_code == 0, res.output
        assert "10.1.0.0/16, record ttl: 1440 min, auth bit: 1" in res.output
        assert "192.0.2.1  up     1/60" in res.output
        assert "192.0.2.2  down   2/40" in res.output
        res = _lig(mr.port, "10.1.1.1", "--iid", "7", "--json")
        assert res.exit_code == 0, res.output
        out = json.loads(res.output)
    finally:
        mr.close()
    assert out["eid"] == "[7]10.1.1.1/32" and out["rtt_ms"] > 0
    assert out["records"][0]["eid"] == "[7]10.1.0.0/16"
    assert [(l["address"], l["state"]) for l in out["records"][0]["locators"]] == \
        [("192.0.2.1", "up"), ("192.0.2.2", "down")]
    assert record_prefix(mr.requests[-1].message.records[0]) == EidPrefix.parse("[7]10.1.1.1/32")


def test_negative_reply_after_a_lost_request():
    mr = ScriptedResolver(negative=True, drop_first=1)
    try:
        res = _lig(mr.port, "10.200.0.1", "--json")
    finally:
        mr.close()
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["records"] == [{"eid": "10.0.0.0/8", "ttl_minutes": 15, "action": "natively-forward",
                               "authoritative": False, "map_version": 0, "locators": []}]
    assert len(mr.requests) == 2
    assert mr.requests[0].message.nonce != mr.requests[1].message.nonce


def test_no_reply_exits_1():
    mr = ScriptedResolver(negative=True, answer=False)
    try:
        res = runner.invoke(app, ["lig", "10.1.1.1", "--mr", "127.0.0.1", "--port", str(mr.port),
                                  "--count", "2", "--timeout", "0.2"])
    finally:
        mr.close()
    assert res.exit_code == 1
    assert "no map-reply" in res.output
    assert len(mr.requests) == 2

"""`lispctl lig --lisp-sec-key`: a LISP-SEC protected lookup against a
scripted Map-Resolver/Map-Server on loopback that opens the one-time key
with the same key and signs its answer (or does not)."""
from __future__ import annotations

import ipaddress
import json

from typer.testing import CliRunner

from lispctl.cli import app
from lispctl.mapping.types import EidPrefix, Rloc
from lispctl.roles import lispsec as sec
from lispctl.roles.common import Counters
from lispctl.wire import MapReply, eid_record
from tests.loopback_resolver import LoopbackResolver

runner = CliRunner()
KEY = "lig-itr-key"


class SigningResolver(LoopbackResolver):
    def __init__(self, sign: bool):
        self.sign = sign
        self.protected = []
        super().__init__()

    def on_request(self, ecm):
        self.protected.append(ecm.security and bool(ecm.auth))
        req = ecm.message
        # the ETR claims the /16; the Map-Server vouches for the /24 only
        reply = MapReply(req.nonce, (eid_record(EidPrefix.parse("10.1.0.0/16"),
                                                [Rloc(ipaddress.ip_address("192.0.2.1"))], ttl=60),))
        payload = reply.encode()
        op, why = sec.open_request(ecm, {3: KEY}, Counters())
        if self.sign and op is not None:
            payload = sec.ms_signed(reply, op, sec.ms_eid_ad(op, [EidPrefix.parse("10.1.0.0/24")]))
        self.to_itr(ecm, payload)


def _lig(port, *args):
    return runner.invoke(app, ["lig", "10.1.0.9", "--mr", "127.0.0.1", "--port", str(port), "--timeout", "0.5",
                               "--count", "1", *args])


def test_verified_reply_is_narrowed_to_the_eid_ad():
    mr = SigningResolver(sign=True)
    try:
        res = _lig(mr.port, "--lisp-sec-key", KEY, "--lisp-sec-key-id", "3", "--json")
        text = _lig(mr.port, "--lisp-sec-key", KEY, "--lisp-sec-key-id", "3")
    finally:
        mr.close()
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["lisp_sec"]["verified"] is True
    assert [r["eid"] for r in out["records"]] == ["10.1.0.0/24"]
    assert "LISP-SEC: verified" in text.output and text.exit_code == 0
    assert mr.protected == [True, True]


def test_unsigned_reply_exits_3():
    mr = SigningResolver(sign=False)
    try:
        res = _lig(mr.port, "--lisp-sec-key", KEY, "--lisp-sec-key-id", "3")
        plain = _lig(mr.port)
    finally:
        mr.close()
    assert res.exit_code == 3 and "LISP-SEC: NOT VERIFIED" in res.output
    assert plain.exit_code == 0 and "LISP-SEC" not in plain.output and mr.protected == [True, False]


def test_wrong_key_is_refused_by_the_resolver():
    mr = SigningResolver(sign=True)
    try:
        res = _lig(mr.port, "--lisp-sec-key", "not-the-key", "--lisp-sec-key-id", "3")
    finally:
        mr.close()
    # our scripted resolver cannot open it and answers unsigned: lig refuses that
    assert res.exit_code == 3

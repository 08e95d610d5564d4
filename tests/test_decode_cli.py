"""`lispctl decode`: JSON lines from captures we write (pcap and pcapng;
Ethernet, Linux cooked and raw IP; IPv4 and IPv6), a corrupt packet in the
middle, a truncated file, and --key verification."""
from __future__ import annotations

import io
import json
import subprocess
import sys
from ipaddress import IPv4Address as V4, IPv6Address as V6
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lispctl import wire as w
from lispctl.capture import PcapngWriter, PcapWriter, ip_udp
from lispctl.capture.layers import LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2, LINKTYPE_RAW
from lispctl.cli import app

KEY = "s3cret"
RLOC4 = ("192.0.2.10", "198.51.100.20")
RLOC6 = ("2001:db8::10", "2001:db8:1::20")
REC = w.EidRecord(V4("10.1.0.0"), 16, (w.LocatorRecord(V4("192.0.2.10"), 1, 100, 255, 0, True, False, True),
                                       w.LocatorRecord(V6("2001:db8::10"), 2, 50)), 1440, 0, True, 3)
REC_IID = w.EidRecord(w.InstanceId(77, V6("fd00:1::")), 48, (w.LocatorRecord(V4("192.0.2.10")),), 60)
REGISTER = w.sign(w.MapRegister(0x1122334455667788, (REC, REC_IID), 1, w.ALG_HMAC_SHA256,
                                want_map_notify=True, xtr_id=0xABC, site_id=7), KEY)
NOTIFY_BAD = w.sign(w.MapNotify(0x99, (REC,), 1, w.ALG_HMAC_SHA1), "other-key")
REQUEST = w.MapRequest(0xDEAD, (w.RequestRecord(V4("10.1.2.3"), 32),), (V4("192.0.2.10"), V6("2001:db8::10")),
                       V4("10.9.0.1"), smr=True)
ECM = w.EncapsulatedControlMessage(REQUEST, V4("10.9.0.1"), V4("10.1.2.3"), 61000, 4342, to_ms=True)
DATA = w.DataHeader(True, True, False, False, True, 0, 0x123456, instance_id=77, lsb=1).encode() + \
    ip_udp("10.9.0.1", "10.1.2.3", 1000, 80, b"payload")


def run(*args: str) -> tuple[int, list[dict], str]:
    r = CliRunner().invoke(app, ["decode", *args])
    lines = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    return r.exit_code, lines, r.output


def write_pcap(path: Path, linktype: int, rlocs=RLOC4, **kw) -> None:
    with open(path, "wb") as f:
        pw = PcapWriter(f, linktype, **kw)
        pw.write_udp(*rlocs, 4342, 4342, REGISTER)
        pw.write_udp(*rlocs, 4342, 4342, b"\x30\x00\x00\x05" + bytes(8))   # corrupt: truncated Map-Register
        pw.write_udp(*rlocs, 61000, 53, b"not lisp")
        pw.write_udp(*rlocs, 4342, 4342, ECM.encode())
        pw.write_udp(*rlocs, 5555, 4341, DATA, udp_checksum=False)
        pw.write_udp(rlocs[1], rlocs[0], 4342, 61000, NOTIFY_BAD)


@pytest.mark.parametrize("linktype", [LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2, LINKTYPE_RAW])
@pytest.mark.parametrize("rlocs", [RLOC4, RLOC6], ids=["v4", "v6"])
def test_decode_pcap(tmp_path, linktype, rlocs):
    p = tmp_path / "c.pcap"
    write_pcap(p, linktype, rlocs, nanosecond=True)
    code, lines, out = run(str(p))
    assert code == 0, out
    assert [x["frame"] for x in lines] == [1, 2, 4, 5, 6]           # frame 3 is DNS
    reg, bad, ecm, data, notify = lines
    assert (reg["src"], reg["dst"], reg["sport"], reg["dport"]) == (*rlocs, 4342, 4342)
    assert reg["type"] == "Map-Register" and reg["type_num"] == 3
    assert reg["flags"] == {"P": False, "S": False, "I": True, "M": True}
    assert reg["nonce"] == "0x1122334455667788"
    assert (reg["key_id"], reg["algorithm_id"], reg["auth_data_length"]) == (1, 2, 32)
    assert reg["xtr_id"] == "0x" + "0" * 29 + "abc" and reg["site_id"] == "0x0000000000000007"
    r0, r1 = reg["records"]
    assert (r0["eid_prefix"], r0["record_ttl"], r0["act"], r0["A"], r0["map_version"]) == \
        ("10.1.0.0/16", 1440, 0, True, 3)
    assert r0["locators"][0] == {"priority": 1, "weight": 100, "m_priority": 255, "m_weight": 0,
                                 "L": True, "p": False, "R": True, "locator": "192.0.2.10"}
    assert r0["locators"][1]["locator"] == "2001:db8::10"
    assert (r1["instance_id"], r1["eid_prefix"]) == (77, "fd00:1::/48")
    assert "auth" not in reg                                           # no --key given

    assert bad["frame"] == 2 and bad["error"] == "truncated Map-Register header at offset 0"
    assert set(bad) == {"frame", "time", "src", "dst", "sport", "dport", "error"}

    assert ecm["type"] == "Encapsulated-Control-Message" and ecm["flags"]["M"] is True
    assert ecm["inner_header"]["src"] == "10.9.0.1" and ecm["inner_header"]["sport"] == 61000
    inner = ecm["message"]
    assert inner["type"] == "Map-Request" and inner["flags"]["S"] is True
    assert inner["itr_rlocs"] == ["192.0.2.10", "2001:db8::10"] and inner["irc"] == 1
    assert inner["records"] == [{"eid_mask_len": 32, "eid_prefix": "10.1.2.3/32", "eid_afi": 1}]
    assert inner["source_eid"] == "10.9.0.1" and inner["nonce"] == "0x000000000000dead"

    assert data["type"] == "Data" and data["dport"] == 4341
    assert data["flags"] == {"N": True, "L": True, "E": False, "V": False, "I": True}
    assert (data["nonce"], data["instance_id"], data["lsb"]) == ("0x123456", 77, "0x01")
    assert data["inner"]["dst"] == "10.1.2.3"

    assert notify["type"] == "Map-Notify" and notify["sport"] == 4342 and notify["dport"] == 61000


def test_key_verification(tmp_path):
    p = tmp_path / "c.pcap"
    write_pcap(p, LINKTYPE_ETHERNET)
    _, lines, _ = run(str(p), "--key", KEY)
    by_frame = {x["frame"]: x for x in lines}
    assert by_frame[1]["auth"] == "ok"
    assert by_frame[6]["auth"] == "bad"                # signed with another key
    assert "auth" not in by_frame[4] and "auth" not in by_frame[5]
    _, lines, _ = run(str(p), "--key", "wrong")
    assert {x["frame"]: x.get("auth") for x in lines}[1] == "bad"
    _, lines, _ = run(str(p), "--key", "wrong", "--key", "other-key")
    got = {x["frame"]: x.get("auth") for x in lines}
    assert (got[1], got[6]) == ("bad", "ok")


def test_key_verification_inside_ecm_and_tampering(tmp_path):
    reg = w.sign(w.MapRegister(5, (REC,), 1, w.ALG_HMAC_SHA1), KEY)
    inner = w.decode_control(reg)
    ecm = w.EncapsulatedControlMessage(inner, V6("2001:db8::1"), V6("2001:db8::2"), 4342, 4342).encode()
    tampered = bytearray(REGISTER)
    tampered[-1] ^= 1
    p = tmp_path / "e.pcapng"
    with open(p, "wb") as f:
        pw = PcapngWriter(f)
        pw.add_interface(LINKTYPE_RAW)
        pw.write_udp(*RLOC4, 4342, 4342, ecm)
        pw.write_udp(*RLOC4, 4342, 4342, bytes(tampered))
        pw.write_udp(*RLOC4, 4342, 4342, w.MapRegister(6, (REC,)).encode())     # algorithm 0
    _, lines, _ = run(str(p), "-k", KEY)
    assert lines[0]["message"]["auth"] == "ok"
    assert lines[1]["auth"] == "bad"
    assert lines[2]["auth"] == "none"


def test_pcapng_multiple_interfaces_big_endian(tmp_path):
    p = tmp_path / "m.pcapng"
    with open(p, "wb") as f:
        pw = PcapngWriter(f, big_endian=True)
        eth = pw.add_interface(LINKTYPE_ETHERNET)
        sll = pw.add_interface(LINKTYPE_LINUX_SLL2, tsresol=9)
        pw.write_udp(*RLOC6, 4342, 4342, REQUEST.encode(), interface=sll, ts_ns=1_700_000_000_123_456_789)
        pw.write_udp(*RLOC4, 4342, 4342, REGISTER, interface=eth, vlans=(10,))
    code, lines, _ = run(str(p))
    assert code == 0
    assert [(x["frame"], x["type"], x["src"]) for x in lines] == [
        (1, "Map-Request", RLOC6[0]), (2, "Map-Register", RLOC4[0])]
    assert lines[0]["time"] == 1700000000.123456789


def test_truncated_file_reports_and_exits_zero(tmp_path):
    buf = io.BytesIO()
    pw = PcapWriter(buf)
    pw.write_udp(*RLOC4, 4342, 4342, REQUEST.encode())
    pw.write_udp(*RLOC4, 4342, 4342, REGISTER)
    p = tmp_path / "t.pcap"
    p.write_bytes(buf.getvalue()[:-10])
    code, lines, out = run(str(p))
    assert code == 0, out
    assert lines[0]["type"] == "Map-Request"
    assert lines[1]["frame"] == 2 and "truncated file" in lines[1]["error"]
    assert len(lines) == 2


@pytest.mark.parametrize("content", [b"", b"GIF89a this is not a capture"])
def test_not_a_capture_exits_non_zero(tmp_path, content):
    p = tmp_path / "x.bin"
    p.write_bytes(content)
    code, lines, out = run(str(p))
    assert code == 2 and not lines
    assert "not a" in out
    code, _, out = run(str(tmp_path / "missing.pcap"))
    assert code == 2 and "cannot read" in out


def test_installed_command_and_head_pipe(tmp_path):
    """The console script works end to end, and closing stdout early is quiet."""
    p = tmp_path / "c.pcap"
    write_pcap(p, LINKTYPE_ETHERNET)
    exe = Path(sys.executable).with_name("lispctl")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "lispctl.cli"]
    r = subprocess.run([*cmd, "decode", str(p), "--key", KEY], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert len(lines) == 5 and lines[0]["auth"] == "ok"
    r = subprocess.run(f"{' '.join(cmd)} decode {p} | head -1", shell=True, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and "Traceback" not in r.stderr and len(r.stdout.splitlines()) == 1


def test_snaplen_truncated_frames_are_decoded_as_far_as_they_go(tmp_path):
    """8.16: a capture with a short snaplen keeps the first bytes of each
    frame: decode what is there, mark it (tshark does the same)."""
    p = tmp_path / "snap.pcap"
    with open(p, "wb") as f:
        pw = PcapWriter(f, LINKTYPE_RAW, snaplen=130)
        full = ip_udp(*RLOC4, 4342, 4342, REGISTER)
        # the first record (52 bytes from offset 48) fits in 130 - 28 bytes, the second not
        pw.write_frame(full[:130], orig_len=len(full))
        reply = w.MapReply(5, (REC, REC)).encode()
        full2 = ip_udp(*RLOC4, 4342, 4342, reply)
        pw.write_frame(full2[:28 + 12 + 10], orig_len=len(full2))       # cut inside the first record
    code, lines, out = run(str(p))
    assert code == 0, out
    reg, rep = lines
    assert reg["type"] == "Map-Register" and reg["truncated"] == {"captured": 102, "missing": len(REGISTER) - 102}
    assert reg["record_count"] == 2 and reg["records_decoded"] == 1
    assert reg["records"][0]["eid_prefix"] == "10.1.0.0/16" and reg["nonce"] == "0x1122334455667788"
    assert rep["type"] == "Map-Reply" and rep["records_decoded"] == 0 and rep["record_count"] == 2
    assert rep["nonce"] == "0x0000000000000005"


def test_truncated_mac_is_decoded_and_marked(tmp_path):
    """8.16: a Map-Register whose MAC length does not match its algorithm
    (12 bytes with HMAC-SHA-1, as some old peers send)."""
    good = w.MapRegister(0x77, (REC,), 1, w.ALG_HMAC_SHA1, auth_data=bytes(20)).encode()
    bad = good[:14] + (12).to_bytes(2, "big") + bytes(range(12)) + good[36:]
    p = tmp_path / "mac.pcap"
    with open(p, "wb") as f:
        PcapWriter(f, LINKTYPE_RAW).write_udp(*RLOC4, 4342, 4342, bad)
    code, lines, out = run(str(p), "--key", KEY)
    (reg,) = lines
    assert reg["type"] == "Map-Register" and "error" not in reg
    assert reg["algorithm_id"] == 1 and reg["auth_data_length"] == 12 and reg["auth_data"] == bytes(range(12)).hex()
    assert reg["auth_data_length_mismatch"] == {"expected": 20}
    assert reg["records"][0]["eid_prefix"] == "10.1.0.0/16" and reg["auth"] == "bad"


def test_corrupt_but_not_snapped_frame_is_still_an_error(tmp_path):
    p = tmp_path / "bad.pcap"
    with open(p, "wb") as f:
        full = ip_udp(*RLOC4, 4342, 4342, REGISTER)
        PcapWriter(f, LINKTYPE_RAW).write_frame(full[:120])              # orig_len == captured
    code, lines, out = run(str(p))
    (only,) = lines
    assert "truncated" in only["error"] and "records" not in only


def test_change_priority_message_is_shown(tmp_path):
    cpm = w.sign_cpm(w.ChangePriority(V4("10.9.0.5"), 32, 1, 1_700_000_000_000, 0xAB, (V4("10.1.0.2"),),
                                      key_id=3), KEY)
    p = tmp_path / "cpm.pcap"
    with open(p, "wb") as f:
        pw = PcapWriter(f)
        pw.write_udp(*RLOC4, 40000, 4342, cpm)
        pw.write_udp(*RLOC4, 40000, 4342, cpm[:-1])                # MAC cut short
    code, lines, out = run(str(p))
    assert code == 0, out
    good, cut = lines
    assert good["sub_type"] == 4095
    assert good["change_priority"] == {
        "eid": "10.9.0.5", "mask_len": 32, "priority": 1, "timestamp_ms": 1_700_000_000_000,
        "nonce": "00000000000000ab", "correspondents": ["10.1.0.2"], "key_id": 3, "alg_id": 2,
        "auth_data": cpm[-32:].hex()}
    assert "malformed" in cut["change_priority"]

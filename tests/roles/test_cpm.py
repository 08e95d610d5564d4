"""Change-Priority Message receiver (roles/cpm.py): an authenticated, fresh
CPM changes our locators' priority, re-registers at once and SMRs the usual
targets and the correspondents' ITRs; anything else changes nothing and is
counted."""
from __future__ import annotations

import dataclasses

from lispctl.mapping.types import EidPrefix, MapAction, Rloc
from lispctl.wire import (ChangePriority, EncapsulatedControlMessage, MapRegister, MapReply, MapRequest,
                          decode_control, eid_record, record_prefix, request_record, sign_cpm)

from roles_helpers import A, ep, make, sends

P = EidPrefix.parse
KEY = "hv-key"
WALL = 1_700_000_000.0          # Unix time at monotonic 0 in these tests
XTR = f"""
instance = "dc2"
roles = ["xtr"]
[[database]]
eid-prefix = "10.9.0.5/32"
[[database.locator]]
address = "192.0.2.2"
priority = 255
[[database]]
eid-prefix = "10.20.0.0/24"
[[database.locator]]
address = "192.0.2.2"
[[map-server]]
address = "198.51.100.10"
key-id = 1
key = "ms-key"
[[map-resolver]]
address = "198.51.100.10"
[cpm]
keys = {{ 3 = "{KEY}" }}
"""
VM = P("10.9.0.5/32")
CORR = A("10.1.0.2")               # the VM's correspondent, behind ITR 203.0.113.7
CORR_ITR = A("203.0.113.7")
HV = ep("192.0.2.100", 40000)      # the hypervisor


def setup():
    _, roles = make(XTR)
    cpm = roles["cpm"]
    cpm.wall_clock = lambda now: WALL + now
    roles["etr"].start(0.0)
    roles["itr"].start(0.0)
    return roles, cpm


def cpm_bytes(t=10.0, priority=1, corr=(CORR,), key=KEY, key_id=3, nonce=42, eid=A("10.9.0.5"), ml=32):
    return sign_cpm(ChangePriority(eid, ml, priority, int((WALL + t) * 1000), nonce, corr, key_id), key)


def send(cpm, raw, t=10.0, src=HV):
    return cpm.handle(raw, src, ep("192.0.2.2"), t)


def msgs(effects):
    return [(s, decode_control(s.payload)) for s in sends(effects)]


def smr_dsts(effects):
    return [s.dst.addr for s, m in msgs(effects) if isinstance(m, MapRequest) and m.smr]


def vm_priorities(roles):
    return [r.priority for r in roles["etr"].site.db.get(VM).rlocs]


def test_accepted_cpm_changes_priority_registers_and_smrs():
    roles, cpm = setup()
    # an ITR asked us for the VM earlier (a usual SMR target)
    asker = A("203.0.113.50")
    roles["etr"].handle(MapRequest(9, (request_record(VM),), (asker,)).encode(), ep(str(asker)), ep("192.0.2.2"), 1.0)
    roles["itr"].cache.install(P("10.1.0.0/16"), (Rloc(CORR_ITR, 1, 100), Rloc(A("203.0.113.8"), 255, 0)),
                               MapAction.NO_ACTION, 600.0, 1.0)
    out = send(cpm, cpm_bytes())
    assert vm_priorities(roles) == [1]
    regs = [m for _, m in msgs(out) if isinstance(m, MapRegister)]
    assert len(regs) == 1
    rec = next(r for r in regs[0].records if record_prefix(r) == VM)
    assert [loc.priority for loc in rec.locators] == [1]
    dsts = smr_dsts(out)
    assert sorted(dsts) == sorted([asker, CORR_ITR])             # not the priority-255 locator
    smr = next(m for s, m in msgs(out) if s.dst.addr == CORR_ITR)
    # OOR's form: the changed prefix in the Source-EID, the receiver's own EID in the record
    assert record_prefix(smr.records[0]) == P("10.1.0.0/16") and list(smr.itr_rlocs) == [A("192.0.2.2")]
    assert smr.source_eid == A("10.9.0.5")
    assert cpm.counters["cpm_accepted"] == 1
    assert cpm.snapshot()["priority"] == {"10.9.0.5/32": 1}
    # the override survives a rebuild of the database (an address event)
    roles["etr"].set_interface_addresses("wan9", [A("192.0.2.99")], 11.0)
    assert vm_priorities(roles) == [1]


def test_unresolved_correspondent_is_resolved_then_smrd():
    roles, cpm = setup()
    out = send(cpm, cpm_bytes())
    ecms = [m for _, m in msgs(out) if isinstance(m, EncapsulatedControlMessage)]
    assert len(ecms) == 1 and record_prefix(ecms[0].message.records[0]) == P("10.1.0.2/32")
    assert cpm.snapshot()["resolving"] == 1
    reply = MapReply(ecms[0].message.nonce,
                     (eid_record(P("10.1.0.0/16"), (Rloc(CORR_ITR, 1, 100),), ttl=10),)).encode()
    roles["itr"].handle(reply, ep("203.0.113.7"), ep("192.0.2.2"), 10.1)     # the ITR is fed first
    out = cpm.handle(reply, ep("203.0.113.7"), ep("192.0.2.2"), 10.1)
    assert smr_dsts(out) == [CORR_ITR]
    assert cpm.snapshot()["resolving"] == 0


def test_unresolved_correspondent_gives_up_after_the_timeout():
    roles, cpm = setup()
    send(cpm, cpm_bytes())
    assert cpm.next_deadline() == 10.0 + 5.0
    assert cpm.tick(15.0) == []
    assert cpm.counters["cpm_correspondent_unresolved"] == 1


def refused(counter, raw, t=10.0, src=HV, cpm_roles=None):
    roles, cpm = cpm_roles or setup()
    before = vm_priorities(roles)
    out = send(cpm, raw, t, src)
    assert sends(out) == []
    assert vm_priorities(roles) == before
    assert cpm.counters[counter] == 1, cpm.counters
    assert cpm.counters["cpm_accepted"] == 0
    return roles, cpm


def test_wrong_key_changes_nothing():
    refused("cpm_bad_auth", cpm_bytes(key="guess"))


def test_unknown_key_id_changes_nothing():
    refused("cpm_bad_auth", cpm_bytes(key_id=4))


def test_altered_priority_changes_nothing():
    raw = bytearray(cpm_bytes())
    raw[9] = 0                              # priority byte, after signing
    refused("cpm_bad_auth", bytes(raw))


def test_sha1_is_not_accepted():
    raw = sign_cpm(dataclasses.replace(ChangePriority(A("10.9.0.5"), 32, 1, int((WALL + 10) * 1000), 1),
                                       key_id=3, alg_id=1), KEY)
    refused("cpm_bad_auth", raw)


def test_replayed_cpm_changes_nothing():
    roles, cpm = setup()
    raw = cpm_bytes()
    send(cpm, raw)
    roles["etr"].site.set_priority(VM, 200)        # changed since (e.g. a later move)
    out = send(cpm, raw, 12.0)
    assert sends(out) == [] and vm_priorities(roles) == [200]
    assert cpm.counters["cpm_replayed"] == 1


def test_stale_and_future_timestamps_change_nothing():
    refused("cpm_stale", cpm_bytes(t=10.0), t=41.0)
    refused("cpm_stale", cpm_bytes(t=41.0), t=10.0)


def test_replay_after_the_guard_is_forgotten_is_stale():
    roles, cpm = setup()
    raw = cpm_bytes()
    send(cpm, raw)
    send(cpm, cpm_bytes(t=75.0, nonce=43), 75.0)   # forgets guards older than 2 x skew
    assert len(cpm.guards) == 1
    out = send(cpm, raw, 75.0)
    assert sends(out) == [] and cpm.counters["cpm_stale"] == 1


def test_eid_not_in_database_changes_nothing():
    refused("cpm_unknown_eid", cpm_bytes(eid=A("10.9.0.6")))
    refused("cpm_unknown_eid", cpm_bytes(eid=A("10.20.0.0"), ml=16))   # exact entries only


def test_malformed_and_foreign_shared_extensions_are_counted():
    refused("cpm_malformed", cpm_bytes()[:40])
    _, cpm = setup()
    assert send(cpm, b"\xf0\x01hello") == []
    assert cpm.counters["shared_extension_not_cpm"] == 1


def test_rate_limit_per_source():
    roles, cpm = setup()
    for i in range(20):
        send(cpm, cpm_bytes(nonce=i, key="guess"), 10.0)
    assert cpm.counters["cpm_rate_limited"] >= 10
    assert cpm.counters["cpm_bad_auth"] <= 10      # MACs checked: only what the bucket allowed
    assert cpm.counters["cpm_accepted"] == 0


def test_same_priority_again_still_smrs_correspondents_but_does_not_register():
    roles, cpm = setup()
    roles["itr"].cache.install(P("10.1.0.0/16"), (Rloc(CORR_ITR, 1, 100),), MapAction.NO_ACTION, 600.0, 1.0)
    send(cpm, cpm_bytes())
    out = send(cpm, cpm_bytes(nonce=43), 11.0)
    assert smr_dsts(out) == [CORR_ITR]
    assert not any(isinstance(m, MapRegister) for _, m in msgs(out))
    assert cpm.counters["cpm_priority_unchanged"] == 1


def test_no_cpm_role_without_the_section():
    _, roles = make(XTR.split("[cpm]")[0])
    assert "cpm" not in roles


def test_config_rules():
    import pytest

    from lispctl.config import ConfigError, loads
    cfg = loads(XTR.replace('keys = { 3 = "hv-key" }', 'keys = { 3 = "hv-key", 65535 = "other" }\nmax-skew = 5'))
    assert cfg.cpm.keys == {3: "hv-key", 65535: "other"} and cfg.cpm.max_skew == 5
    with pytest.raises(ConfigError, match="only used by the xtr/etr"):
        loads('instance = "m"\nroles = ["ms"]\n[[site]]\nname = "s"\nkeys = { 1 = "k" }\n'
              '[[site.eid-prefix]]\nprefix = "10.0.0.0/8"\n[cpm]\nkeys = { 1 = "k" }\n')
    with pytest.raises(ConfigError):
        loads(XTR.replace('keys = { 3 = "hv-key" }', 'keys = {}'))

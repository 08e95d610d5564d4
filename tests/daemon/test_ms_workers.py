"""`[ms] workers = 2`: a real `lispctl up` MS/MR on loopback whose
Map-Registers are served by two forked worker processes (docs/daemon.md,
"A Map-Server on several cores"): the steering program, the union in the
main process, counters, worker death and respawn (union kept until its
TTL, replays still refused), reload, config bounds."""
from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lispctl.cli import app
from lispctl.config import ConfigError, load
from lispctl.daemon.udp import REQUEST_QUEUES, register_worker_of
from lispctl.mapping.types import EidPrefix, Rloc
from lispctl.wire import ALG_HMAC_SHA256, MapNotify, MapRegister, decode_control, eid_record, sign

runner = CliRunner()
N_SITES = 40
TIMEOUT_S = 4.0          # registration-timeout: short, so the expiry tests are quick

HEAD = """
instance = "{instance}"
roles = ["ms", "mr"]
control-addresses = ["127.0.0.1"]
[ms]
workers = 2
registration-timeout = {timeout}
"""


def site_toml(i: int) -> str:
    return (f'[[site]]\nname = "s{i}"\nkeys = {{ 1 = "key-{i}" }}\n'
            f'[[site.eid-prefix]]\nprefix = "10.{i}.0.0/16"\n')


def config(instance: str, n: int) -> str:
    return HEAD.format(instance=instance, timeout=TIMEOUT_S) + "".join(site_toml(i) for i in range(n))


def register(i: int, nonce: int | None = None, rloc: str | None = None, xtr: int | None = None,
             eid: EidPrefix | None = None, priority: int = 1) -> bytes:
    rloc = rloc or f"127.0.0.{2 + i % 50}"
    rec = eid_record(eid or EidPrefix.parse(f"10.{i}.0.0/16"), [Rloc(ipaddress.ip_address(rloc), priority, 100)],
                     ttl=1440)
    msg = MapRegister(secrets.randbits(64) if nonce is None else nonce, (rec,), key_id=1,
                      alg_id=ALG_HMAC_SHA256, want_map_notify=True, proxy_reply=True,
                      xtr_id=(0xABC << 100) | i if xtr is None else xtr, site_id=0)
    return sign(msg, f"key-{i}")


@pytest.fixture(scope="module")
def ms():
    run_dir = Path(tempfile.mkdtemp(prefix=f"lispctl-msw-{os.getpid()}-"))
    instance = f"msw{os.getpid()}"
    cfg = run_dir / "ms.toml"
    cfg.write_text(config(instance, N_SITES))
    log = open(run_dir / "daemon.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "lispctl.cli", "up", "-c", str(cfg),
                             "--run-dir", str(run_dir), "--control-port", "0"],
                            stdout=subprocess.PIPE, stderr=log, text=True)
    pids: list[int] = []
    try:
        line = proc.stdout.readline()
        assert line.strip() == "ready", (run_dir / "daemon.log").read_text()
        st = _api(run_dir, "status")
        port = int(st["control"][0].rsplit(":", 1)[1])
        env = {"run_dir": run_dir, "port": port, "proc": proc, "cfg": cfg, "instance": instance,
               "log": run_dir / "daemon.log", "pids": pids}
        pids.extend(w["pid"] for w in st["ms_workers"])
        yield env
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(10)
        proc.stdout.close()
        log.close()
        for pid in pids:         # every worker the test saw must be gone with the daemon
            assert not _alive(pid), f"worker {pid} outlived the daemon"
        shutil.rmtree(run_dir, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _api(run_dir: Path, *cmd: str):
    res = runner.invoke(app, [*cmd, "--json", "--run-dir", str(run_dir)])
    assert res.exit_code == 0, res.output
    return json.loads(res.output)


def _until(cond, timeout: float = 10.0, what: str = ""):
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        assert time.monotonic() < deadline, f"timed out waiting for {what or cond}"
        time.sleep(0.05)


def _send_and_notify(env, data: bytes, src: str, timeout: float = 2.0) -> MapNotify | None:
    """Send from src (an RLOC of the record: the Map-Notify comes back there)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.bind((src, 0))
        s.sendto(data, ("127.0.0.1", env["port"]))
        try:
            reply, _ = s.recvfrom(65535)
        except socket.timeout:
            return None
    msg = decode_control(reply)
    assert isinstance(msg, MapNotify)
    return msg


def _lig(env, eid: str):
    res = runner.invoke(app, ["lig", eid, "--mr", "127.0.0.1", "--port", str(env["port"]),
                              "--timeout", "1", "--json"])
    assert res.exit_code == 0, res.output + env["log"].read_text()[-3000:]
    [rec] = json.loads(res.output)["records"]
    return [loc["address"] for loc in rec["locators"]]


def _ms_counters(env) -> dict:
    return _api(env["run_dir"], "counters")["roles"]["ms"]


def _workers(env) -> list[dict]:
    return _api(env["run_dir"], "status")["ms_workers"]


def test_registrations_from_many_sources_land_on_both_workers_and_the_main_answers_for_all(ms):
    before = _ms_counters(ms).get("map_register_ok", 0)
    shards = set()
    for i in range(N_SITES):
        data = register(i)
        shards.add(register_worker_of(data, 2))
        notify = _send_and_notify(ms, data, f"127.0.0.{2 + i % 50}")
        assert notify is not None, f"site {i}: no Map-Notify"
    assert shards == {0, 1}, "the test's sites should hash to both workers"
    # the union in the main process answers Map-Requests for every site
    for i in range(N_SITES):
        assert _until(lambda: _lig(ms, f"10.{i}.1.1"), what=f"site {i} in the union") == [f"127.0.0.{2 + i % 50}"]
    # counters: the workers' add up (they report every second)
    _until(lambda: _ms_counters(ms).get("map_register_ok", 0) - before == N_SITES, what="counters")
    per_worker = _until(lambda: all(w["map_register_rx"] for w in _workers(ms)) and _workers(ms))
    assert sum(w["map_register_rx"] for w in per_worker) >= N_SITES
    sites = {s["name"]: s for s in _api(ms["run_dir"], "sites")}
    assert all(sites[f"s{i}"]["registers"] >= 1 for i in range(N_SITES))
    assert _api(ms["run_dir"], "counters")["daemon"]["ms_workers"] == 2
    text = runner.invoke(app, ["status", "--run-dir", str(ms["run_dir"])]).output
    assert [line.split()[2] for line in text.splitlines() if line.startswith("ms worker")] == ["0:", "1:"]


def test_a_worker_killed_keeps_its_registrations_in_the_union_until_their_ttl_and_replays_stay_refused(ms):
    i = 7
    shard = register_worker_of(register(i), 2)
    src = f"127.0.0.{2 + i % 50}"
    m1, m2, m3 = register(i), register(i), register(i)      # the ETR varies its nonce
    assert _send_and_notify(ms, m1, src) is not None
    fast = _api(ms["run_dir"], "counters")["daemon"].get("fast_path", 0)
    assert _send_and_notify(ms, m2, src) is not None
    assert _send_and_notify(ms, m3, src) is not None
    registered_at = time.monotonic()
    # m2 and m3 are refreshes: the worker answered them through its fast
    # path (MapServerRole.refresh), which journals what a successor refuses
    _until(lambda: _api(ms["run_dir"], "counters")["daemon"].get("fast_path", 0) == fast + 2,
           what="two fast-path refreshes counted")
    base = _ms_counters(ms)
    restarts = _api(ms["run_dir"], "counters")["daemon"]["ms_worker_restarts"]
    old = _workers(ms)[shard]["pid"]
    os.kill(old, signal.SIGKILL)
    # still answered right after its worker died
    assert _lig(ms, f"10.{i}.2.2") == [src]
    new = _until(lambda: (w := _workers(ms)[shard])["serving"] and w["pid"] != old and w["pid"], what="respawn")
    ms["pids"].append(new)
    assert _api(ms["run_dir"], "counters")["daemon"]["ms_worker_restarts"] == restarts + 1
    # every message the dead worker accepted is a replay for its successor:
    # no Map-Notify, counted, and nothing refreshed
    for m in (m1, m2, m3):
        assert _send_and_notify(ms, m, src, timeout=0.5) is None
    _until(lambda: _ms_counters(ms).get("map_register_replayed", 0)
           - base.get("map_register_replayed", 0) == 3, what="replays counted")
    # the union keeps it at least half the timeout after the worker died
    # (the worker reports a registration again before the main process's
    # copy comes that close to expiring), never past its own timeout
    _until(lambda: _lig(ms, f"10.{i}.2.2") == [], timeout=TIMEOUT_S + 3, what="expiry in the union")
    gone_after = time.monotonic() - registered_at
    assert TIMEOUT_S / 2 - 0.3 <= gone_after <= TIMEOUT_S + 1.5, gone_after    # (+ polling on a busy machine)
    # a new message of the site registers it again through the new worker
    assert _send_and_notify(ms, register(i), src) is not None
    assert _until(lambda: _lig(ms, f"10.{i}.2.2")) == [src]


def test_a_first_message_replayed_after_a_restart_is_refused_once_the_registrant_moved_on(ms):
    i = 23
    src = f"127.0.0.{2 + i % 50}"
    xtr = (0xDEF << 100) | i                          # a registrant the workers have not seen
    shard = register_worker_of(register(i, xtr=xtr), 2)
    m1 = register(i, xtr=xtr)
    assert _send_and_notify(ms, m1, src) is not None
    old = _workers(ms)[shard]["pid"]
    os.kill(old, signal.SIGKILL)                     # before the registrant's second message
    new = _until(lambda: (w := _workers(ms)[shard])["serving"] and w["pid"] != old and w["pid"], what="respawn")
    ms["pids"].append(new)
    assert _send_and_notify(ms, register(i, xtr=xtr), src) is not None
    before = _ms_counters(ms).get("map_register_replayed", 0)
    assert _send_and_notify(ms, m1, src, timeout=0.5) is None
    assert _ms_counters(ms).get("map_register_replayed", 0) == before + 1


def test_a_refreshed_registration_outlives_main_s_first_copy_and_expires_with_its_worker(ms):
    """Refreshes that change nothing cross no process boundary; the worker
    reports the later expiry before the main process's copy runs out."""
    i = 11
    src = f"127.0.0.{2 + i % 50}"
    started = time.monotonic()
    while time.monotonic() - started < 1.5 * TIMEOUT_S:
        last = time.monotonic()
        assert _send_and_notify(ms, register(i), src) is not None
        assert _lig(ms, f"10.{i}.0.1") == [src]
        time.sleep(0.5)
    _until(lambda: _lig(ms, f"10.{i}.0.1") == [], timeout=TIMEOUT_S + 3, what="expiry")
    assert TIMEOUT_S - 0.3 <= time.monotonic() - last <= TIMEOUT_S + 1.5


def test_reload_restarts_the_workers_with_the_new_sites(ms):
    before = [w["pid"] for w in _workers(ms)]
    restarts = _api(ms["run_dir"], "counters")["daemon"]["ms_worker_restarts"]
    ms["cfg"].write_text(config(ms["instance"], N_SITES + 2))       # two more sites
    res = runner.invoke(app, ["reload", "--run-dir", str(ms["run_dir"])])
    assert res.exit_code == 0, res.output
    def replaced():
        ws = _workers(ms)
        return all(w["serving"] and w["pid"] not in before for w in ws) and ws
    after = _until(replaced, what="new workers")
    ms["pids"].extend(w["pid"] for w in after)
    i = N_SITES + 1
    assert _send_and_notify(ms, register(i), f"127.0.0.{2 + i % 50}") is not None
    assert _until(lambda: _lig(ms, f"10.{i}.3.3")) == [f"127.0.0.{2 + i % 50}"]
    assert _api(ms["run_dir"], "counters")["daemon"]["ms_worker_restarts"] == restarts   # not crashes


@pytest.mark.parametrize("bind", ["127.0.0.1", "::1"])
def test_the_steering_program_sends_registers_to_the_worker_of_their_first_eid(bind):
    """In-process: the reuseport group's worker sockets, read directly."""
    from lispctl.daemon.runtime import Runtime
    from .fakes import FakeRole
    from .test_runtime import _has_ipv6_loopback
    if ":" in bind and not _has_ipv6_loopback():
        pytest.skip("no IPv6 loopback")
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET

    async def main():
        rt = Runtime([("ms", FakeRole())], control_port=0, binds=[bind], workers=3)
        rt.start()
        try:
            socks = [w[0] for w in rt.sockets.worker_sockets]
            assert len(rt.sockets.request_sockets) == REQUEST_QUEUES
            to = (bind, rt.sockets.port)
            expect: dict[int, set] = {0: set(), 1: set(), 2: set()}
            eids = [EidPrefix(iid, ipaddress.ip_network(net)) for iid in (0, 77) for net in
                    [f"10.{i}.0.0/16" for i in range(20)] + [f"2001:db8:{i:x}::/48" for i in range(20)]]
            sent = 0
            for i, eid in enumerate(eids):
                # another locator priority: the same worker (only the EID is hashed)
                for prio in (1, 2):
                    data = register(i % 50, rloc="127.0.0.9", eid=eid, priority=prio)
                    expect[register_worker_of(data, 3)].add(data)
                    for _ in range(2):         # again, from another source port
                        with socket.socket(family, socket.SOCK_DGRAM) as t:
                            t.sendto(data, to)
                        sent += 1
                assert register_worker_of(register(i % 50, eid=eid, priority=1), 3) == \
                    register_worker_of(register(i % 50, eid=eid, priority=2), 3)
            got: dict[int, set] = {0: set(), 1: set(), 2: set()}
            counts = [0, 0, 0]
            for _ in range(100):
                for k, ws in enumerate(socks):
                    try:
                        while True:
                            got[k].add(ws.recv(65535))
                            counts[k] += 1
                    except BlockingIOError:
                        pass
                if sum(counts) == sent:
                    break
                await asyncio.sleep(0.02)
            assert got == expect and all(len(v) > len(eids) / 2 for v in expect.values())
            return rt.counters["datagrams_rx"]
        finally:
            rt.close()
    assert asyncio.run(main()) == 0          # nothing reached this process's sockets


@pytest.mark.parametrize("n", [0, 65])
def test_workers_out_of_bounds_is_a_clear_config_error(tmp_path, n):
    cfg = tmp_path / "ms.toml"
    cfg.write_text(HEAD.format(instance="x", timeout=TIMEOUT_S).replace("workers = 2", f"workers = {n}")
                   + site_toml(0))
    with pytest.raises(ConfigError) as err:
        load(cfg)
    assert "ms.workers" in str(err.value) and ("greater than or equal to 1" in str(err.value)
                                               or "less than or equal to 64" in str(err.value))


def test_a_worker_holds_only_its_own_sockets(ms):
    """Not the main process's: an API client or a metrics scrape waiting
    for end of file must not wait for a worker, nor the pidfile's lock."""
    for w in _workers(ms):
        links = [os.readlink(f"/proc/{w['pid']}/fd/{fd}") for fd in os.listdir(f"/proc/{w['pid']}/fd")]
        sockets = [x for x in links if x.startswith("socket:")]
        # its control socket, its stream to the main process, its loop's self-pipe
        assert len(sockets) <= 4, links
        assert not any(x.endswith(".pid") or x.endswith(".sock") for x in links), links


def test_workers_do_not_outlive_a_killed_daemon(tmp_path):
    cfg = tmp_path / "ms.toml"
    cfg.write_text(config(f"mswk{os.getpid()}", 2))
    with open(tmp_path / "daemon.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "lispctl.cli", "up", "-c", str(cfg),
                                 "--run-dir", str(tmp_path), "--control-port", "0"],
                                stdout=subprocess.PIPE, stderr=log, text=True)
        try:
            assert proc.stdout.readline().strip() == "ready", (tmp_path / "daemon.log").read_text()
            pids = [w["pid"] for w in _api(tmp_path, "status")["ms_workers"]]
            assert len(pids) == 2 and all(_alive(p) for p in pids)
            proc.kill()                      # no clean-up by the daemon: the workers must notice
            proc.wait(10)
            _until(lambda: not any(_alive(p) for p in pids), timeout=5, what="workers gone")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
            proc.stdout.close()


@pytest.mark.parametrize("roles, why", [('["ms", "mr", "rtr"]', "roles are only ms and mr"),
                                        ('["mr"]', "only used by the ms role")])
def test_workers_on_other_devices_are_a_config_error(tmp_path, roles, why):
    cfg = tmp_path / "ms.toml"
    cfg.write_text(HEAD.format(instance="x", timeout=TIMEOUT_S).replace('["ms", "mr"]', roles)
                   + "[rtr]\nmap-servers = [\"192.0.2.1\"]\n" * ("rtr" in roles)
                   + '[[mr.map-server]]\naddress = "192.0.2.1"\neid-prefix = ["10.0.0.0/8"]\n' * ("ms" not in roles)
                   + site_toml(0) * ("ms" in roles))
    with pytest.raises(ConfigError) as err:
        load(cfg)
    assert any(p.path == "ms.workers" and why in p.message for p in err.value.problems), str(err.value)

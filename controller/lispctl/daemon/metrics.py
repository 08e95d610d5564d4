"""Prometheus metrics: an HTTP endpoint on the address `[metrics] listen` names.

Nothing is counted twice: a custom collector reads, at scrape time, the
counters the daemon, the roles and the data plane keep anyway (the same ones
`lispctl counters` shows) and computes the gauges from the live state. Only
the two histograms are fed as things happen, through the ITR's `observe`
hook (one call per accepted Map-Reply).

The HTTP server runs on the daemon's event loop (not prometheus_client's
thread), so collecting reads the roles' state without racing the loop. It
answers `GET /metrics` (and `/`), HTTP/1.0 style: one request per connection.
An underlay attacker may reach it if it listens on a public address, so
requests are bounded (header size, a read timeout, concurrent connections).
Names and labels: docs/metrics.md.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from typing import Any, Iterable

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from lispctl.config.models import parse_listen

log = logging.getLogger("lispctl.daemon")

MAX_REQUEST = 8192         # bytes of request line + headers
READ_TIMEOUT_S = 5.0
MAX_CONNECTIONS = 16
# Map-Request round trips on a LAN are sub-millisecond; through a busy
# mapping system seconds. Miss-to-install adds the ring-buffer hop.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def _family(eid: Any) -> str:
    return "ipv4" if eid.prefix.version == 4 else "ipv6"


class LispctlCollector(Collector):
    """Everything but the histograms, read from the running daemon at scrape time."""

    def __init__(self, instance: str, runtime: Any, datapath: Any = None) -> None:
        self.instance = instance
        self.rt = runtime
        self.dp = datapath
        self.errors = 0

    def collect(self) -> Iterable:
        parts = (self._process, self._daemon, self._roles, self._map_cache, self._itr, self._etr,
                 self._ms, self._datapath)
        for part in parts:
            try:
                yield from part()
            except Exception:
                # a broken part costs its metrics, never the scrape
                self.errors += 1
                log.exception("metrics: collecting %s failed", part.__name__)
        yield CounterMetricFamily("lispctl_metrics_collect_errors", "Parts of a scrape that failed",
                                  value=self.errors)

    def _roles_named(self, *names: str):
        return [(n, r) for n, r in self.rt.roles if n in names]

    def _process(self):
        info = GaugeMetricFamily("lispctl_info", "The running device (value 1)",
                                 labels=["instance", "roles", "datapath"])
        info.add_metric([self.instance, ",".join(n for n, _ in self.rt.roles),
                         "attached" if self.dp is not None else "none"], 1)
        yield info
        yield GaugeMetricFamily("lispctl_start_time_seconds", "Start of the daemon, Unix time",
                                value=self.rt.started_wall)

    def _daemon(self):
        fam = CounterMetricFamily("lispctl_daemon_events", "Daemon event counters (lispctl counters: daemon)",
                                  labels=["event"])
        pool = getattr(self.rt, "ms_workers", None)
        counts = Counter(self.rt.counters)
        if pool is not None:            # Map-Server workers: as they last reported (each second)
            counts.update({k: v for k, v in pool.daemon_counters().items() if not k.startswith("socket_")})
        for name, value in sorted(counts.items()):
            fam.add_metric([name], value)
        yield fam
        sock = dict(self.rt.socket_counters())
        if pool is not None:
            for k, v in pool.daemon_counters().items():
                if k.startswith("socket_") and k[7:] in sock:
                    sock[k[7:]] += v
        for key, name, text in (("rx", "lispctl_control_datagrams_received", "Control datagrams received"),
                                ("tx", "lispctl_control_datagrams_sent", "Control datagrams sent"),
                                ("send_errors", "lispctl_control_send_errors", "Control datagrams not sent")):
            if key in sock:
                yield CounterMetricFamily(name, text, value=sock[key])
        queues = {k[len("queue_drops_"):]: v for k, v in sock.items() if k.startswith("queue_drops_")}
        if queues:
            fam = CounterMetricFamily("lispctl_control_queue_drops", "Datagrams the kernel dropped because a "
                                      "control socket's receive queue was full", labels=["queue"])
            for queue, value in sorted(queues.items()):
                fam.add_metric([queue], value)
            yield fam
        if "request_sockets" in sock:
            yield GaugeMetricFamily("lispctl_control_request_sockets", "Sockets Map-Requests are steered to",
                                    value=sock["request_sockets"])

    def _roles(self):
        fam = CounterMetricFamily("lispctl_role_events", "Protocol event counters of each role "
                                  "(lispctl counters: roles)", labels=["role", "event"])
        pool = getattr(self.rt, "ms_workers", None)
        for name, role in self.rt.roles:
            counters = getattr(role, "counters", None)
            if pool is not None and name == "ms":
                counters = Counter(counters or {})
                counters.update(pool.role_counters())
            for event, value in sorted((counters or {}).items()):
                fam.add_metric([name, event], value)
        yield fam

    def _map_cache(self):
        counts: Counter = Counter()
        for eid, entry in list(self.rt.cache.items()):
            counts[_family(eid), "positive" if entry.rlocs else "negative"] += 1
        fam = GaugeMetricFamily("lispctl_map_cache_entries", "Mappings installed in the data plane",
                                labels=["family", "type"])
        for fam_name in ("ipv4", "ipv6"):
            for kind in ("positive", "negative"):
                fam.add_metric([fam_name, kind], counts[fam_name, kind])
        yield fam

    def _itr(self):
        itrs = self._roles_named("itr")
        if not itrs:
            return
        _, itr = itrs[0]
        yield GaugeMetricFamily("lispctl_itr_pending_requests", "Destinations being resolved",
                                value=len(itr.pending))
        yield GaugeMetricFamily("lispctl_itr_held_down", "Destinations held down after unanswered requests",
                                value=len(itr.holddown))
        yield GaugeMetricFamily("lispctl_itr_subscriptions", "Publish/subscribe subscriptions (RFC 9437)",
                                value=len(itr.subs))
        probes = itr.prober.snapshot(self.rt.now()) if itr.prober.enabled else []
        up = GaugeMetricFamily("lispctl_rloc_probe_locators", "Remote locators under RLOC probing",
                               labels=["state"])
        up.add_metric(["up"], sum(1 for p in probes if p["reachable"]))
        up.add_metric(["down"], sum(1 for p in probes if not p["reachable"]))
        yield up

    def _etr(self):
        etrs = self._roles_named("etr")
        if not etrs:
            return
        snap = etrs[0][1].snapshot()
        locs = GaugeMetricFamily("lispctl_etr_locators", "Our own locators (all database prefixes)",
                                 labels=["state"])
        states = [r["reachable"] for m in snap["database"] for r in m["rlocs"]]
        locs.add_metric(["up"], sum(1 for s in states if s))
        locs.add_metric(["down"], sum(1 for s in states if not s))
        yield locs
        reg = GaugeMetricFamily("lispctl_etr_registered", "1 while the Map-Server holds our registration",
                                labels=["map_server"])
        for ms in snap["map_servers"]:
            reg.add_metric([ms["address"]], 1 if ms["registered"] else 0)
        yield reg
        yield GaugeMetricFamily("lispctl_etr_smr_targets", "ITRs that receive our SMRs",
                                value=len(snap["smr_targets"]))

    def _ms(self):
        mss = self._roles_named("ms")
        if not mss:
            return
        snap = mss[0][1].snapshot()
        site = GaugeMetricFamily("lispctl_ms_site_registered", "1 while a configured site has a registration",
                                 labels=["site"])
        regs = GaugeMetricFamily("lispctl_ms_registrations", "Registrations held, per site", labels=["site"])
        registered = 0
        for s in snap["sites"]:
            n = sum(len(p["registrations"]) for p in s["eid_prefixes"])
            registered += n > 0
            site.add_metric([s["name"]], 1 if n else 0)
            regs.add_metric([s["name"]], n)
        yield site
        yield regs
        yield GaugeMetricFamily("lispctl_ms_sites", "Configured sites", value=len(snap["sites"]))
        yield GaugeMetricFamily("lispctl_ms_sites_registered", "Configured sites with a registration",
                                value=registered)
        yield GaugeMetricFamily("lispctl_ms_subscriptions", "Publish/subscribe subscribers (RFC 9437)",
                                value=len(snap["subscriptions"]))

    def _datapath(self):
        if self.dp is None:
            return
        c = self.dp.counters()
        # names from the BPF program's enum lisp_counter (bpf/lisp_maps.h)
        for name, value in (("encapsulated", c.encapsulated), ("decapsulated", c.decapsulated),
                            ("miss", c.miss), *sorted(c.other.items())):
            metric = f"lispctl_datapath_{name}" if "events" in name else f"lispctl_datapath_{name}_packets"
            yield CounterMetricFamily(metric, f"Data plane counter {name} (docs/metrics.md)", value=value)
        drops = CounterMetricFamily("lispctl_datapath_dropped_packets", "Data plane drops by reason",
                                    labels=["reason"])
        for reason, value in sorted(c.drops.items()):
            drops.add_metric([reason], value)
        yield drops


class Metrics:
    """The registry, the histograms and the HTTP endpoint of one daemon."""

    def __init__(self, instance: str, runtime: Any, datapath: Any = None) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.collector = LispctlCollector(instance, runtime, datapath)
        self.registry.register(self.collector)
        self.map_request_rtt = Histogram(
            "lispctl_map_request_rtt_seconds", "Map-Request sent to its Map-Reply accepted (ITR)",
            registry=self.registry, buckets=BUCKETS)
        self.miss_to_install = Histogram(
            "lispctl_miss_to_install_seconds", "First Map-Request for a miss to its mapping installed (ITR)",
            registry=self.registry, buckets=BUCKETS)
        self._hist = {"map_request_rtt": self.map_request_rtt, "miss_to_install": self.miss_to_install}
        self._server: asyncio.Server | None = None
        self._busy = 0
        self.refused = 0
        for _, role in runtime.roles:
            if hasattr(role, "observe"):
                role.observe = self.observe

    def observe(self, name: str, seconds: float) -> None:
        hist = self._hist.get(name)
        if hist is not None and seconds >= 0:
            hist.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    async def start(self, listen: str) -> str:
        host, port = parse_listen(listen)
        # host None: one socket per family (asyncio makes IPv6 sockets V6ONLY)
        self._server = await asyncio.start_server(self._client, host or None, port, limit=MAX_REQUEST,
                                                  reuse_address=True)
        where = ", ".join(f"[{n[0]}]:{n[1]}" if ":" in n[0] else f"{n[0]}:{n[1]}"
                          for n in (s.getsockname() for s in self._server.sockets))
        log.info("metrics on http://%s/metrics", where)
        return where

    def port(self) -> int:
        assert self._server is not None
        return self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._busy >= MAX_CONNECTIONS:
            self.refused += 1
            writer.close()
            return
        self._busy += 1
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT_S)
            except (asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                    ConnectionError):
                return
            parts = head.split(b"\r\n", 1)[0].split()
            if len(parts) != 3 or parts[0] not in (b"GET", b"HEAD"):
                await self._reply(writer, 405, b"method not allowed\n", "text/plain")
                return
            path = parts[1].split(b"?", 1)[0]
            if path not in (b"/metrics", b"/"):
                await self._reply(writer, 404, b"not found: try /metrics\n", "text/plain")
                return
            t0 = time.perf_counter()
            body = self.render()
            log.debug("metrics scrape: %d bytes in %.1f ms", len(body), (time.perf_counter() - t0) * 1000)
            await self._reply(writer, 200, b"" if parts[0] == b"HEAD" else body, CONTENT_TYPE_LATEST,
                              length=len(body))
        finally:
            self._busy -= 1
            writer.close()

    @staticmethod
    async def _reply(writer: asyncio.StreamWriter, code: int, body: bytes, ctype: str,
                     length: int | None = None) -> None:
        reason = {200: "OK", 404: "Not Found", 405: "Method Not Allowed"}[code]
        head = (f"HTTP/1.1 {code} {reason}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body) if length is None else length}\r\nConnection: close\r\n\r\n")
        writer.write(head.encode() + body)
        try:
            await asyncio.wait_for(writer.drain(), READ_TIMEOUT_S)
        except (asyncio.TimeoutError, ConnectionError):
            pass

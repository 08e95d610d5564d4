"""Test traffic without external tools: ICMP echo and a checked TCP transfer.

The functions named *_here run in the caller's network namespace; use them
through Lab.call(node, fn, ...). `python -m lispctl.lab.traffic sink PORT` is
a TCP sink that answers each connection with the SHA-256 of what it received,
so a sender knows every byte arrived intact (not just that bytes moved).
"""
from __future__ import annotations

import hashlib
import ipaddress
import os
import select
import socket
import struct
import sys
import time


def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def ping_here(dst: str, count: int = 3, timeout: float = 1.0, size: int = 56, src: str | None = None) -> int:
    """ICMP/ICMPv6 echo (from `src` if given); returns how many replies came back."""
    v6 = ipaddress.ip_address(dst).version == 6
    if v6:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
        req, rep = 128, 129
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        req, rep = 8, 0
    ident = os.getpid() & 0xFFFF
    got = 0
    if src:
        sock.bind((src, 0))
    with sock:
        for seq in range(count):
            payload = os.urandom(size)
            hdr = struct.pack("!BBHHH", req, 0, 0, ident, seq)
            # the kernel fills in the ICMPv6 checksum (it needs the pseudo-header)
            pkt = hdr + payload if v6 else struct.pack("!BBHHH", req, 0, _csum(hdr + payload), ident, seq) + payload
            try:
                sock.sendto(pkt, (dst, 0))
            except OSError:  # no route / unreachable: no reply for this one
                continue
            deadline = time.monotonic() + timeout
            while (left := deadline - time.monotonic()) > 0:
                if not select.select([sock], [], [], left)[0]:
                    break
                data = sock.recv(65535)
                icmp = data if v6 else data[(data[0] & 0x0F) * 4:]
                if len(icmp) >= 8:
                    t, _, _, i, s = struct.unpack("!BBHHH", icmp[:8])
                    if t == rep and i == ident and s == seq and icmp[8:] == payload:
                        got += 1
                        break
    return got


def tcp_send_here(dst: str, port: int, nbytes: int, timeout: float = 10.0, src: str | None = None) -> dict:
    """Send nbytes to a sink; returns sent count, seconds and whether the sink's digest matched."""
    block = os.urandom(1 << 16)
    h = hashlib.sha256()
    t0 = time.monotonic()
    with socket.create_connection((dst, port), timeout=timeout,
                                  source_address=(src, 0) if src else None) as s:
        sent = 0
        while sent < nbytes:
            chunk = block[: min(len(block), nbytes - sent)]
            s.sendall(chunk)
            h.update(chunk)
            sent += len(chunk)
        s.shutdown(socket.SHUT_WR)
        reply = b""
        while len(reply) < 64:
            part = s.recv(64 - len(reply))
            if not part:
                break
            reply += part
    return {"sent": sent, "seconds": time.monotonic() - t0, "intact": reply.decode() == h.hexdigest()}


def sink(port: int) -> None:
    srv = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    srv.bind(("::", port))
    srv.listen(8)
    print("ready", flush=True)
    while True:
        conn, peer = srv.accept()
        with conn:
            conn.settimeout(30)
            h, n = hashlib.sha256(), 0
            try:
                while data := conn.recv(1 << 16):
                    h.update(data)
                    n += len(data)
                conn.sendall(h.hexdigest().encode())
            except OSError as exc:
                print(f"{peer[0]}: {exc}", flush=True)
                continue
        print(f"{peer[0]}: {n} bytes", flush=True)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "sink":
        sink(int(sys.argv[2]))
    else:
        sys.exit("usage: python -m lispctl.lab.traffic sink PORT")


def iperf3(lab, client: str, server: str, dst: str, seconds: float = 2.0, *, udp: bool = False,
           length: int | None = None, parallel: int = 1, bitrate: str | None = None,
           port: int = 5201, extra: list[str] | None = None,
           cpus: tuple[int, int] | None = None) -> dict:
    """One iperf3 run from `client` to `server` (listening on dst); iperf3's JSON result.

    Lab-level helper (not *_here): starts a one-shot server process in the
    server node and runs the client in the client node. cpus=(client, server)
    pins each process to one CPU (taskset), so a comparison does not depend
    on where the scheduler happens to put them.
    """
    import json as _json
    name = f"iperf3-s-{port}"
    pin_c, pin_s = ([["taskset", "-c", str(c)] for c in cpus] if cpus else [[], []])
    lab.start(server, name, pin_s + ["iperf3", "-s", "-1", "--forceflush", "-p", str(port)],
              ready="Server listening on", timeout=10)
    try:
        argv = pin_c + ["iperf3", "-c", dst, "-p", str(port), "-t", str(seconds), "-J", "-P", str(parallel)]
        if udp:
            argv += ["-u", "-b", bitrate or "0"]
        elif bitrate:
            argv += ["-b", bitrate]
        if length:
            argv += ["-l", str(length)]
        argv += extra or []
        cp = lab.run(client, argv, timeout=seconds + 30)
        try:
            result = _json.loads(cp.stdout)
        except ValueError:
            raise RuntimeError(f"iperf3 gave no JSON ({cp.returncode}): {cp.stdout[-500:]}{cp.stderr[-500:]}")
        if "error" in result:
            raise RuntimeError(f"iperf3 {dst}: {result['error']}")
        return result
    finally:
        lab.stop(server, name)


def iperf3_gbps(result: dict) -> float:
    end = result["end"]
    summary = end.get("sum_received") or end.get("sum")
    return summary["bits_per_second"] / 1e9


def trafgen_config(src_mac: str, dst_mac: str, src: str, dst: str, payload: int = 64,
                   dport: int = 9) -> str:
    """A trafgen packet: UDP with `payload` bytes; the source port walks 1024..2047
    so flow hashes (outer UDP source port, RSS, GRO) see many flows."""
    if ":" in dst:
        ip = f"ipv6(sa={src}, da={dst}, hl=64)"
    else:
        ip = f"ipv4(sa={src}, da={dst}, ttl=64, df)"
    return (f"{{ eth(sa={src_mac}, da={dst_mac}), {ip}, "
            f"udp(sp=dinc(1024, 2047), dp={dport}), fill(0x42, {payload}) }}\n")


def link_stats(lab, node: str, ifname: str) -> dict:
    """rx/tx packet and byte counters of an interface (netlink, no sysfs needed)."""
    with lab.ipr(node) as ipr:
        link = ipr.get_links(ipr.link_lookup(ifname=ifname)[0])[0]
    st = link.get("IFLA_STATS64")
    return {k: st[k] for k in ("rx_packets", "tx_packets", "rx_bytes", "tx_bytes", "rx_dropped", "tx_dropped")}


def mac_of(lab, node: str, ifname: str) -> str:
    with lab.ipr(node) as ipr:
        return ipr.get_links(ipr.link_lookup(ifname=ifname)[0])[0].get("IFLA_ADDRESS")

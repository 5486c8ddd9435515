"""Benchmark: new connections per second through the firewall service, offloaded to the target.

A veth pair plays the service port: this script is the pipeline's end (it sends
service-encapsulated TCP SYNs of distinct connections from a raw socket), the fast path polls
the other end through net_af_packet, and a ServiceController follows its flow records and
writes both directions of every allowed connection into the software target's flow_cache
over P4Runtime. Figures:

- connections/s: SYNs sent until every connection's two flow_cache entries are in the target
  (fast path decision + flow record + controller + P4Runtime write);
- resimulation of ~100,000 tracked flows after a policy change that disallows half of them:
  the fast path's RESIMULATE, the controller's re-check of its offloaded flows (flow_cache holds
  65,536 entries, so at most 32,768 flows are offloaded) and the whole `load_policy` call,
  deletes of the cut flows' entries included.

Needs root (veth, AF_PACKET) and a fast path backend (the DPDK binary or the numba drop-in).

    .venv/bin/python bench/bench_service.py [--connections 5000] [--flows 100000]
        [--backend auto|dpdk|numba] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import struct
import subprocess
import time
from collections.abc import Sequence
from typing import Any

from controlplane.flows import FlowStore
from controlplane.policy import load_policy, resolve
from controlplane.service import ServiceController, ServiceOptions, choose_backend
from offload import names
from offload.names import Reason
from offload.p4client import P4Client
from offload.p4schema import P4Schema
from offload.packetio import ServiceHeader, encapsulate

try:
    from bench import common
except ImportError:  # run as a script: bench/ itself is on sys.path
    import common  # type: ignore[no-redef]

SERVICE_PORT = 3
POLICY = """
version: 1
sections:
  - name: s
    rules:
      - {name: web, source: any, destination: 10.2.0.0/16, protocol: tcp, ports: [%s],
         action: allow}
default_action: drop
"""
_IP = struct.Struct("!BBHHHBBH4s4s")
_TCP = struct.Struct("!HHIIBBHHH")


def _checksum(data: bytes) -> int:
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def syn(i: int) -> bytes:
    """Connection i's SYN, service-encapsulated: 10.1.x.y:sport -> 10.2.0.1:80 or :81."""
    src = bytes([10, 1, (i >> 16) & 0xFF, (i >> 8) & 0xFF])
    sport = 1024 + (i & 0xFF) * 200 + (i >> 24)
    dst = bytes([10, 2, 0, 1])
    tcp = _TCP.pack(sport, 80 + (i & 1), 1, 0, 5 << 4, 0x02, 65535, 0, 0)
    ip = bytearray(_IP.pack(0x45, 0, 40, 0, 0x4000, 64, 6, 0, src, dst))
    ip[10:12] = struct.pack("!H", _checksum(bytes(ip)))
    eth = bytes.fromhex("0200000000020200000000010800")
    header = ServiceHeader(1, 2, Reason.PUNT, 0, 0, 0)
    return encapsulate(eth + bytes(ip) + tcp, header)


def send(sock: socket.socket, frames: Sequence[bytes], burst: int = 256) -> None:
    """Send in bursts, pausing so the fast path's receive ring keeps up."""
    for start in range(0, len(frames), burst):
        for f in frames[start : start + burst]:
            sock.send(f)
        time.sleep(0.002)


def flow_entries(target: Any) -> int:
    """flow_cache entries in the in-process target."""
    pipeline = target.pipeline
    return len(pipeline.flow_cache.entries) if pipeline is not None else 0


def wait_entries(target: Any, want: int, timeout: float, quiet: float = 3.0) -> float:
    """Seconds until the target holds `want` flow_cache entries, or until its last change
    when it stops growing for `quiet` seconds (lost SYNs or records, a full table)."""
    start = last_change = time.perf_counter()
    seen = flow_entries(target)
    while seen < want:
        now = time.perf_counter()
        if now - start > timeout or now - last_change > quiet:
            break
        time.sleep(0.005)
        count = flow_entries(target)
        if count != seen:
            seen, last_change = count, time.perf_counter()
    return last_change - start


def run(connections: int, flows: int, backend: str) -> dict[str, Any]:
    """Run both figures; returns them by name."""
    from offload.target import SoftwareTarget

    tag = f"{os.getpid() % 100000}"
    a, b = f"nfbs{tag}a", f"nfbs{tag}b"
    subprocess.run(["ip", "link", "add", a, "type", "veth", "peer", "name", b], check=True)
    results: dict[str, Any] = {"machine": common.machine()}
    try:
        for dev in (a, b):
            subprocess.run(["sysctl", "-q", "-w", f"net.ipv6.conf.{dev}.disable_ipv6=1"])
            subprocess.run(["ip", "link", "set", dev, "up"], check=True)
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x88B5))
        sock.bind((b, 0))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
        with SoftwareTarget("127.0.0.1:0") as target:
            schema = P4Schema.load()
            client = P4Client.connect(target.address, 1, 10, schema=schema)
            client.set_pipeline(schema, b"")
            options = ServiceOptions(
                SERVICE_PORT,
                iface=a,
                backend=backend,  # type: ignore[arg-type]
                batch_size=256,
                # SYN-only connections: keep them tracked for the whole run
                fastpath_options=(
                    *("--max-flows", str(max(65536, 2 * flows))),
                    *("--tcp-syn-timeout", "3600"),
                ),
            )
            results["backend"] = choose_backend(options.backend)
            service = ServiceController(client, schema, options, store=FlowStore(2 * flows))
            service.start()
            try:
                service.load_policy(resolve(load_policy(POLICY % "80-81")))
                frames = [syn(i) for i in range(connections)]
                start = time.perf_counter()
                send(sock, frames)
                elapsed = wait_entries(target, 2 * connections, 120)
                done = flow_entries(target) // 2
                stats = service.fastpath_stats()
                results["sent"] = connections
                results["connections"] = done
                results["cps"] = done / elapsed
                results["records_lost"] = stats.get("records_lost", 0)
                lat = sorted(service.offload_latency_ns)
                results["offload_p50_ms"] = lat[len(lat) // 2] / 1e6 if lat else 0.0

                # ~100k tracked flows (the first `connections` are among them)
                frames = [syn(i) for i in range(connections, flows)]
                send(sock, frames)
                capacity = schema.table(names.FLOW_CACHE).size
                wait_entries(target, min(2 * flows, capacity), 120)
                # every record handled (offloaded, or refused by a full flow_cache): wait until
                # the controller's count stops moving
                deadline, seen, still = time.monotonic() + 120, -1, 0
                while service.counters["offloaded"] < flows and time.monotonic() < deadline:
                    count = service.counters["offloaded"]
                    still = still + 1 if count == seen else 0
                    if still >= 20:  # 1 s without a new record: SYNs or records were lost
                        break
                    seen = count
                    time.sleep(0.05)
                results["offloaded_before"] = flow_entries(target) // 2
                tracked = service.fastpath_stats().get("flows_active", 0)
                start = time.perf_counter()
                report = service.load_policy(resolve(load_policy(POLICY % "80")))
                results["resim_wall_s"] = time.perf_counter() - start
                results["tracked"] = tracked
                results["resim_fastpath_checked"] = report.fastpath_checked
                results["resim_fastpath_removed"] = report.fastpath_removed
                results["resim_fastpath_ms"] = report.fastpath_ns / 1e6
                results["resim_offloaded_checked"] = report.offloaded_checked
                results["resim_controller_ms"] = report.controller_ns / 1e6
                results["flow_cache_after"] = flow_entries(target)
            finally:
                service.stop()
                client.close()
    finally:
        subprocess.run(["ip", "link", "del", a], capture_output=True)
    return results


ROWS = (
    ("sent", "connections opened (SYNs sent)", "", "{:,}"),
    ("connections", "connections offloaded", "", "{:,}"),
    ("records_lost", "flow records lost by the fast path", "", "{:,}"),
    ("cps", "new connections through the service", "conn/s", "{:,.0f}"),
    ("offload_p50_ms", "first packet -> flow_cache written (p50)", "ms", "{:.1f}"),
    ("tracked", "flows tracked by the fast path", "", "{:,}"),
    ("resim_fastpath_checked", "resimulated in the fast path", "flows", "{:,}"),
    ("resim_fastpath_removed", "  of which no longer allowed", "flows", "{:,}"),
    ("resim_fastpath_ms", "fast path RESIMULATE", "ms", "{:.1f}"),
    ("offloaded_before", "flows offloaded before the change", "flows", "{:,}"),
    ("resim_offloaded_checked", "offloaded flows re-checked by the controller", "flows", "{:,}"),
    ("resim_controller_ms", "controller re-check (deletes included)", "ms", "{:.1f}"),
    ("resim_wall_s", "policy change, whole load_policy (+ deletes)", "s", "{:.2f}"),
    ("flow_cache_after", "flow_cache entries after the change", "", "{:,}"),
)


def render(results: dict[str, Any]) -> str:
    """The figures as a text table."""
    head = f"bench_service: backend {results['backend']}\nmachine: {results['machine']}"
    return common.render_rows(head, ROWS, results)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=5000)
    parser.add_argument("--flows", type=int, default=100_000)
    parser.add_argument("--backend", choices=("auto", "dpdk", "numba"), default="auto")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    if not 1 <= args.connections <= args.flows <= 1 << 24:
        parser.error("need 1 <= --connections <= --flows <= 16777216")
    if os.geteuid() != 0:
        print("bench_service: skipped: needs root (veth pair, AF_PACKET)")
        return 0
    results = run(args.connections, args.flows, args.backend)
    print(json.dumps(results, indent=2) if args.json else render(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

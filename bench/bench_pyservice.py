"""Benchmark: the numba fallback service's datapath, in process (no sockets, no port).

On one ClassBench rule set (default acl1_10k, plus a final catch-all allow so that every
connection is allowed): LOAD_RULES as a full build and as incremental single-rule changes (the
point of the fallback: rte_acl can only rebuild), service throughput for new connections (TCP
SYNs: parse, identity, classify, conntrack insert, NEW record, re-injection) and for packets of
tracked connections, and the time to resimulate N tracked flows (default 100,000) after a policy
change that turns every other rule into a drop.

    .venv/bin/python bench/bench_pyservice.py [--rules FILE] [--flows N] [--json]
"""

from __future__ import annotations

import argparse
import json
import random
import struct
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dpdk_app.classbench import load_rules
from dpdk_app.fastpath import ServiceHeader, encapsulate, make_rule
from dpdk_app.layout import ACT_DROP
from dpdk_app.pyservice.datapath import Config, Datapath
from dpdk_app.pyservice.warm import run_warm_up

try:
    from bench import common
except ImportError:  # run as a script: bench/ itself is on sys.path
    import common  # type: ignore[no-redef]

REPO = Path(__file__).resolve().parent.parent
DEFAULT_RULES = (REPO / ".." / "shared" / "data" / "classbench" / "acl1_10k").resolve()
BATCH = 256
_ETH = bytes.fromhex("02000000000b02000000000a0800")


def tcp_frame(src: int, dst: int, sport: int, dport: int, flags: int) -> bytes:
    """A service-encapsulated IPv4 TCP segment (valid checksum) between the given endpoints."""
    ip = bytearray(struct.pack("!BBHHHBBHII", 0x45, 0, 40, 0, 0, 64, 6, 0, src, dst))
    total = sum(struct.unpack("!10H", bytes(ip)))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    struct.pack_into("!H", ip, 10, ~total & 0xFFFF)
    tcp = struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, flags, 512, 0, 0)
    return encapsulate(_ETH + bytes(ip) + tcp, ServiceHeader(1, 2))


def _rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def run(rules_path: Path, flows: int) -> dict[str, Any]:
    """Every figure of the benchmark as a dict."""
    base = load_rules(rules_path)
    rules = np.concatenate([base, make_rule(len(base) + 1, priority=0)])
    dp = Datapath(Config(max_flows=max(flows, 1024) + BATCH))
    run_warm_up(dp)  # compile (or load) every kernel first
    dp = Datapath(Config(max_flows=max(flows, 1024) + BATCH))
    out: dict[str, Any] = {"rules": str(rules_path), "n_rules": len(rules), "flows": flows}

    t0 = time.perf_counter()
    rep = dp.rules.load(rules)
    out["build_s"] = time.perf_counter() - t0
    out["memory_bytes"] = rep.memory_bytes
    # One rule removed, then put back, many times: each load is a delete or an insert.
    changes = 200
    rng = random.Random(1)
    t0 = time.perf_counter()
    for _ in range(changes // 2):
        j = rng.randrange(len(rules) - 1)
        dp.rules.load(np.delete(rules, j))
        dp.rules.load(rules)
    elapsed = time.perf_counter() - t0
    out["incremental_load_s"] = elapsed / changes
    out["incremental_rebuilds"] = dp.rules.rebuilds - 1
    # The classifier's own rate, without the diff: insert/delete of single rules.
    assert dp.rules.tm is not None
    tm = dp.rules.tm
    t0 = time.perf_counter()
    for _ in range(changes // 2):
        slot = tm.insert(rules[-2:-1])
        tm.delete(slot)
    out["tm_update_rate"] = _rate(changes, time.perf_counter() - t0)

    addr = rng.getrandbits
    syns: list[bytes] = []
    acks: list[bytes] = []
    for _ in range(flows):
        src, dst = addr(32), addr(32)
        sport, dport = rng.randrange(1024, 65536), rng.randrange(1, 65536)
        syns.append(tcp_frame(src, dst, sport, dport, 0x02))
        if len(acks) < 50 * BATCH:
            acks.append(tcp_frame(src, dst, sport, dport, 0x10))
    t0 = time.perf_counter()
    for i in range(0, flows, BATCH):
        dp.process(syns[i : i + BATCH])
    out["new_conn_mpps"] = _rate(flows, time.perf_counter() - t0) / 1e6
    dp.take_records()
    t0 = time.perf_counter()
    for i in range(0, len(acks), BATCH):
        dp.process(acks[i : i + BATCH])
    out["tracked_mpps"] = _rate(len(acks), time.perf_counter() - t0) / 1e6
    out["flows_tracked"] = dp.ctt.count

    drop_half = rules.copy()
    drop_half["action"][1:-1:2] = ACT_DROP
    dp.rules.load(drop_half)
    res = dp.flows("resimulate")
    out["resim_checked"] = res.checked
    out["resim_removed"] = len(res.records)
    out["resim_s"] = res.elapsed_ns / 1e9
    return out


def render(r: dict[str, Any]) -> str:
    """The figures as a table."""
    rows = [
        ("rule set", Path(r["rules"]).name, f"{r['n_rules']} rules"),
        ("LOAD_RULES full build", f"{r['build_s'] * 1e3:.1f}", "ms"),
        ("LOAD_RULES one rule changed", f"{r['incremental_load_s'] * 1e3:.2f}", "ms (diff)"),
        ("  rebuilds among them", str(r["incremental_rebuilds"]), ""),
        ("TupleMerge insert/delete", f"{r['tm_update_rate']:,.0f}", "rules/s"),
        ("classifier memory", f"{r['memory_bytes'] / 2**20:.1f}", "MiB"),
        ("new connections (SYN)", f"{r['new_conn_mpps']:.3f}", "Mpps"),
        ("tracked-connection packets", f"{r['tracked_mpps']:.3f}", "Mpps"),
        ("resimulate", f"{r['resim_s'] * 1e3:.1f}", f"ms for {r['resim_checked']} flows"),
        ("  removed by the new policy", str(r["resim_removed"]), "flows"),
    ]
    head = f"numba fallback service, one core ({r['machine']})"
    return "\n".join([head, *common.table(rows, header=False)])


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print the table (or JSON)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--rules", type=Path, default=DEFAULT_RULES)
    ap.add_argument("--flows", type=int, default=100_000)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    report = run(args.rules, args.flows)
    report["machine"] = common.machine()
    print(json.dumps(report, indent=2) if args.json else render(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Benchmark: the fast path's established-flow path (conntrack hit), DPDK app and numba service.

Both datapaths get the same traffic: `--packets` IPv4 TCP ACK segments (service-encapsulated)
of `--flows` connections, client and server directions alternating per round, under a two-rule
set (allow TCP to port 80, drop the rest). One pass makes every connection tracked (TCP pickup),
then passes over the same packets are timed, datapath only, one core each:

- DPDK: `nicfw-fastpath --bench-fastpath` (src/bench_fastpath.c): dp_process_burst() over
  mbufs in bursts of 32 (parse, identity lookup, rte_acl, conntrack lookup and update, rule id
  rewrite); no PMD, no copies.
- numba: `Datapath.process()` of dpdk_app.pyservice over batches of 256 frames (the service's
  burst): frame packing, parse, identity, classify, conntrack kernels, the forwarded frames'
  rule id rewrite (Python bytes out, as the service sends them).

    .venv/bin/python bench/bench_fastpath.py [--flows N] [--packets N] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from dpdk_app.fastpath import eal_args, find_binary, make_rule
from dpdk_app.layout import ACT_ALLOW, ACT_DROP
from dpdk_app.pyservice.datapath import Config, Datapath
from dpdk_app.pyservice.warm import run_warm_up

try:
    from bench import common
    from bench.bench_pyservice import tcp_frame
except ImportError:  # run as a script: bench/ itself is on sys.path
    import common  # type: ignore[no-redef]
    from bench_pyservice import tcp_frame  # type: ignore[no-redef]

NUMBA_BATCH = 256
TCP_ACK = 0x10
SERVER = (10 << 24) | (2 << 16) | 1


def frames(flows: int, packets: int) -> list[bytes]:
    """The traffic of bench_fastpath.c's build_frame(): connection i % flows, both ways."""
    out = []
    for i in range(packets):
        f, reply = i % flows, (i // flows) & 1
        client = (10 << 24) | (1 << 16) | (f & 0xFFFF)
        cport = 10000 + (f >> 16)
        if reply:
            out.append(tcp_frame(SERVER, client, 80, cport, TCP_ACK))
        else:
            out.append(tcp_frame(client, SERVER, cport, 80, TCP_ACK))
    return out


def rules() -> np.ndarray:
    """Allow TCP to port 80 (rule 10), drop everything else (rule 11)."""
    return np.concatenate(
        [
            make_rule(10, ACT_ALLOW, proto=6, dport=(80, 80), priority=2),
            make_rule(11, ACT_DROP, priority=1),
        ]
    )


def run_dpdk(flows: int, packets: int, min_time: float) -> dict[str, Any]:
    """The C datapath's figures (bench mode), or {"error": ...} when it cannot run."""
    binary = find_binary()
    if binary is None:
        return {"error": "nicfw-fastpath is not built (make dpdk)"}
    memory_mb = max(256, packets * 3 // 1024 + 256)  # ~2.3 KiB per mbuf, plus the tables
    cmd = [str(binary), *eal_args(lcores="0", memory_mb=memory_mb), "--", "--bench-fastpath"]
    cmd += ["--flows", str(flows), "--packets", str(packets), "--min-time", str(min_time)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"error": f"exit {proc.returncode}: {proc.stderr.strip()[-500:]}"}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def run_numba(flows: int, packets: int, min_time: float) -> dict[str, Any]:
    """The numba service's datapath figures, in process."""
    cfg = Config(max_flows=2 * flows + NUMBA_BATCH)
    run_warm_up(Datapath(cfg))  # compile (or load) every kernel first
    dp = Datapath(cfg)
    dp.rules.load(rules())
    traffic = frames(flows, packets)
    batches = [traffic[i : i + NUMBA_BATCH] for i in range(0, packets, NUMBA_BATCH)]
    for b in batches:  # pick every connection up
        dp.process(b)
    dp.take_records()
    hits0 = int(dp.stats_dict()["ct_hit"])  # type: ignore[call-overload]
    passes: list[float] = []
    forwarded = 0
    start = time.perf_counter()
    while len(passes) < 3 or time.perf_counter() - start < min_time:
        t0 = time.perf_counter()
        for b in batches:
            forwarded += len(dp.process(b))
        passes.append(packets / (time.perf_counter() - t0) / 1e6)
    hits = int(dp.stats_dict()["ct_hit"]) - hits0  # type: ignore[call-overload]
    mpps = statistics.median(passes)
    return {
        "backend": "numba",
        "flows": flows,
        "tracked": dp.ctt.count,
        "packets": packets,
        "burst": NUMBA_BATCH,
        "passes": len(passes),
        "mpps": mpps,
        "mpps_best": max(passes),
        "ns_per_packet": 1e3 / mpps,
        "ct_hit": hits,
        "forwarded": forwarded,
        "total": packets * len(passes),
    }


def run(flows: int, packets: int, min_time: float) -> dict[str, Any]:
    """Both backends, side by side, and their ratio."""
    out: dict[str, Any] = {"flows": flows, "packets": packets}
    out["dpdk"] = run_dpdk(flows, packets, min_time)
    out["numba"] = run_numba(flows, packets, min_time)
    d, n = out["dpdk"].get("mpps"), out["numba"].get("mpps")
    out["numba_over_dpdk"] = n / d if d and n else None
    for name in ("dpdk", "numba"):
        r = out[name]
        if "total" in r and (r["ct_hit"] != r["total"] or r["forwarded"] != r["total"]):
            r["error"] = f"{r['ct_hit']} of {r['total']} packets hit a tracked connection"
    return out


def render(r: dict[str, Any]) -> str:
    """The figures as a table."""
    lines = [
        f"fast path, established flows (conntrack hit), one core each ({r['machine']})",
        f"{r['flows']} connections, {r['packets']} packets per pass",
        f"{'backend':<8} {'burst':>6} {'Mpps':>8} {'best':>8} {'ns/pkt':>8}  note",
    ]
    for name in ("dpdk", "numba"):
        x = r[name]
        if "mpps" not in x:
            lines.append(f"{name:<8} {'-':>6} {'-':>8} {'-':>8} {'-':>8}  {x.get('error', '')}")
            continue
        note = x.get("error", x.get("dpdk", ""))
        lines.append(
            f"{name:<8} {x['burst']:>6} {x['mpps']:>8.3f} {x['mpps_best']:>8.3f} "
            f"{x['ns_per_packet']:>8.1f}  {note}"
        )
    if r["numba_over_dpdk"]:
        lines.append(f"numba / dpdk: {r['numba_over_dpdk']:.2f}x")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print the table (or JSON)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--flows", type=int, default=10_000)
    ap.add_argument("--packets", type=int, default=0, help="per pass (default 4 x flows)")
    ap.add_argument("--min-time", type=float, default=1.0, help="seconds of timed passes")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.flows < 1 or args.packets < 0 or (args.packets and args.packets < args.flows):
        ap.error("--flows must be >= 1 and --packets >= --flows")
    packets = args.packets or 4 * args.flows
    report = run(args.flows, packets, args.min_time)
    report["machine"] = common.machine()
    print(json.dumps(report, indent=2) if args.json else render(report))
    # A run whose packets did not all hit tracked connections measured something else.
    return 1 if any("error" in report[b] and "mpps" in report[b] for b in ("dpdk", "numba")) else 0


if __name__ == "__main__":
    raise SystemExit(main())

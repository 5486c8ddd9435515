"""Benchmark: packet classification on the ClassBench sets, every classifier side by side.

For each rule set (default: the six sets in ../shared/data/classbench — acl1, fw1, ipc1 at 1K
and 10K), a trace is generated once (corners and interior points of every rule, seed 1, 4
headers per rule; cached in build/classbench/) and every registered classifier backend
(dpdk_app/classify_bench.py: the numba TupleMerge, the numba linear scan, and rte_acl inside
the DPDK application when its runner is installed) is measured on one core: Mpps, build time,
memory, incremental insert/delete rates. The last lines give the numba/rte_acl Mpps ratio per
set and its geometric mean over the sets, against the goal of issue 4 (>= 0.5).

    .venv/bin/python bench/bench_classify.py [--rules FILE ...] [--trace FILE]
        [--classifiers a,b] [--verify] [--json]
    nicfw bench classify --rules FILE --trace FILE [--json] [--verify]

Without --trace a trace is generated for each rule file (and cached in build/classbench/).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dpdk_app import classify_bench

REPO = Path(__file__).resolve().parent.parent
DATA = (REPO / ".." / "shared" / "data" / "classbench").resolve()
SETS = ("acl1_1k", "acl1_10k", "fw1_1k", "fw1_10k", "ipc1_1k", "ipc1_10k")
CACHE = REPO / "build" / "classbench"
# Published rte_acl figures on this class of machine (data README), for when the DPDK
# application is not available to measure side by side.
RTE_ACL_README_MPPS = {"acl1_10k": 20.0, "fw1_10k": 2.3, "ipc1_10k": 4.8}


def geomean(values: Sequence[float]) -> float | None:
    """Geometric mean, or None for no values."""
    if not values:
        return None
    return math.exp(sum(math.log(v) for v in values) / len(values))


def summary(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-set numba/rte_acl ratios (measured, else against the README figures) and means."""
    key = f"{classify_bench.NUMBA_NAME}/{classify_bench.ACL_NAME}"
    measured = {}
    readme = {}
    ours = {}
    for r in reports:
        name = Path(r["rules"]).name
        mpps = r["classifiers"].get(classify_bench.NUMBA_NAME, {}).get("mpps")
        if mpps:
            ours[name] = mpps
        if key in r["ratios"]:
            measured[name] = r["ratios"][key]
        if mpps and name in RTE_ACL_README_MPPS:
            readme[name] = mpps / RTE_ACL_README_MPPS[name]
    return {
        "numba_mpps": ours,
        "numba_mpps_geomean": geomean(list(ours.values())),
        "ratio_vs_rte_acl_measured": measured,
        "ratio_vs_rte_acl_measured_geomean": geomean(list(measured.values())),
        "ratio_vs_rte_acl_readme": readme,
        "goal": "numba >= 0.5x rte_acl Mpps (geometric mean of the six sets), ahead on fw1_10k",
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print a table per set (or JSON)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("paths", nargs="*", metavar="RULES", help="ClassBench rule files")
    ap.add_argument(
        "--rules", action="append", default=[], help="a ClassBench rule file (repeatable)"
    )
    ap.add_argument("--trace", help="trace file in ClassBench's format (only with one rule file)")
    ap.add_argument("--classifiers", help="comma-separated backends (default: all registered)")
    ap.add_argument("--verify", action="store_true", help="check every answer vs the reference")
    ap.add_argument("--json", action="store_true", help="print one JSON document")
    args = ap.parse_args(argv)
    paths = [Path(p) for p in [*args.rules, *args.paths]] or [DATA / s for s in SETS]
    missing = [str(p) for p in paths + ([Path(args.trace)] if args.trace else []) if not p.exists()]
    if missing:
        print(f"rule files not found: {', '.join(missing)}", file=sys.stderr)
        return 2
    if args.trace and len(paths) != 1:
        print("--trace needs exactly one rule file", file=sys.stderr)
        return 2
    names = args.classifiers.split(",") if args.classifiers else None
    reports = []
    for p in paths:
        try:
            r = classify_bench.run(p, args.trace, args.verify, names, trace_cache_dir=CACHE)
        except (classify_bench.BenchError, ValueError) as exc:  # ClassBenchError included
            print(f"error: {exc}", file=sys.stderr)
            return 2
        reports.append(r)
        if not args.json:
            print(classify_bench.format_report(r), end="\n\n", flush=True)
    result = {"sets": reports, "summary": summary(reports)}
    if args.json:
        print(json.dumps(result, indent=2, default=str))
        return 0
    s = result["summary"]
    for label, value in (
        ("numba Mpps geomean", s["numba_mpps_geomean"]),
        ("numba/rte_acl measured geomean", s["ratio_vs_rte_acl_measured_geomean"]),
    ):
        print(f"{label}: {value:.2f}" if value is not None else f"{label}: -")
    for name, ratio in s["ratio_vs_rte_acl_readme"].items():
        print(f"{name}: numba / rte_acl README figure = {ratio:.2f}")
    print(f"goal: {s['goal']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

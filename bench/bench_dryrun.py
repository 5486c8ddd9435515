"""Benchmark: a policy dry run (writes per host, reachability flips) of a one-rule change.

On bench_compile's synthetic policy (10,000 workloads on 200 hosts, 1,000 groups, 10,000
rules), one rule is given another service (bench_compile's `edit_one_rule`) and
`controlplane.dryrun` is timed: the reachability flips (class pairs, bitset first match) and
the per-host writes (one compile per set of hosts that carry the same rules). Each edit is
timed `--repeat` times, best kept; the edits are different rules.

    .venv/bin/python bench/bench_dryrun.py [--workloads 10000] [--groups 1000]
        [--rules 10000] [--edits 3] [--repeat 2] [--json]
"""

from __future__ import annotations

import argparse
import gc
import json
import time
from collections.abc import Sequence
from typing import Any

from controlplane import dryrun
from controlplane.policy import Resolver

try:
    from bench import common
    from bench.bench_compile import PER_APP, edit_one_rule, synthetic_policy
except ImportError:  # run as a script: bench/ itself is on sys.path
    import common  # type: ignore[no-redef]
    from bench_compile import PER_APP, edit_one_rule, synthetic_policy  # type: ignore[no-redef]


def best(repeat: int, fn: Any) -> tuple[float, Any]:
    """The best time of `repeat` calls (garbage collector off while timing), and the result."""
    times, out = [], None
    for _ in range(repeat):
        gc.collect()
        gc.disable()
        try:
            t0 = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t0)
        finally:
            gc.enable()
    return min(times), out


def run(n_workloads: int, n_groups: int, n_rules: int, edits: int, repeat: int) -> dict[str, Any]:
    """Every figure, by name."""
    policy = synthetic_policy(n_workloads, n_groups, n_rules)
    resolver = Resolver()
    before = resolver.resolve(policy)
    out: dict[str, Any] = {
        "workloads": n_workloads,
        "groups": n_groups,
        "rules": n_rules,
        "hosts": len(dryrun.hosts_of(before)),
        "machine": common.machine(load=False),
        "edits": [],
    }
    for k in range(edits):
        index = (k * 2 + 1) * n_rules // (2 * edits + 1)
        after = Resolver().resolve(edit_one_rule(policy, index)[0])
        t_reach, reach = best(repeat, lambda a=after: dryrun.reachability(before, a, limit=100))
        t_hosts, (hosts, _) = best(repeat, lambda a=after: dryrun.host_changes(before, a))
        out["edits"].append(
            {
                "rule": index,
                "reachability_s": t_reach,
                "hosts_s": t_hosts,
                "flips": reach.total,
                "flip_hosts": len(reach.by_host),
                "evaluations": reach.evaluations,
                "complete": reach.complete,
                "writes_all_hosts": sum(len(h.diff) for h in hosts),
            }
        )
    edits_ = out["edits"]
    out["reachability_s_max"] = max(e["reachability_s"] for e in edits_)
    out["hosts_s_max"] = max(e["hosts_s"] for e in edits_)
    return out


def render(results: dict[str, Any]) -> str:
    """The figures as a text table."""
    head = (
        f"bench_dryrun: one-rule change, {results['rules']:,} rules, {results['groups']:,} "
        f"groups, {results['workloads']:,} workloads on {results['hosts']} hosts\n"
        f"machine: {results['machine']}"
    )
    rows = []
    for e in results["edits"]:
        r = f"rule {e['rule']}"
        rows += [
            (f"{r}: reachability flips (class pairs)", f"{e['reachability_s']:.3f}", "s"),
            ("  flipped pair/service/host rows", f"{e['flips']:,d}", "rows"),
            ("  on hosts", f"{e['flip_hosts']:d}", "hosts"),
            ("  verdict evaluations", f"{e['evaluations']:,d}", "evals"),
            (f"{r}: writes per host (compiles)", f"{e['hosts_s']:.3f}", "s"),
            ("  writes, summed over hosts", f"{e['writes_all_hosts']:,d}", "updates"),
        ]
    return "\n".join([head, *common.table(rows, 10)])


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rules", type=int, default=10_000)
    parser.add_argument("--groups", type=int, default=1_000)
    parser.add_argument("--workloads", type=int, default=10_000)
    parser.add_argument("--edits", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    if args.rules < 2 or args.groups < 10 or args.workloads < PER_APP or args.edits < 1:
        parser.error(f"need at least 2 rules, 10 groups, {PER_APP} workloads and 1 edit")
    results = run(args.workloads, args.groups, args.rules, args.edits, max(1, args.repeat))
    print(json.dumps(results, indent=2) if args.json else render(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

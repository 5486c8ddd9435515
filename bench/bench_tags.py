"""Benchmark: dynamic tags and template instances at 10,000 workloads, 1,000 groups, 10,000 rules.

Figures, on the synthetic policy of bench_compile (plus a quarantine group with two rules at
the top, and a three-tier template whose rules hold within each instance):

- tag change -> diff computed: attach or detach `quarantine` on a random workload, and move a
  workload between tiers (swap its `web`/`app` tag), through `Inventory.apply` (incremental
  resolution, patched classification tables, identity diff); median and p99, and the entries
  written per change (inserts + modifies + deletes): mean, p99 and max;
- whether any change laid a class-id field out again or rebuilt a classification table
  (a full rewrite): both counts should be 0;
- a template instance of 50 VMs created at once (one event), and deleted;
- for scale: the initial resolve + compile, and the full entry count.

    .venv/bin/python bench/bench_tags.py [--changes 200] [--workloads 10000] [--groups 1000]
        [--rules 10000] [--spare-bits 3] [--json]
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import ipaddress
import json
import random
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from controlplane.inventory import (
    Event,
    InstanceCreated,
    InstanceDeleted,
    Inventory,
    TagAttached,
    TagDetached,
    WorkloadUp,
)
from controlplane.policy import Criteria, Group, Instance, Policy, Rule, Section, Template, Workload
from controlplane.policy.model import ServiceTerm
from offload.compiler import CompileOptions
from offload.compiler.encoding import RESERVE

try:
    from bench import common
    from bench.bench_compile import synthetic_policy
except ModuleNotFoundError:  # run as a script: the repository root is not on the path
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bench import common
    from bench.bench_compile import synthetic_policy


def tagged_policy(n_workloads: int, n_groups: int, n_rules: int) -> Policy:
    """The synthetic policy with a quarantine group and rules, and a three-tier template."""
    base = synthetic_policy(n_workloads, n_groups - 1, n_rules - 2)
    quarantine = Group("quarantined", match=(Criteria(frozenset({"quarantine"})),))
    emergency = Section(
        "emergency",
        (
            Rule("quarantine-out", ("quarantined",), None, "drop"),
            Rule("quarantine-in", None, ("quarantined",), "drop"),
        ),
    )
    template = Template(
        "three-tier",
        "shop",
        "1",
        "team",
        rules=(
            Rule(
                "tier-web-app",
                ("all-web",),
                ("all-app",),
                "allow",
                inline=(ServiceTerm(6, ((8080, 8080),)),),
                scope="same_instance",
                template="three-tier",
            ),
            Rule(
                "tier-app-db",
                ("all-app",),
                ("all-db",),
                "allow",
                inline=(ServiceTerm(6, ((5432, 5432),)),),
                scope="same_instance",
                template="three-tier",
            ),
        ),
    )
    return dataclasses.replace(
        base,
        groups=(*base.groups, quarantine),
        sections=(emergency, *base.sections),
        templates=(template,),
    )


def timed(inv: Inventory, events: Sequence[Event]) -> tuple[float, int]:
    """Seconds for one `apply` and the entries it writes."""
    t0 = time.perf_counter()
    writes = inv.apply(*events)
    return time.perf_counter() - t0, len(writes)


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def summary(samples: list[tuple[float, int]]) -> dict[str, float]:
    """Median and p99 time (ms); mean, p99 and max entries written."""
    times = [s for s, _ in samples]
    writes = [float(w) for _, w in samples]
    return {
        "median_ms": statistics.median(times) * 1e3,
        "p99_ms": _p99(times) * 1e3,
        "writes_mean": statistics.fmean(writes),
        "writes_p99": _p99(writes),
        "writes_max": max(writes),
    }


def run(
    n_workloads: int, n_groups: int, n_rules: int, changes: int, spare_bits: int = RESERVE
) -> dict[str, Any]:
    """Every figure, by name."""
    rng = random.Random(7)
    policy = tagged_policy(n_workloads, n_groups, n_rules)
    gc.collect()
    t0 = time.perf_counter()
    inv = Inventory(policy, CompileOptions(range_kind="range", spare_bits=spare_bits))
    out: dict[str, Any] = {
        "machine": common.machine(load=False),
        "workloads": n_workloads,
        "groups": len(policy.groups),
        "rules": len(policy.rules),
        "initial_s": time.perf_counter() - t0,
        "entries": len(inv.compiled.entries()),
        "acl_entries": inv.compiled.stats.acl_entries,
        "spare_bits": spare_bits,
    }
    names_ = [w.name for w in policy.workloads]
    quarantine: list[tuple[float, int]] = []
    for _ in range(changes):
        vm = rng.choice(names_)
        quarantine.append(timed(inv, [TagAttached(vm, "quarantine")]))
        quarantine.append(timed(inv, [TagDetached(vm, "quarantine")]))
    out["quarantine"] = summary(quarantine)
    tier: list[tuple[float, int]] = []
    for _ in range(changes):
        w = inv.workload(rng.choice(names_))
        swapped = (w.tags - {"web", "app"}) | ({"app"} if "web" in w.tags else {"web"})
        tier.append(timed(inv, [WorkloadUp(dataclasses.replace(w, tags=swapped))]))
    out["tier_change"] = summary(tier)
    out["incremental_tables"] = inv.compiler.incremental_tables
    # Full rewrites during the tag changes above: fields laid out again, tables rebuilt.
    out["relaid_fields"] = inv.compiler.relaid_fields
    out["rebuilt_tables"] = inv.compiler.rebuilt_tables
    vms = tuple(
        Workload(
            f"shop-1-vm-{i}",
            (ipaddress.ip_address(f"172.31.{i // 200}.{i % 200 + 1}"),),
            frozenset({("web", "app", "db")[i % 3]}),
        )
        for i in range(50)
    )
    created = timed(inv, [InstanceCreated(Instance("shop-1", "three-tier"), vms)])
    out["instance_create_ms"] = created[0] * 1e3
    out["instance_create_writes"] = created[1]
    deleted = timed(inv, [InstanceDeleted("shop-1")])
    out["instance_delete_ms"] = deleted[0] * 1e3
    out["instance_delete_writes"] = deleted[1]
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Run and print the figures (a table, or JSON with --json)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workloads", type=int, default=10_000)
    parser.add_argument("--groups", type=int, default=1_000)
    parser.add_argument("--rules", type=int, default=10_000)
    parser.add_argument("--changes", type=int, default=200)
    parser.add_argument("--spare-bits", type=int, default=RESERVE, help="CompileOptions.spare_bits")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    out = run(args.workloads, args.groups, args.rules, args.changes, args.spare_bits)
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"tags and templates on {out['machine']}")
    print(
        f"{out['workloads']} workloads, {out['groups']} groups, {out['rules']} rules, "
        f"{out['entries']} entries ({out['acl_entries']} ACL, {out['spare_bits']} spare class-id "
        f"bits); initial resolve + compile {out['initial_s']:.2f} s"
    )
    print(
        f"{'change':<28}{'median ms':>10}{'p99 ms':>10}{'writes avg':>12}{'writes p99':>12}"
        f"{'writes max':>12}"
    )
    for key, label in (("quarantine", "quarantine tag on/off"), ("tier_change", "tier tag swap")):
        s = out[key]
        print(
            f"{label:<28}{s['median_ms']:>10.2f}{s['p99_ms']:>10.2f}"
            f"{s['writes_mean']:>12.1f}{s['writes_p99']:>12.0f}{s['writes_max']:>12.0f}"
        )
    print(
        f"{'instance of 50 VMs created':<28}{out['instance_create_ms']:>10.1f}{'':>10}"
        f"{out['instance_create_writes']:>12}"
    )
    print(
        f"{'instance of 50 VMs deleted':<28}{out['instance_delete_ms']:>10.1f}{'':>10}"
        f"{out['instance_delete_writes']:>12}"
    )
    full = out["relaid_fields"] + out["rebuilt_tables"]
    print(
        f"full rewrites during tag changes: {full or 'none'} "
        f"({out['relaid_fields']} fields laid out again, {out['rebuilt_tables']} tables rebuilt)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

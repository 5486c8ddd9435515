"""Benchmark: compile 10,000 rules over 1,000 groups and 10,000 workloads; a one-rule change.

Figures: resolution (groups -> prefixes) and compilation (-> entries) of a synthetic, seeded
policy shaped like a real estate (apps with a /24 each, tiers and environments as tags, subnet,
static and nested groups, port ranges); entries per table and ACL entries per rule; then one
rule edited in place: the time to re-resolve, recompile and diff (incrementally), the writes
that result, and for comparison a full diff of every entry with `offload.sync.diff`.

    .venv/bin/python bench/bench_compile.py [--rules 10000] [--groups 1000] [--workloads 10000]
        [--range-kind range|ternary] [--json]
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import ipaddress
import json
import random
import statistics
import time
from collections.abc import Sequence
from typing import Any

from controlplane.policy import (
    Criteria,
    Group,
    Policy,
    Resolver,
    Rule,
    Section,
    Service,
    ServiceTerm,
    Workload,
    validate,
)
from offload import names
from offload.compiler import CompileOptions, Compiler
from offload.compiler.delta import diff
from offload.entries import Ternary
from offload.sync import diff as full_diff

try:
    from bench import common
except ImportError:  # run as a script: bench/ itself is on sys.path
    import common  # type: ignore[no-redef]

TIERS = ("web", "app", "db")
ENVS = ("prod", "staging", "dev")
PER_APP = 33  # workloads per application


def synthetic_policy(n_workloads: int, n_groups: int, n_rules: int, seed: int = 1) -> Policy:
    """A seeded policy of the requested size (checked with `validate`)."""
    rng = random.Random(seed)
    n_apps = max(1, n_workloads // PER_APP)
    workloads = []
    for i in range(n_workloads):
        app, k = divmod(i, PER_APP)
        v4 = ipaddress.IPv4Address(f"10.{app // 256 % 256}.{app % 256}.{k + 10}")
        addrs: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...] = (v4,)
        if i % 2:
            addrs += (ipaddress.IPv6Address(f"2001:db8:{app:x}::{k + 10:x}"),)
        host = f"host-{i % 200}"
        local = host == "host-0"
        workloads.append(
            Workload(
                f"vm-{i:05d}",
                addrs,
                frozenset({f"app-{app}", TIERS[i % 3], ENVS[app % 3]}),
                host,
                port=1 + len(workloads) % 200 if local else None,
                mac=0x020000000000 + i if local else None,
            )
        )
    names_ = [w.name for w in workloads]
    groups: list[Group] = []
    # Shares of the group budget: app, app-frontend, subnet, static, tier/env, nested.
    n_app = min(n_apps, n_groups * 3 // 10)
    for a in range(n_app):
        groups.append(Group(f"app-{a}", match=(Criteria(frozenset({f"app-{a}"})),)))
    for a in range(min(n_apps, n_groups * 3 // 10)):
        crit = Criteria(frozenset({f"app-{a}", "web"}))
        groups.append(Group(f"app-{a}-web", match=(crit,)))
    for s in range(n_groups // 5):
        nets = []
        for _ in range(rng.randint(1, 3)):
            app = rng.randrange(n_apps)
            nets.append(ipaddress.ip_network(f"10.{app // 256 % 256}.{app % 256}.0/24"))
        if s % 4 == 0:
            nets.append(ipaddress.ip_network(f"2001:db8:{rng.randrange(n_apps):x}::/64"))
        groups.append(Group(f"subnet-{s}", addresses=tuple(dict.fromkeys(nets))))
    for s in range(n_groups * 15 // 100):
        members = tuple(sorted(set(rng.sample(names_, rng.randint(5, 20)))))
        groups.append(Group(f"static-{s}", members=members))
    for t in TIERS + ENVS:
        groups.append(Group(f"all-{t}", match=(Criteria(frozenset({t})),)))
    for b in range(max(1, (n_apps + 255) // 256)):  # one aggregate per /16 of app subnets
        groups.append(Group(f"dc-{b}", addresses=(ipaddress.ip_network(f"10.{b}.0.0/16"),)))
    leaf = [g.name for g in groups if g.name.startswith("app-") and not g.name.endswith("-web")]
    s = 0
    while len(groups) < n_groups:
        children = tuple(sorted(set(rng.sample(leaf, min(len(leaf), rng.randint(2, 6))))))
        groups.append(Group(f"nested-{s}", groups=children))
        s += 1
    services = []
    for p in range(60):
        if p % 10 == 9:
            lo = rng.randrange(1024, 60000)
            term = ServiceTerm(6, ((lo, lo + rng.randint(10, 2000)),))
        elif p % 10 == 8:
            term = ServiceTerm(17, ((rng.randrange(1, 65536),) * 2,))
        elif p == 7:
            term = ServiceTerm(1, icmp_type=8)
        else:
            port = rng.choice((22, 80, 443, 3306, 5432, 6379, 8080, 8443, 9092, 27017))
            term = ServiceTerm(6, ((port + p // 10, port + p // 10),))
        services.append(Service(f"svc-{p}", (term,)))
    group_names = [g.name for g in groups]
    sections = []
    per_section = 500
    for sec in range(0, n_rules, per_section):
        rules = []
        for i in range(sec, min(n_rules, sec + per_section)):
            roll = rng.random()
            src: tuple[Any, ...] | None
            if roll < 0.05:
                src = None
            elif roll < 0.10:
                src = (
                    ipaddress.ip_network(f"172.{16 + rng.randrange(16)}.{rng.randrange(256)}.0/24"),
                )
            elif roll < 0.30:
                src = tuple(dict.fromkeys(rng.sample(group_names, 2)))
            else:
                src = (rng.choice(group_names),)
            dst = tuple(dict.fromkeys(rng.sample(group_names, 1 if rng.random() < 0.95 else 2)))
            svcs = tuple(
                dict.fromkeys(f"svc-{rng.randrange(60)}" for _ in range(rng.randint(1, 2)))
            )
            action = rng.choices(("allow", "drop", "reject"), (85, 10, 5))[0]
            rules.append(Rule(f"rule-{i:05d}", src, dst, action, services=svcs))  # type: ignore[arg-type]
        sections.append(Section(f"section-{sec // per_section}", tuple(rules)))
    policy = Policy(tuple(workloads), tuple(groups), tuple(services), tuple(sections), "drop")
    validate(policy)
    return policy


def edit_one_rule(policy: Policy, index: int) -> tuple[Policy, Rule]:
    """The policy with rule `index` given another service (the usual one-line edit)."""
    flat = [(s, j) for s, sec in enumerate(policy.sections) for j in range(len(sec.rules))]
    s, j = flat[index]
    section = policy.sections[s]
    old = section.rules[j]
    new_service = "svc-9" if old.services != ("svc-9",) else "svc-19"
    new = dataclasses.replace(old, services=(new_service,))
    rules = (*section.rules[:j], new, *section.rules[j + 1 :])
    sections = list(policy.sections)
    sections[s] = dataclasses.replace(section, rules=rules)
    return dataclasses.replace(policy, sections=tuple(sections)), old


def run(n_workloads: int, n_groups: int, n_rules: int, range_kind: str) -> dict[str, Any]:
    """Every figure, by name."""
    out: dict[str, Any] = {
        "workloads": n_workloads,
        "groups": n_groups,
        "rules": n_rules,
        "range_kind": range_kind,
        "machine": common.machine(load=False),
    }
    policy = synthetic_policy(n_workloads, n_groups, n_rules)
    gc.collect()
    resolver = Resolver()
    compiler = Compiler(CompileOptions(range_kind=range_kind))  # type: ignore[arg-type]
    t0 = time.perf_counter()
    resolved = resolver.resolve(policy)
    t1 = time.perf_counter()
    compiled = compiler.compile(resolved)
    t2 = time.perf_counter()
    stats = compiled.stats
    out["resolve_s"] = t1 - t0
    out["compile_s"] = t2 - t1
    out["total_s"] = t2 - t0
    out["entries_src_class"] = stats.entries[names.SRC_CLASS]
    out["entries_dst_class"] = stats.entries[names.DST_CLASS]
    out["entries_acl"] = stats.entries[names.ACL]
    out["entries_l2_forward"] = stats.entries[names.L2_FORWARD]
    out["acl_entries_per_rule"] = stats.expansion
    # What the class encoding costs: entries per rule if every group matched with one code
    # (left: several groups, services and ranges per rule; the rest: overlapping groups).
    one_code = {n: (Ternary(i + 1, (1 << 64) - 1),) for i, n in enumerate(resolved.groups)}
    ideal = sum(len(compiler.rule_entries(r, one_code, one_code)) for r in resolved.rules)
    out["acl_entries_per_rule_one_code"] = ideal / len(resolved.rules)
    out["max_acl_entries_of_a_rule"] = stats.max_entries_per_rule
    out["src_encoding"] = f"{stats.src_encoding} ({stats.src_bits} bits)"
    out["dst_encoding"] = f"{stats.dst_encoding} ({stats.dst_bits} bits)"
    out["expanded_groups"] = stats.src_expanded + stats.dst_expanded

    # One rule edited in place, five times (different rules, each from the previous state).
    # Timed as timeit does, with the garbage collector off: a full collection over a million
    # live objects would otherwise land in a random sample.
    times, writes, changed = [], [], []
    current_policy, current = policy, compiled
    for k in range(5):
        edited, old_rule = edit_one_rule(current_policy, n_rules // 2 + k * (n_rules // 11))
        gc.collect()
        gc.disable()
        try:
            t0 = time.perf_counter()
            resolved2 = resolver.resolve(edited)
            compiled2 = compiler.compile(resolved2)
            delta = diff(current, compiled2)
            times.append(time.perf_counter() - t0)
        finally:
            gc.enable()
        rule_id = next(r.rule_id for r in resolved2.rules if r.name == old_rule.name)
        writes.append(len(delta))
        changed.append(len(set(current.acl[rule_id]) ^ set(compiled2.acl[rule_id])))
        current_policy, previous, current = edited, current, compiled2
    out["one_rule_change_s"] = statistics.median(times)
    out["one_rule_change_max_s"] = max(times)
    out["one_rule_change_writes"] = sum(writes)
    out["one_rule_changed_entries"] = sum(changed)
    compiled, compiled2 = previous, current
    t0 = time.perf_counter()
    full = full_diff(compiled2.entries(), compiled.entries())
    out["full_diff_s"] = time.perf_counter() - t0
    out["full_diff_writes"] = len(full)
    return out


ROWS = [
    ("resolve_s", "resolve (groups -> prefixes, rules -> ids)", "s", "{:.3f}"),
    ("compile_s", "compile (-> table entries)", "s", "{:.3f}"),
    ("total_s", "resolve + compile (target < 2 s)", "s", "{:.3f}"),
    ("entries_src_class", "  src_class entries", "entries", "{:,d}"),
    ("entries_dst_class", "  dst_class entries", "entries", "{:,d}"),
    ("entries_acl", "  acl entries", "entries", "{:,d}"),
    ("entries_l2_forward", "  l2_forward entries", "entries", "{:,d}"),
    ("acl_entries_per_rule", "  ACL entries per rule", "entries", "{:.3f}"),
    (
        "acl_entries_per_rule_one_code",
        "  ... if every group had one class code",
        "entries",
        "{:.3f}",
    ),
    ("max_acl_entries_of_a_rule", "  most ACL entries of one rule", "entries", "{:d}"),
    ("src_encoding", "  src_class class-id encoding", "", "{}"),
    ("dst_encoding", "  dst_class class-id encoding", "", "{}"),
    ("expanded_groups", "  groups with more than one class code", "groups", "{:d}"),
    ("one_rule_change_s", "one rule edited: resolve+compile+diff, median of 5", "s", "{:.4f}"),
    ("one_rule_change_max_s", "  slowest of the 5 (target < 50 ms)", "s", "{:.4f}"),
    ("one_rule_change_writes", "  writes, all 5 edits", "updates", "{:d}"),
    ("one_rule_changed_entries", "  entries of the edited rules that changed", "entries", "{:d}"),
    ("full_diff_s", "  for comparison: offload.sync.diff of every entry", "s", "{:.4f}"),
    ("full_diff_writes", "  its writes (last edit)", "updates", "{:d}"),
]


def render(results: dict[str, Any]) -> str:
    """The figures as a text table."""
    head = (
        f"bench_compile: {results['rules']:,} rules, {results['groups']:,} groups, "
        f"{results['workloads']:,} workloads, range kind {results['range_kind']}\n"
        f"machine: {results['machine']}"
    )
    extra = []
    sync = results.get("sync")
    if sync:
        label = f"full sync of {sync['entries']:,} entries, target in its own process"
        rate = f"{sync['process_window_entries_per_s']:,.0f}"
        extra.append((label + " (goal 100,000/s)", rate, "entries/s"))
        rate = f"{sync['inproc_window_entries_per_s']:,.0f}"
        extra.append(("  the same, target in this process", rate, "entries/s"))
    return common.render_rows(head, ROWS, results, value_width=16, extra=extra)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rules", type=int, default=10_000)
    parser.add_argument("--groups", type=int, default=1_000)
    parser.add_argument("--workloads", type=int, default=10_000)
    parser.add_argument("--range-kind", choices=("range", "ternary"), default="range")
    parser.add_argument(
        "--sync-entries",
        type=int,
        default=50_000,
        help="also time a full sync of this many entries to the software target (0: skip)",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    if args.rules < 2 or args.groups < 10 or args.workloads < PER_APP:
        parser.error(f"need at least 2 rules, 10 groups and {PER_APP} workloads")
    results = run(args.workloads, args.groups, args.rules, args.range_kind)
    if args.sync_entries:
        results["sync"] = sync_figures(args.sync_entries)
    print(json.dumps(results, indent=2) if args.json else render(results))
    return 0


def sync_figures(count: int) -> dict[str, Any]:
    """The full-sync figures of bench_sync (same machine, same run)."""
    try:
        from bench import bench_sync
    except ImportError:  # run as a script: bench/ itself is on sys.path
        import bench_sync  # type: ignore[no-redef]
    return bench_sync.run(count, 1000)


if __name__ == "__main__":
    raise SystemExit(main())

"""Policy dry runs: per-host writes equal each host's own compile; reachability flips equal a
brute-force, rule-by-rule evaluation of every workload pair."""

from __future__ import annotations

import dataclasses
import json
import random
import sys
from pathlib import Path

import pytest

from controlplane import dryrun
from controlplane.policy import Policy, Resolver, load_policy, resolve
from offload.compiler import CompileOptions, Compiler, ResolvedPolicy
from offload.compiler.delta import diff as compiled_diff

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bench.bench_compile import edit_one_rule, synthetic_policy

TCP = 6

POLICY = """\
workloads:
  web-1: {addresses: [10.0.1.1], host: h1, tags: [web]}
  web-2: {addresses: [10.0.1.2], host: h2, tags: [web]}
  app-1: {addresses: [10.0.2.1, "2001:db8::21"], host: h1, tags: [app]}
  db-1:  {addresses: [10.0.3.1], host: h2, tags: [db]}
  ops:   {addresses: [10.9.0.1]}
groups:
  web: {match: {tags: [web]}}
  app: {match: {tags: [app]}}
  db: {match: {tags: [db]}}
services:
  http: {protocol: tcp, ports: [8080]}
  pg: {protocol: tcp, ports: [5432]}
  high: {protocol: tcp, ports: [1000-2000]}
  dns: {protocol: udp, ports: [53]}
sections:
  - name: s
    rules:
      - {name: carve, source: any, destination: db, services: [high], action: drop}
      - {name: web-app, source: web, destination: app, services: [http], action: allow}
      - {name: app-db, source: app, destination: db, services: [pg], action: allow}
      - {name: web-dns, source: web, destination: app, services: [dns], action: allow}
      - {name: ops-all, source: 10.9.0.0/24, destination: any, action: allow}
"""


def first_match(
    policy: ResolvedPolicy, src: set[str], dst: set[str], probe: tuple[int, int, int], host: object
) -> str:
    """The reference's first match, given the groups each end belongs to."""
    for rule in policy.rules:
        if rule.audit or not rule.applies_on(host):  # type: ignore[arg-type]
            continue
        if rule.sources is not None and not src & set(rule.sources):
            continue
        if rule.destinations is not None and not dst & set(rule.destinations):
            continue
        if any(t.matches(*probe) for t in rule.terms):
            return rule.action
    return policy.default_action


def flips_brute(before: ResolvedPolicy, after: ResolvedPolicy) -> set[tuple[object, ...]]:
    """Every pair, every probe the dry run could use, rule by rule (`AddressGroup.contains`)."""
    old = {w.name: w for w in before.workloads}
    probes = dryrun._cuts(
        [t for r in (*before.rules, *after.rules) for t in r.terms],
        (*before.rules, *after.rules),
    )

    cache: dict[tuple[int, int], set[str]] = {}

    def groups_of(policy: ResolvedPolicy, key: int) -> set[str]:
        hit = cache.get((id(policy), key))
        if hit is None:
            hit = cache[(id(policy), key)] = {
                n for n, g in policy.groups.items() if g.contains(key)
            }
        return hit

    out: set[tuple[object, ...]] = set()
    for w in after.workloads:
        for v in after.workloads:
            if w.name == v.name or w.name not in old or v.name not in old:
                continue
            pair = dryrun._key_of(w.addresses, True), dryrun._key_of(v.addresses, True)
            if None in pair:
                pair = dryrun._key_of(w.addresses, False), dryrun._key_of(v.addresses, False)
                if None in pair:
                    continue
            s, d = pair
            assert s is not None and d is not None
            ends = [(groups_of(p, s), groups_of(p, d)) for p in (before, after)]
            hosts: list[str | None] = [
                *sorted({h for h in (w.host, v.host, old[w.name].host) if h})
            ]
            for probe in probes:
                for host in hosts or [None]:
                    b = first_match(before, *ends[0], probe, host)
                    a = first_match(after, *ends[1], probe, host)
                    if (b == "allow") != (a == "allow"):
                        out.add((w.name, v.name, probe[0], probe[2], host))
    return out


def rows(reach: dryrun.Reachability) -> set[tuple[object, ...]]:
    return {(f.src, f.dst, f.proto, f.port, f.host) for f in reach.flips}


def edit(text: str, old: str, new: str) -> ResolvedPolicy:
    assert old in text
    return resolve(load_policy(text.replace(old, new)))


def test_a_changed_service_flips_exactly_the_pairs_it_now_allows() -> None:
    before = resolve(load_policy(POLICY))
    after = edit(POLICY, "services: [http], action: allow", "services: [http, pg], action: allow")
    reach = dryrun.reachability(before, after)
    # web -> app over pg: web-1 (h1) and web-2 (h2) to app-1 (h1), counted on both ends' hosts.
    assert rows(reach) == {
        ("web-1", "app-1", TCP, 5432, "h1"),
        ("web-2", "app-1", TCP, 5432, "h1"),
        ("web-2", "app-1", TCP, 5432, "h2"),
    }
    flip = next(f for f in reach.flips if f.src == "web-1")
    assert (flip.before, flip.before_rule, flip.after, flip.after_rule) == (
        "drop",
        "(default)",
        "allow",
        "web-app",
    )
    assert reach.total == 3 and reach.by_host == {"h1": 2, "h2": 1} and reach.complete


def test_a_flip_inside_part_of_a_range_is_found_past_the_earlier_carve_out() -> None:
    before = resolve(load_policy(POLICY))
    # app -> db widened to 1500-3000: 1500-2000 is still dropped by `carve`, 2001+ now allowed.
    after = resolve(
        load_policy(
            POLICY.replace(
                "services: [pg], action: allow", "services: [pg, wide], action: allow"
            ).replace("  high:", "  wide: {protocol: tcp, ports: [1500-3000]}\n  high:")
        )
    )
    assert rows(dryrun.reachability(before, after)) == {
        ("app-1", "db-1", TCP, 2001, "h1"),
        ("app-1", "db-1", TCP, 2001, "h2"),
    }


def test_no_change_flips_nothing_and_a_default_change_flips_everything_unmatched() -> None:
    before = resolve(load_policy(POLICY))
    assert dryrun.reachability(before, resolve(load_policy(POLICY))).total == 0
    after = resolve(load_policy(POLICY + "default_action: allow\n"))
    assert rows(dryrun.reachability(before, after, limit=10_000)) == flips_brute(before, after)
    # Any protocol: each protocol a rule names is probed (app -> web over udp/53 now allowed).
    assert ("app-1", "web-1", 17, 53, "h1") in rows(
        dryrun.reachability(before, after, limit=10_000)
    )


def test_touched_keeps_only_pairs_with_a_touched_workload() -> None:
    before = resolve(load_policy(POLICY))
    after = edit(POLICY, "services: [http], action: allow", "services: [http, pg], action: allow")
    reach = dryrun.reachability(before, after, touched={"web-2"})
    assert {(f.src, f.host) for f in reach.flips} == {("web-2", "h1"), ("web-2", "h2")}
    assert reach.total == 2


def test_the_evaluation_budget_is_reported() -> None:
    before = resolve(load_policy(POLICY))
    after = resolve(load_policy(POLICY + "default_action: allow\n"))
    reach = dryrun.reachability(before, after, budget=2)
    assert not reach.complete and reach.evaluations == 3


@pytest.mark.parametrize("seed", range(3))
def test_reachability_equals_brute_force_on_random_edits(seed: int) -> None:
    rng = random.Random(seed)
    policy = synthetic_policy(36, 16, 24, seed=seed)
    flat = [(s, j) for s, sec in enumerate(policy.sections) for j in range(len(sec.rules))]
    candidate: Policy = policy
    for _ in range(rng.randint(1, 3)):
        kind = rng.choice(("service", "action", "move", "drop-rule"))
        index = rng.randrange(len(flat))
        s, j = flat[index]
        sec = candidate.sections[s]
        rules = list(sec.rules)
        if kind == "service":
            candidate, _ = edit_one_rule(candidate, index)
            continue
        if kind == "action":
            rules[j] = dataclasses.replace(
                rules[j], action="drop" if rules[j].action == "allow" else "allow"
            )
        elif kind == "move":
            rules.insert(rng.randrange(len(rules)), rules.pop(j))
        else:
            rules[j] = dataclasses.replace(rules[j], action="reject")
        sections = list(candidate.sections)
        sections[s] = dataclasses.replace(sec, rules=tuple(rules))
        candidate = dataclasses.replace(candidate, sections=tuple(sections))
    before, after = resolve(policy), resolve(candidate)
    reach = dryrun.reachability(before, after, limit=1_000_000)
    assert reach.complete
    brute = flips_brute(before, after)
    assert rows(reach) == brute
    assert reach.total == len(reach.flips)
    touched = set(rng.sample([w.name for w in after.workloads], 3))
    some = dryrun.reachability(before, after, touched, limit=1_000_000)
    assert rows(some) == {f for f in brute if f[0] in touched or f[1] in touched}
    assert some.total == len(some.flips)


HOSTED = """\
workloads:
  a: {addresses: [10.0.0.1], host: h1, mac: "02:00:00:00:00:01", port: 1, tags: [x]}
  b: {addresses: [10.0.0.2], host: h2, mac: "02:00:00:00:00:02", port: 2}
  c: {addresses: [10.0.0.3], host: h2, mac: "02:00:00:00:00:03", port: 3, tags: [x]}
groups:
  gb: {members: [b]}
  xs: {match: {tags: [x]}}
sections:
  - name: s
    rules:
      - {name: cut, source: any, destination: xs, action: drop, applied_to: [gb]}
      - {name: rest, source: any, destination: any, action: allow}
"""


def per_host_exact(before: ResolvedPolicy, after: ResolvedPolicy, host: str) -> set[object]:
    """What the host agent itself would write: its own compile, before and after."""
    options = CompileOptions(host=host)  # a fresh compiler per apply, as the agent has
    d = compiled_diff(Compiler(options).compile(before), Compiler(options).compile(after))
    return (
        {("i", e) for e in d.inserts}
        | {("m", e) for e in d.modifies}
        | {("d", e) for e in d.deletes}
    )


def as_set(d: object) -> set[object]:
    return (
        {("i", e) for e in d.inserts}  # type: ignore[attr-defined]
        | {("m", e) for e in d.modifies}  # type: ignore[attr-defined]
        | {("d", e) for e in d.deletes}  # type: ignore[attr-defined]
    )


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("applied_to: [gb]", "applied_to: [xs]"),  # the rule moves hosts
        ("tags: [x]}\n  b:", "tags: []}\n  b:"),  # a leaves group xs
        ('host: h2, mac: "02:00:00:00:00:03"', 'host: h1, mac: "02:00:00:00:00:03"'),  # c moves
        ("action: drop, applied_to", "action: reject, applied_to"),
    ],
)
def test_each_host_gets_what_its_own_compile_would_write(old: str, new: str) -> None:
    before = resolve(load_policy(HOSTED))
    after = edit(HOSTED, old, new)
    hosts, overall = dryrun.host_changes(before, after)
    assert [h.host for h in hosts] == ["h1", "h2"]
    for h in hosts:
        assert h.host is not None
        assert as_set(h.diff) == per_host_exact(before, after, h.host), h.host
    single = compiled_diff(Compiler().compile(before), Compiler().compile(after))
    assert as_set(overall) == as_set(single)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("applied_to: [gb]", "applied_to: [xs]"),
        ("action: drop, applied_to", "action: reject, applied_to"),
        ('host: h2, mac: "02:00:00:00:00:03"', 'host: h1, mac: "02:00:00:00:00:03"'),
    ],
)
def test_hosts_past_the_compile_cap_keep_the_acl_rows_of_their_rules(old: str, new: str) -> None:
    before = resolve(load_policy(HOSTED))
    after = edit(HOSTED, old, new)
    hosts, _ = dryrun.host_changes(before, after, max_compiles=0)
    for h in hosts:
        assert h.host is not None and not h.exact

        def acl(d: object) -> set[tuple[object, ...]]:
            return {(k, e.params, e.priority) for k, e in as_set(d) if e.table.endswith(".acl")}  # type: ignore[attr-defined]

        exact = {
            (k, e.params, e.priority)
            for k, e in per_host_exact(before, after, h.host)  # type: ignore[misc]
            if e.table.endswith(".acl")
        }
        assert acl(h.diff) == exact, h.host


def test_the_host_scoped_rule_flips_only_on_its_host() -> None:
    before = resolve(load_policy(HOSTED))
    after = edit(HOSTED, "applied_to: [gb]", "applied_to: [xs]")
    # `cut` moves from h2 (b's host) to the hosts of a and c (h1, h2): h1 now drops to a and c.
    assert rows(dryrun.reachability(before, after)) == flips_brute(before, after)
    assert {f.host for f in dryrun.reachability(before, after).flips} == {"h1"}


def test_policy_dry_run_names_the_changed_rules() -> None:
    before = resolve(load_policy(POLICY))
    after = edit(POLICY, "services: [http], action: allow", "services: [http, pg], action: allow")
    run = dryrun.policy_dry_run(before, after)
    assert run.rules_changed == ["web-app"]
    assert {h.host for h in run.hosts} == {"h1", "h2"}
    assert all(set(h.counts()) == {"acl"} for h in run.hosts)
    assert run.reachability.total == 3


def test_an_inventory_resolver_pair_works_incrementally() -> None:
    policy = synthetic_policy(36, 16, 30)
    resolver = Resolver()
    before = resolver.resolve(policy)
    after = resolver.resolve(edit_one_rule(policy, 20)[0])
    assert rows(dryrun.reachability(before, after, limit=1_000_000)) == flips_brute(before, after)


# -- the command line -------------------------------------------------------------------------


def test_policy_diff_enforced_and_draft_diff_show_hosts_and_flips(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from controlplane.cli import cli

    old, new = tmp_path / "old.yaml", tmp_path / "new.yaml"
    old.write_text(POLICY, encoding="utf-8")
    new.write_text(
        POLICY.replace("services: [http], action: allow", "services: [http, pg], action: allow"),
        encoding="utf-8",
    )
    runner = CliRunner()
    out = runner.invoke(
        cli, ["policy", "diff", str(new), "--enforced", str(old), "--json", "--limit", "2"]
    )
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert data["rules_changed"] == ["web-app"]
    assert data["writes"] == {"insert": 1, "modify": 0, "delete": 0}
    assert len(data["insert"]) == 1 and "5432" in data["insert"][0]["match"]
    assert {h["host"]: h["tables"] for h in data["hosts"]} == {
        "h1": {"acl": {"insert": 1, "modify": 0, "delete": 0}},
        "h2": {"acl": {"insert": 1, "modify": 0, "delete": 0}},
    }
    reach = data["reachability"]
    assert (reach["total"], reach["shown"], reach["complete"]) == (3, 2, True)
    assert reach["flips"][0] | {"host": None} == {
        "src": "web-1",
        "dst": "app-1",
        "service": "tcp/5432",
        "proto": 6,
        "port": 5432,
        "host": None,
        "before": "drop",
        "before_rule": "(default)",
        "after": "allow",
        "after_rule": "web-app",
    }
    state = tmp_path / "state"
    assert (
        runner.invoke(
            cli, ["policy", "draft", "save", "next", str(new), "--state-dir", str(state)]
        ).exit_code
        == 0
    )
    text = runner.invoke(
        cli, ["policy", "draft", "diff", "next", "--enforced", str(old), "--state-dir", str(state)]
    )
    assert text.exit_code == 0, text.output
    assert "web-2" in text.output and "tcp/5432" in text.output and "h1, h2" in text.output
    assert "3 workload pair/service/host verdicts flip on 2 hosts" in text.output
    missing = runner.invoke(
        cli, ["policy", "draft", "diff", "nope", "--enforced", str(old), "--state-dir", str(state)]
    )
    assert missing.exit_code != 0 and "no draft named 'nope'" in missing.output


def test_policy_diff_enforced_refuses_a_bad_candidate(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from controlplane.cli import cli

    old, bad = tmp_path / "old.yaml", tmp_path / "bad.yaml"
    old.write_text(POLICY, encoding="utf-8")
    bad.write_text(POLICY.replace("destination: app,", "destination: nowhere,"), encoding="utf-8")
    out = CliRunner().invoke(cli, ["policy", "diff", str(bad), "--enforced", str(old)])
    assert out.exit_code == 1 and "nowhere" in out.output


def test_counter_rows_split_rule_and_instance_and_group() -> None:
    from controlplane.render import counter_rows

    names = {11: "web-to-app@shop-a", 12: "web-to-app@shop-b", 13: "plain", 14: "app-db@shop-a"}
    hits = [
        (11, "enforced", 2, 200),
        (12, "enforced", 1, 100),
        (13, "enforced", 5, 500),
        (14, "enforced", 3, 300),
        (14, "audit", 7, 700),
        (0, "enforced", 4, 400),
        (99, "enforced", 1, 10),  # not in the policy given
    ]
    rows = {(r["rule_id"], r["mode"]): r for r in counter_rows(hits, names)}
    assert (rows[(11, "enforced")]["rule"], rows[(11, "enforced")]["instance"]) == (
        "web-to-app",
        "shop-a",
    )
    assert (rows[(13, "enforced")]["rule"], rows[(13, "enforced")]["instance"]) == ("plain", "")
    assert rows[(0, "enforced")]["rule"] == "(default)"
    assert rows[(99, "enforced")]["rule"] == ""
    by_rule = {(r["rule"], r["mode"]): r for r in counter_rows(hits, names, "rule")}
    assert by_rule[("web-to-app", "enforced")]["packets"] == 3
    assert by_rule[("web-to-app", "enforced")]["instances"] == ["shop-a", "shop-b"]
    assert by_rule[("app-db", "audit")]["packets"] == 7  # modes never add up
    assert by_rule[("#99", "enforced")]["rule_ids"] == [99]
    by_instance = {(r["instance"], r["mode"]): r for r in counter_rows(hits, names, "instance")}
    assert by_instance[("shop-a", "enforced")]["packets"] == 5
    assert by_instance[("shop-a", "enforced")]["rules"] == ["web-to-app", "app-db"]
    assert by_instance[("", "enforced")]["packets"] == 9  # plain and the default
    with pytest.raises(ValueError, match="rule or instance"):
        counter_rows(hits, names, "host")

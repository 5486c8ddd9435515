"""Templates, instances, dynamic-group criteria and template rules: loading, errors, meaning."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import pytest

from controlplane.policy import (
    Instance,
    PolicyError,
    Problem,
    Workload,
    load_policy,
    load_policy_file,
    resolve,
)
from controlplane.policy.model import Policy
from offload.compiler import Tables, compile_policy

EXAMPLE = Path(__file__).parent / "golden" / "templates_policy.yaml"
TCP = 6


def example() -> Policy:
    return load_policy_file(EXAMPLE)


def tables(policy: Policy) -> Tables:
    return Tables(compile_policy(resolve(policy)).entries())


def problems(text: str) -> list[Problem]:
    with pytest.raises(PolicyError) as info:
        load_policy(textwrap.dedent(text), "t.yaml")
    return info.value.problems


def test_criteria_combine_tags_template_match_not_or_nested_groups_and_blocks() -> None:
    groups = resolve(example()).groups
    shop = {"web-a", "app-a", "db-a", "web-b", "app-b", "db-b"}
    assert groups["shop-v2"].workloads == shop
    assert groups["front-or-ops"].workloads == {"web-a", "web-b", "bastion"}
    # Template tags are given to every workload of the template.
    text = EXAMPLE.read_text().replace("{match: {tags: [admin]}}", "{match: {tags: [shop]}}")
    assert resolve(load_policy(text)).groups["admins"].workloads == shop


def test_not_removes_a_quarantined_workload_from_a_template_group() -> None:
    policy = example()
    ws = tuple(
        dataclasses.replace(w, tags=w.tags | {"quarantine"}) if w.name == "app-b" else w
        for w in policy.workloads
    )
    groups = resolve(dataclasses.replace(policy, workloads=ws)).groups
    assert "app-b" not in groups["shop-v2"].workloads
    assert groups["quarantined"].workloads == {"app-b"}


def test_same_instance_rules_allow_within_an_instance_only() -> None:
    t = tables(example())
    assert t.verdict("10.0.1.1", "10.0.2.1", TCP, 1000, 8080).action == "allow"  # a -> a
    assert t.verdict("10.0.1.2", "10.0.2.2", TCP, 1000, 8080).action == "allow"  # b -> b
    assert t.verdict("10.0.1.1", "10.0.2.2", TCP, 1000, 8080).action == "drop"  # a -> b
    assert t.verdict("10.0.2.2", "10.0.3.1", TCP, 1000, 5432).action == "drop"  # b -> a
    assert t.verdict("10.0.2.1", "10.0.3.1", TCP, 1000, 5432).action == "allow"


def test_any_instance_rule_reaches_every_instance_and_nothing_else() -> None:
    t = tables(example())
    for dst in ("10.0.1.1", "10.0.3.2"):
        assert t.verdict("10.9.0.1", dst, TCP, 1000, 22).action == "allow"
    assert t.verdict("10.9.0.1", "10.9.0.1", TCP, 1000, 22).action == "drop"


def test_a_new_instance_gets_the_template_rules_without_a_policy_edit() -> None:
    policy = example()
    c = dataclasses.replace(
        policy,
        instances=(*policy.instances, Instance("shop-c", "three-tier")),
        workloads=(
            *policy.workloads,
            Workload("web-c", (ipaddress("10.0.1.3"),), frozenset({"web"}), instance="shop-c"),
            Workload("app-c", (ipaddress("10.0.2.3"),), frozenset({"app"}), instance="shop-c"),
        ),
    )
    resolved = resolve(c)
    assert {r.name for r in resolved.rules} >= {"web-to-app@shop-c", "app-to-db@shop-c"}
    t = tables(c)
    assert t.verdict("10.0.1.3", "10.0.2.3", TCP, 1, 8080).action == "allow"
    assert t.verdict("10.0.1.3", "10.0.2.1", TCP, 1, 8080).action == "drop"


def test_same_instance_rules_cost_one_entry_per_instance_and_have_ids_per_instance() -> None:
    compiled = compile_policy(resolve(example()))
    names = compiled.rule_names
    per_rule: dict[str, int] = {}
    for rid, entries in compiled.acl.items():
        per_rule[names[rid]] = len(entries)
    assert per_rule["web-to-app@shop-a"] == per_rule["web-to-app@shop-b"] == 1
    assert per_rule["admin-ssh"] == 1
    ids = [rid for rid, n in names.items() if n.startswith("web-to-app@")]
    assert len(set(ids)) == 2  # hits are counted per template instance


def test_quarantine_tag_overrides_template_rules() -> None:
    policy = example()
    ws = tuple(
        dataclasses.replace(w, tags=w.tags | {"quarantine"}) if w.name == "web-a" else w
        for w in policy.workloads
    )
    t = tables(dataclasses.replace(policy, workloads=ws))
    verdict = t.verdict("10.0.1.1", "10.0.2.1", TCP, 1000, 8080)
    assert verdict.action == "drop" and verdict.rule_id != 0


@pytest.mark.parametrize(
    ("snippet", "line", "path", "message"),
    [
        (
            "groups:\n  g: {match: {tags: [a], colour: red}}\n",
            2,
            "groups.g.match.colour",
            "unknown key 'colour'",
        ),
        (
            "groups:\n  g: {match: {template: nope}}\n",
            2,
            "groups.g.match[0].template",
            "unknown template 'nope'",
        ),
        (
            "groups:\n  g:\n    match:\n      any: []\n",
            4,
            "groups.g.match.any",
            "needs at least one criteria",
        ),
        (
            "groups:\n  g: {match: {not: {group: h}}}\n  h: {match: {group: g}}\n",
            2,
            "groups.g",
            "group cycle",
        ),
        (
            "groups:\n  g: {match: {addresses: [10.0.0.1/8]}}\n",
            2,
            "groups.g.match.addresses[0]",
            "host bits set",
        ),
        (
            "templates:\n  t:\n    rules:\n      - {name: r, source: 10.0.0.0/8, destination: any,"
            " action: allow}\n",
            4,
            "templates.t.rules[0].source",
            "use groups, not CIDRs",
        ),
        (
            "sections:\n  - name: s\n    rules:\n      - {name: r, source: any, destination: any,"
            " action: allow, scope: everywhere}\n",
            4,
            "sections[0].rules[0].scope",
            "scope",
        ),
        (
            "sections:\n  - name: s\n    rules:\n      - {name: r, source: any, destination: any,"
            " action: allow, template: nope}\n",
            4,
            "sections[0].rules[0].template",
            "unknown template 'nope'",
        ),
        (
            "templates: {t: {}}\ninstances:\n  i: {template: u}\n",
            3,
            "instances.i.template",
            "unknown template 'u'",
        ),
        (
            "templates: {t: {}, u: {}}\ninstances: {i: {template: t}}\n"
            "workloads:\n  w: {instance: i, template: u}\n",
            4,
            "workloads.w.template",
            "differs from instance",
        ),
    ],
)
def test_bad_template_and_criteria_input_is_reported_with_line_and_path(
    snippet: str, line: int, path: str, message: str
) -> None:
    found = problems(snippet)
    assert any(p.line == line and p.path == path and message in p.message for p in found), found


def ipaddress(text: str) -> object:
    import ipaddress as ip

    return ip.ip_address(text)

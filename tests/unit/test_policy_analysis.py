"""Warnings: rules shadowed by earlier ones (alone or together), empty groups, dead applied-to."""

from __future__ import annotations

import textwrap

from controlplane.policy import Problem, analyze, load_demo_policy, load_policy, resolve
from controlplane.policy.analysis import group_intervals, subtract
from offload.compiler.rules import AddressGroup
from offload.p4values import V4_MAPPED, network_to_lpm128

HEAD = """\
workloads:
  a: {addresses: [10.0.0.1, "2001:db8::1"], tags: [x]}
  b: {addresses: [10.0.0.2]}
groups:
  ga: {members: [a]}
  gab: {members: [a, b]}
  empty: {match: {tags: [nothing]}}
  v6all: {addresses: ["::/0"]}
  v4all: {addresses: [0.0.0.0/0]}
sections:
  - name: s
    rules:
"""  # rules start at line 13


def warnings(rules: str) -> list[Problem]:
    policy = load_policy(HEAD + textwrap.indent(textwrap.dedent(rules), "      "))
    return analyze(policy, resolve(policy))


def shadowed(found: list[Problem]) -> list[str]:
    return [w.message for w in found if "shadowed" in w.message]


def redundant(found: list[Problem]) -> list[tuple[int, str]]:
    return [(w.line, w.message) for w in found if "redundant:" in w.message]


def test_the_demo_policy_has_no_warnings() -> None:
    policy = load_demo_policy()
    assert analyze(policy, resolve(policy)) == []


def test_a_rule_covered_by_one_earlier_rule_is_reported_with_its_line() -> None:
    found = warnings(
        """\
        - {name: wide, source: gab, destination: any, protocol: tcp, ports: "1-1000", action: allow}
        - {name: narrow, source: ga, destination: gab, protocol: tcp, ports: 80, action: drop}
        """
    )
    assert found == [
        Problem(
            14,
            "sections[0].rules[1]",
            "rule 'narrow' is shadowed by earlier rule(s) 'wide': it never matches",
        )
    ]


def test_a_rule_covered_only_by_several_earlier_rules_together_is_reported() -> None:
    found = warnings(
        """\
        - {name: low, source: any, destination: ga, protocol: tcp, ports: "80-85", action: allow}
        - {name: high, source: any, destination: ga, protocol: tcp, ports: "86-90", action: drop}
        - {name: all, source: gab, destination: ga, protocol: tcp, ports: "80-90", action: drop}
        """
    )
    assert shadowed(found) == [
        "rule 'all' is shadowed by earlier rule(s) 'low', 'high': it never matches"
    ]


def test_partial_cover_and_other_protocols_are_not_shadowing() -> None:
    assert not shadowed(
        warnings(
            """\
        - {name: low, source: any, destination: ga, protocol: tcp, ports: "80-85", action: allow}
        - {name: all, source: any, destination: ga, protocol: tcp, ports: "80-86", action: drop}
        - {name: udp, source: any, destination: ga, protocol: udp, ports: "80-85", action: drop}
        """
        )
    )


def test_ipv6_any_does_not_shadow_ipv4_but_both_families_together_do() -> None:
    found = warnings(
        """\
        - {name: six, source: v6all, destination: any, action: drop}
        - {name: four, source: ga, destination: any, action: allow}
        - {name: v4, source: v4all, destination: any, action: allow}
        - {name: again, source: any, destination: ga, action: allow}
        """
    )
    assert shadowed(found) == [
        "rule 'again' is shadowed by earlier rule(s) 'six', 'four', 'v4': it never matches"
    ]


def test_rules_over_empty_groups_and_dead_applied_to_are_warned() -> None:
    found = warnings(
        """\
        - {name: dead, source: empty, destination: ga, action: allow}
        - {name: half, source: [empty, gab], destination: ga, action: allow}
        - {name: nowhere, source: any, destination: any, action: drop, applied_to: [empty]}
        """
    )
    assert [(w.path, w.line, w.message) for w in found] == [
        (
            "sections[0].rules[0].source",
            13,
            "group 'empty' is empty (no workload or address) so the rule never matches",
        ),
        ("sections[0].rules[1].source", 14, "group 'empty' is empty (no workload or address)"),
        (
            "sections[0].rules[2].applied_to",
            15,
            "applied_to matches no host: the rule is installed nowhere",
        ),
    ]


def test_a_block_inside_another_of_the_same_group_is_redundant() -> None:
    policy = load_policy("groups:\n  g: {addresses: [10.0.0.0/8, 10.1.0.0/16, 2001:db8::/32]}\n")
    found = analyze(policy, resolve(policy))
    assert [(w.path, w.message) for w in found] == [
        ("groups.g.addresses", "10.1.0.0/16 is inside 10.0.0.0/8 (redundant)")
    ]


def test_ipv6_blocks_leave_out_the_ipv4_mapped_range() -> None:
    group = AddressGroup("all6", frozenset({network_to_lpm128("::/0")}))
    v4 = (V4_MAPPED, V4_MAPPED | 0xFFFFFFFF)
    assert group_intervals(group) == subtract([(0, (1 << 128) - 1)], [v4])


def test_an_allow_covered_by_a_later_allow_with_nothing_between_is_redundant() -> None:
    found = warnings(
        """\
        - {name: narrow, source: ga, destination: gab, protocol: tcp, ports: 80, action: allow}
        - {name: other, source: any, destination: any, protocol: udp, action: drop, log: true}
        - {name: wide, source: gab, destination: any, protocol: tcp, action: allow}
        """
    )
    assert redundant(found) == [
        (
            13,
            "rule 'narrow' is redundant: without it 'wide' give its packets the same verdict",
        )
    ]


def test_a_different_action_in_between_keeps_a_rule() -> None:
    # tcp/80 from a to b: narrow allows; without it, block (rule 2) would drop it.
    found = warnings(
        """\
        - {name: narrow, source: ga, destination: gab, protocol: tcp, ports: 80, action: allow}
        - {name: block, source: any, destination: gab, protocol: tcp, ports: 80, action: reject}
        - {name: wide, source: gab, destination: any, protocol: tcp, action: allow}
        """
    )
    assert redundant(found) == []


def test_a_drop_before_the_default_drop_is_redundant_unless_a_later_rule_allows() -> None:
    found = warnings(
        """\
        - {name: early, source: ga, destination: any, protocol: tcp, ports: 22, action: drop}
        - {name: ssh, source: gab, destination: ga, protocol: tcp, ports: 22, action: allow}
        - {name: tail, source: ga, destination: any, protocol: udp, action: drop}
        - {name: logged, source: ga, destination: any, protocol: udp, action: drop, log: true}
        """
    )
    # early is needed (ssh would allow a->a tcp/22); tail is covered by logged;
    # logged keeps its log lines, so it is never called redundant.
    assert redundant(found) == [
        (
            15,
            "rule 'tail' is redundant: without it 'logged' give its packets the same verdict",
        )
    ]


def test_a_later_rule_installed_on_fewer_hosts_does_not_make_a_rule_redundant() -> None:
    text = """\
workloads:
  a: {addresses: [10.0.0.1], host: h1}
  b: {addresses: [10.0.0.2], host: h2}
groups:
  ga: {members: [a]}
sections:
  - name: s
    rules:
      - {name: first, source: any, destination: ga, action: allow}
      - {name: later, source: any, destination: any, action: allow, applied_to: [ga]}
"""
    policy = load_policy(text)
    # On h2 only `first` allows traffic to a: removing it would change h2's verdicts.
    assert redundant(analyze(policy, resolve(policy))) == []
    policy = load_policy(text.replace(", applied_to: [ga]", ""))
    assert redundant(analyze(policy, resolve(policy))) == [
        (9, "rule 'first' is redundant: without it 'later' give its packets the same verdict")
    ]


def test_audit_rules_neither_shadow_nor_keep_enforced_rules() -> None:
    found = warnings(
        """\
        - {name: watch, source: any, destination: any, action: allow, audit: true}
        - {name: narrow, source: ga, destination: gab, protocol: tcp, ports: 80, action: allow}
        - {name: watch-drop, source: any, destination: any, action: drop, audit: true}
        - {name: wide, source: gab, destination: any, protocol: tcp, action: allow}
        """
    )
    # Audit rules match first among themselves only: watch-drop never counts anything.
    assert shadowed(found) == [
        "rule 'watch-drop' is shadowed by earlier rule(s) 'watch': it never matches"
    ]
    assert redundant(found) == [
        (14, "rule 'narrow' is redundant: without it 'wide' give its packets the same verdict")
    ]

"""Resolution: groups to prefixes, criteria, services to terms, stable ids, reuse on edits."""

from __future__ import annotations

import dataclasses
import ipaddress

from controlplane.policy import (
    Criteria,
    Group,
    Policy,
    Resolver,
    Rule,
    Section,
    ServiceTerm,
    Workload,
    load_demo_policy,
    load_policy,
    resolve,
)
from controlplane.policy.ids import assign_ids, name_hash
from controlplane.policy.resolve import term_of
from offload.compiler.rules import Term
from offload.p4values import ip_to_int128, network_to_lpm128


def host(addr: str) -> tuple[int, int]:
    return ip_to_int128(addr), 128


def test_demo_groups_resolve_to_workload_addresses_and_blocks() -> None:
    r = resolve(load_demo_policy())
    assert r.groups["web"].prefixes == {host("10.0.1.10"), host("2001:db8:1::10")}
    assert r.groups["web"].workloads == {"web-1"}
    tiers = r.groups["tiers"]
    assert tiers.workloads == {"web-1", "app-1", "db-1"}
    assert len(tiers.prefixes) == 6
    assert r.groups["admin-net"].prefixes == {
        network_to_lpm128("192.0.2.0/24"),
        network_to_lpm128("2001:db8:ad::/48"),
    }
    assert r.groups["admin-net"].workloads == frozenset()
    assert r.default_action == "drop"
    assert [x.name for x in r.rules][:2] == ["admin-ssh", "admin-ping"]


def workloads() -> tuple[Workload, ...]:
    a = ipaddress.ip_address
    return (
        Workload("web-1", (a("10.0.0.1"),), frozenset({"web", "prod"}), "h1"),
        Workload("web-2", (a("10.0.0.2"),), frozenset({"web"}), "h2"),
        Workload("wiki-1", (a("10.0.0.3"),), frozenset({"web", "prod"}), "h2"),
        Workload("db-1", (a("10.0.0.4"),), frozenset({"db", "prod"}), "h1"),
    )


def test_criteria_combine_tags_and_name_with_and_and_alternatives_with_or() -> None:
    groups = (
        Group("prod-web", match=(Criteria(frozenset({"web", "prod"})),)),
        Group("web-named", match=(Criteria(name="web-*"),)),
        Group("both", match=(Criteria(frozenset({"web"}), name="w?ki-*"),)),
        Group("on-h1", match=(Criteria(host="h1"),)),
        Group("either", match=(Criteria(name="db-*"), Criteria(frozenset({"nope"})))),
        Group("outer", members=("web-2",), groups=("either",)),
    )
    r = resolve(Policy(workloads(), groups))
    assert r.groups["prod-web"].workloads == {"web-1", "wiki-1"}
    assert r.groups["web-named"].workloads == {"web-1", "web-2"}
    assert r.groups["both"].workloads == {"wiki-1"}
    assert r.groups["on-h1"].workloads == {"web-1", "db-1"}
    assert r.groups["either"].workloads == {"db-1"}
    assert r.groups["outer"].workloads == {"web-2", "db-1"}
    assert r.groups["outer"].prefixes == {host("10.0.0.2"), host("10.0.0.4")}


def test_services_become_terms_with_merged_ranges_and_icmp_keys() -> None:
    assert term_of(ServiceTerm(6, ((80, 80), (81, 90), (100, 200), (150, 160)))) == Term(
        6, (), ((80, 90), (100, 200))
    )
    assert term_of(ServiceTerm(1, icmp_type=8)) == Term(1, (), ((0x800, 0x8FF),))
    assert term_of(ServiceTerm(58, icmp_type=1, icmp_code=4)) == Term(58, (), ((0x104, 0x104),))
    assert term_of(ServiceTerm(None)) == Term()


def test_rules_resolve_inline_blocks_services_hosts_and_skip_disabled() -> None:
    policy = load_policy(
        """\
workloads:
  a: {addresses: [10.0.0.1], host: h1}
groups:
  g: {members: [a]}
services:
  dns: [{protocol: udp, ports: 53}, {protocol: tcp, ports: 53}]
sections:
  - name: s
    rules:
      - {name: one, source: [192.0.2.0/24, g], destination: any, service: dns, action: allow}
      - {name: off, source: any, destination: any, action: drop, enabled: false}
      - {name: two, source: g, destination: 2001:db8::1, action: reject, applied_to: [g]}
      - {name: three, source: any, destination: g, action: drop, applied_to: ["host:h9"]}
"""
    )
    r = resolve(policy)
    one, two, three = r.rules
    assert one.sources == ("192.0.2.0/24", "g") and one.destinations is None
    assert r.groups["192.0.2.0/24"].prefixes == {network_to_lpm128("192.0.2.0/24")}
    assert one.terms == (Term(17, (), ((53, 53),)), Term(6, (), ((53, 53),)))
    assert one.hosts is None
    # Disabled rules keep their place: positions (and so priorities) of the others do not move.
    assert [x.position for x in r.rules] == [0, 2, 3]
    assert two.destinations == ("2001:db8::1/128",) and two.hosts == {"h1"}
    assert three.hosts == {"h9"}
    assert set(r.rule_names.values()) == {"one", "off", "two", "three"}


def test_rule_ids_are_stable_across_edits_of_other_rules() -> None:
    policy = load_demo_policy()
    before = {x.name: x.rule_id for x in resolve(policy).rules}
    sections = list(policy.sections)
    first = sections[0]
    extra = Rule("new-rule", None, None, "drop")
    sections[0] = dataclasses.replace(first, rules=(extra, *first.rules[1:]))
    after = {
        x.name: x.rule_id
        for x in resolve(dataclasses.replace(policy, sections=tuple(sections))).rules
    }
    del before["admin-ssh"]
    assert all(after[name] == rid for name, rid in before.items())
    assert after["new-rule"] == name_hash("new-rule", 32)
    assert len(set(after.values())) == len(after)


def test_ids_fixed_in_the_policy_win_and_collisions_probe() -> None:
    taken = name_hash("b", 16)
    ids = assign_ids(["a", "b", "c"], {"a": taken}, 16)
    assert ids["a"] == taken
    assert ids["b"] != taken and ids["b"] == taken % 0xFFFF + 1
    assert len(set(ids.values())) == 3 and 0 not in ids.values()


def test_workload_ids_are_unique_non_zero_and_fixed_ones_are_kept() -> None:
    wl = (*workloads(), Workload("fixed", id=7))
    r = resolve(Policy(wl))
    ids = {w.name: w.workload_id for w in r.workloads}
    assert ids["fixed"] == 7
    assert len(set(ids.values())) == len(ids) and 0 not in ids.values()
    assert r.workloads[0].addresses == (ip_to_int128("10.0.0.1"),)


def test_resolver_hands_back_the_same_objects_for_what_did_not_change() -> None:
    policy = load_demo_policy()
    resolver = Resolver()
    first = resolver.resolve(policy)
    again = resolver.resolve(policy)
    assert all(a is b for a, b in zip(first.rules, again.rules, strict=True))
    section = policy.sections[1]
    edited_rule = dataclasses.replace(section.rules[0], services=("ssh",))
    edited = dataclasses.replace(
        policy,
        sections=(
            policy.sections[0],
            dataclasses.replace(section, rules=(edited_rule, *section.rules[1:])),
        ),
    )
    third = resolver.resolve(edited)
    changed = [a.name for a, b in zip(first.rules, third.rules, strict=True) if a is not b]
    assert changed == ["web-public"]
    assert third.rules[3].terms == (Term(6, (), ((22, 22),)),)
    # A change to groups redoes every rule (applied-to hosts may depend on them).
    regrouped = dataclasses.replace(edited, groups=(*edited.groups, Group("extra")))
    fourth = resolver.resolve(regrouped)
    assert fourth.groups["extra"].prefixes == frozenset()
    assert fourth.rules == third.rules


def test_one_shot_and_incremental_resolution_agree() -> None:
    policy = load_demo_policy()
    resolver = Resolver()
    block = ipaddress.ip_network("192.0.2.0/24")
    rule = Rule("r", (block,), None, "drop")
    resolver.resolve(Policy(workloads(), sections=(Section("x", (rule,)),)))
    assert resolver.resolve(policy) == resolve(policy)


def test_blocks_written_in_rules_are_forgotten_with_the_last_rule_using_them() -> None:
    # Found by the incremental property test: a group edit (which redoes every rule) together
    # with disabling the only rule that wrote a block once left the block behind.
    block = ipaddress.ip_network("192.0.2.0/24")
    rule = Rule("r", None, (block,), "allow")
    policy = Policy(workloads(), (Group("g", addresses=(block,)),), (), (Section("s", (rule,)),))
    resolver = Resolver()
    assert "192.0.2.0/24" in resolver.resolve(policy).groups
    edited = Policy(
        workloads(),
        (Group("g"),),
        (),
        (Section("s", (dataclasses.replace(rule, enabled=False),)),),
    )
    assert resolver.resolve(edited) == resolve(edited)
    assert "192.0.2.0/24" not in resolver.resolve(edited).groups

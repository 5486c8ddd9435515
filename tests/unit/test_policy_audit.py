"""Audit mode: a rule (or a whole section) is counted in acl_audit but never enforced.

From the policy file through resolution and compilation to the reference evaluators and the
fast path's rule set: an audit rule gets acl_audit entries instead of acl ones, and no verdict
ever depends on it.
"""

from __future__ import annotations

import dataclasses

import pytest

from controlplane.policy import (
    Policy,
    PolicyError,
    Resolver,
    load_policy,
    resolve,
)
from offload import names
from offload.compiler import (
    CompileOptions,
    Compiler,
    Packet,
    Tables,
    compile_policy,
    evaluate,
    evaluate_audit,
)
from offload.compiler.delta import diff
from offload.compiler.fastpath import compile_fastpath
from offload.p4entity import decode_table_entry, encode_table_entry
from offload.p4schema import P4Schema

POLICY = """\
workloads:
  web-1: {addresses: [10.0.1.10], tags: [web]}
  db-1: {addresses: [10.0.3.10], tags: [db]}
groups:
  web: {match: {tags: [web]}}
  db: {members: [db-1]}
services:
  pg: {protocol: tcp, ports: [5432]}
sections:
  - name: watch
    audit: true
    rules:
      - {name: watched-drop, source: web, destination: db, service: pg, action: drop}
  - name: main
    rules:
      - {name: quiet-reject, source: any, destination: db, action: reject, audit: true}
      - {name: web-db, source: web, destination: db, service: pg, action: allow}
      - {name: no-ssh, source: any, destination: any, protocol: tcp, ports: 22, action: drop}
default_action: drop
"""
WEB, DB = "10.0.1.10", "10.0.3.10"


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_policy(POLICY, "audit.yaml")


def rule_id(policy: Policy, name: str) -> int:
    return next(r.rule_id for r in resolve(policy).rules if r.name == name)


def test_loader_reads_audit_on_rules_and_sections(policy: Policy) -> None:
    watch, main = policy.sections
    assert watch.audit and not main.audit
    assert [r.audit for r in watch.rules] == [False]  # the section's flag, not the rule's
    assert [r.audit for r in main.rules] == [True, False, False]


def test_section_audit_reaches_every_rule_and_rule_audit_only_itself(policy: Policy) -> None:
    audit = {r.name: r.audit for r in resolve(policy).rules}
    assert audit == {"watched-drop": True, "quiet-reject": True, "web-db": False, "no-ssh": False}


@pytest.mark.parametrize(
    "old", ["    audit: true\n", "action: reject, audit: true"], ids=["section", "rule"]
)
def test_audit_must_be_a_boolean(old: str) -> None:
    assert POLICY.count(old) == 1
    with pytest.raises(PolicyError) as info:
        load_policy(POLICY.replace(old, old.replace("true", "maybe")), "audit.yaml")
    assert len(info.value.problems) == 1
    assert "audit" in str(info.value.problems[0])


def test_audit_rules_compile_into_acl_audit_only(policy: Policy) -> None:
    compiled = compile_policy(resolve(policy))
    tables = compiled.tables()
    for name in ("watched-drop", "quiet-reject"):
        rid = rule_id(policy, name)
        entries = compiled.acl[rid]
        assert entries and all(e.table == names.ACL_AUDIT for e in entries)
        assert all(e.action == names.AUDIT_HIT and e.params == (("rule_id", rid),) for e in entries)
        assert not any(e.params_dict["rule_id"] == rid for e in tables[names.ACL])
    for name in ("web-db", "no-ssh"):
        assert all(e.table == names.ACL for e in compiled.acl[rule_id(policy, name)])
    assert compiled.stats.entries[names.ACL_AUDIT] == len(tables[names.ACL_AUDIT]) == 2
    assert compiled.stats.entries[names.ACL] == len(tables[names.ACL]) - 1  # not the default
    # The same matches as the rule would have had enforced, in the same priority order.
    enforced = dataclasses.replace(
        policy, sections=tuple(dataclasses.replace(s, audit=False) for s in policy.sections)
    )
    enforced = dataclasses.replace(
        enforced,
        sections=tuple(
            dataclasses.replace(
                s, rules=tuple(dataclasses.replace(r, audit=False) for r in s.rules)
            )
            for s in enforced.sections
        ),
    )
    plain = compile_policy(resolve(enforced))
    for name in ("watched-drop", "quiet-reject"):
        rid = rule_id(policy, name)
        assert [(e.match, e.priority) for e in compiled.acl[rid]] == [
            (e.match, e.priority) for e in plain.acl[rid]
        ]


def test_audit_entries_are_valid_p4runtime_entries(policy: Policy) -> None:
    schema = P4Schema.load()
    compiled = compile_policy(resolve(policy), CompileOptions(stateful=True))
    for entry in compiled.tables()[names.ACL_AUDIT]:
        assert decode_table_entry(schema, encode_table_entry(schema, entry)) == entry


@pytest.mark.parametrize(
    ("packet", "verdict", "audit"),
    [
        (Packet(WEB, DB, 6, 40000, 5432), ("allow", "web-db"), "watched-drop"),
        (Packet(WEB, DB, 6, 40000, 22), ("drop", "no-ssh"), "quiet-reject"),
        (Packet(DB, WEB, 6, 40000, 5432), ("drop", None), None),
        (Packet(WEB, DB, 17, 40000, 53), ("drop", None), "quiet-reject"),
    ],
)
def test_verdicts_ignore_audit_rules_which_are_still_reported(
    policy: Policy, packet: Packet, verdict: tuple[str, str | None], audit: str | None
) -> None:
    resolved = resolve(policy)
    want = (verdict[0], rule_id(policy, verdict[1]) if verdict[1] else 0)
    want_audit = rule_id(policy, audit) if audit else 0
    assert tuple(evaluate(resolved, packet)) == want
    assert evaluate_audit(resolved, packet) == want_audit
    tables = Tables(compile_policy(resolved).entries())
    assert tuple(tables.verdict(*packet)) == want
    assert tables.audit(*packet) == want_audit


def test_fast_path_rules_leave_audit_rules_out(policy: Policy) -> None:
    rules = compile_fastpath(resolve(policy))
    audit = {rule_id(policy, "watched-drop"), rule_id(policy, "quiet-reject")}
    assert audit.isdisjoint(rules.by_rule)
    assert {rule_id(policy, "web-db"), rule_id(policy, "no-ssh")} <= set(rules.by_rule)


def test_watching_a_section_then_enforcing_it_moves_only_its_entries(policy: Policy) -> None:
    resolver, compiler = Resolver(), Compiler()
    before = compiler.compile(resolver.resolve(policy))
    sections = list(policy.sections)
    sections[0] = dataclasses.replace(sections[0], audit=False)  # the very same rule objects
    edited = dataclasses.replace(policy, sections=tuple(sections))
    resolved = resolver.resolve(edited)
    assert resolved == resolve(edited)
    after = compiler.compile(resolved)
    changes = diff(before, after)
    rid = rule_id(policy, "watched-drop")
    assert {e.table for e in changes.deletes} == {names.ACL_AUDIT}
    assert {e.table for e in changes.inserts} == {names.ACL}
    assert {e.params_dict["rule_id"] for e in (*changes.deletes, *changes.inserts)} == {rid}
    assert changes.modifies == []
    assert set(changes.apply_to(before.entries())) == set(after.entries())
    # Enforced now: the drop decides before web-db's allow.
    assert Tables(after.entries()).verdict(WEB, DB, 6, 40000, 5432) == ("drop", rid)

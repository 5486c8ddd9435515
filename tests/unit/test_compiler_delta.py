"""Recompiling after an edit: unchanged chunks are reused and the diff holds only real changes."""

from __future__ import annotations

import dataclasses
import ipaddress

from controlplane.policy import Group, Policy, Resolver, Rule, Workload, load_demo_policy
from offload import names
from offload.compiler import CompiledPolicy, Compiler
from offload.compiler.delta import diff
from offload.entries import Lpm
from offload.p4values import network_to_lpm128
from offload.sync import Diff
from offload.sync import diff as full_diff


def edit_rule(policy: Policy, name: str, **changes: object) -> Policy:
    sections = []
    for s in policy.sections:
        rules = tuple(dataclasses.replace(r, **changes) if r.name == name else r for r in s.rules)
        sections.append(dataclasses.replace(s, rules=rules))
    return dataclasses.replace(policy, sections=tuple(sections))


class Session:
    """A resolver and a compiler kept across edits, as the daemon keeps them."""

    def __init__(self, policy: Policy) -> None:
        self.resolver, self.compiler = Resolver(), Compiler()
        self.compiled = self.compile(policy)

    def compile(self, policy: Policy) -> CompiledPolicy:
        return self.compiler.compile(self.resolver.resolve(policy))

    def step(self, policy: Policy) -> tuple[CompiledPolicy, Diff]:
        new = self.compile(policy)
        delta = diff(self.compiled, new)
        # The shortcut must agree with a plain diff of every entry, and land on `new`.
        plain = full_diff(new.entries(), self.compiled.entries())
        assert sorted(map(repr, delta.inserts)) == sorted(map(repr, plain.inserts))
        assert sorted(map(repr, delta.deletes)) == sorted(map(repr, plain.deletes))
        assert sorted(map(repr, delta.modifies)) == sorted(map(repr, plain.modifies))
        assert set(delta.apply_to(self.compiled.entries())) == set(new.entries())
        self.compiled = new
        return new, delta


def test_recompiling_the_same_policy_reuses_every_chunk_and_writes_nothing() -> None:
    policy = load_demo_policy()
    session = Session(policy)
    before = session.compiled
    after, delta = session.step(policy)
    assert len(delta) == 0 and delta.unchanged == len(after.entries())
    assert after.src_class is before.src_class
    assert all(after.acl[k] is before.acl[k] for k in before.acl)


def test_editing_one_rule_writes_only_that_rules_entries() -> None:
    policy = load_demo_policy()
    session = Session(policy)
    before = session.compiled
    after, delta = session.step(edit_rule(policy, "web-to-app", services=("ssh",)))
    changed = [k for k in after.acl if after.acl[k] is not before.acl[k]]
    assert [after.rule_names[k] for k in changed] == ["web-to-app"]
    assert (len(delta.inserts), len(delta.deletes), len(delta.modifies)) == (1, 1, 0)
    assert delta.inserts[0].match_dict["l4_dst"].low == 22  # type: ignore[union-attr]


def test_changing_only_a_rules_action_is_a_modify() -> None:
    policy = load_demo_policy()
    session = Session(policy)
    _, delta = session.step(edit_rule(policy, "web-to-db-reject", action="drop"))
    assert (len(delta.inserts), len(delta.deletes), len(delta.modifies)) == (0, 0, 1)
    assert delta.modifies[0].action == names.ACL_DROP


def test_appending_a_rule_moves_no_priority() -> None:
    policy = load_demo_policy()
    session = Session(policy)
    last = policy.sections[-1]
    extra = Rule("late", ("admin-net",), ("db",), "allow", services=("postgres",))
    grown = dataclasses.replace(
        policy,
        sections=(*policy.sections[:-1], dataclasses.replace(last, rules=(*last.rules, extra))),
    )
    _, delta = session.step(grown)
    assert len(delta.inserts) == 1 and not delta.deletes and not delta.modifies


def test_disabling_and_re_enabling_a_rule_touches_only_it() -> None:
    policy = load_demo_policy()
    session = Session(policy)
    _, off = session.step(edit_rule(policy, "admin-ping", enabled=False))
    assert (len(off.inserts), len(off.deletes)) == (0, 2)
    _, on = session.step(policy)
    assert (len(on.inserts), len(on.deletes)) == (2, 0)


def test_a_new_group_member_rewrites_classification_entries_only() -> None:
    policy = load_demo_policy()
    session = Session(policy)
    web2 = Workload(
        "web-2",
        (ipaddress.ip_address("10.0.1.11"),),
        frozenset({"web", "prod"}),
        "host-1",
        port=4,
        mac=0x020000000102,
    )
    _, delta = session.step(dataclasses.replace(policy, workloads=(*policy.workloads, web2)))
    assert {e.table for e in delta.inserts} == {names.SRC_CLASS, names.DST_CLASS, names.L2_FORWARD}
    assert not delta.deletes and not delta.modifies  # bitmap codes did not move: no ACL write


def test_a_new_default_action_is_one_modify_and_a_first_sync_inserts_everything() -> None:
    policy = load_demo_policy()
    session = Session(policy)
    _, delta = session.step(dataclasses.replace(policy, default_action="allow"))
    assert len(delta) == 1 and delta.modifies[0].is_default
    first = diff(None, session.compiled)
    assert len(first.inserts) == len(session.compiled.entries()) - 1
    assert [e.is_default for e in first.modifies] == [True]


def test_a_rule_that_brings_in_a_new_group_leaves_other_groups_bits_alone() -> None:
    policy = load_demo_policy()
    # "aaa" sorts before every other group: without sticky bits all of them would shift.
    extra = Group("aaa", addresses=(ipaddress.ip_network("203.0.113.0/24"),))
    policy = dataclasses.replace(policy, groups=(*policy.groups, extra))
    session = Session(policy)
    before = session.compiled
    after, delta = session.step(edit_rule(policy, "web-to-app", source=("aaa",)))
    changed = {after.rule_names[k] for k in after.acl if after.acl[k] != before.acl[k]}
    assert changed == {"web-to-app"}
    new_block = ("ip_src", Lpm(*network_to_lpm128("203.0.113.0/24")))
    assert {(e.table, e.match) for e in delta.inserts if e.table == names.SRC_CLASS} == {
        (names.SRC_CLASS, (new_block,))
    }
    assert len(delta.inserts) == 2 and len(delta.deletes) == 1 and not delta.modifies

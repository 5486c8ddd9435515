"""The demo policy compiled, asked by meaning: who may talk to whom, through real tables."""

from __future__ import annotations

import dataclasses

import pytest

from controlplane.policy import Rule, load_demo_policy, resolve
from offload import names
from offload.compiler import CompileOptions, Packet, Tables, compile_policy, evaluate
from offload.compiler.ranges import RangeKind
from offload.compiler.rules import ResolvedPolicy
from offload.entries import Entry
from offload.p4entity import decode_table_entry, encode_table_entry
from offload.p4schema import P4Schema

TCP, UDP, ICMP, ICMP6 = 6, 17, 1, 58
WEB, APP, DB = "10.0.1.10", "10.0.2.10", "10.0.3.10"
WEB6, APP6, DB6 = "2001:db8:1::10", "2001:db8:2::10", "2001:db8:3::10"
ADMIN, ADMIN6, MONITOR, OUTSIDE = "192.0.2.7", "2001:db8:ad::7", "198.51.100.3", "203.0.113.9"


@pytest.fixture(scope="module")
def resolved() -> ResolvedPolicy:
    return resolve(load_demo_policy())


def rule_id(resolved: ResolvedPolicy, name: str) -> int:
    return next(r.rule_id for r in resolved.rules if r.name == name)


# (source, destination, protocol, source port, destination port) -> (verdict, deciding rule)
CASES = [
    ((ADMIN, WEB, TCP, 40000, 22), ("allow", "admin-ssh")),
    ((ADMIN6, DB6, TCP, 40000, 22), ("allow", "admin-ssh")),
    ((ADMIN, DB, ICMP, 7, 8 << 8), ("allow", "admin-ping")),
    ((ADMIN6, APP6, ICMP6, 7, 128 << 8), ("allow", "admin-ping")),
    ((ADMIN, DB, ICMP, 7, 0 << 8), ("drop", None)),  # echo reply is not echo request
    ((MONITOR, APP, TCP, 50000, 9100), ("allow", "monitoring-scrape")),
    ((MONITOR, DB, TCP, 50000, 9199), ("allow", "monitoring-scrape")),
    ((MONITOR, DB, TCP, 50000, 9200), ("drop", None)),
    ((OUTSIDE, WEB, TCP, 50000, 443), ("allow", "web-public")),
    ((OUTSIDE, WEB6, TCP, 50000, 80), ("allow", "web-public")),
    ((OUTSIDE, APP, TCP, 50000, 8080), ("drop", None)),
    ((WEB, APP, TCP, 50000, 8080), ("allow", "web-to-app")),
    ((WEB6, APP6, TCP, 50000, 8080), ("allow", "web-to-app")),
    ((WEB, APP, UDP, 50000, 8080), ("drop", None)),
    ((APP, DB, TCP, 50000, 5432), ("allow", "app-to-db")),
    ((APP6, DB6, TCP, 50000, 5432), ("allow", "app-to-db")),
    ((APP, DB, TCP, 50000, 5433), ("drop", None)),
    ((WEB, DB, TCP, 50000, 5432), ("reject", "web-to-db-reject")),
    ((WEB6, DB6, UDP, 53, 53), ("reject", "web-to-db-reject")),
    ((DB, WEB, TCP, 5432, 50000), ("drop", None)),
    ((ADMIN, OUTSIDE, TCP, 1, 22), ("drop", None)),
]


@pytest.mark.parametrize("range_kind", ["range", "ternary"])
@pytest.mark.parametrize(("packet", "expected"), CASES)
def test_demo_verdicts(
    resolved: ResolvedPolicy,
    range_kind: RangeKind,
    packet: tuple[str, str, int, int, int],
    expected: tuple[str, str | None],
) -> None:
    tables = Tables(compile_policy(resolved, CompileOptions(range_kind=range_kind)).entries())
    action, rule = expected
    want = (action, rule_id(resolved, rule) if rule else 0)
    assert tables.verdict(*packet) == want
    assert evaluate(resolved, Packet(*packet)) == want


def test_stateful_allows_go_to_the_service_and_the_rest_is_unchanged(
    resolved: ResolvedPolicy,
) -> None:
    tables = Tables(compile_policy(resolved, CompileOptions(stateful=True)).entries())
    assert tables.verdict(WEB, APP, TCP, 1, 8080) == ("service", rule_id(resolved, "web-to-app"))
    assert tables.verdict(WEB, DB, TCP, 1, 1) == ("reject", rule_id(resolved, "web-to-db-reject"))
    assert tables.verdict(OUTSIDE, APP, TCP, 1, 1) == ("drop", 0)


@pytest.mark.parametrize("range_kind", ["range", "ternary"])
def test_with_a_service_port_icmp_errors_go_to_the_service_before_any_rule(
    resolved: ResolvedPolicy, range_kind: RangeKind
) -> None:
    options = CompileOptions(stateful=True, service_port=7, range_kind=range_kind)
    compiled = compile_policy(resolved, options)
    tables = Tables(compiled.entries())
    errors = [(ICMP, 3 << 8 | 4), (ICMP, 3 << 8), (ICMP, 11 << 8), (ICMP, 12 << 8 | 0xFF)]
    errors += [(ICMP6, 1 << 8 | 4), (ICMP6, 2 << 8), (ICMP6, 3 << 8), (ICMP6, 4 << 8 | 1)]
    for proto, type_code in errors:  # the service lets through those about its connections
        for src, dst in ((OUTSIDE, WEB), (DB, ADMIN), (WEB6, OUTSIDE)):
            assert tables.verdict(src, dst, proto, 0, type_code) == ("service", 0)
    # Anything else ICMP: as the rules say (allows go to the service in stateful mode).
    others = [(ICMP, 8 << 8), (ICMP, 5 << 8), (ICMP, 4 << 8), (ICMP, 13 << 8)]
    others += [(ICMP6, 128 << 8), (ICMP6, 5 << 8), (ICMP6, 135 << 8)]
    for proto, type_code in others:
        want = evaluate(resolved, Packet(ADMIN, DB, proto, 7, type_code))
        if want[0] == "allow" or want == ("drop", 0):  # allows and the default: the service's
            want = ("service", want[1])
        assert tables.verdict(ADMIN, DB, proto, 7, type_code) == want
    added = [e for e in compiled.service if e.table == names.ACL]
    assert compiled.stats.entries[names.ACL] == len(compiled.tables()[names.ACL]) - 1  # default
    if range_kind == "range":  # (ternary port keys are for targets without range matches)
        assert len(added) == 3
        schema = P4Schema.load()
        for entry in added:
            assert decode_table_entry(schema, encode_table_entry(schema, entry)) == entry
    # An ACL miss goes to the service too (replies may come before their offload); explicit
    # drops stay in the pipeline.
    assert compiled.acl_default.action == names.ACL_SERVICE
    assert tables.verdict(OUTSIDE, APP, TCP, 1, 1) == ("service", 0)
    assert tables.verdict(WEB, DB, TCP, 1, 1) == ("reject", rule_id(resolved, "web-to-db-reject"))
    # Without a service there is nothing to let related errors through: no such entries.
    plain = Tables(compile_policy(resolved, CompileOptions(range_kind=range_kind)).entries())
    assert plain.verdict(OUTSIDE, WEB, ICMP, 0, 3 << 8 | 4) == ("drop", 0)


def test_every_entry_is_a_valid_p4runtime_entry(resolved: ResolvedPolicy) -> None:
    schema = P4Schema.load()
    compiled = compile_policy(resolved, CompileOptions(service_port=7))
    entries = compiled.entries()
    assert {e.table for e in entries} == {
        names.SRC_CLASS,
        names.DST_CLASS,
        names.ACL,
        names.L2_FORWARD,
        names.SERVICE_CONFIG,
    }
    for e in entries:
        assert decode_table_entry(schema, encode_table_entry(schema, e)) == e
        assert e == Entry.make(
            e.table,
            e.match_dict,
            e.action,
            e.params_dict,
            priority=e.priority,
            is_default=e.is_default,
        )  # keys in canonical order, as read-back entries have them


def test_priorities_follow_rule_order_and_the_default_drops(resolved: ResolvedPolicy) -> None:
    compiled = compile_policy(resolved)
    per_rule = [{e.priority for e in compiled.acl[r.rule_id]} for r in resolved.rules]
    assert all(len(p) == 1 for p in per_rule)
    priorities = [p.pop() for p in per_rule]
    assert priorities == sorted(priorities, reverse=True) and len(set(priorities)) == len(
        priorities
    )
    default = compiled.acl_default
    assert default.is_default and default.match == () and default.priority == 0
    assert (default.action, default.params) == (names.ACL_DROP, (("rule_id", 0),))
    allow_all = dataclasses.replace(resolved, default_action="allow")
    assert compile_policy(allow_all).acl_default.action == names.ACL_ALLOW


def test_l2_forwarding_follows_workload_macs_and_ports(resolved: ResolvedPolicy) -> None:
    tables = Tables(compile_policy(resolved).entries())
    assert tables.egress_port(0x020000000101) == 1
    assert tables.egress_port(0x020000000301) == 3
    assert tables.egress_port(0x02000000FFFF) is None


def test_workload_ids_say_which_side_is_local(resolved: ResolvedPolicy) -> None:
    tables = Tables(compile_policy(resolved).entries())
    web_id = next(w.workload_id for w in resolved.workloads if w.name == "web-1")
    assert tables.classify(names.SRC_CLASS, WEB6)[1] == web_id
    assert tables.classify(names.DST_CLASS, WEB)[1] == web_id
    assert tables.classify(names.SRC_CLASS, ADMIN)[1] == 0


def test_a_host_gets_only_its_rules_and_its_workloads() -> None:
    policy = load_demo_policy()
    section = policy.sections[0]
    scoped = dataclasses.replace(section.rules[0], applied_to=("host:elsewhere",))
    extra = Rule("only-here", None, None, "allow", applied_to=("host:host-1",))
    policy = dataclasses.replace(
        policy,
        sections=(
            dataclasses.replace(section, rules=(scoped, *section.rules[1:], extra)),
            *policy.sections[1:],
        ),
    )
    resolved = resolve(policy)
    here = compile_policy(resolved, CompileOptions(host="host-1"))
    there = compile_policy(resolved, CompileOptions(host="elsewhere"))
    ssh, only = rule_id(resolved, "admin-ssh"), rule_id(resolved, "only-here")
    assert ssh not in here.acl and only in here.acl
    assert ssh in there.acl and only not in there.acl
    assert there.l2 == () and len(here.l2) == 3
    assert all(e.params_dict["workload_id"] == 0 for e in there.src_class.entries)
    pkt = Packet(ADMIN, WEB, TCP, 1, 22)
    assert Tables(here.entries()).verdict(*pkt) == evaluate(resolved, pkt, host="host-1")
    assert evaluate(resolved, pkt, host="host-1").rule_id == only

"""Property: for random policies and packets, the compiled tables agree with the reference.

Policies are drawn over a small address and port universe so that random packets hit rules:
overlapping IPv4 and IPv6 blocks of many lengths, /0 blocks of both families (IPv6 ::/0 must not
capture IPv4), nested groups, criteria over tags, port ranges, ICMP type/code, applied-to. Class
ids are squeezed into few bits some of the time so that the packed and equivalence-class
encodings are exercised as often as the bitmap, and a few examples have more than 64 groups.
"""

from __future__ import annotations

import dataclasses
import ipaddress

from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from controlplane.policy import (
    Criteria,
    Group,
    Policy,
    Resolver,
    Rule,
    Section,
    ServiceTerm,
    Workload,
    resolve,
    validate,
)
from offload.compiler import (
    CompileError,
    CompileOptions,
    Compiler,
    EncodingError,
    Packet,
    Tables,
    compile_policy,
    evaluate,
    evaluate_audit,
)
from offload.compiler.delta import diff

V4 = int(ipaddress.IPv4Address("10.0.0.0"))
V6 = int(ipaddress.IPv6Address("2001:db8::"))
SPAN = 64  # addresses per family in the universe
TAGS = ("a", "b", "c")
HOSTS = ("h1", "h2")
PORTS = st.one_of(st.integers(0, 40), st.sampled_from([1000, 30000, 65535]))
PROTOCOLS = (None, 6, 17, 1, 58, 50)


def address(family: int, offset: int) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    if family == 4:
        return ipaddress.IPv4Address(V4 + offset)
    return ipaddress.IPv6Address(V6 + offset)


@st.composite
def networks(
    draw: st.DrawFn, narrow: bool = False
) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    family = draw(st.sampled_from((4, 6)))
    if not narrow and draw(st.integers(0, 15)) == 0:
        return ipaddress.ip_network("0.0.0.0/0" if family == 4 else "::/0")
    # /25../32 or /121../128, some wider than the universe; narrow: mostly single addresses,
    # so that many groups rarely overlap and pack into fields.
    host_bits = draw(st.integers(0, 1) if narrow else st.integers(0, 7))
    offset = draw(st.integers(0, SPAN + 8)) >> host_bits << host_bits
    width = 32 if family == 4 else 128
    return ipaddress.ip_network((int(address(family, offset)), width - host_bits))


@st.composite
def port_ranges(draw: st.DrawFn) -> tuple[tuple[int, int], ...]:
    out = []
    for _ in range(draw(st.integers(0, 2))):
        lo, hi = sorted((draw(PORTS), draw(PORTS)))
        out.append((lo, hi))
    return tuple(out)


@st.composite
def terms(draw: st.DrawFn) -> ServiceTerm:
    proto = draw(st.sampled_from(PROTOCOLS))
    if proto in (6, 17):
        return ServiceTerm(proto, draw(port_ranges()), draw(port_ranges()))
    if proto in (1, 58) and draw(st.booleans()):
        code = draw(st.one_of(st.none(), st.integers(0, 2)))
        return ServiceTerm(proto, icmp_type=draw(st.integers(0, 2)), icmp_code=code)
    return ServiceTerm(proto)


@st.composite
def policies(draw: st.DrawFn) -> Policy:
    workloads = []
    for i in range(draw(st.integers(0, 6))):
        addrs = draw(
            st.lists(
                st.tuples(st.sampled_from((4, 6)), st.integers(0, SPAN - 1)),
                min_size=1,
                max_size=2,
                unique=True,
            )
        )
        workloads.append(
            Workload(
                f"w{i}",
                tuple(
                    address(f, 200 + 8 * i + k) if draw(st.booleans()) else address(f, o)
                    for k, (f, o) in enumerate(addrs)
                ),
                frozenset(draw(st.lists(st.sampled_from(TAGS), max_size=2))),
                draw(st.sampled_from(HOSTS)),
            )
        )
    # Addresses must be unique across workloads: keep the first owner's.
    seen: set[object] = set()
    unique = []
    for w in workloads:
        addrs = tuple(a for a in w.addresses if a not in seen)
        seen.update(addrs)
        unique.append(Workload(w.name, addrs, w.tags, w.host))
    names = [w.name for w in unique]
    many = draw(st.integers(0, 4)) == 0
    n_groups = draw(st.integers(66, 72)) if many else draw(st.integers(1, 6))
    groups = []
    for i in range(n_groups):
        groups.append(
            Group(
                f"g{i}",
                members=tuple(draw(st.lists(st.sampled_from(names), max_size=2))) if names else (),
                addresses=tuple(draw(st.lists(networks(narrow=many), min_size=many, max_size=3))),
                groups=tuple(f"g{j}" for j in draw(st.lists(st.integers(0, i - 1), max_size=2)))
                if i
                else (),
                match=(Criteria(frozenset({draw(st.sampled_from(TAGS))})),)
                if draw(st.integers(0, 30 if many else 3)) == 0
                else (),
            )
        )
    group_names = [g.name for g in groups]
    endpoint = st.one_of(st.sampled_from(group_names), networks())

    def side() -> tuple[str | ipaddress.IPv4Network | ipaddress.IPv6Network, ...] | None:
        if draw(st.integers(0, 4)) == 0:
            return None
        # With many groups, rules name many of them, so that more than 64 need codes.
        size = 24 if many else 2
        least = 10 if many else 1
        return tuple(dict.fromkeys(draw(st.lists(endpoint, min_size=least, max_size=size))))

    rules = []
    for i in range(draw(st.integers(5 if many else 1, 8))):
        rules.append(
            Rule(
                f"r{i}",
                side(),
                side(),
                draw(st.sampled_from(("allow", "drop", "reject"))),
                inline=tuple(draw(st.lists(terms(), max_size=2))),
                applied_to=(f"host:{draw(st.sampled_from(HOSTS))}",)
                if draw(st.integers(0, 5)) == 0
                else (),
                enabled=draw(st.integers(0, 7)) != 0,
                audit=draw(st.integers(0, 5)) == 0,
            )
        )
    cut = draw(st.integers(0, len(rules)))
    audit_two = draw(st.integers(0, 7)) == 0  # a whole section in audit mode
    sections = (
        Section("one", tuple(rules[:cut])),
        Section("two", tuple(rules[cut:]), audit=audit_two),
    )
    default = draw(st.sampled_from(("allow", "drop")))
    policy = Policy(tuple(unique), tuple(groups), (), sections, default)
    validate(policy)
    return policy


@st.composite
def packets(draw: st.DrawFn) -> Packet:
    def addr() -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        return address(draw(st.sampled_from((4, 6))), draw(st.integers(0, SPAN + 260)))

    proto = draw(st.sampled_from((6, 17, 1, 58, 50, 0)))
    sport, dport = draw(PORTS), draw(PORTS)
    if proto in (1, 58) and draw(st.booleans()):
        dport = draw(st.integers(0, 2)) << 8 | draw(st.integers(0, 2))
    return Packet(addr(), addr(), proto, sport, dport)


options = st.builds(
    CompileOptions,
    range_kind=st.sampled_from(("range", "ternary")),
    stateful=st.booleans(),
    host=st.sampled_from((None, *HOSTS)),
    encoding=st.sampled_from(("auto", "auto", "packed", "classes")),
    class_bits=st.sampled_from((64, 64, 6, 3)),
)


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(policy=policies(), opts=options, pkts=st.lists(packets(), min_size=1, max_size=25))
def test_compiled_tables_agree_with_reference(
    policy: Policy, opts: CompileOptions, pkts: list[Packet]
) -> None:
    resolved = resolve(policy)
    try:
        compiled = compile_policy(resolved, opts)
    except (EncodingError, CompileError):
        # Groups that do not fit the (squeezed) id width as asked, or a rule over so many
        # overlapping groups that it would need too many entries: the compiler says so.
        assume(False)
        return
    event(f"encoding {compiled.stats.src_encoding}/{compiled.stats.dst_encoding}")
    event(f"groups > 64: {len(policy.groups) > 64}, {compiled.stats.dst_encoding}")
    tables = Tables(compiled.entries())
    for pkt in pkts:
        want = evaluate(resolved, pkt, host=opts.host)
        if opts.stateful and want.action == "allow" and want.rule_id:
            want = want._replace(action="service")
        got = tables.verdict(*pkt)
        assert got == want, f"{pkt}: tables {got}, reference {want}"
        # Audit rules decide nothing above; acl_audit records the first one matching.
        assert tables.audit(*pkt) == evaluate_audit(resolved, pkt, host=opts.host), pkt


@st.composite
def edits(draw: st.DrawFn, policy: Policy) -> Policy:
    """A few random edits of the kinds an operator or an inventory event makes."""
    for _ in range(draw(st.integers(1, 3))):
        # Group and inventory edits change class codes under unchanged rules: the riskiest.
        kind = draw(
            st.sampled_from(("group", "group", "workload", "rule", "toggle", "audit", "watch"))
        )
        if kind == "group" and policy.groups:
            i = draw(st.integers(0, len(policy.groups) - 1))
            g = policy.groups[i]
            g = dataclasses.replace(g, addresses=tuple(draw(st.lists(networks(), max_size=3))))
            policy = dataclasses.replace(
                policy, groups=(*policy.groups[:i], g, *policy.groups[i + 1 :])
            )
        elif kind == "workload" and policy.workloads:
            i = draw(st.integers(0, len(policy.workloads) - 1))
            w = dataclasses.replace(
                policy.workloads[i], tags=frozenset(draw(st.lists(st.sampled_from(TAGS))))
            )
            policy = dataclasses.replace(
                policy, workloads=(*policy.workloads[:i], w, *policy.workloads[i + 1 :])
            )
        elif kind == "watch":
            # A section into or out of audit mode: its rules are the very same objects.
            s = draw(st.integers(0, len(policy.sections) - 1))
            sections = list(policy.sections)
            sections[s] = dataclasses.replace(sections[s], audit=not sections[s].audit)
            policy = dataclasses.replace(policy, sections=tuple(sections))
        else:
            s = draw(st.integers(0, len(policy.sections) - 1))
            section = policy.sections[s]
            if not section.rules:
                continue
            j = draw(st.integers(0, len(section.rules) - 1))
            rule = section.rules[j]
            if kind == "toggle":
                rule = dataclasses.replace(rule, enabled=not rule.enabled)
            elif kind == "audit":
                rule = dataclasses.replace(rule, audit=not rule.audit)
            else:
                names_ = [g.name for g in policy.groups]
                rule = dataclasses.replace(
                    rule,
                    destination=(draw(st.sampled_from(names_)),),
                    action=draw(st.sampled_from(("allow", "drop", "reject"))),
                    inline=tuple(draw(st.lists(terms(), max_size=1))),
                )
            rules = (*section.rules[:j], rule, *section.rules[j + 1 :])
            sections = list(policy.sections)
            sections[s] = dataclasses.replace(section, rules=rules)
            policy = dataclasses.replace(policy, sections=tuple(sections))
    return policy


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    data=st.data(),
    policy=policies(),
    bits=st.sampled_from((64, 6, 3, 3)),
    pkts=st.lists(packets(), min_size=1, max_size=20),
)
def test_incremental_recompiles_agree_with_reference_and_with_their_diffs(
    data: st.DataObject, policy: Policy, bits: int, pkts: list[Packet]
) -> None:
    # One resolver and compiler across an edit, as the daemon keeps them: reused pieces
    # (rules, class tables, sticky bitmap bits) must never leave a stale entry behind.
    resolver, compiler = Resolver(), Compiler(CompileOptions(class_bits=bits))
    try:
        first = compiler.compile(resolver.resolve(policy))
        edited = data.draw(edits(policy))
        validate(edited)
        resolved = resolver.resolve(edited)
        second = compiler.compile(resolved)
    except (EncodingError, CompileError):
        assume(False)
        return
    assert resolved == resolve(edited)  # incremental resolution equals a fresh one
    changes = diff(first, second)
    assert set(changes.apply_to(first.entries())) == set(second.entries())
    tables = Tables(second.entries())
    for pkt in pkts:
        assert tables.verdict(*pkt) == evaluate(resolved, pkt), pkt
        assert tables.audit(*pkt) == evaluate_audit(resolved, pkt), pkt

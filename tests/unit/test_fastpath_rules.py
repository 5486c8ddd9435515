"""The fast path's rule set (offload.compiler.fastpath) against the reference evaluator.

By meaning: for random policies (those of test_compiler_property: overlapping IPv4/IPv6 blocks,
::/0 and 0.0.0.0/0, ports, ICMP type/code, applied-to) and random packets of both families, the
first match over the compiled RULE_DTYPE records (dpdk_app.reference, the fast path's own
reference) gives the verdict and rule id that offload.compiler.reference.evaluate gives.
"""

from __future__ import annotations

import ipaddress

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_compiler_property import HOSTS, packets, policies

from controlplane.policy import Policy, Rule, Section, ServiceTerm, resolve
from dpdk_app.classifier.headers import headers_from_ints
from dpdk_app.layout import ACT_ALLOW, ACT_DROP, ACT_REJECT, RULE_LOG
from dpdk_app.reference import NO_MATCH, first_match
from offload.compiler import CompileError, Packet, ResolvedPolicy, evaluate
from offload.compiler.fastpath import compile_fastpath, minimal_prefixes
from offload.compiler.reference import address_key
from offload.p4values import ip_to_int128

NAMES = {ACT_ALLOW: "allow", ACT_DROP: "drop", ACT_REJECT: "reject"}


def fastpath_verdicts(rules: np.ndarray, pkts: list[Packet]) -> list[tuple[str, int]]:
    headers = headers_from_ints(
        [address_key(p.src) for p in pkts],
        [address_key(p.dst) for p in pkts],
        [p.sport for p in pkts],
        [p.dport for p in pkts],
        [p.proto for p in pkts],
    )
    out = []
    for index in first_match(rules, headers):
        assert index != NO_MATCH, "the catch-all rule must match every packet"
        rec = rules[index]
        out.append((NAMES[int(rec["action"])], int(rec["rule_id"])))
    return out


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    policy=policies(),
    pkts=st.lists(packets(), min_size=1, max_size=40),
    host=st.sampled_from((None, *HOSTS)),
)
def test_fastpath_rules_agree_with_reference(
    policy: Policy, pkts: list[Packet], host: str | None
) -> None:
    resolved = resolve(policy)
    compiled = compile_fastpath(resolved, host)
    got = fastpath_verdicts(compiled.rules, pkts)
    want = [tuple(evaluate(resolved, p, host)) for p in pkts]
    assert got == want


def one_rule_policy(rule: Rule, default: str = "drop") -> ResolvedPolicy:
    return resolve(Policy(sections=(Section("s", (rule,)),), default_action=default))  # type: ignore[arg-type]


def test_ipv6_any_never_matches_ipv4() -> None:
    resolved = one_rule_policy(Rule("v6", (ipaddress.ip_network("::/0"),), None, "allow"))
    rules = compile_fastpath(resolved).rules
    v4 = Packet(ipaddress.ip_address("10.0.0.1"), ipaddress.ip_address("10.0.0.2"), 6, 1, 2)
    v6 = Packet(ipaddress.ip_address("2001:db8::1"), ipaddress.ip_address("::1"), 6, 1, 2)
    rid = resolved.rules[0].rule_id
    assert fastpath_verdicts(rules, [v4, v6]) == [("drop", 0), ("allow", rid)]


def test_minimal_prefixes_cut_the_v4_range_and_drop_covered() -> None:
    any6 = minimal_prefixes([(0, 0)])
    assert len(any6) == 96  # ::/0 minus ::ffff:0:0/96: one sibling per bit
    assert not any(p[0] >> (128 - p[1]) == (0xFFFF << 32) >> (128 - p[1]) for p in any6)
    net = ip_to_int128(ipaddress.ip_address("10.0.0.0"))
    assert minimal_prefixes([(net, 120), (net | 5, 128)]) == [(net, 120)]


def test_icmp_terms_and_default_and_log() -> None:
    rule = Rule("ping", None, None, "allow", inline=(ServiceTerm(1, icmp_type=8),), log=True)
    resolved = one_rule_policy(rule, default="allow")
    compiled = compile_fastpath(resolved)
    rules = compiled.rules
    assert len(rules) == 2 and compiled.by_rule == {resolved.rules[0].rule_id: 1}
    assert (int(rules[0]["dport_lo"]), int(rules[0]["dport_hi"])) == (8 << 8, 8 << 8 | 0xFF)
    assert int(rules[0]["flags"]) & RULE_LOG
    last = rules[-1]
    assert (int(last["rule_id"]), int(last["priority"]), int(last["action"])) == (0, 0, ACT_ALLOW)
    assert int(rules[0]["priority"]) > 0


def test_too_many_records_is_refused() -> None:
    resolved = one_rule_policy(Rule("v6", (ipaddress.ip_network("::/0"),), None, "allow"))
    with pytest.raises(CompileError, match="more than 10 records"):
        compile_fastpath(resolved, max_records=10)

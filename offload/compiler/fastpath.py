"""Resolved policy -> the fast path's rule set (an array of `struct nicfw_rule`).

The firewall service (dpdk_app: the DPDK application or its numba drop-in) evaluates the full
rule set on the packets the pipeline sends it. Its rules are boxes over the lookup key
(docs/pipeline.md): 128-bit address prefixes (IPv4 mapped), protocol under a mask, inclusive
port ranges, the identity class; highest priority wins, ties by array order. Each resolved rule
becomes the cross product of its source prefixes, destination prefixes and terms (each term's
port ranges), all at the rule's priority, so first-match order is kept; the policy's default
action is a last catch-all rule of priority 0 and rule id 0.

Group prefixes follow the policy's meaning: an IPv6 block never matches IPv4 addresses, even
one such as ::/0 that numerically covers the IPv4-mapped range, so that range is cut out of it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import product
from typing import Final

import numpy as np

from dpdk_app.layout import ACT_ALLOW, ACT_DROP, ACT_REJECT, RULE_DTYPE, RULE_LOG
from offload.compiler.compile import CompileError
from offload.compiler.rules import (
    ADDRESS_BITS,
    FULL_PORTS,
    PortRange,
    Prefix,
    ResolvedPolicy,
    ResolvedRule,
    Term,
    is_v4_prefix,
)
from offload.p4values import V4_MAPPED, V4_MAPPED_PREFIX

ACTIONS: Final = {"allow": ACT_ALLOW, "drop": ACT_DROP, "reject": ACT_REJECT}
ANY_PREFIX: Final[Prefix] = (0, 0)
DEFAULT_MAX_RECORDS: Final = 1 << 20


@dataclass(frozen=True)
class FastPathRules:
    """A compiled rule set: the records, and which records each rule id produced."""

    rules: np.ndarray  # RULE_DTYPE, in evaluation order
    by_rule: dict[int, int]  # rule id -> number of records
    default_action: str

    def __len__(self) -> int:
        return len(self.rules)


def _covers(outer: Prefix, inner: Prefix) -> bool:
    ov, ol = outer
    iv, il = inner
    if ol > il:
        return False
    shift = ADDRESS_BITS - ol
    return ov >> shift == iv >> shift


def _without_v4(prefix: Prefix) -> list[Prefix]:
    """An IPv6 prefix minus the IPv4-mapped range it may numerically contain."""
    plen = prefix[1]
    v4 = (V4_MAPPED, V4_MAPPED_PREFIX)
    if is_v4_prefix(prefix) or not _covers(prefix, v4):
        return [prefix]
    # The siblings along the path from the prefix down to ::ffff:0:0/96.
    out = []
    for length in range(plen + 1, V4_MAPPED_PREFIX + 1):
        shift = ADDRESS_BITS - length
        sibling = ((V4_MAPPED >> shift) ^ 1) << shift
        out.append((sibling, length))
    return out


def minimal_prefixes(prefixes: Iterable[Prefix]) -> list[Prefix]:
    """Prefixes with the IPv4-mapped range cut out of IPv6 blocks, covered ones dropped."""
    cut = sorted({p for q in prefixes for p in _without_v4(q)}, key=lambda p: (p[1], p[0]))
    kept: list[Prefix] = []
    for p in cut:
        if not any(_covers(k, p) for k in kept):
            kept.append(p)
    return kept


def _side_prefixes(policy: ResolvedPolicy, groups: tuple[str, ...] | None) -> list[Prefix]:
    if groups is None:
        return [ANY_PREFIX]  # any address of either family
    return minimal_prefixes(p for g in groups for p in policy.groups[g].prefixes)


def _term_boxes(term: Term) -> Iterator[tuple[int | None, PortRange, PortRange]]:
    sports = term.src_ports or (FULL_PORTS,)
    dports = term.dst_ports or (FULL_PORTS,)
    for sp, dp in product(sports, dports):
        yield term.protocol, sp, dp


def _rule_boxes(
    policy: ResolvedPolicy, rule: ResolvedRule
) -> list[tuple[Prefix, Prefix, int | None, PortRange, PortRange]]:
    srcs = _side_prefixes(policy, rule.sources)
    dsts = _side_prefixes(policy, rule.destinations)
    terms = list(dict.fromkeys(b for t in rule.terms for b in _term_boxes(t)))
    return [(s, d, *t) for s, d, t in product(srcs, dsts, terms)]


def _fill(
    out: np.ndarray,
    start: int,
    boxes: list[tuple[Prefix, Prefix, int | None, PortRange, PortRange]],
    rule_id: int,
    priority: int,
    action: int,
    flags: int,
) -> None:
    n = len(boxes)
    view = out[start : start + n]
    view["rule_id"], view["priority"], view["action"], view["flags"] = (
        rule_id,
        priority,
        action,
        flags,
    )
    for i, ((sv, sl), (dv, dl), proto, (slo, shi), (dlo, dhi)) in enumerate(boxes):
        rec = view[i]
        rec["src_addr"] = np.frombuffer(sv.to_bytes(16, "big"), dtype=np.uint8)
        rec["dst_addr"] = np.frombuffer(dv.to_bytes(16, "big"), dtype=np.uint8)
        rec["src_plen"], rec["dst_plen"] = sl, dl
        rec["proto"], rec["proto_mask"] = (0, 0) if proto is None else (proto, 0xFF)
        rec["sport_lo"], rec["sport_hi"] = slo, shi
        rec["dport_lo"], rec["dport_hi"] = dlo, dhi


def compile_fastpath(
    policy: ResolvedPolicy,
    host: str | None = None,
    max_records: int = DEFAULT_MAX_RECORDS,
) -> FastPathRules:
    """The fast path's rule set for `host` (every rule when None), default action last."""
    # Audit rules are counted by the pipeline's acl_audit only; they never decide here.
    rules = [r for r in policy.rules if r.applies_on(host) and not r.audit]
    if policy.default_action not in ("allow", "drop"):
        raise CompileError(f"default action {policy.default_action!r} is not allow or drop")
    planned: list[
        tuple[ResolvedRule, list[tuple[Prefix, Prefix, int | None, PortRange, PortRange]]]
    ]
    planned = []
    total = 1
    for rule in rules:
        if rule.action not in ACTIONS:
            raise CompileError(f"rule {rule.name!r}: unknown action {rule.action!r}")
        boxes = _rule_boxes(policy, rule)
        total += len(boxes)
        if total > max_records:
            raise CompileError(
                f"rule {rule.name!r}: the fast path rule set needs more than {max_records} "
                "records (too many prefixes x ports)"
            )
        planned.append((rule, boxes))
    out = np.zeros(total, dtype=RULE_DTYPE)
    by_rule: dict[int, int] = {}
    pos = 0
    # Priorities: the first rule highest, the catch-all 0; records of one rule share theirs.
    for index, (rule, boxes) in enumerate(planned):
        priority = len(planned) - index
        flags = RULE_LOG if rule.log else 0
        _fill(out, pos, boxes, rule.rule_id, priority, ACTIONS[rule.action], flags)
        by_rule[rule.rule_id] = by_rule.get(rule.rule_id, 0) + len(boxes)
        pos += len(boxes)
    _fill(out, pos, [(ANY_PREFIX, ANY_PREFIX, None, FULL_PORTS, FULL_PORTS)], 0, 0,
          ACTIONS[policy.default_action], 0)  # fmt: skip
    return FastPathRules(out, by_rule, policy.default_action)


__all__ = ["FastPathRules", "compile_fastpath", "minimal_prefixes"]

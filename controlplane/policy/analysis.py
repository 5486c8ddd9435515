"""Warnings about a valid policy: rules that never match, empty groups, rules installed nowhere.

A rule is shadowed when the packets it matches are all matched by earlier rules (together, not
only one of them). The check works on the packet space the pipeline sees — source, destination,
protocol, L4 source and destination key — as unions of boxes: each earlier rule's boxes are
subtracted from the rule's until nothing is left (shadowed) or a size limit is hit (unknown).

A rule is redundant when removing it changes no verdict: every packet it matches is next
matched by later rules of the same action (or falls to a default of that action) with no rule
of another action matching it in between. `Flip` is a dry run's reachability change
(computed in `controlplane.dryrun`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from controlplane.policy.errors import Problem
from controlplane.policy.model import Network, Policy
from offload.compiler.rules import (
    AddressGroup,
    ResolvedPolicy,
    ResolvedRule,
    Term,
    is_v4_prefix,
)
from offload.p4values import V4_MAPPED

Intervals = list[tuple[int, int]]  # sorted, disjoint, inclusive
Box = tuple[Intervals, ...]  # source, destination, protocol, l4_src, l4_dst

_ALL_ADDRESSES: Intervals = [(0, (1 << 128) - 1)]
_V4 = (V4_MAPPED, V4_MAPPED | 0xFFFFFFFF)
MAX_PIECES = 512  # give up on a rule whose remainder fragments beyond this
MAX_RULES = 3000  # pairwise analysis beyond this many rules is left to offline tools


def intersect(a: Intervals, b: Intervals) -> Intervals:
    """Intersection of two interval lists."""
    out: Intervals = []
    i = j = 0
    while i < len(a) and j < len(b):
        lo, hi = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if lo <= hi:
            out.append((lo, hi))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return out


def subtract(a: Intervals, b: Intervals) -> Intervals:
    """The part of `a` outside `b`."""
    out: Intervals = []
    j = 0
    for lo, hi in a:
        while j < len(b) and b[j][1] < lo:
            j += 1
        k = j
        while lo <= hi and k < len(b) and b[k][0] <= hi:
            if b[k][0] > lo:
                out.append((lo, b[k][0] - 1))
            lo = max(lo, b[k][1] + 1)
            k += 1
        if lo <= hi:
            out.append((lo, hi))
    return out


def union(items: list[tuple[int, int]]) -> Intervals:
    """Sort and merge intervals."""
    out: Intervals = []
    for lo, hi in sorted(items):
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def group_intervals(group: AddressGroup) -> Intervals:
    """A group's addresses as 128-bit intervals; IPv6 blocks never include IPv4-mapped keys."""
    v4: list[tuple[int, int]] = []
    v6: list[tuple[int, int]] = []
    for value, plen in group.prefixes:
        span = (value, value | ((1 << (128 - plen)) - 1))
        (v4 if is_v4_prefix((value, plen)) else v6).append(span)
    return union(v4 + subtract(union(v6), [_V4]))


def rule_boxes(rule: ResolvedRule, spaces: dict[str, Intervals]) -> list[Box]:
    """The packet space of a rule as boxes (one per service term)."""

    def side(names: tuple[str, ...] | None) -> Intervals:
        if names is None:
            return _ALL_ADDRESSES
        return union([iv for n in names for iv in spaces[n]])

    def ports(ranges: tuple[tuple[int, int], ...]) -> Intervals:
        return list(ranges) if ranges else [(0, 0xFFFF)]

    def box(t: Term) -> Box:
        proto = [(t.protocol, t.protocol)] if t.protocol is not None else [(0, 255)]
        return (src, dst, proto, ports(t.src_ports), ports(t.dst_ports))

    src, dst = side(rule.sources), side(rule.destinations)
    if not src or not dst:
        return []
    return [box(t) for t in rule.terms]


def box_minus(c: Box, e: Box) -> list[Box]:
    """`c` minus `e` as disjoint boxes (at most one per dimension)."""
    inter = [intersect(x, y) for x, y in zip(c, e, strict=True)]
    if not all(inter):
        return [c]
    pieces: list[Box] = []
    current = list(c)
    for d in range(len(c)):
        rest = subtract(c[d], e[d])
        if rest:
            pieces.append((*current[:d], rest, *current[d + 1 :]))
        current[d] = inter[d]
    return pieces


def _bounds(boxes: list[Box]) -> list[tuple[int, int]]:
    return [
        (min(b[d][0][0] for b in boxes), max(b[d][-1][1] for b in boxes))
        for d in range(len(boxes[0]))
    ]


def shadowing(rules: Sequence[ResolvedRule], spaces: dict[str, Intervals]) -> dict[str, list[str]]:
    """For each fully shadowed rule, the earlier rules that together cover it."""
    boxes = [rule_boxes(r, spaces) for r in rules]
    bounds = [_bounds(b) if b else [] for b in boxes]
    out: dict[str, list[str]] = {}
    for k, rule in enumerate(rules):
        remaining = boxes[k]
        if not remaining:
            continue  # matches nothing at all: reported as an empty group instead
        by: list[str] = []
        for j in range(k):
            hosts = rules[j].hosts
            if hosts is not None and (rule.hosts is None or not rule.hosts <= hosts):
                continue  # not installed everywhere this rule is: cannot shadow it there
            if not boxes[j] or any(
                lo > bhi or hi < blo
                for (lo, hi), (blo, bhi) in zip(bounds[k], bounds[j], strict=True)
            ):
                continue
            touched = False
            for e in boxes[j]:
                pieces: list[Box] = []
                for c in remaining:
                    rest = box_minus(c, e)
                    touched = touched or len(rest) != 1 or rest[0] is not c
                    pieces.extend(rest)
                remaining = pieces
            if touched:
                by.append(rules[j].name)
            if not remaining or len(remaining) > MAX_PIECES:
                break
        if not remaining:
            out[rule.name] = by
    return out


def _covers(outer: frozenset[str] | None, inner: frozenset[str] | None) -> bool:
    """Whether a rule installed on `outer` is installed everywhere one on `inner` is."""
    return outer is None or (inner is not None and inner <= outer)


def _meet(a: frozenset[str] | None, b: frozenset[str] | None) -> bool:
    """Whether two rules are installed together on some host."""
    if a is None or b is None:
        return a != frozenset() and b != frozenset()  # an empty set: installed nowhere
    return bool(a & b)


def redundancy(
    rules: Sequence[ResolvedRule], spaces: dict[str, Intervals], default: str
) -> dict[str, list[str]]:
    """For each redundant rule, the later rules (or "default") that decide its packets the same.

    Conservative: a later rule of another action that touches what is left, on a host both are
    installed on, makes the rule necessary; a later rule of the same action only counts when it
    is installed everywhere the rule is. A rule that logs is never called redundant.
    """
    boxes = [rule_boxes(r, spaces) for r in rules]
    bounds = [_bounds(b) if b else [] for b in boxes]
    out: dict[str, list[str]] = {}
    for k, rule in enumerate(rules):
        remaining = boxes[k]
        if not remaining or rule.log or rule.hosts == frozenset():
            continue  # matches nothing, keeps log lines, or is installed nowhere
        by: list[str] = []
        reach = bounds[k]  # bounds of what is left, recomputed only when it shrinks
        for j in range(k + 1, len(rules)):
            later = rules[j]
            if not boxes[j] or not _meet(rule.hosts, later.hosts):
                continue
            if any(
                lo > bhi or hi < blo for (lo, hi), (blo, bhi) in zip(reach, bounds[j], strict=True)
            ):
                continue
            if later.action != rule.action:
                if any(all(map(intersect, c, e)) for c in remaining for e in boxes[j]):
                    remaining = []  # another verdict for some of its packets: needed
                    by = []
                    break
                continue
            if not _covers(later.hosts, rule.hosts):
                continue
            touched = False
            for e in boxes[j]:
                pieces: list[Box] = []
                for c in remaining:
                    rest = box_minus(c, e)
                    touched = touched or len(rest) != 1 or rest[0] is not c
                    pieces.extend(rest)
                remaining = pieces
            if touched:
                by.append(later.name)
            if not remaining or len(remaining) > MAX_PIECES:
                break
            if touched:
                reach = _bounds(remaining)
        if remaining and len(remaining) <= MAX_PIECES and rule.action == default:
            by.append("default")
            remaining = []
        if by and not remaining:
            out[rule.name] = by
    return out


def _inside(inner: Network, outer: Network) -> bool:
    if isinstance(inner, ipaddress.IPv4Network) and isinstance(outer, ipaddress.IPv4Network):
        return inner.subnet_of(outer)
    if isinstance(inner, ipaddress.IPv6Network) and isinstance(outer, ipaddress.IPv6Network):
        return inner.subnet_of(outer)
    return False


def analyze(policy: Policy, resolved: ResolvedPolicy) -> list[Problem]:
    """Warnings for a policy that loads: shadowed rules, empty groups, rules installed nowhere."""
    warnings: list[Problem] = []
    paths = {
        r.name: f"sections[{i}].rules[{j}]"
        for i, s in enumerate(policy.sections)
        for j, r in enumerate(s.rules)
    }

    def warn(path: str, message: str) -> None:
        warnings.append(Problem(policy.line(path), path, message))

    declared = {g.name for g in policy.groups}
    for rule in resolved.rules:
        base = paths.get(rule.name, rule.name)
        for key, names in (("source", rule.sources), ("destination", rule.destinations)):
            empty = [n for n in names or () if n in declared and not resolved.groups[n].prefixes]
            for n in empty:
                never = " so the rule never matches" if len(empty) == len(names or ()) else ""
                warn(f"{base}.{key}", f"group {n!r} is empty (no workload or address){never}")
        if rule.hosts is not None and not rule.hosts:
            warn(f"{base}.applied_to", "applied_to matches no host: the rule is installed nowhere")
    for g in policy.groups:
        nets = sorted(g.addresses, key=lambda n: (n.version, n.prefixlen))
        for i, inner in enumerate(nets):
            outer = next((o for o in nets[:i] if _inside(inner, o)), None)
            if outer is not None:
                warn(f"groups.{g.name}.addresses", f"{inner} is inside {outer} (redundant)")
    if len(resolved.rules) > MAX_RULES:
        warn(
            "sections",
            f"shadowed-rule analysis skipped: {len(resolved.rules)} rules (limit {MAX_RULES})",
        )
        return warnings
    spaces = {name: group_intervals(g) for name, g in resolved.groups.items()}
    shadowed: set[str] = set()
    # Audit rules only count packets, first match among themselves: they neither shadow nor
    # keep an enforced rule, and removing one always changes a count (never redundant).
    enforced = [r for r in resolved.rules if not r.audit]
    audit = [r for r in resolved.rules if r.audit]
    found = shadowing(enforced, spaces) | shadowing(audit, spaces)
    for name, by in found.items():
        who = ", ".join(repr(b) for b in by)
        warn(
            paths.get(name, name),
            f"rule {name!r} is shadowed by earlier rule(s) {who}: it never matches",
        )
        shadowed.add(name)
    default = resolved.default_action
    for name, by in redundancy(enforced, spaces, default).items():
        if name in shadowed:
            continue  # reported as never matching already
        who = ", ".join(f"the default {default}" if b == "default" else repr(b) for b in by)
        warn(
            paths.get(name, name),
            f"rule {name!r} is redundant: without it {who} give its packets the same verdict",
        )
    return sorted(warnings)


MAX_PROBES = 50_000  # packet evaluations a dry run may spend on reachability


@dataclass(frozen=True, slots=True)
class Flip:
    """A (source, destination, service) whose verdict a change flips, on one host."""

    src: str
    dst: str
    proto: int
    port: int
    before: str
    after: str
    host: str | None

"""Policy -> resolved policy: groups to address prefixes, services to terms, rules to ids.

`Resolver.resolve(policy)` remembers its last inputs: when the workloads, groups and services
of the new policy are the same objects (or equal) as before, group resolution is reused, and
rules that did not change come back as the very same `ResolvedRule` objects — which lets the
compiler and the diff skip them. `resolve(policy)` is the one-shot form.
"""

from __future__ import annotations

import bisect
import fnmatch
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from controlplane.policy.ids import assign_ids
from controlplane.policy.model import (
    HOST_PREFIX,
    Criteria,
    Group,
    Network,
    Policy,
    Rule,
    Service,
    ServiceTerm,
    Workload,
)
from offload.compiler.ranges import merge_ranges
from offload.compiler.rules import (
    ANY_TERM,
    AddressGroup,
    Prefix,
    ResolvedPolicy,
    ResolvedRule,
    ResolvedWorkload,
    Term,
)
from offload.p4values import ip_to_int128, network_to_lpm128

_GLOB_CHARS = re.compile(r"[*?\[]")


def term_of(t: ServiceTerm) -> Term:
    """A service term as the compiler's Term (ICMP type/code become the l4_dst key)."""
    dst = t.ports
    if t.icmp_type is not None:
        low = t.icmp_type << 8
        dst = ((low | t.icmp_code,) * 2,) if t.icmp_code is not None else ((low, low | 0xFF),)
    return Term(t.protocol, merge_ranges(t.source_ports), merge_ranges(dst))


@dataclass(frozen=True)
class Inventory:
    """Workloads with ids and the indexes that criteria are evaluated against."""

    workloads: tuple[ResolvedWorkload, ...]
    by_name: Mapping[str, ResolvedWorkload]
    names: tuple[str, ...]  # sorted, for prefix search
    by_tag: Mapping[str, frozenset[str]]
    by_host: Mapping[str, frozenset[str]]


def inventory(workloads: Sequence[Workload]) -> Inventory:
    """Resolve workloads: stable ids, 128-bit addresses, tag and host indexes."""
    fixed = {w.name: w.id for w in workloads if w.id is not None}
    ids = assign_ids(sorted(w.name for w in workloads), fixed, 16)
    resolved = tuple(
        ResolvedWorkload(
            w.name, ids[w.name], tuple(ip_to_int128(a) for a in w.addresses), w.host, w.port, w.mac
        )
        for w in workloads
    )
    by_tag: dict[str, set[str]] = {}
    by_host: dict[str, set[str]] = {}
    for w in workloads:
        for t in w.tags:
            by_tag.setdefault(t, set()).add(w.name)
        if w.host is not None:
            by_host.setdefault(w.host, set()).add(w.name)
    return Inventory(
        resolved,
        {w.name: w for w in resolved},
        tuple(sorted(w.name for w in workloads)),
        {t: frozenset(n) for t, n in by_tag.items()},
        {h: frozenset(n) for h, n in by_host.items()},
    )


def matching(inv: Inventory, c: Criteria) -> set[str]:
    """Names of the workloads that meet every criterion of `c`."""
    candidates: set[str] | None = None
    for tag in c.tags:
        hit = inv.by_tag.get(tag, frozenset())
        candidates = set(hit) if candidates is None else candidates & hit
    if c.host is not None:
        hit = inv.by_host.get(c.host, frozenset())
        candidates = set(hit) if candidates is None else candidates & hit
    if c.name is None:
        return candidates if candidates is not None else set(inv.names)
    pattern = re.compile(fnmatch.translate(c.name))
    if candidates is None:
        # Only names sharing the pattern's literal prefix can match: a bisect instead of a scan.
        literal = _GLOB_CHARS.split(c.name, maxsplit=1)[0]
        lo = bisect.bisect_left(inv.names, literal)
        hi = bisect.bisect_left(inv.names, literal + "\U0010ffff") if literal else len(inv.names)
        candidates = set(inv.names[lo:hi])
    return {n for n in candidates if pattern.match(n)}


def resolve_groups(groups: Sequence[Group], inv: Inventory) -> dict[str, AddressGroup]:
    """Each group's workloads and prefixes, nested groups included (cycles rejected earlier)."""
    spec = {g.name: g for g in groups}
    done: dict[str, AddressGroup] = {}

    def visit(name: str) -> AddressGroup:
        hit = done.get(name)
        if hit is not None:
            return hit
        g = spec[name]
        members = set(g.members)
        for c in g.match:
            members |= matching(inv, c)
        prefixes: set[Prefix] = {network_to_lpm128(n) for n in g.addresses}
        for child in g.groups:
            sub = visit(child)
            members |= sub.workloads
            prefixes |= sub.prefixes
        for m in members:
            prefixes.update((a, 128) for a in inv.by_name[m].addresses)
        done[name] = AddressGroup(name, frozenset(prefixes), frozenset(members))
        return done[name]

    for g in groups:
        visit(g.name)
    return done


class Resolver:
    """Resolves policies, reusing what did not change since the previous call."""

    def __init__(self) -> None:
        self._workloads: tuple[Workload, ...] | None = None
        self._groups_in: tuple[Group, ...] | None = None
        self._services_in: tuple[Service, ...] | None = None
        self._inventory = inventory(())
        self._groups: dict[str, AddressGroup] = {}
        self._terms: dict[str, tuple[Term, ...]] = {}
        self._cidrs: dict[str, AddressGroup] = {}  # inline blocks of rules, by their text
        self._rules: dict[int, tuple[Rule, int, int, str, ResolvedRule]] = {}
        self._id_key: tuple[list[str], dict[str, int]] = ([], {})
        self._ids: dict[str, int] = {}
        self._rule_names: dict[int, str] = {}
        self._count = 0  # rules in the last result

    def _refresh(self, policy: Policy) -> None:
        changed = False
        if self._workloads is None or not _same(self._workloads, policy.workloads):
            self._inventory = inventory(policy.workloads)
            self._workloads = policy.workloads
            self._groups_in = None
        if self._groups_in is None or not _same(self._groups_in, policy.groups):
            self._groups = resolve_groups(policy.groups, self._inventory)
            self._groups_in = policy.groups
            changed = True
        if self._services_in is None or not _same(self._services_in, policy.services):
            self._terms = {
                s.name: tuple(dict.fromkeys(term_of(t) for t in s.terms)) for s in policy.services
            }
            self._services_in = policy.services
            changed = True
        if changed:
            self._rules = {}  # rules depend on groups (applied-to) and services (terms)

    def _endpoints(self, items: tuple[str | Network, ...] | None) -> tuple[str, ...] | None:
        if items is None:
            return None
        out = []
        for e in items:
            if isinstance(e, str):
                out.append(e)
            else:
                name = str(e)
                if name not in self._cidrs:
                    self._cidrs[name] = AddressGroup(name, frozenset({network_to_lpm128(e)}))
                out.append(name)
        return tuple(dict.fromkeys(out))

    def _hosts(self, applied_to: tuple[str, ...]) -> frozenset[str] | None:
        if not applied_to:
            return None
        hosts: set[str] = set()
        for a in applied_to:
            if a.startswith(HOST_PREFIX):
                hosts.add(a.removeprefix(HOST_PREFIX))
            else:
                by_name = self._inventory.by_name
                hosts.update(
                    h for w in self._groups[a].workloads if (h := by_name[w].host) is not None
                )
        return frozenset(hosts)

    def _rule(self, rule: Rule, rule_id: int, position: int, section: str) -> ResolvedRule:
        terms: list[Term] = [t for s in rule.services for t in self._terms[s]]
        terms += [term_of(t) for t in rule.inline]
        return ResolvedRule(
            rule_id,
            rule.name,
            position,
            rule.action,
            self._endpoints(rule.source),
            self._endpoints(rule.destination),
            tuple(dict.fromkeys(terms)) or (ANY_TERM,),
            self._hosts(rule.applied_to),
            rule.log,
            section,
        )

    def resolve(self, policy: Policy) -> ResolvedPolicy:
        """The resolved form of `policy` (assumed checked: `references.check` found nothing)."""
        self._refresh(policy)
        placed = [(r, s.name) for s in policy.sections for r in s.rules]
        key = ([r.name for r, _ in placed], {r.name: r.id for r, _ in placed if r.id is not None})
        if key != self._id_key:
            # Ids depend on the names in order (probing on collisions) and the fixed ids only.
            self._ids = assign_ids(key[0], key[1], 32)
            self._rule_names = {rid: name for name, rid in self._ids.items()}
            self._id_key = key
        ids = self._ids
        rules: list[ResolvedRule] = []
        previous = self._rules
        rebuilt = 0
        cache: dict[int, tuple[Rule, int, int, str, ResolvedRule]] = {}
        for position, (rule, section) in enumerate(placed):
            if not rule.enabled:
                continue
            rule_id = ids[rule.name]
            hit = previous.get(id(rule))
            if (
                hit is not None
                and hit[0] is rule
                and hit[1] == rule_id
                and hit[2] == position
                and hit[3] == section
            ):
                resolved = hit[4]
            else:
                resolved = self._rule(rule, rule_id, position, section)
                rebuilt += 1
            cache[id(rule)] = (rule, rule_id, position, section, resolved)
            rules.append(resolved)
        self._rules = cache
        if rebuilt or len(rules) != self._count:
            # Keep only the blocks that rules still use, so the result equals a fresh resolve.
            # (No rule rebuilt and as many as last time: the very same rules, same blocks.)
            cidrs = self._cidrs
            used = {n for r in rules for n in (*(r.sources or ()), *(r.destinations or ()))}
            self._cidrs = {n: g for n, g in cidrs.items() if n in used}
        self._count = len(rules)
        return ResolvedPolicy(
            {**self._cidrs, **self._groups},
            tuple(rules),
            self._inventory.workloads,
            policy.default_action,
            self._rule_names,
        )


def _same(a: Iterable[object], b: Iterable[object]) -> bool:
    return a is b or a == b


def resolve(policy: Policy) -> ResolvedPolicy:
    """Resolve a checked policy once."""
    return Resolver().resolve(policy)

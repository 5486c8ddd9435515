"""What a policy change would do before it is applied: entries per host, reachability flips.

`policy_dry_run(enforced, candidate)` compares two policies the way the host agents would
enforce them. Per host it gives the table writes (each host carries the rules applied to it and
its own workloads' ids and L2 entries), and across the estate the (source workload,
destination workload, service) triples whose verdict flips between allowed and not, with the
rule that decided before and after.

Reachability is computed over classes, not workload pairs: workloads whose addresses belong
to the same groups in both policies (and sit on the same hosts, when some rule is host-scoped)
get the same verdicts, so only class pairs inside the packet space of a rule that changed are
evaluated, each by bitset first-match over the rules. Flipped class pairs are counted exactly
and expanded to workload pairs only up to a limit. `reachability` with `touched` is what an
inventory dry run uses: only pairs with a touched workload count. The per-host writes are
`controlplane.hostdiff`'s.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from controlplane.hostdiff import HostChanges, host_changes, hosts_of
from controlplane.policy.analysis import Flip
from offload.compiler import CompileOptions, ResolvedPolicy
from offload.compiler.classes import memberships
from offload.compiler.rules import ADDRESS_BITS, ResolvedRule, Term, is_v4_key
from offload.sync import Diff

MAX_EVALUATIONS = 2_000_000  # class-pair x service x host verdicts a dry run may spend
MAX_CUTS = 64  # port breakpoints probed inside one changed term
DEFAULT_LIMIT = 100  # flipped workload pairs expanded for display
DEFAULT = "(default)"
MAX_INVENTORY_ROWS = 10_000  # flips an inventory (tag) dry run lists


@dataclass(frozen=True, slots=True)
class ReachFlip:
    """One (source, destination, service) whose verdict flips on one host (None: no host)."""

    src: str
    dst: str
    proto: int
    port: int
    before: str
    before_rule: str
    after: str
    after_rule: str
    host: str | None


@dataclass(frozen=True)
class Reachability:
    """Flips between two policies: the first `limit` rows, and exact counts of all of them."""

    flips: tuple[ReachFlip, ...]
    total: int  # (src, dst, service, host) rows that flip, counted without expanding
    by_host: Mapping[str | None, int]
    complete: bool  # False: the evaluation budget ran out, counts are a lower bound
    evaluations: int = 0


@dataclass
class PolicyDryRun:
    """What enforcing `after` instead of `before` would change, per host and in reachability."""

    hosts: list[HostChanges]
    reachability: Reachability
    rules_changed: list[str] = field(default_factory=list)  # rule names, either version
    overall: Diff = field(default_factory=Diff)  # the single-view (all hosts) writes
    rule_names: Mapping[int, str] = field(default_factory=dict)  # ids of both policies


# -- which rules changed --------------------------------------------------------------------


def _shape(rule: ResolvedRule) -> tuple[object, ...]:
    return (rule.name, rule.action, rule.sources, rule.destinations, rule.terms, rule.hosts)


def changed_rules(
    before: ResolvedPolicy, after: ResolvedPolicy
) -> tuple[list[ResolvedRule], list[ResolvedRule]]:
    """Enforced rules whose verdicts may differ: (before versions, after versions).

    A rule is unchanged when it has the same id and meaning, names groups whose addresses did
    not change, and keeps its order relative to the other unchanged rules. A packet no changed
    rule matches is first matched by the same unchanged rule in both policies.
    """
    old = [r for r in before.rules if not r.audit]
    new = [r for r in after.rules if not r.audit]
    moved_groups = {
        n
        for n in before.groups.keys() | after.groups.keys()
        if before.groups.get(n) is not after.groups.get(n)
        and (
            n not in before.groups
            or n not in after.groups
            or before.groups[n].prefixes != after.groups[n].prefixes
        )
    }
    by_id = {r.rule_id: r for r in new}

    def same(r: ResolvedRule) -> bool:
        o = by_id.get(r.rule_id)
        if o is None or (o is not r and _shape(o) != _shape(r)):
            return False
        return not any(g in moved_groups for g in (*(r.sources or ()), *(r.destinations or ())))

    kept = [r.rule_id for r in old if same(r)]
    # The unchanged rules must keep their relative order: keep the longest run that does.
    position = {r.rule_id: i for i, r in enumerate(new)}
    in_order = set(_longest_increasing(kept, position))
    return (
        [r for r in old if r.rule_id not in in_order],
        [r for r in new if r.rule_id not in in_order],
    )


def _longest_increasing(ids: Sequence[int], position: Mapping[int, int]) -> list[int]:
    """The longest subsequence of `ids` whose positions increase (patience sorting)."""
    tails: list[int] = []
    tail_at: list[int] = []
    parent: list[int] = [-1] * len(ids)
    for i, rid in enumerate(ids):
        p = position[rid]
        k = bisect_left(tails, p)
        if k == len(tails):
            tails.append(p)
            tail_at.append(i)
        else:
            tails[k], tail_at[k] = p, i
        parent[i] = tail_at[k - 1] if k else -1
    out: list[int] = []
    i = tail_at[-1] if tail_at else -1
    while i >= 0:
        out.append(ids[i])
        i = parent[i]
    return out[::-1]


# -- one policy as bitsets ------------------------------------------------------------------


class _Rules:
    """A policy's enforced rules as bitsets (bit i: the i-th rule), for first-match by AND."""

    def __init__(self, policy: ResolvedPolicy) -> None:
        self.rules = [r for r in policy.rules if not r.audit]
        self.default = policy.default_action
        self.src_groups = sorted({g for r in self.rules for g in r.sources or ()})
        self.dst_groups = sorted({g for r in self.rules for g in r.destinations or ()})
        self.groups = policy.groups
        self.any_src = self.any_dst = self.everywhere = 0
        self.by_src: list[int] = [0] * len(self.src_groups)
        self.by_dst: list[int] = [0] * len(self.dst_groups)
        src_index = {g: i for i, g in enumerate(self.src_groups)}
        dst_index = {g: i for i, g in enumerate(self.dst_groups)}
        self.scoped: list[tuple[int, frozenset[str]]] = []
        self.by_term: dict[Term, int] = {}  # a rule matches a probe if one of its terms does
        for i, r in enumerate(self.rules):
            bit = 1 << i
            if r.sources is None:
                self.any_src |= bit
            for g in r.sources or ():
                self.by_src[src_index[g]] |= bit
            if r.destinations is None:
                self.any_dst |= bit
            for g in r.destinations or ():
                self.by_dst[dst_index[g]] |= bit
            if r.hosts is None:
                self.everywhere |= bit
            else:
                self.scoped.append((bit, r.hosts))
            for t in r.terms:
                self.by_term[t] = self.by_term.get(t, 0) | bit
        self._side_cache: dict[tuple[bool, int], int] = {}
        self._probe_cache: dict[tuple[int, int, int], int] = {}
        self._host_cache: dict[str | None, int] = {}

    def masks(self, source: bool, keys: Iterable[int]) -> dict[int, int]:
        """Address key -> membership mask over this policy's source (or destination) groups."""
        groups = [self.groups[g] for g in (self.src_groups if source else self.dst_groups)]
        keys = list(keys)
        effective, _ = memberships(groups, keys)
        return {k: effective.get((k, ADDRESS_BITS), 0) for k in keys}

    def side(self, source: bool, mask: int) -> int:
        """The rules whose source (or destination) matches an address of membership `mask`."""
        hit = self._side_cache.get((source, mask))
        if hit is None:
            table = self.by_src if source else self.by_dst
            hit = self.any_src if source else self.any_dst
            m, i = mask, 0
            while m:
                if m & 1:
                    hit |= table[i]
                m >>= 1
                i += 1
            self._side_cache[(source, mask)] = hit
        return hit

    def probe(self, proto: int, sport: int, dport: int) -> int:
        """The rules with a service term matching the lookup key."""
        key = (proto, sport, dport)
        hit = self._probe_cache.get(key)
        if hit is None:
            hit = 0
            for term, bits in self.by_term.items():
                if term.matches(proto, sport, dport):
                    hit |= bits
            self._probe_cache[key] = hit
        return hit

    def on_host(self, host: str | None) -> int:
        """The rules installed on `host` (None: all of them, the single view)."""
        hit = self._host_cache.get(host)
        if hit is None:
            hit = self.everywhere
            for bit, hosts in self.scoped:
                if host is None or host in hosts:
                    hit |= bit
            self._host_cache[host] = hit
        return hit

    def verdict(self, candidates: int) -> tuple[str, str]:
        """(action, rule name) of the first rule among `candidates`, else the default."""
        if not candidates:
            return self.default, DEFAULT
        rule = self.rules[(candidates & -candidates).bit_length() - 1]
        return rule.action, rule.name


# -- classes of workloads -------------------------------------------------------------------


@dataclass
class _Class:
    """Workloads (one address family) that every rule of both policies treats alike."""

    family: int  # 4 or 6
    before: int  # membership mask, before
    after: int
    members: list[str] = field(default_factory=list)
    hosts: Counter[str | None] = field(default_factory=Counter)  # members per host (None)
    host_key: tuple[str | None, ...] = ()  # the members' hosts (when rules are host-scoped)
    touched: bool = True
    v4_too: bool = False  # (IPv6 classes) the members also have an IPv4 address


def _key_of(addresses: Sequence[int], v4: bool) -> int | None:
    return next((k for k in addresses if is_v4_key(k) == v4), None)


def _classes(
    old: _Rules,
    new: _Rules,
    source: bool,
    ends: Mapping[str, tuple[int | None, int | None, tuple[str | None, ...]]],
    scoped: bool,
    touched: set[str] | None,
) -> list[_Class]:
    keys = [k for v4, v6, _ in ends.values() for k in (v4, v6) if k is not None]
    before = old.masks(source, keys)
    after = new.masks(source, keys)
    out: dict[tuple[object, ...], _Class] = {}
    for name, (v4, v6, hosts) in ends.items():
        hit = touched is None or name in touched
        for family, k in ((4, v4), (6, v6)):
            if k is None:
                continue
            # IPv6 is only compared between two workloads that cannot talk IPv4: mark who can.
            key: tuple[object, ...] = (family, family == 6 and v4 is not None, before[k])
            key += (after[k], hit, hosts if scoped else ())
            c = out.get(key)
            if c is None:
                c = out[key] = _Class(
                    family, before[k], after[k], host_key=hosts, touched=hit, v4_too=bool(key[1])
                )
            c.members.append(name)
            for h in hosts or (None,):
                c.hosts[h] += 1
    return list(out.values())


def _cuts(terms: Iterable[Term], everyone: Iterable[ResolvedRule]) -> list[tuple[int, int, int]]:
    """Lookup keys to probe inside `terms`: each term's start and every other term's range
    boundary that falls inside it, so a flip over part of a range is still seen."""
    bounds: dict[int | None, set[int]] = {}
    for r in everyone:
        for t in r.terms:
            for lo, hi in t.dst_ports or ((0, 0xFFFF),):
                s = bounds.setdefault(t.protocol, set())
                s.add(lo)
                if hi < 0xFFFF:
                    s.add(hi + 1)
    out: set[tuple[int, int, int]] = set()
    for t in terms:
        sport = t.src_ports[0][0] if t.src_ports else 40000
        # Any protocol: probe TCP and every protocol some rule names.
        named = {p for p in bounds if p is not None}
        protos = [t.protocol] if t.protocol is not None else sorted(named | {6})
        for proto in protos:
            points = bounds.get(proto, set()) | bounds.get(None, set())
            for lo, hi in t.dst_ports or ((0, 0xFFFF),):
                inside = sorted(p for p in points if lo < p <= hi)[: MAX_CUTS - 1]
                out.update((proto, sport, p) for p in (lo, *inside))
    return sorted(out)


def reachability(
    before: ResolvedPolicy,
    after: ResolvedPolicy,
    touched: Iterable[str] | None = None,
    limit: int = DEFAULT_LIMIT,
    budget: int | None = None,
) -> Reachability:
    """Workload pairs whose verdict flips between allowed and not, per service and host.

    Only workloads present in both policies with the same addresses count; a pair is compared
    over IPv4 when both ends have an IPv4 address, else IPv6. Each pair is evaluated on the
    hosts of both ends (before and after a move), as each end's NIC filters; host None when
    neither has one. `touched`: only pairs with one of these workloads (None: every pair).
    """
    budget = MAX_EVALUATIONS if budget is None else budget
    old, new = _Rules(before), _Rules(after)
    olds = {w.name: w for w in before.workloads}
    ends: dict[str, tuple[int | None, int | None, tuple[str | None, ...]]] = {}
    for w in after.workloads:
        o = olds.get(w.name)
        if o is None:
            continue
        v4, v6 = (_key_of(w.addresses, f) for f in (True, False))
        if (_key_of(o.addresses, True), _key_of(o.addresses, False)) != (v4, v6):
            continue  # addresses changed: the verdicts would compare different packets
        hosts = tuple(sorted({h for h in (o.host, w.host) if h is not None}))
        ends[w.name] = (v4, v6, hosts)
    hot = None if touched is None else set(touched) & ends.keys()
    scoped = bool(old.scoped or new.scoped)
    if before.default_action != after.default_action:
        pseudo = ResolvedRule(0, DEFAULT, 1 << 30, "allow", None, None)
        changed: list[tuple[_Rules, ResolvedRule]] = [(old, pseudo)]
    else:
        was, now = changed_rules(before, after)
        changed = [(old, r) for r in was] + [(new, r) for r in now]
    if not changed or not ends or hot == set():
        return Reachability((), 0, {}, True)
    srcs = _classes(old, new, True, ends, scoped, hot)
    dsts = _classes(old, new, False, ends, scoped, hot)
    everyone = (*old.rules, *new.rules)
    # Which classes a rule's side matches, through an index of classes by group bit.
    todo: dict[tuple[int, int], set[tuple[int, int, int]]] = {}
    for rules, rule in changed:
        index = rules is old
        sides: list[Sequence[int]] = []
        for source, classes, names_ in (
            (True, srcs, rule.sources),
            (False, dsts, rule.destinations),
        ):
            if names_ is None:
                sides.append(range(len(classes)))
                continue
            table = rules.src_groups if source else rules.dst_groups
            bits = 0
            for g in names_:
                bits |= 1 << bisect_left(table, g)
            sides.append(
                [i for i, c in enumerate(classes) if (c.before if index else c.after) & bits]
            )
        cuts = _cuts(rule.terms, everyone)
        for i, j in _pairs_of(sides[0], sides[1], srcs, dsts, hot is not None):
            todo.setdefault((i, j), set()).update(cuts)
    flipped: list[tuple[_Class, _Class, tuple[int, int, int], str | None, tuple[str, ...]]] = []
    evaluations, complete = 0, True
    for (i, j), probes in sorted(todo.items()):
        cs, cd = srcs[i], dsts[j]
        if cs.family != cd.family or (cs.family == 6 and cs.v4_too and cd.v4_too):
            continue
        if hot is not None and not (cs.touched or cd.touched):
            continue
        if len(cs.members) == 1 and cs.members == cd.members:
            continue  # a workload to itself never crosses its NIC
        where: list[str | None] = [None]
        if scoped:
            where = [*sorted({h for h in (*cs.host_key, *cd.host_key) if h is not None})] or [None]
        o_sd = old.side(True, cs.before) & old.side(False, cd.before)
        n_sd = new.side(True, cs.after) & new.side(False, cd.after)
        for probe in sorted(probes):
            o_p, n_p = o_sd & old.probe(*probe), n_sd & new.probe(*probe)
            for host in where:
                evaluations += 1
                if evaluations > budget:
                    complete = False
                    break
                b = old.verdict(o_p & old.on_host(host))
                a = new.verdict(n_p & new.on_host(host))
                if (b[0] == "allow") != (a[0] == "allow"):
                    flipped.append((cs, cd, probe, host if scoped else None, (*b, *a)))
            if not complete:
                break
        if not complete:
            break
    return _expand(flipped, ends, scoped, hot, limit, complete, evaluations)


def _pairs_of(
    src: Sequence[int], dst: Sequence[int], srcs: list[_Class], dsts: list[_Class], hot: bool
) -> Iterable[tuple[int, int]]:
    """Class pairs of a rule's sides; with touched workloads, only pairs with a touched end
    (classes are split by touched, so the product is never walked in full)."""
    if not hot:
        return ((i, j) for i in src for j in dst)
    hot_src = [i for i in src if srcs[i].touched]
    hot_dst = [j for j in dst if dsts[j].touched]
    pairs = {(i, j) for i in hot_src for j in dst}
    pairs.update((i, j) for i in src for j in hot_dst)
    return pairs


def _expand(
    flipped: list[tuple[_Class, _Class, tuple[int, int, int], str | None, tuple[str, ...]]],
    ends: Mapping[str, tuple[int | None, int | None, tuple[str | None, ...]]],
    scoped: bool,
    hot: set[str] | None,
    limit: int,
    complete: bool,
    evaluations: int,
) -> Reachability:
    """Count the workload pairs of flipped class pairs per host; list the first `limit`."""
    by_host: Counter[str | None] = Counter()
    rows: list[ReachFlip] = []
    for cs, cd, (proto, _, port), host, (bv, br, av, ar) in flipped:
        if len(rows) < limit:
            for s in cs.members:
                for d in cd.members:
                    if s == d or (hot is not None and s not in hot and d not in hot):
                        continue
                    where = [host] if scoped else [*dict.fromkeys(ends[s][2] + ends[d][2])]
                    for h in where or [None]:
                        rows.append(ReachFlip(s, d, proto, port, bv, br, av, ar, h))
                    if len(rows) >= limit:
                        break
                if len(rows) >= limit:
                    break
        if scoped:
            by_host[host] += _pairs(cs, cd, hot)
            continue
        # Host-free verdicts: a pair counts on every host of either end (None: no host).
        n = _pairs(cs, cd, hot)
        if not n:
            continue
        if hot is not None or set(cs.members) & set(cd.members):
            for s in cs.members:  # small (touched) or overlapping: count one by one
                for d in cd.members:
                    if s != d and (hot is None or s in hot or d in hot):
                        for h in set(ends[s][2] + ends[d][2]) or {None}:
                            by_host[h] += 1
            continue
        hosts = set(cs.hosts) | set(cd.hosts)
        for h in hosts:
            if h is None:
                by_host[None] += cs.hosts[None] * cd.hosts[None]
            else:
                s_h, d_h = cs.hosts[h], cd.hosts[h]
                by_host[h] += s_h * len(cd.members) + len(cs.members) * d_h - s_h * d_h
    rows.sort(key=lambda f: (f.src, f.dst, f.proto, f.port, f.host or ""))
    counts = {h: n for h, n in by_host.items() if n}
    return Reachability(tuple(rows[:limit]), sum(counts.values()), counts, complete, evaluations)


def _pairs(cs: _Class, cd: _Class, hot: set[str] | None) -> int:
    """Workload pairs (not to itself) of two classes, with a touched end when `hot` is set."""
    if hot is None:
        common = len(set(cs.members) & set(cd.members)) if cs.family == cd.family else 0
        return len(cs.members) * len(cd.members) - common
    return sum(1 for s in cs.members for d in cd.members if s != d and (s in hot or d in hot))


def policy_dry_run(
    before: ResolvedPolicy,
    after: ResolvedPolicy,
    options: CompileOptions | None = None,
    limit: int = DEFAULT_LIMIT,
) -> PolicyDryRun:
    """Per-host writes and reachability flips of enforcing `after` where `before` is."""
    hosts, overall = host_changes(before, after, options)
    was, now = changed_rules(before, after)
    names_ = list(dict.fromkeys(r.name for r in (*was, *now)))
    rule_names = {**before.rule_names, **after.rule_names}
    reach = reachability(before, after, limit=limit)
    return PolicyDryRun(hosts, reach, names_, overall, rule_names)


def inventory_flips(
    before: ResolvedPolicy, after: ResolvedPolicy, touched: Iterable[str]
) -> tuple[list[Flip], bool]:
    """An inventory dry run's flips (pairs with a touched workload), as `Flip`s; (flips,
    complete). The budget is `analysis.MAX_PROBES` evaluations, read at call time."""
    from controlplane.policy import analysis

    reach = reachability(
        before, after, touched, limit=MAX_INVENTORY_ROWS, budget=analysis.MAX_PROBES
    )
    flips = [Flip(f.src, f.dst, f.proto, f.port, f.before, f.after, f.host) for f in reach.flips]
    return flips, reach.complete and reach.total == len(flips)


__all__ = [
    "HostChanges",
    "PolicyDryRun",
    "ReachFlip",
    "Reachability",
    "changed_rules",
    "host_changes",
    "hosts_of",
    "inventory_flips",
    "policy_dry_run",
    "reachability",
]

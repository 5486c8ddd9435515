"""Group membership two ways: set algebra over indexes (a whole inventory at once) and a
predicate over one workload (an inventory event). Both must agree; the property tests check.

Every criterion is a property of one workload (its tags with its template's, name, host,
template, instance, addresses, membership of another group), so a change to one workload can
only change that workload's memberships: what makes incremental resolution cheap.
"""

from __future__ import annotations

import bisect
import fnmatch
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

from controlplane.policy.model import (
    Criteria,
    Group,
    Instance,
    Network,
    Template,
    TemplateMatch,
    Workload,
)

_GLOB_CHARS = re.compile(r"[*?\[]")


@lru_cache(maxsize=4096)
def glob(pattern: str) -> re.Pattern[str]:
    """A compiled shell-style name pattern."""
    return re.compile(fnmatch.translate(pattern))


@dataclass(frozen=True, slots=True)
class Placed:
    """A workload as criteria see it: template tags merged in, template and instance known."""

    workload: Workload
    tags: frozenset[str]
    template: str | None
    instance: str | None


class Catalog:
    """Templates and instances of a policy, and how they place a workload."""

    def __init__(self, templates: Sequence[Template], instances: Sequence[Instance]) -> None:
        self.templates = {t.id: t for t in templates}
        self.instances = {i.id: i for i in instances}
        self.listed = {m: i.id for i in instances for m in i.members}

    def place(self, w: Workload) -> Placed:
        """Where `w` sits among templates and instances, and its effective tags."""
        instance = w.instance or self.listed.get(w.name)
        template = w.template
        if template is None and instance is not None and instance in self.instances:
            template = self.instances[instance].template
        t = self.templates.get(template) if template is not None else None
        tags = w.tags | t.tags if t is not None and t.tags else w.tags
        return Placed(w, tags, template, instance)

    def template_ids(self, m: TemplateMatch) -> set[str]:
        """Ids of the templates that `m` matches."""
        return {t.id for t in self.templates.values() if template_matches(m, t)}


def template_matches(m: TemplateMatch, t: Template) -> bool:
    """Whether template `t` meets every field of `m` (name is a glob)."""
    return (
        (m.id is None or m.id == t.id)
        and (m.name is None or bool(glob(m.name).match(t.name)))
        and (m.version is None or m.version == t.version)
        and (m.owner is None or m.owner == t.owner)
    )


def _in_blocks(w: Workload, blocks: tuple[Network, ...]) -> bool:
    return any(a.version == b.version and a in b for a in w.addresses for b in blocks)


class Predicates:
    """Membership of one workload in groups, evaluated directly (for inventory events)."""

    def __init__(self, groups: Sequence[Group], catalog: Catalog) -> None:
        self.spec = {g.name: g for g in groups}
        self.catalog = catalog

    def memberships(self, w: Workload) -> set[str]:
        """Every group `w` is a member of."""
        p = self.catalog.place(w)
        memo: dict[str, bool] = {}
        return {g for g in self.spec if self._member(g, p, memo)}

    def _member(self, name: str, p: Placed, memo: dict[str, bool]) -> bool:
        hit = memo.get(name)
        if hit is not None:
            return hit
        memo[name] = False  # cycles are rejected by the checks; this only guards recursion
        g = self.spec[name]
        result = (
            p.workload.name in g.members
            or any(self._holds(c, p, memo) for c in g.match)
            or any(self._member(child, p, memo) for child in g.groups)
        )
        memo[name] = result
        return result

    def _holds(self, c: Criteria, p: Placed, memo: dict[str, bool]) -> bool:
        w = p.workload
        if c.tags and not c.tags <= p.tags:
            return False
        if c.name is not None and not glob(c.name).match(w.name):
            return False
        if c.host is not None and w.host != c.host:
            return False
        if c.template is not None and p.template != c.template:
            return False
        if c.instance is not None and p.instance != c.instance:
            return False
        if c.template_match is not None:
            t = self.catalog.templates.get(p.template) if p.template is not None else None
            if t is None or not template_matches(c.template_match, t):
                return False
        if c.addresses and not _in_blocks(w, c.addresses):
            return False
        if c.group is not None and not self._member(c.group, p, memo):
            return False
        if any(not self._holds(x, p, memo) for x in c.all_of):
            return False
        if c.any_of and not any(self._holds(x, p, memo) for x in c.any_of):
            return False
        return not any(self._holds(x, p, memo) for x in c.none_of)


class Index:
    """Workloads indexed by tag, host, template and instance, for whole-inventory resolution."""

    def __init__(self, placed: Sequence[Placed], catalog: Catalog) -> None:
        self.catalog = catalog
        self.by_name = {p.workload.name: p for p in placed}
        self.names = tuple(sorted(self.by_name))
        self.everyone = frozenset(self.names)
        self.by_tag: dict[str, set[str]] = {}
        self.by_host: dict[str, set[str]] = {}
        self.by_template: dict[str, set[str]] = {}
        self.by_instance: dict[str, set[str]] = {}
        for p in placed:
            n = p.workload.name
            for t in p.tags:
                self.by_tag.setdefault(t, set()).add(n)
            if p.workload.host is not None:
                self.by_host.setdefault(p.workload.host, set()).add(n)
            if p.template is not None:
                self.by_template.setdefault(p.template, set()).add(n)
            if p.instance is not None:
                self.by_instance.setdefault(p.instance, set()).add(n)

    def matching(self, c: Criteria, group_members: Mapping[str, frozenset[str]]) -> set[str]:
        """Names of the workloads meeting `c`; `group_members` answers `group:` criteria."""
        sets: list[set[str] | frozenset[str]] = []
        for tag in c.tags:
            sets.append(self.by_tag.get(tag, set()))
        for key, index in (
            (c.host, self.by_host),
            (c.template, self.by_template),
            (c.instance, self.by_instance),
        ):
            if key is not None:
                sets.append(index.get(key, set()))
        if c.template_match is not None:
            ids = self.catalog.template_ids(c.template_match)
            sets.append(set().union(*(self.by_template.get(t, set()) for t in ids)))
        if c.group is not None:
            sets.append(group_members[c.group])
        for x in c.all_of:
            sets.append(self.matching(x, group_members))
        if c.any_of:
            sets.append(set().union(*(self.matching(x, group_members) for x in c.any_of)))
        sets.sort(key=len)
        out: set[str] = set(sets[0]) if sets else set(self._named(c.name))
        for s in sets[1:]:
            out &= s
        if sets and c.name is not None:
            pattern = glob(c.name)
            out = {n for n in out if pattern.match(n)}
        if c.addresses:
            out = {n for n in out if _in_blocks(self.by_name[n].workload, c.addresses)}
        for x in c.none_of:
            out -= self.matching(x, group_members)
        return out

    def _named(self, pattern: str | None) -> Sequence[str]:
        if pattern is None:
            return self.names
        # Only names sharing the pattern's literal prefix can match: a bisect, not a scan.
        literal = _GLOB_CHARS.split(pattern, maxsplit=1)[0]
        lo = bisect.bisect_left(self.names, literal)
        hi = bisect.bisect_left(self.names, literal + "\U0010ffff") if literal else len(self.names)
        rx = glob(pattern)
        return [n for n in self.names[lo:hi] if rx.match(n)]


def group_order(groups: Sequence[Group]) -> list[str]:
    """Group names with every group after the groups it refers to (nested or `group:`)."""
    spec = {g.name: g for g in groups}
    out: list[str] = []
    seen: set[str] = set()

    def refs(c: Criteria) -> list[str]:
        found = [c.group] if c.group is not None else []
        for x in (*c.all_of, *c.any_of, *c.none_of):
            found += refs(x)
        return found

    def visit(name: str) -> None:
        if name in seen or name not in spec:
            return
        seen.add(name)
        g = spec[name]
        for child in (*g.groups, *(r for c in g.match for r in refs(c))):
            visit(child)
        out.append(name)

    for g in groups:
        visit(g.name)
    return out


def criteria_refs(c: Criteria) -> list[str]:
    """The groups a criteria tree refers to with `group:`."""
    found = [c.group] if c.group is not None else []
    for x in (*c.all_of, *c.any_of, *c.none_of):
        found += criteria_refs(x)
    return found

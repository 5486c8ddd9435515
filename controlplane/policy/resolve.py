"""Policy -> resolved policy: groups to address prefixes, services to terms, rules to ids.

`Resolver.resolve(policy)` remembers its last inputs. When only workloads changed (an
inventory event: a VM up, down or moved, a tag attached or detached), it re-evaluates the
groups for the changed workloads only — every criterion is a property of one workload — and
rebuilds only the rules whose applied-to groups or template instances changed; everything else
comes back as the very same objects, which lets the compiler and the diff skip it. Any other
edit (groups, templates, instances, services) resolves groups from scratch; rules are reused
when they did not change. `resolve(policy)` is the one-shot form.

Template rules: `template: T` limits a rule's destination to T's workloads (groups named
`G@template:T`); `scope: same_instance` resolves a rule into one rule per instance I (of T, or
of any template), from `G@I` to `H@I`, named `rule@I` with its own id (so hits are counted per
instance). A derived group holds its base group's workloads in I; address blocks are not
instance members.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence

from controlplane.policy.criteria import Catalog, Index, Placed, Predicates, group_order
from controlplane.policy.ids import assign_ids
from controlplane.policy.model import (
    HOST_PREFIX,
    TEMPLATE_PREFIX,
    Group,
    Instance,
    Network,
    Policy,
    Rule,
    Service,
    ServiceTerm,
    Template,
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

ALL = "*"  # base of a derived group standing for `any`
INCREMENTAL_SHARE = 0.05  # above this share of changed workloads, resolve groups afresh


def term_of(t: ServiceTerm) -> Term:
    """A service term as the compiler's Term (ICMP type/code become the l4_dst key)."""
    dst = t.ports
    if t.icmp_type is not None:
        low = t.icmp_type << 8
        dst = ((low | t.icmp_code,) * 2,) if t.icmp_code is not None else ((low, low | 0xFF),)
    return Term(t.protocol, merge_ranges(t.source_ports), merge_ranges(dst))


def derived_name(base: str | None, key: str) -> str:
    """The name of group `base` restricted to instance `key` (or `template:T`)."""
    return f"{base if base is not None else ALL}@{key}"


_CachedRule = tuple[Rule, int, tuple[str, bool], tuple[int, ...], object, tuple[ResolvedRule, ...]]


class Resolver:
    """Resolves policies, reusing what did not change since the previous call."""

    def __init__(self) -> None:
        # groups, templates, instances
        self._inputs: (
            tuple[tuple[Group, ...], tuple[Template, ...], tuple[Instance, ...]] | None
        ) = None
        self._services_in: tuple[Service, ...] | None = None
        self._workloads_in: tuple[Workload, ...] | None = None
        self._by_name: dict[str, Workload] = {}
        self._placed: dict[str, Placed] = {}
        self._catalog = Catalog((), ())
        self._predicates = Predicates((), self._catalog)
        self._wids: dict[str, int] = {}
        self._wid_key: tuple[frozenset[str], tuple[tuple[str, int], ...]] | None = None
        self._rw: dict[str, ResolvedWorkload] = {}
        self._rw_tuple: tuple[ResolvedWorkload, ...] = ()
        self._positions: dict[str, int] = {}
        self._static: dict[str, frozenset[Prefix]] = {}
        self._groups: dict[str, AddressGroup] = {}
        self._membership: dict[str, set[str]] = {}  # workload -> groups it is in
        self._instance_members: dict[str, set[str]] = {}
        self._template_members: dict[str, set[str]] = {}
        self._instance_lists: dict[str | None, tuple[str, ...]] = {}
        self._derived: dict[str, AddressGroup] = {}
        self._terms: dict[str, tuple[Term, ...]] = {}
        self._cidrs: dict[str, AddressGroup] = {}
        self._rules: dict[int, _CachedRule] = {}
        self._rules_out: tuple[ResolvedRule, ...] = ()
        self._id_key: tuple[list[str], dict[str, int]] = ([], {})
        self._ids: dict[str, int] = {}
        self._rule_names: dict[int, str] = {}
        self.touched: set[str] = set()  # groups whose members changed in the last call
        # The instances `_instance_lists` was made for (None: due again).
        self._sets_in: tuple[Instance, ...] | None = None
        self._fast: tuple[object, object, dict[str | None, tuple[str, ...]], set[str]] | None = None

    # -- workloads and groups ---------------------------------------------------------------

    def _workload_ids(self, workloads: Sequence[Workload]) -> None:
        fixed = {w.name: w.id for w in workloads if w.id is not None}
        key = (frozenset(self._by_name), tuple(sorted(fixed.items())))
        if key != self._wid_key:
            self._wids = assign_ids(sorted(self._by_name), fixed, 16)
            self._wid_key = key  # resolved workloads whose id moved are rebuilt on lookup

    def _resolved_workload(self, w: Workload) -> ResolvedWorkload:
        rw = self._rw.get(w.name)
        wid = self._wids[w.name]
        if rw is None or rw.workload_id != wid or self._by_name.get(w.name) is not w:
            rw = ResolvedWorkload(
                w.name, wid, tuple(ip_to_int128(a) for a in w.addresses), w.host, w.port, w.mac
            )
            self._rw[w.name] = rw
        return rw

    def _place_all(self, policy: Policy) -> None:
        self._by_name = {w.name: w for w in policy.workloads}
        self._placed = {w.name: self._catalog.place(w) for w in policy.workloads}
        self._workload_ids(policy.workloads)
        self._rw = {}
        self._rw_tuple = tuple(self._resolved_workload(w) for w in policy.workloads)
        self._positions = {w.name: i for i, w in enumerate(policy.workloads)}
        self._instance_members = {}
        self._template_members = {}
        for n, p in self._placed.items():
            if p.instance is not None:
                self._instance_members.setdefault(p.instance, set()).add(n)
            if p.template is not None:
                self._template_members.setdefault(p.template, set()).add(n)

    def _resolve_groups(self, groups: Sequence[Group]) -> None:
        index = Index(list(self._placed.values()), self._catalog)
        spec = {g.name: g for g in groups}
        members: dict[str, frozenset[str]] = {}
        self._static = {}
        self._groups = {}
        for name in group_order(groups):
            g = spec[name]
            found = set(g.members)
            for c in g.match:
                found |= index.matching(c, members)
            static: set[Prefix] = {network_to_lpm128(n) for n in g.addresses}
            for child in g.groups:
                found |= members[child]
                static |= self._static[child]
            members[name] = frozenset(found)
            self._static[name] = frozenset(static)
            self._groups[name] = self._address_group(name, members[name])
        self._membership = {}
        for name, ms in members.items():
            for m in ms:
                self._membership.setdefault(m, set()).add(name)

    def _address_group(self, name: str, members: frozenset[str]) -> AddressGroup:
        prefixes = set(self._static[name])
        for m in members:
            prefixes.update((a, 128) for a in self._rw[m].addresses)
        return AddressGroup(name, frozenset(prefixes), members)

    def _instances(self, instances: Sequence[Instance]) -> None:
        """Instance ids by template (None: every instance), each tuple kept when unchanged."""
        template_of: dict[str, str | None] = {i.id: i.template for i in instances}
        for p in self._placed.values():
            if p.instance is not None and p.instance not in template_of:
                template_of[p.instance] = p.template
        lists: dict[str | None, list[str]] = {None: sorted(template_of)}
        for i in sorted(template_of):
            t = template_of[i]
            if t is not None:
                lists.setdefault(t, []).append(i)
        old = self._instance_lists
        self._instance_lists = {
            t: old[t] if t in old and list(old[t]) == ids else tuple(ids)
            for t, ids in lists.items()
        }

    def _present(self, workloads: Sequence[Workload], hint: Collection[str]) -> dict[str, Workload]:
        """The workloads named in `hint`, found by their last position when it still holds."""
        present: dict[str, Workload] = {}
        for n in hint:
            i = self._positions.get(n)
            if i is None or i >= len(workloads) or workloads[i].name != n:
                # Moved or new: look everywhere (an instance created or deleted, say).
                return {w.name: w for w in workloads if w.name in hint}
            present[n] = workloads[i]
        return present

    def _update_workloads(
        self, policy: Policy, hint: Collection[str] | None, force: Collection[str] = ()
    ) -> bool:
        """Apply a workload-only change incrementally; False when a full pass is due.

        `hint` names the workloads that may have changed (the others must be the same
        objects as last time); without it, every workload is compared."""
        old = self._by_name
        if hint is None:
            new = {w.name: w for w in policy.workloads}
            changed = [n for n, w in new.items() if old.get(n) is not w]
            changed += [n for n in old if n not in new]
        else:
            new = dict(old)
            present = self._present(policy.workloads, hint)
            for n in hint:
                if n in present:
                    new[n] = present[n]
                else:
                    new.pop(n, None)
            changed = list(hint)
        changed = list(dict.fromkeys(changed))
        changed = [n for n in changed if n in force or old.get(n) != new.get(n)]
        changed += [n for n in force if n not in changed and (n in old or n in new)]
        if len(changed) > max(8, INCREMENTAL_SHARE * len(new)):
            return False
        old_rw = {n: self._rw.get(n) for n in changed}
        self._by_name = new
        if any(n not in old or n not in new or old[n].id != new[n].id for n in changed):
            self._workload_ids(policy.workloads)
        touched_groups: set[str] = set()
        touched_sets: set[str] = set()  # instances and template:T whose members changed
        for n in changed:
            before = self._placed.pop(n, None)
            w = new.get(n)
            after = self._catalog.place(w) if w is not None else None
            if after is not None:
                self._placed[n] = after
            was = self._membership.pop(n, set())
            now = self._predicates.memberships(w) if w is not None else set()
            if now:
                self._membership[n] = now
            moved = before is None or w is None or before.workload.addresses != w.addresses
            touched_groups |= (was | now) if moved else was ^ now
            for attr, sets, prefix in (
                ("instance", self._instance_members, ""),
                ("template", self._template_members, TEMPLATE_PREFIX),
            ):
                a = getattr(before, attr) if before is not None else None
                b = getattr(after, attr) if after is not None else None
                if a != b:
                    self._sets_in = None  # instance lists are due again
                if a == b and not moved:
                    continue
                if a is not None:
                    sets[a].discard(n)
                    if not sets[a]:
                        del sets[a]
                    touched_sets.add(prefix + a)
                if b is not None:
                    sets.setdefault(b, set()).add(n)
                    touched_sets.add(prefix + b)
            self._rw.pop(n, None)
        positions = self._positions
        if all(n in old and n in new for n in changed) and len(policy.workloads) == len(
            self._rw_tuple
        ):
            patched = list(self._rw_tuple)
            for n in changed:
                patched[positions[n]] = self._resolved_workload(new[n])
            self._rw_tuple = tuple(patched)
        else:
            self._rw_tuple = tuple(self._resolved_workload(w) for w in policy.workloads)
            self._positions = {w.name: i for i, w in enumerate(policy.workloads)}
        for g in touched_groups:
            old_group = self._groups[g]
            members = set(old_group.workloads)
            prefixes = set(old_group.prefixes)
            static = self._static[g]
            for n in changed:
                was_rw = old_rw[n]
                if n in members and was_rw is not None:
                    prefixes.difference_update(
                        p for a in was_rw.addresses if (p := (a, 128)) not in static
                    )
                if g in self._membership.get(n, ()):
                    members.add(n)
                    prefixes.update((a, 128) for a in self._rw[n].addresses)
                else:
                    members.discard(n)
            self._groups[g] = AddressGroup(g, frozenset(prefixes), frozenset(members))
        self.touched = touched_groups
        stale = [
            name
            for name in self._derived
            if name.split("@", 1)[0] in touched_groups or name.split("@", 1)[1] in touched_sets
        ]
        for name in stale:
            # Derived groups in use are recomputed now: unchanged rules still name them.
            del self._derived[name]
            base, key = name.split("@", 1)
            self._derive(None if base == ALL else base, key)
        return True

    def _derive(self, base: str | None, key: str) -> str:
        name = derived_name(base, key)
        if name not in self._derived:
            if key.startswith(TEMPLATE_PREFIX):
                scope = self._template_members.get(key.removeprefix(TEMPLATE_PREFIX), set())
            else:
                scope = self._instance_members.get(key, set())
            inside = scope if base is None else self._group(base).workloads & scope
            prefixes = {(a, 128) for m in inside for a in self._rw[m].addresses}
            self._derived[name] = AddressGroup(name, frozenset(prefixes), frozenset(inside))
        return name

    def _group(self, name: str) -> AddressGroup:
        return self._groups[name] if name in self._groups else self._cidrs[name]

    # -- rules ----------------------------------------------------------------------------

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
                rw = self._rw
                hosts.update(h for w in self._groups[a].workloads if (h := rw[w].host) is not None)
        return frozenset(hosts)

    def _expansion(self, rule: Rule) -> tuple[str, ...] | None:
        """The instances a same-instance rule is repeated for (None: not such a rule)."""
        if rule.scope != "same_instance":
            return None
        return self._instance_lists.get(rule.template, ())

    def _rule(
        self, rule: Rule, ids: tuple[int, ...], position: int, section: str, audit: bool
    ) -> tuple[ResolvedRule, ...]:
        terms: list[Term] = [t for s in rule.services for t in self._terms[s]]
        terms += [term_of(t) for t in rule.inline]
        shared = (tuple(dict.fromkeys(terms)) or (ANY_TERM,), self._hosts(rule.applied_to))
        sources = self._endpoints(rule.source)
        destinations = self._endpoints(rule.destination)
        action, log = rule.action, rule.log

        def one(
            rid: int, name: str, s: Iterable[str] | None, d: Iterable[str] | None
        ) -> ResolvedRule:
            return ResolvedRule(
                rid,
                name,
                position,
                action,
                None if s is None else tuple(s),
                None if d is None else tuple(d),
                shared[0],
                shared[1],
                log,
                section,
                audit,
            )

        expansion = self._expansion(rule)
        if expansion is None:
            if rule.template is not None:
                key = TEMPLATE_PREFIX + rule.template
                dst = [self._derive(d, key) for d in (destinations or (None,))]
                return (one(ids[0], rule.name, sources, dst),)
            return (one(ids[0], rule.name, sources, destinations),)
        return tuple(
            one(
                rid,
                f"{rule.name}@{i}",
                [self._derive(s, i) for s in (sources or (None,))],
                [self._derive(d, i) for d in (destinations or (None,))],
            )
            for rid, i in zip(ids[1:], expansion, strict=True)
        )

    def resolve(self, policy: Policy, changed: Collection[str] | None = None) -> ResolvedPolicy:
        """The resolved form of `policy` (assumed checked: `references.check` found nothing).

        `changed`: when only workloads changed, the names of those that may have (an
        inventory event knows them), so the others need not be compared."""
        inputs = (policy.groups, policy.templates, policy.instances)
        same = [
            self._inputs is not None and _same(a, b)
            for a, b in zip(self._inputs or ((), (), ()), inputs, strict=True)
        ]
        full = not (same[0] and same[1]) or self._workloads_in is None
        rules_stale = full
        self.touched = set()
        moved: set[str] = set()
        if not full and not same[2]:
            # Instances created or deleted: only their workloads are placed anew.
            assert self._inputs is not None
            old = {i.id: i for i in self._inputs[2]}
            new = {i.id: i for i in policy.instances}
            for iid in old.keys() | new.keys():
                if old.get(iid) != new.get(iid):
                    moved |= self._instance_members.get(iid, set())
                    for d in (old.get(iid), new.get(iid)):
                        moved.update(d.members if d is not None else ())
        if full or not same[2]:
            self._catalog = Catalog(policy.templates, policy.instances)
            self._predicates = Predicates(policy.groups, self._catalog)
            self._inputs = inputs
        if not full and (moved or not _same(self._workloads_in or (), policy.workloads)):
            hint = None if changed is None else {*changed, *moved}
            full = not self._update_workloads(policy, hint, moved)
        if full:
            self._place_all(policy)
            self._resolve_groups(policy.groups)
            self._derived = {}
            self.touched = set(self._groups)
            rules_stale = True
        self._workloads_in = policy.workloads
        if full or self._sets_in is not policy.instances:
            self._instances(policy.instances)
            self._sets_in = policy.instances
        if self._services_in is None or not _same(self._services_in, policy.services):
            self._terms = {
                s.name: tuple(dict.fromkeys(term_of(t) for t in s.terms)) for s in policy.services
            }
            self._services_in = policy.services
            rules_stale = True
        if rules_stale:
            self._rules = {}
            self._fast = None
        return self._resolve_rules(policy)

    def _resolve_rules(self, policy: Policy) -> ResolvedPolicy:
        fast = self._fast
        if (
            self._rules
            and fast is not None
            and fast[0] is policy.sections
            and fast[1] is policy.templates
            and fast[2].keys() == self._instance_lists.keys()
            and all(fast[2][k] is v for k, v in self._instance_lists.items())
            and not (self.touched & fast[3])
        ):
            # Same rules, same instances, no applied-to group changed: the same resolved rules.
            return self._result(policy)
        placed = [(r, (s.name, s.audit)) for s in policy.all_sections() for r in s.rules]
        names: list[str] = []
        for r, _ in placed:
            names.append(r.name)
            expansion = self._expansion(r)
            if expansion:
                names.extend(f"{r.name}@{i}" for i in expansion)
        key = (names, {r.name: r.id for r, _ in placed if r.id is not None})
        if key != self._id_key:
            # Ids depend on the names in order (probing on collisions) and the fixed ids only.
            self._ids = assign_ids(key[0], key[1], 32)
            self._rule_names = {rid: name for name, rid in self._ids.items()}
            self._id_key = key
        ids = self._ids
        touched = self.touched
        rules: list[ResolvedRule] = []
        previous = self._rules
        rebuilt = 0
        cache: dict[int, _CachedRule] = {}
        for position, (rule, (section_name, section_audit)) in enumerate(placed):
            if not rule.enabled:
                continue
            section = (section_name, rule.audit or section_audit)
            expansion = self._expansion(rule)
            rule_ids = (ids[rule.name], *(ids[f"{rule.name}@{i}"] for i in expansion or ()))
            hit = previous.get(id(rule))
            if (
                hit is not None
                and hit[0] is rule
                and hit[1] == position
                and hit[2] == section
                and hit[3] == rule_ids
                and hit[4] is expansion
                and not (touched and any(a in touched for a in rule.applied_to))
            ):
                resolved = hit[5]
            else:
                resolved = self._rule(rule, rule_ids, position, *section)
                rebuilt += 1
            cache[id(rule)] = (rule, position, section, rule_ids, expansion, resolved)
            rules.extend(resolved)
        self._rules = cache
        applied = {a for r, _ in placed for a in r.applied_to}
        self._fast = (policy.sections, policy.templates, dict(self._instance_lists), applied)
        if rebuilt or len(rules) != len(self._rules_out):
            self._rules_out = tuple(rules)
            # Keep only the blocks and derived groups rules still use, as a fresh resolve has.
            used = {n for r in rules for n in (*(r.sources or ()), *(r.destinations or ()))}
            self._cidrs = {n: g for n, g in self._cidrs.items() if n in used}
            self._derived = {n: g for n, g in self._derived.items() if n in used}
        return self._result(policy)

    def _result(self, policy: Policy) -> ResolvedPolicy:
        return ResolvedPolicy(
            {**self._cidrs, **self._groups, **self._derived},
            self._rules_out,
            self._rw_tuple,
            policy.default_action,
            self._rule_names,
        )


def _same(a: Iterable[object], b: Iterable[object]) -> bool:
    return a is b or a == b


def resolve(policy: Policy) -> ResolvedPolicy:
    """Resolve a checked policy once."""
    return Resolver().resolve(policy)


__all__ = ["Resolver", "derived_name", "resolve", "term_of"]

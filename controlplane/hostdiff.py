"""The writes a policy change would make on each host, as each host's agent compiles it.

A host carries the rules applied to it, its own workloads' ids in the classification tables
and its own L2 entries (`CompileOptions.host`). Compiling the policy once per host would cost a
full compile each; instead hosts that carry the same rules share one compile (fresh, as the
agent starts one per apply), and what differs between them (workload ids, L2 entries) is
worked out from it. Beyond `MAX_HOST_COMPILES` distinct rule sets, the remaining hosts are
derived from the single view and marked inexact.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from offload import names
from offload.compiler import CompiledPolicy, CompileOptions, Compiler, ResolvedPolicy
from offload.compiler.classes import ClassTable
from offload.compiler.delta import diff as compiled_diff
from offload.compiler.rules import ADDRESS_BITS, ResolvedRule
from offload.entries import Entry
from offload.sync import Diff
from offload.sync import diff as entry_diff

MAX_HOST_COMPILES = 8  # sets of hosts (by rules applied) compiled on their own
_KINDS = ("insert", "modify", "delete")
# Tables whose entries differ between hosts that carry the same rules.
_LOCAL_TABLES = frozenset({names.SRC_CLASS, names.DST_CLASS, names.L2_FORWARD})


@dataclass
class HostChanges:
    """The writes one host's target would get."""

    host: str | None
    diff: Diff
    exact: bool = True  # False: derived from the single view (too many distinct rule sets)

    def counts(self) -> dict[str, dict[str, int]]:
        """Per table (short name): inserts, modifies, deletes."""
        out: dict[str, dict[str, int]] = {}
        for kind, entries in (
            ("insert", self.diff.inserts),
            ("modify", self.diff.modifies),
            ("delete", self.diff.deletes),
        ):
            for e in entries:
                row = out.setdefault(e.table.rsplit(".", 1)[-1], dict.fromkeys(_KINDS, 0))
                row[kind] += 1
        return out


def hosts_of(*policies: ResolvedPolicy) -> list[str | None]:
    """Every host a workload sits on or a rule is applied to (none: the single view)."""
    hosts: set[str] = {w.host for p in policies for w in p.workloads if w.host is not None}
    hosts |= {h for p in policies for r in p.rules for h in r.hosts or ()}
    return [*sorted(hosts)] if hosts else [None]


def host_changes(
    before: ResolvedPolicy,
    after: ResolvedPolicy,
    options: CompileOptions | None = None,
    max_compiles: int | None = None,
) -> tuple[list[HostChanges], Diff]:
    """The writes each host's agent would make, and those of the single (all hosts) view.

    Hosts that carry the same rules share one compile; what differs between them is computed
    from it: a workload's /128 classification entry carries its id only on its own host (and
    is absent elsewhere when no group has it), and L2 entries are its host's. Beyond
    `max_compiles` sets of hosts (the largest sets go first), the others are derived from the
    single view, keeping the ACL entries of the rules applied to them (`exact` False: their
    class codes may differ from what their own compile would choose).
    """
    cap = MAX_HOST_COMPILES if max_compiles is None else max_compiles
    opts = dataclasses.replace(options or CompileOptions(), host=None)
    hosts = hosts_of(before, after)
    scoped = [r for p in (before, after) for r in p.rules if r.hosts is not None]
    by_sig: dict[tuple[object, ...], list[str | None]] = {}
    for h in hosts:
        sig = tuple(sorted({(id(r), h is None or h in (r.hosts or ())) for r in scoped}))
        by_sig.setdefault(sig, []).append(h)
    local = _Local(before, after)
    out: list[HostChanges] = []
    single: tuple[CompiledPolicy, CompiledPolicy, Diff] | None = None
    if not scoped or hosts == [None] or len(by_sig) > cap:
        old = Compiler(opts).compile(before)
        new = Compiler(opts).compile(after)
        single = (old, new, compiled_diff(old, new))
    for k, group in enumerate(sorted(by_sig.values(), key=lambda g: -len(g))):
        if k < cap and (scoped and hosts != [None]):
            # Fresh compilers, as the agent starts one per policy apply: the candidate's class
            # encoding is its own, not the enforced one's carried over.
            old = Compiler(opts).compile(_on(before, group[0]))
            new = Compiler(opts).compile(_on(after, group[0]))
            out.extend(local.hosts(group, old, new, compiled_diff(old, new)))
        else:
            assert single is not None
            exact = not scoped or hosts == [None]
            out.extend(local.hosts(group, *single, exact=exact, rules=(before, after)))
    if single is None:
        old, new = Compiler(opts).compile(before), Compiler(opts).compile(after)
        single = (old, new, compiled_diff(old, new))
    return sorted(out, key=lambda h: h.host or ""), single[2]


class _Local:
    """What differs between hosts that carry the same rules: workload ids, L2, rule sets."""

    def __init__(self, before: ResolvedPolicy, after: ResolvedPolicy) -> None:
        self.owner_before = {a: w.host for w in before.workloads for a in w.addresses}
        self.owner_after = {a: w.host for w in after.workloads for a in w.addresses}
        self.mac_before = {w.mac: w.host for w in before.workloads if w.mac is not None}
        self.mac_after = {w.mac: w.host for w in after.workloads if w.mac is not None}
        ids_before = {a: (w.host, w.workload_id) for w in before.workloads for a in w.addresses}
        ids_after = {a: (w.host, w.workload_id) for w in after.workloads for a in w.addresses}
        # Addresses whose workload changed host or id: their /128 entries move between hosts.
        self.moved = {
            (a, ADDRESS_BITS)
            for a in ids_before.keys() | ids_after.keys()
            if ids_before.get(a) != ids_after.get(a)
        }

    def hosts(
        self,
        group: Sequence[str | None],
        old: CompiledPolicy,
        new: CompiledPolicy,
        shared: Diff,
        exact: bool = True,
        rules: tuple[ResolvedPolicy, ResolvedPolicy] | None = None,
    ) -> list[HostChanges]:
        """Each host of `group`'s writes, from the compile they share (`rules`: filter the
        ACL entries by the rules applied to each host, before and after)."""
        changed = (*shared.inserts, *shared.modifies, *shared.deletes)
        candidates = {
            t: {_prefix(e) for e in changed if e.table == t} | self.moved
            for t in (names.SRC_CLASS, names.DST_CLASS)
        }
        was = {r.rule_id: r for r in rules[0].rules} if rules else {}
        now = {r.rule_id: r for r in rules[1].rules} if rules else {}
        out = []
        scoped = {
            rid
            for rid in was.keys() | now.keys()
            if (was.get(rid) and was[rid].hosts is not None)
            or (now.get(rid) and now[rid].hosts is not None)
        }
        for h in group:
            d = Diff()
            # Rules that start or stop applying here: all their entries come or go.
            gained = {r for r in scoped if _on_host(now, r, h) and not _on_host(was, r, h)}
            lost = {r for r in scoped if _on_host(was, r, h) and not _on_host(now, r, h)}
            moving = gained | lost
            for kind, entries, by_id in (
                (d.inserts, shared.inserts, now),
                (d.modifies, shared.modifies, now),
                (d.deletes, shared.deletes, was),
            ):
                kind.extend(
                    e
                    for e in entries
                    if e.table not in _LOCAL_TABLES
                    and (not by_id or (_applies(e, by_id, h) and _rule_id(e) not in moving))
                )
            for rid in sorted(gained):
                d.inserts.extend(new.acl.get(rid, ()))
            for rid in sorted(lost):
                d.deletes.extend(old.acl.get(rid, ()))
            for t, table_old, table_new in (
                (names.SRC_CLASS, old.src_class, new.src_class),
                (names.DST_CLASS, old.dst_class, new.dst_class),
            ):
                want = _local(table_new, candidates[t], self.owner_after, h)
                have = _local(table_old, candidates[t], self.owner_before, h)
                _merge(d, entry_diff(want, have))
            want_l2 = [e for e in new.l2 if h is None or self.mac_after.get(_mac(e)) == h]
            have_l2 = [e for e in old.l2 if h is None or self.mac_before.get(_mac(e)) == h]
            _merge(d, entry_diff(want_l2, have_l2))
            out.append(HostChanges(h, d, exact))
        return out


def _rule_id(entry: Entry) -> int:
    return int(dict(entry.params).get("rule_id", 0))


def _applies(entry: Entry, rules: Mapping[int, ResolvedRule], host: str | None) -> bool:
    """Whether an ACL entry's rule is installed on `host` (defaults are everywhere)."""
    rule = rules.get(_rule_id(entry))
    return rule is None or rule.applies_on(host)


def _on_host(rules: Mapping[int, ResolvedRule], rule_id: int, host: str | None) -> bool:
    rule = rules.get(rule_id)
    return rule is not None and rule.applies_on(host)


def _on(policy: ResolvedPolicy, host: str | None) -> ResolvedPolicy:
    """The policy as `host` compiles it: only its rules (workloads stay, for group codes)."""
    if host is None or all(r.hosts is None for r in policy.rules):
        return policy
    return dataclasses.replace(policy, rules=tuple(r for r in policy.rules if r.applies_on(host)))


def _prefix(e: Entry) -> tuple[int, int]:
    if not e.match:
        return (0, 0)
    lpm = e.match[0][1]
    return (lpm.value, lpm.prefix_len)  # type: ignore[union-attr]


def _mac(e: Entry) -> int:
    return int(e.match[0][1].value)  # type: ignore[union-attr]


def _local(
    table: ClassTable,
    prefixes: Iterable[tuple[int, int]],
    owner: Mapping[int, str | None],
    host: str | None,
) -> list[Entry]:
    """A class table's entries at `prefixes` as `host` has them."""
    out = []
    for p in prefixes:
        e = table.by_prefix.get(p)
        if e is None:
            continue
        if host is not None and p[1] == ADDRESS_BITS and owner.get(p[0]) != host:
            if not table.effective.get(p, 0):
                continue  # on another host's workload and in no group: no entry here
            if e.params[1][1]:
                e = dataclasses.replace(e, params=(e.params[0], ("workload_id", 0)))
        out.append(e)
    return out


def _merge(into: Diff, more: Diff) -> None:
    into.inserts.extend(more.inserts)
    into.modifies.extend(more.modifies)
    into.deletes.extend(more.deletes)
    into.unchanged += more.unchanged

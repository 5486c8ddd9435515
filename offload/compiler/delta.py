"""The writes that take a target from one compiled policy to the next, without a full pass.

Compiled policies keep their entries in chunks (a classification table, one rule's ACL entries,
a default entry). A `Compiler` hands back the very same chunk object when nothing in it changed
(and the very same ACL mapping when no rule changed), so `diff` compares chunks by identity
first. A classification table patched for an inventory event names the prefixes it changed,
so only those entries are compared; inside any other changed chunk, the entry objects both
sides share are skipped. The result is an `offload.sync.Diff`, ready for
`offload.sync.apply_diff`.
"""

from __future__ import annotations

from collections.abc import Iterable

from offload.compiler.classes import ClassTable
from offload.compiler.compile import CompiledPolicy
from offload.entries import Entry
from offload.sync import Diff
from offload.sync import diff as diff_entries


def diff(old: CompiledPolicy | None, new: CompiledPolicy) -> Diff:
    """The writes from `old` (None: an empty target) to `new`."""
    if old is None:
        return diff_entries(new.entries(), ())
    removed: list[Entry] = []
    added: list[Entry] = []
    total = 0
    for before, after in ((old.src_class, new.src_class), (old.dst_class, new.dst_class)):
        total += len(after)
        _table(before, after, removed, added)
    old_rest = dict(old.other_chunks())
    for key, entries in new.other_chunks():
        total += len(entries)
        _chunk(old_rest.pop(key, None), entries, removed, added)
    for entries in old_rest.values():
        removed.extend(entries)
    delta = new.acl_delta
    if old.acl is new.acl:
        total += new.stats.acl_entries
    elif delta is not None and delta[0] is old.acl and delta[1] is new.acl:
        # Patched from the old ACL: only the rules it names may differ.
        total += new.stats.acl_entries
        for rule_id in delta[2]:
            _chunk(old.acl.get(rule_id), new.acl.get(rule_id, ()), removed, added)
    else:
        old_acl = dict(old.acl)
        for rule_id, entries in new.acl.items():
            total += len(entries)
            _chunk(old_acl.pop(rule_id, None), entries, removed, added)
        for entries in old_acl.values():
            removed.extend(entries)
    out = diff_entries(added, removed)
    out.unchanged = total - len(out.inserts) - len(out.modifies)
    return out


def _table(before: ClassTable, after: ClassTable, removed: list[Entry], added: list[Entry]) -> None:
    if before is after:
        return
    if after.base is before:
        for p in after.changed:
            a, b = before.by_prefix.get(p), after.by_prefix.get(p)
            if a is not b:
                if a is not None:
                    removed.append(a)
                if b is not None:
                    added.append(b)
        return
    _chunk(before.entries, after.entries, removed, added)


def _chunk(
    prev: tuple[Entry, ...] | None,
    entries: tuple[Entry, ...],
    removed: list[Entry],
    added: list[Entry],
) -> None:
    if prev is entries:
        return
    if prev is None:
        added.extend(entries)
        return
    gone, fresh = _changed(prev, entries)
    removed.extend(gone)
    added.extend(fresh)


def _changed(prev: Iterable[Entry], entries: Iterable[Entry]) -> tuple[list[Entry], list[Entry]]:
    """Entries only in `prev`, only in `entries`, by object identity (shared ones skipped)."""
    before = {id(e): e for e in prev}
    fresh = []
    for e in entries:
        if before.pop(id(e), None) is None:
            fresh.append(e)
    return list(before.values()), fresh

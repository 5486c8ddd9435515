"""The writes that take a target from one compiled policy to the next, without a full pass.

Compiled policies keep their entries in chunks (a classification table, one rule's ACL entries,
a default entry). A `Compiler` hands back the very same chunk object when nothing in it changed,
so `diff` compares chunks by identity first and runs `offload.sync.diff` only over the entries
of changed chunks: a one-rule edit costs a walk over the rule ids, not over every entry. The
result is an `offload.sync.Diff`, ready for `offload.sync.apply_diff`.
"""

from __future__ import annotations

from offload.compiler.compile import CompiledPolicy
from offload.entries import Entry
from offload.sync import Diff
from offload.sync import diff as diff_entries


def diff(old: CompiledPolicy | None, new: CompiledPolicy) -> Diff:
    """The writes from `old` (None: an empty target) to `new`."""
    if old is None:
        return diff_entries(new.entries(), ())
    old_chunks = dict(old.chunks())
    removed: list[Entry] = []
    added: list[Entry] = []
    total = 0
    for key, entries in new.chunks():
        total += len(entries)
        prev = old_chunks.pop(key, None)
        if prev is entries:
            continue
        if prev is not None:
            removed.extend(prev)
        added.extend(entries)
    for entries in old_chunks.values():
        removed.extend(entries)
    out = diff_entries(added, removed)
    out.unchanged = total - len(out.inserts) - len(out.modifies)
    return out

"""Classification tables: group membership of address prefixes, as class-id entries.

The classification tables (`src_class`, `dst_class`) map address prefixes (LPM on the 128-bit
key) to a 64-bit class id; ACL entries match class ids with ternary masks. How memberships
become class ids is `offload.compiler.encoding`'s.

Longest prefix wins in an LPM table, so a more specific prefix carries the memberships of every
enclosing prefix too. IPv4 and IPv6 blocks never mix: an IPv6 block like ::/0 numerically holds
the IPv4-mapped range, so a "barrier" entry ::ffff:0:0/96 stops IPv4 keys inheriting from it.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from offload import names
from offload.compiler.encoding import (
    CLASS_BITS,
    RESERVE,
    Encoding,
    EncodingKind,
    choose_encoding,
)
from offload.compiler.overlay import patch
from offload.compiler.rules import ADDRESS_BITS, AddressGroup, Prefix, is_v4_key, is_v4_prefix
from offload.entries import Entry, Lpm
from offload.p4values import V4_MAPPED, V4_MAPPED_PREFIX

BARRIER: Final[Prefix] = (V4_MAPPED, V4_MAPPED_PREFIX)


def memberships(
    groups: Sequence[AddressGroup], addresses: Iterable[int] = ()
) -> tuple[dict[Prefix, int], set[Prefix]]:
    """Each prefix's membership mask, inherited from enclosing prefixes, and barrier prefixes.

    `addresses` adds /128 prefixes (local workloads) that need an entry of their own.
    """
    own: dict[Prefix, int] = {}
    for index, group in enumerate(groups):
        bit = 1 << index
        for p in group.prefixes:
            own[p] = own.get(p, 0) | bit
    for a in addresses:
        own.setdefault((a, ADDRESS_BITS), 0)
    v4 = [p for p in own if is_v4_prefix(p)]
    v6 = [p for p in own if not is_v4_prefix(p)]
    barriers: set[Prefix] = set()
    if BARRIER not in own and any(_contains_prefix(p, BARRIER) for p in v6):
        barriers.add(BARRIER)
        v4.append(BARRIER)
    effective: dict[Prefix, int] = {}
    for family in (v4, v6):
        family.sort()
        # Sorted by (value, length), an enclosing prefix comes before everything inside it.
        stack: list[tuple[int, int, int]] = []
        for p in family:
            value, plen = p
            while stack:
                top_value, top_len, _ = stack[-1]
                shift = ADDRESS_BITS - top_len
                if value >> shift == top_value >> shift:
                    break
                stack.pop()
            mask = own.get(p, 0) | (stack[-1][2] if stack else 0)
            effective[p] = mask
            stack.append((value, plen, mask))
    return effective, barriers


def _contains_prefix(outer: Prefix, inner: Prefix) -> bool:
    shift = ADDRESS_BITS - outer[1]
    return outer[1] <= inner[1] and outer[0] >> shift == inner[0] >> shift


@dataclass(frozen=True)
class ClassTable:
    """One classification table's entries and the encoding behind them."""

    table: str
    encoding: Encoding
    by_prefix: Mapping[Prefix, Entry]  # the entries, by prefix (shared with patched tables)
    # What an incremental update needs: own (not inherited) masks of /128 prefixes, and
    # effective masks of every prefix.
    own: Mapping[Prefix, int] = field(default_factory=dict, repr=False, compare=False)
    effective: Mapping[Prefix, int] = field(default_factory=dict, repr=False, compare=False)
    # Set by `update_class_table`: the table this one was patched from, and the prefixes whose
    # entries may differ from it (so a diff need not walk every entry).
    base: ClassTable | None = field(default=None, repr=False, compare=False)
    changed: frozenset[Prefix] = field(default=frozenset(), repr=False, compare=False)

    @functools.cached_property
    def entries(self) -> tuple[Entry, ...]:
        """Every entry of the table (made on first use: a patched table may never need it)."""
        return tuple(self.by_prefix.values())

    def __len__(self) -> int:
        """How many entries."""
        return len(self.by_prefix)


_TABLES: Final = {
    names.SRC_CLASS: ("ip_src", names.SET_SRC_CLASS),
    names.DST_CLASS: ("ip_dst", names.SET_DST_CLASS),
}


def build_class_table(
    table: str,
    groups: Sequence[AddressGroup],
    workload_ids: Mapping[int, int],
    kind: EncodingKind = "auto",
    bits: int = CLASS_BITS,
    previous: Encoding | None = None,
    reserve: int = RESERVE,
) -> ClassTable:
    """Classification entries for `groups` plus a /128 entry per local workload address.

    Groups without addresses get a code too (no address carries it yet), so rules over an
    empty dynamic group are installed and a tag that fills it rewrites class entries only.
    `previous` is the table's last encoding, whose bit assignment is kept where it can be.
    """
    groups = list(groups)  # empty ones too: a dynamic group that fills keeps the encoding
    group_names = tuple(g.name for g in groups)
    effective, barriers = memberships(groups, workload_ids)
    masks = set(effective.values())
    # A group without addresses yet still gets a code (its own class): a dynamic group that
    # fills later (a tag attached) then needs no new code, only classification entries.
    masks.update(1 << i for i, g in enumerate(groups) if not g.prefixes)
    # With headroom: spare bits widen fields, room for combinations that events bring later;
    # empty groups (dynamic ones, most likely) get a bit each when they fit.
    empty = [i for i, g in enumerate(groups) if not g.prefixes]
    encoding = choose_encoding(
        group_names, masks, kind, bits, previous, True, empty, reserve if bits >= 32 else 0
    )
    class_ids = encoding.class_ids
    by_prefix: dict[Prefix, Entry] = {}
    for p in sorted(effective):
        mask = effective[p]
        wid = workload_ids.get(p[0], 0) if p[1] == ADDRESS_BITS else 0
        if not mask and not wid and p not in barriers:
            continue  # the same as a miss: class 0, no workload
        by_prefix[p] = _entry(table, p, class_ids[mask], wid)
    # Own memberships of /128 prefixes (not inherited): what `update_class_table` patches.
    own: dict[Prefix, int] = {(a, ADDRESS_BITS): 0 for a in workload_ids}
    for i, g in enumerate(groups):
        for p in g.prefixes:
            if p[1] == ADDRESS_BITS:
                own[p] = own.get(p, 0) | 1 << i
    return ClassTable(table, encoding, by_prefix, own, effective)


def _entry(table: str, p: Prefix, class_id: int, wid: int) -> Entry:
    key, action = _TABLES[table]
    # A /0 key is a don't-care and must be omitted (P4Runtime 9.1.1).
    match = ((key, Lpm(p[0], p[1])),) if p[1] else ()
    return Entry(table, match, action, (("class_id", class_id), ("workload_id", wid)))


def _inherited(effective: Mapping[Prefix, int], key: int) -> int:
    """The mask a /128 key inherits: that of its longest enclosing prefix (same family)."""
    v4 = is_v4_key(key)
    for plen in range(ADDRESS_BITS - 1, (V4_MAPPED_PREFIX if v4 else 0) - 1, -1):
        shift = ADDRESS_BITS - plen
        p = (key >> shift << shift, plen)
        mask = effective.get(p)
        if mask is not None and is_v4_prefix(p) == v4:
            return mask
    return 0


def update_class_table(
    previous: ClassTable,
    old_groups: Sequence[AddressGroup],
    groups: Sequence[AddressGroup],
    old_ids: Mapping[int, int],
    workload_ids: Mapping[int, int],
    bits: int = CLASS_BITS,
) -> ClassTable | None:
    """`previous` updated for changed workload memberships (/128 prefixes), keeping every
    existing code and unchanged entry object; new groups (a template instance's) get new bits
    or field values. None when a full rebuild is needed: a block changed, or the encoding has
    no room for a group or a combination of groups."""
    enc = previous.encoding
    current = {g.name: g for g in groups}
    slots = enc.slots
    added = [n for n in current if n not in slots]
    if added:
        grown = enc.with_groups(added, bits)
        if grown is None:
            return None
        enc = grown
        slots = enc.slots
    before = {g.name: g for g in old_groups}
    changed: set[Prefix] = set()
    # Groups whose prefixes changed, by slot, with their new prefixes (a group no rule names
    # any more stays in the encoding as an empty slot).
    moved: list[tuple[int, frozenset[Prefix]]] = []
    for name in current.keys() | before.keys():
        o, g = before.get(name), current.get(name)
        if o is g:
            continue
        now = g.prefixes if g else frozenset()
        diff = (o.prefixes if o else frozenset()) ^ now
        if diff:
            changed |= diff
            moved.append((slots[name], now))
    if old_ids is not workload_ids:
        for a in old_ids.keys() | workload_ids.keys():
            if old_ids.get(a) != workload_ids.get(a):
                changed.add((a, ADDRESS_BITS))
    if not changed and enc is previous.encoding:
        return previous
    if any(p[1] != ADDRESS_BITS for p in changed):
        return None
    moved_bits = sum(1 << i for i, _ in moved)
    own, effective = previous.own, previous.effective
    own_updates: dict[Prefix, int] = {}
    updates: dict[Prefix, int] = {}
    gone: list[Prefix] = []
    for p in changed:
        # Unchanged groups hold `p` as they did; the moved ones say anew.
        mask = own.get(p, 0) & ~moved_bits
        for i, prefixes in moved:
            if p in prefixes:
                mask |= 1 << i
        if mask or p[0] in workload_ids:
            own_updates[p] = mask
            updates[p] = mask | _inherited(effective, p[0])
        else:
            gone.append(p)

    def live() -> set[int]:
        return set(effective.values()) | set(updates.values())

    encoding = enc.extended(updates.values(), live, bits)
    if encoding is None:
        return None
    own = patch(own, own_updates, gone)
    effective = patch(effective, updates, gone)
    # A field laid out again gives every address with a group of it a new class id.
    relaid = encoding.generation != enc.generation
    entry_updates: dict[Prefix, Entry] = {}
    for p, mask in updates.items():
        wid = workload_ids.get(p[0], 0)
        if mask or wid:
            entry_updates[p] = _entry(previous.table, p, encoding.class_ids[mask], wid)
    if relaid:
        for p, mask in effective.items():
            e = previous.by_prefix.get(p)
            cid = encoding.class_ids[mask]
            if e is not None and p not in updates and e.params[0][1] != cid:
                entry_updates[p] = _entry(previous.table, p, cid, int(e.params[1][1]))
                changed.add(p)
    by_prefix = patch(
        previous.by_prefix, entry_updates, [p for p in changed if p not in entry_updates]
    )
    # A diff compares a table with the one it was patched from, never further back: forget
    # the older link so that patched tables do not keep every predecessor alive.
    object.__setattr__(previous, "base", None)
    return ClassTable(
        previous.table, encoding, by_prefix, own, effective, previous, frozenset(changed)
    )

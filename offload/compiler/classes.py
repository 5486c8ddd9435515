"""Class ids: group membership of addresses, encoded so one ACL entry covers a group pair.

The classification tables (`src_class`, `dst_class`) map address prefixes (LPM on the 128-bit
key) to a 64-bit class id; ACL entries match class ids with ternary masks. Three encodings, in
order of preference:

- bitmap: each group owns one bit (<= 64 groups); a group matches with a one-bit mask, so
  overlapping groups cost nothing and a membership change rewrites one classification entry.
- packed: groups that never share an address share a field, each with its own value in it
  (a greedy colouring of the overlap graph); a group matches with its field's mask.
- classes: when packed fields still need too many bits, fields are merged: a merged field's
  value is the equivalence class of an address's memberships among the field's groups, and
  a group matches every class holding it. Merges that add the fewest extra codes per bit
  saved go first, so only rules over overlapping groups get more than one entry per group
  pair (the compiler reports how many groups that touches). Forced `classes`: one field.

Longest prefix wins in an LPM table, so a more specific prefix carries the memberships of every
enclosing prefix too. IPv4 and IPv6 blocks never mix: an IPv6 block like ::/0 numerically holds
the IPv4-mapped range, so a "barrier" entry ::ffff:0:0/96 stops IPv4 keys inheriting from it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

from offload import names
from offload.compiler.rules import ADDRESS_BITS, AddressGroup, Prefix, is_v4_prefix
from offload.entries import Entry, Lpm, Ternary
from offload.p4values import V4_MAPPED, V4_MAPPED_PREFIX

EncodingKind = Literal["auto", "bitmap", "packed", "classes"]  # what may be used
CLASS_BITS: Final = 64
BARRIER: Final[Prefix] = (V4_MAPPED, V4_MAPPED_PREFIX)


class EncodingError(ValueError):
    """The requested class-id encoding cannot hold the groups in the bits available."""


def bits_of(mask: int) -> Iterator[int]:
    """Indices of the set bits of `mask`, lowest first."""
    while mask:
        low = mask & -mask
        yield low.bit_length() - 1
        mask ^= low


@dataclass(frozen=True, slots=True)
class Field:
    """A bit field of a class id, holding the index of an address's memberships among
    `members`: one group per value when they never overlap (`values`), else `classes`."""

    offset: int
    width: int
    members: tuple[str, ...]
    kind: Literal["values", "classes"] = "values"


@dataclass(frozen=True)
class Encoding:
    """How membership sets become class ids, and which ternary keys match each group."""

    kind: Literal["bitmap", "packed", "classes"]
    bits: int
    group_names: tuple[str, ...]  # bit i of a membership mask is group_names[i]
    codes: Mapping[str, tuple[Ternary, ...]]
    class_ids: Mapping[int, int]  # membership mask -> class id (one-to-one)
    fields: tuple[Field, ...] = ()
    _names_of: dict[int, tuple[str, ...]] = field(default_factory=dict, repr=False)
    _labels: dict[Ternary, list[str]] = field(default_factory=dict, repr=False)

    def groups_of(self, class_id: int) -> tuple[str, ...]:
        """The groups a class id stands for."""
        if not self._names_of:
            for mask, cid in self.class_ids.items():
                self._names_of[cid] = tuple(self.group_names[i] for i in bits_of(mask))
        return self._names_of.get(class_id, ())

    def label(self, value: int, mask: int) -> str:
        """A ternary class key as text: the group it matches, or the groups that share it."""
        if not self._labels:
            for name, keys in self.codes.items():
                for t in keys:
                    self._labels.setdefault(t, []).append(name)
        names_ = self._labels.get(Ternary(value, mask), [])
        if len(names_) == 1:
            return names_[0]
        return f"{value:#x}&&&{mask:#x}{{{','.join(sorted(names_))}}}"

    @property
    def expanded(self) -> int:
        """How many groups need more than one ternary code (their rules get more entries)."""
        return sum(1 for keys in self.codes.values() if len(keys) > 1)


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


def bit_positions(
    group_names: tuple[str, ...], previous: Encoding | None, bits: int
) -> list[int] | None:
    """Bit of each group: the one it had in `previous` (a bitmap), new groups in free bits.

    Keeping bits where they were means a rule edit that brings in a new group rewrites that
    group's entries only, not those of every group named after it. None: does not fit.
    """
    if len(group_names) > bits:
        return None
    before: dict[str, int] = {}
    if previous is not None and previous.kind == "bitmap":
        before = {n: keys[0].mask.bit_length() - 1 for n, keys in previous.codes.items()}
    kept = {n: before[n] for n in group_names if n in before and before[n] < bits}
    free = iter(sorted(set(range(bits)) - set(kept.values())))
    return [kept[n] if n in kept else next(free) for n in group_names]


def _bitmap(group_names: tuple[str, ...], masks: set[int], positions: list[int]) -> Encoding:
    codes = {n: (Ternary(1 << p, 1 << p),) for n, p in zip(group_names, positions, strict=True)}
    if positions == list(range(len(positions))):
        class_ids = {m: m for m in masks}
    else:
        class_ids = {m: sum(1 << positions[i] for i in bits_of(m)) for m in masks}
    width = max(positions, default=-1) + 1
    return Encoding("bitmap", width, group_names, codes, class_ids)


def colour_fields(group_names: tuple[str, ...], masks: set[int]) -> list[list[int]]:
    """Greedy colouring of the overlap graph: lists of group indices that never share an address.

    Largest degree first. A group joins the fullest field it fits without widening it; else
    the largest field it fits (one more bit doubles that field's room); else a new field.
    """
    n = len(group_names)
    adjacent = [0] * n
    for m in masks:
        if m & (m - 1):
            for i in bits_of(m):
                adjacent[i] |= m
    order = sorted(range(n), key=lambda i: (-adjacent[i].bit_count(), group_names[i]))
    fields: list[list[int]] = []
    field_masks: list[int] = []
    for i in order:
        conflicts = adjacent[i] & ~(1 << i)
        best, best_key = -1, (2, 0)
        for f, fm in enumerate(field_masks):
            if fm & conflicts:
                continue
            size = len(fields[f])
            widens = size + 1 >= 1 << size.bit_length()
            key = (1 if widens else 0, -size)
            if key < best_key:
                best, best_key = f, key
        if best < 0:
            fields.append([i])
            field_masks.append(1 << i)
        else:
            fields[best].append(i)
            field_masks[best] |= 1 << i
    return fields


def _build(
    kind: Literal["packed", "classes"],
    group_names: tuple[str, ...],
    masks: set[int],
    partition: list[list[int]],
    bits: int,
) -> Encoding | None:
    """Lay out one field per part, if they fit in `bits`.

    A field's value is the index of an address's memberships restricted to the field's groups
    (its "combination"). When the groups of a field never overlap, each combination is one
    group and the field is a plain value field; otherwise a group matches every combination
    that holds it.
    """
    layout = []
    total = 0
    for members in partition:
        fmask = sum(1 << i for i in members)
        combos = {m & fmask for m in masks}
        combos.discard(0)
        # Singletons first in group-name order, so a disjoint field reads as values 1..n.
        ordered = sorted(
            combos, key=lambda c: (c.bit_count(), [group_names[i] for i in bits_of(c)])
        )
        width = len(ordered).bit_length()
        layout.append((members, fmask, ordered, width))
        total += width
    if total > bits:
        return None
    per_group: dict[int, list[Ternary]] = {}
    fields: list[Field] = []
    combo_ids: list[tuple[int, int, dict[int, int]]] = []  # (field mask, offset, combo -> id)
    offset = 0
    for members, fmask, ordered, width in sorted(layout, key=lambda f: -len(f[0])):
        key_mask = ((1 << width) - 1) << offset
        ids = {c: k for k, c in enumerate(ordered, start=1)}
        for c, k in ids.items():
            for i in bits_of(c):
                per_group.setdefault(i, []).append(Ternary(k << offset, key_mask))
        disjoint = all(c & (c - 1) == 0 for c in ordered)
        names_ = tuple(sorted(group_names[i] for i in members))
        fields.append(Field(offset, width, names_, "values" if disjoint else "classes"))
        combo_ids.append((fmask, offset, ids))
        offset += width
    codes = {group_names[i]: tuple(keys) for i, keys in per_group.items()}
    class_ids = {
        m: sum(ids.get(m & fmask, 0) << off for fmask, off, ids in combo_ids) for m in masks
    }
    overlapping = any(f.kind == "classes" for f in fields)
    return Encoding(
        "classes" if overlapping else kind, offset, group_names, codes, class_ids, tuple(fields)
    )


def merge_fields(masks: set[int], partition: list[list[int]], bits: int) -> list[list[int]] | None:
    """Merge fields until their combinations fit in `bits`, or None if no merge saves a bit.

    Each step merges the pair of fields that adds the fewest extra ternary codes (ACL entries)
    per bit saved. Two fields whose groups rarely overlap merge cheaply: the combinations are
    mostly the single groups, plus one per overlapping pair.
    """
    rows = list(masks)
    parts = [list(p) for p in partition]
    field_masks = [sum(1 << i for i in p) for p in parts]
    restricted = [[m & fm for m in rows] for fm in field_masks]

    def shape(values: list[int]) -> tuple[int, int]:
        combos = set(values)
        combos.discard(0)
        return len(combos).bit_length(), sum(c.bit_count() for c in combos)

    shapes = [shape(r) for r in restricted]
    pair_cache: dict[tuple[int, int], tuple[int, int]] = {}
    ident = list(range(len(parts)))  # stable ids for the cache across merges
    next_id = len(parts)
    while sum(w for w, _ in shapes) > bits:
        best: tuple[float, int, int] | None = None
        for a in range(len(parts)):
            for b in range(a + 1, len(parts)):
                key = (ident[a], ident[b])
                merged = pair_cache.get(key)
                if merged is None:
                    merged = shape(
                        [x | y for x, y in zip(restricted[a], restricted[b], strict=True)]
                    )
                    pair_cache[key] = merged
                saved = shapes[a][0] + shapes[b][0] - merged[0]
                if saved <= 0:
                    continue
                added = merged[1] - shapes[a][1] - shapes[b][1]
                score = added / saved
                if best is None or score < best[0]:
                    best = (score, a, b)
        if best is None:
            return None
        _, a, b = best
        restricted[a] = [x | y for x, y in zip(restricted[a], restricted[b], strict=True)]
        shapes[a] = pair_cache[(ident[a], ident[b])]
        parts[a] += parts[b]
        ident[a] = next_id
        next_id += 1
        del parts[b], restricted[b], shapes[b], ident[b]
    return parts


def choose_encoding(
    group_names: tuple[str, ...],
    masks: set[int],
    kind: EncodingKind = "auto",
    bits: int = CLASS_BITS,
    previous: Encoding | None = None,
) -> Encoding:
    """The encoding for these membership masks: bitmap, else packed, else merged classes.

    `kind` forces one: "bitmap" and "packed" raise `EncodingError` when they do not fit,
    "classes" puts every group in one equivalence-class field. A bitmap keeps the bits that
    `previous` gave to groups still present.
    """
    if not 0 < bits <= CLASS_BITS:
        raise EncodingError(f"class ids have 1..{CLASS_BITS} bits, not {bits}")
    positions = bit_positions(group_names, previous, bits) if kind in ("auto", "bitmap") else None
    if positions is not None:
        return _bitmap(group_names, masks, positions)
    if kind == "bitmap":
        raise EncodingError(f"{len(group_names)} groups do not fit a {bits}-bit bitmap")
    if kind == "classes":
        everything = _build("classes", group_names, masks, [list(range(len(group_names)))], bits)
        if everything is None:
            raise EncodingError(f"{len(masks)} membership classes do not fit {bits} bits")
        return everything
    colour = colour_fields(group_names, masks)
    packed = _build("packed", group_names, masks, colour, bits)
    if packed is not None:
        return packed
    if kind == "packed":
        raise EncodingError(f"{len(group_names)} groups do not pack into {bits} bits")
    merged = merge_fields(masks, colour, bits)
    encoding = _build("classes", group_names, masks, merged, bits) if merged else None
    if encoding is None:
        raise EncodingError(f"{len(group_names)} groups do not fit {bits} bits in any encoding")
    return encoding


@dataclass(frozen=True)
class ClassTable:
    """One classification table's entries and the encoding behind them."""

    table: str
    encoding: Encoding
    entries: tuple[Entry, ...]


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
) -> ClassTable:
    """Classification entries for `groups` plus a /128 entry per local workload address.

    Groups without addresses get no code: rules over them compile to nothing. `previous` is
    the table's last encoding, whose bit assignment is kept where it can be.
    """
    key, action = _TABLES[table]
    groups = [g for g in groups if g.prefixes]
    group_names = tuple(g.name for g in groups)
    effective, barriers = memberships(groups, workload_ids)
    encoding = choose_encoding(group_names, set(effective.values()), kind, bits, previous)
    class_ids = encoding.class_ids
    entries: list[Entry] = []
    for p in sorted(effective):
        mask = effective[p]
        wid = workload_ids.get(p[0], 0) if p[1] == ADDRESS_BITS else 0
        if not mask and not wid and p not in barriers:
            continue  # the same as a miss: class 0, no workload
        # A /0 key is a don't-care and must be omitted (P4Runtime 9.1.1).
        match = ((key, Lpm(p[0], p[1])),) if p[1] else ()
        params = (("class_id", class_ids[mask]), ("workload_id", wid))
        entries.append(Entry(table, match, action, params))
    return ClassTable(table, encoding, tuple(entries))

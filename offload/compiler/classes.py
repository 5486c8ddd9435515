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

import dataclasses
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

from offload import names
from offload.compiler.rules import ADDRESS_BITS, AddressGroup, Prefix, is_v4_key, is_v4_prefix
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
    combos: tuple[tuple[int, int, Mapping[int, int]], ...] = ()  # (field mask, offset, ids)
    generation: int = 0  # bumped when a field is laid out again (class ids then move)
    _names_of: dict[int, tuple[str, ...]] = field(default_factory=dict, repr=False)
    _labels: dict[Ternary, list[str]] = field(default_factory=dict, repr=False)
    _slots: dict[str, int] = field(default_factory=dict, repr=False)

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
    def slots(self) -> dict[str, int]:
        """Group name -> its bit in membership masks."""
        if not self._slots:
            self._slots.update((n, i) for i, n in enumerate(self.group_names))
        return self._slots

    def with_groups(self, added: Sequence[str], bits: int = CLASS_BITS) -> Encoding | None:
        """This encoding with more groups (new mask bits after the existing ones), every
        existing code unchanged; None when there is no room. A new group gets its codes as
        `extended` meets the combinations that hold it."""
        codes = dict(self.codes)
        names_ = self.group_names + tuple(added)
        first = len(self.group_names)
        if self.kind == "bitmap":
            used = {keys[0].mask for keys in self.codes.values()}
            free = [1 << b for b in range(bits) if 1 << b not in used]
            if len(free) < len(added):
                return None
            for name, bit in zip(added, free, strict=False):
                codes[name] = (Ternary(bit, bit),)
            width = max(self.bits, *(b.bit_length() for b in free[: len(added)]))
            return Encoding("bitmap", width, names_, codes, self.class_ids)
        combos = list(self.combos)
        fields = list(self.fields)
        room = [(1 << f.width) - 1 - len(c[2]) for f, c in zip(fields, combos, strict=True)]
        for k, name in enumerate(added):
            best = max(range(len(fields)), key=lambda f: room[f], default=-1)
            if best < 0 or room[best] <= 0:
                return None
            room[best] -= 1
            fmask, offset, ids = combos[best]
            combos[best] = (fmask | 1 << (first + k), offset, ids)
            f = fields[best]
            fields[best] = dataclasses.replace(f, members=tuple(sorted((*f.members, name))))
            codes[name] = ()
        return Encoding(
            self.kind, self.bits, names_, codes, self.class_ids, tuple(fields), tuple(combos)
        )

    def extended(
        self,
        masks: Iterable[int],
        live: Callable[[], set[int]] | None = None,
        limit: int = CLASS_BITS,
    ) -> Encoding | None:
        """This encoding with class ids for more membership masks, or None if one does not fit.

        A bitmap expresses every mask. In field encodings a combination of groups that a field
        has not seen gets a free value of the field, and each of its groups one more ternary
        code: only rules over those groups get new entries; the others keep theirs (the
        compiler compares each rule's codes). When a field is full, combinations of several
        groups that no address holds any more (`live()`: the masks in use) are dropped and
        their values reused; if that is not enough, the field is laid out again (in place, or
        wider in unused bits up to `limit`), which changes the codes of its groups only and
        bumps `generation`. Untouched, `codes` stays the very same object.
        """
        masks = list(masks)
        new_ids: dict[int, int] = {}
        combos = list(self.combos)
        fields = list(self.fields)
        codes: dict[str, tuple[Ternary, ...]] | None = None
        class_ids: Mapping[int, int] = self.class_ids
        for m in masks:
            if m in class_ids or m in new_ids:
                continue
            if self.kind == "bitmap":
                new_ids[m] = sum(self.codes[self.group_names[i]][0].mask for i in bits_of(m))
                continue
            total = 0
            for index, (fmask, offset, ids) in enumerate(combos):
                combo = m & fmask
                if not combo:
                    continue
                k = ids.get(combo)
                if k is None:
                    width = fields[index].width
                    key_mask = ((1 << width) - 1) << offset
                    k = _free_value(ids, width)
                    if k is None and live is not None:
                        in_use = {x & fmask for x in live()} | {x & fmask for x in masks}
                        dead = {c: v for c, v in ids.items() if c & (c - 1) and c not in in_use}
                        if dead:
                            ids = {c: v for c, v in ids.items() if c not in dead}
                            codes = dict(self.codes) if codes is None else codes
                            for c, v in dead.items():
                                gone = Ternary(v << offset, key_mask)
                                for i in bits_of(c):
                                    name = self.group_names[i]
                                    codes[name] = tuple(t for t in codes[name] if t != gone)
                            class_ids = {
                                x: cid for x, cid in class_ids.items() if x & fmask not in dead
                            }
                            k = _free_value(ids, width)
                    if k is None and live is not None:
                        current = Encoding(
                            self.kind,
                            self.bits,
                            self.group_names,
                            self.codes if codes is None else codes,
                            {**class_ids, **new_ids},
                            tuple(fields),
                            tuple(combos),
                            self.generation,
                        )
                        wanted = {x & fmask for x in live()} | {x & fmask for x in masks}
                        again = current.relaid(index, wanted, limit)
                        if again is None:
                            return None
                        # Class ids of every mask with a group of the field moved: all anew.
                        return again.extended([*masks, *live()], live, limit)
                    if k is None:
                        return None
                    ids = {**ids, combo: k}
                    if combo & (combo - 1):
                        fields[index] = dataclasses.replace(fields[index], kind="classes")
                    codes = dict(self.codes) if codes is None else codes
                    key = Ternary(k << offset, key_mask)
                    for i in bits_of(combo):
                        name = self.group_names[i]
                        codes[name] = (*codes.get(name, ()), key)
                combos[index] = (fmask, offset, ids)
                total |= k << offset
            new_ids[m] = total
        if not new_ids:
            return self
        kind = self.kind
        if kind == "packed" and any(f.kind == "classes" for f in fields):
            kind = "classes"
        return Encoding(
            kind,
            self.bits,
            self.group_names,
            self.codes if codes is None else codes,
            {**class_ids, **new_ids},
            tuple(fields),
            tuple(combos),
            self.generation,
        )

    def relaid(self, index: int, in_use: set[int], limit: int) -> Encoding | None:
        """Field `index` laid out again for the combinations `in_use` (and each group alone),
        in place if they fit its width, else in unused bits above the others; None if not."""
        fmask, offset, _ = self.combos[index]
        f = self.fields[index]
        members = list(bits_of(fmask))
        wanted = {c for c in in_use if c} | {1 << i for i in members}
        ordered = sorted(wanted, key=lambda c: (c.bit_count(), c))
        need = len(ordered).bit_length()
        top = max((x.offset + x.width for x in self.fields), default=0)
        if need <= f.width:
            new_offset, new_width = offset, f.width
        elif top + need <= limit:
            new_offset, new_width = top, need
        else:
            return None
        old_key = ((1 << f.width) - 1) << offset
        new_key = ((1 << new_width) - 1) << new_offset
        codes = dict(self.codes)
        for i in members:
            name = self.group_names[i]
            codes[name] = tuple(t for t in codes.get(name, ()) if t.mask != old_key)
        ids = {c: k for k, c in enumerate(ordered, start=1)}
        for c, k in ids.items():
            key = Ternary(k << new_offset, new_key)
            for i in bits_of(c):
                name = self.group_names[i]
                codes[name] = (*codes[name], key)
        combos = list(self.combos)
        combos[index] = (fmask, new_offset, ids)
        fields = list(self.fields)
        overlapping = any(c & (c - 1) for c in ordered)
        fields[index] = dataclasses.replace(
            f, offset=new_offset, width=new_width, kind="classes" if overlapping else f.kind
        )
        return Encoding(
            "classes" if overlapping or self.kind == "classes" else self.kind,
            max(self.bits, new_offset + new_width),
            self.group_names,
            codes,
            {x: v for x, v in self.class_ids.items() if not x & fmask},
            tuple(fields),
            tuple(combos),
            self.generation + 1,
        )

    @property
    def expanded(self) -> int:
        """How many groups need more than one ternary code (their rules get more entries)."""
        return sum(1 for keys in self.codes.values() if len(keys) > 1)


def _free_value(ids: Mapping[int, int], width: int) -> int | None:
    """The lowest field value (1..2^width-1) no combination holds, or None."""
    if len(ids) + 1 < 1 << width and len(ids) == max(ids.values(), default=0):
        return len(ids) + 1  # values are dense 1..n: the next one is free
    used = set(ids.values())
    return next((v for v in range(1, 1 << width) if v not in used), None)


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
    headroom: bool = False,
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
    # Half the spare bits widen fields (the fullest first), so that combinations of groups met
    # later (a tag attached, an instance created) find free values instead of forcing a
    # rebuild; the other half is room for a full field to be laid out again, wider.
    spare = (bits - total) // 2 if headroom else 0  # the other half: fields laid out again
    order = sorted(range(len(layout)), key=lambda f: -len(layout[f][2]) / (1 << layout[f][3]))
    while spare > 0 and layout:
        for f in order[:spare]:
            members, fmask, ordered, width = layout[f]
            layout[f] = (members, fmask, ordered, width + 1)
        spare -= min(spare, len(order))
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
        "classes" if overlapping else kind,
        offset,
        group_names,
        codes,
        class_ids,
        tuple(fields),
        tuple(combo_ids),
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
    headroom: bool = False,
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
    packed = _build("packed", group_names, masks, colour, bits, headroom)
    if packed is not None:
        return packed
    if kind == "packed":
        raise EncodingError(f"{len(group_names)} groups do not pack into {bits} bits")
    merged = merge_fields(masks, colour, bits)
    encoding = _build("classes", group_names, masks, merged, bits, headroom) if merged else None
    if encoding is None:
        raise EncodingError(f"{len(group_names)} groups do not fit {bits} bits in any encoding")
    return encoding


@dataclass(frozen=True)
class ClassTable:
    """One classification table's entries and the encoding behind them."""

    table: str
    encoding: Encoding
    entries: tuple[Entry, ...]
    # What an incremental update needs: own and effective masks, entries by prefix.
    own: Mapping[Prefix, int] = field(default_factory=dict, repr=False, compare=False)
    effective: Mapping[Prefix, int] = field(default_factory=dict, repr=False, compare=False)
    by_prefix: Mapping[Prefix, Entry] = field(default_factory=dict, repr=False, compare=False)
    # Set by `update_class_table`: the table this one was patched from, and the prefixes whose
    # entries may differ from it (so a diff need not walk every entry).
    base: ClassTable | None = field(default=None, repr=False, compare=False)
    changed: frozenset[Prefix] = field(default=frozenset(), repr=False, compare=False)


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
    # With headroom: spare bits widen fields, room for combinations that events bring later.
    encoding = choose_encoding(group_names, masks, kind, bits, previous, headroom=True)
    class_ids = encoding.class_ids
    by_prefix: dict[Prefix, Entry] = {}
    for p in sorted(effective):
        mask = effective[p]
        wid = workload_ids.get(p[0], 0) if p[1] == ADDRESS_BITS else 0
        if not mask and not wid and p not in barriers:
            continue  # the same as a miss: class 0, no workload
        by_prefix[p] = _entry(table, p, class_ids[mask], wid)
    own = {p: m for p, m in effective.items() if p[1] == ADDRESS_BITS}
    return ClassTable(table, encoding, tuple(by_prefix.values()), own, effective, by_prefix)


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
    added = [n for n in current if n not in enc.slots]
    if added:
        grown = enc.with_groups(added, bits)
        if grown is None:
            return None
        enc = grown
    before = {g.name: g for g in old_groups}
    changed: set[Prefix] = set()
    for name in current.keys() | before.keys():
        o, g = before.get(name), current.get(name)
        if o is g:
            continue
        # A group no rule names any more stays in the encoding as an empty slot.
        changed |= (o.prefixes if o else frozenset()) ^ (g.prefixes if g else frozenset())
    if old_ids is not workload_ids:
        for a in old_ids.keys() | workload_ids.keys():
            if old_ids.get(a) != workload_ids.get(a):
                changed.add((a, ADDRESS_BITS))
    if not changed and enc is previous.encoding:
        return previous
    if any(p[1] != ADDRESS_BITS for p in changed):
        return None
    slots = enc.slots
    indexed = [(slots[n], g.prefixes) for n, g in current.items()]
    own = dict(previous.own)
    effective = dict(previous.effective)
    updates: dict[Prefix, int] = {}
    for p in changed:
        mask = sum(1 << i for i, prefixes in indexed if p in prefixes)
        if mask or p[0] in workload_ids:
            own[p] = mask
            updates[p] = mask | _inherited(effective, p[0])
        else:
            own.pop(p, None)
            effective.pop(p, None)

    def live() -> set[int]:
        return set(effective.values()) | set(updates.values())

    encoding = enc.extended(updates.values(), live, bits)
    if encoding is None:
        return None
    # A field laid out again gives every address with a group of it a new class id.
    relaid = encoding.generation != enc.generation
    by_prefix = dict(previous.by_prefix)
    for p in changed:
        by_prefix.pop(p, None)
    for p, mask in updates.items():
        effective[p] = mask
        wid = workload_ids.get(p[0], 0)
        if mask or wid:
            cid = encoding.class_ids[mask]
            by_prefix[p] = _entry(previous.table, p, cid, wid)
    if relaid:
        for p, mask in effective.items():
            e = by_prefix.get(p)
            cid = encoding.class_ids[mask]
            if e is not None and p not in updates and e.params[0][1] != cid:
                by_prefix[p] = _entry(previous.table, p, cid, int(e.params[1][1]))
                changed.add(p)
    entries = tuple(by_prefix.values())
    return ClassTable(
        previous.table, encoding, entries, own, effective, by_prefix, previous, frozenset(changed)
    )

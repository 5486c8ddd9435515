"""Class-id encodings: how group memberships become 64-bit class ids and ternary codes.

Three encodings, in order of preference:

- bitmap: each group owns one bit (<= 64 groups); a group matches with a one-bit mask, so
  overlapping groups cost nothing and a membership change rewrites one classification entry.
- packed: groups that never share an address share a field, each with its own value in it
  (a greedy colouring of the overlap graph); a group matches with its field's mask.
- classes: when packed fields still need too many bits, fields are merged: a merged field's
  value is the equivalence class of an address's memberships among the field's groups, and
  a group matches every class holding it. Merges that add the fewest extra codes per bit
  saved go first, so only rules over overlapping groups get more than one entry per group
  pair (the compiler reports how many groups that touches). Forced `classes`: one field.

An `Encoding` can grow in place when a tag change needs a new value (`extended`: a free bit,
a reclaimed value or a spill into another field) so tables are patched, not rebuilt.
`offload.compiler.classes` builds the classification tables from an encoding.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

from offload.compiler.fields import (
    MAX_EXTRA,
    Combos,
    Field,
    bits_of,
    field_key,
    free_bit,
    place,
    reclaim,
    spill,
    spilled,
)
from offload.compiler.overlay import patch
from offload.entries import Ternary

EncodingKind = Literal["auto", "bitmap", "packed", "classes"]  # what may be used
CLASS_BITS: Final = 64


class EncodingError(ValueError):
    """The requested class-id encoding cannot hold the groups in the bits available."""


@dataclass(frozen=True)
class Encoding:
    """How membership sets become class ids, and which ternary keys match each group."""

    kind: Literal["bitmap", "packed", "classes"]
    bits: int
    group_names: tuple[str, ...]  # bit i of a membership mask is group_names[i]
    codes: Mapping[str, tuple[Ternary, ...]]
    class_ids: Mapping[int, int]  # membership mask -> class id (one-to-one)
    fields: tuple[Field, ...] = ()
    # Per field: (mask of its groups' bits, offset, combination -> value, in class-id bits); a
    # key with bits outside the field's is another field's combination spilled here (`spill`).
    combos: tuple[Combos, ...] = ()
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
        room = [
            (1 << (f.width + len(f.extra))) - 1 - len(c[2])
            for f, c in zip(fields, combos, strict=True)
        ]
        spare = free_bit(fields, bits) is not None  # a full field can take a bit later
        for k, name in enumerate(added):
            best = max(range(len(fields)), key=lambda f: room[f], default=-1)
            if best < 0 or (room[best] <= 0 and not spare):
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
        has not seen gets a value of the field (`place`), and the groups no code yet matches
        there one more ternary code each: only rules over those groups get new entries; the
        others keep theirs (the compiler compares each rule's codes). When a field is full,
        combinations of several groups that no address holds any more (`live()`: the masks in
        use) give their values back; if that is not enough, the field takes a free bit of the
        class id (`Field.extra`, anywhere below `limit`): existing values and codes stay as
        they are, so nothing but the new combination's codes is written. Only when no bit is
        free is the field laid out again (every code of its groups changes; `generation` is
        bumped). Untouched, `codes` stays the very same object.
        """
        masks = list(masks)
        new_ids: dict[int, int] = {}
        if self.kind == "bitmap":
            for m in masks:
                if m not in self.class_ids and m not in new_ids:
                    new_ids[m] = sum(self.codes[self.group_names[i]][0].mask for i in bits_of(m))
            if not new_ids:
                return self
            return Encoding(  # a new object: the label caches start afresh
                self.kind, self.bits, self.group_names, self.codes, patch(self.class_ids, new_ids)
            )
        combos = list(self.combos)
        fields = list(self.fields)
        codes: dict[str, tuple[Ternary, ...]] | None = None
        class_ids: Mapping[int, int] = self.class_ids
        bits = self.bits
        names_ = self.group_names
        for m in masks:
            if m in class_ids or m in new_ids:
                continue
            parts: dict[int, int] = {}  # field -> its part of the class id
            fixed: set[int] = set()  # fields whose part a spill decided (see `spill`)
            for index, (fmask, offset, ids) in enumerate(combos):
                combo = m & fmask
                if not combo or index in fixed:
                    continue
                x = ids.get(combo)
                if x is None:
                    hit = spilled(m, combo, index, combos, fixed)
                    if hit is not None:
                        parts[hit[0]] = hit[1]
                        fixed |= {hit[0], index}
                        continue
                    current = self.codes if codes is None else codes
                    placed = place(combo, fields[index], fmask, ids, current, names_)
                    if placed is None and live is not None:
                        in_use = {y & fmask for y in live()} | {y & fmask for y in masks}
                        dead = {
                            c for c in ids if c & (c - 1) and not c & ~fmask and c not in in_use
                        }
                        if dead:
                            ids = reclaim(dead, ids)
                            class_ids = {
                                y: cid for y, cid in class_ids.items() if y & fmask not in dead
                            }
                            combos[index] = (fmask, offset, ids)
                            placed = place(combo, fields[index], fmask, ids, current, names_)
                    if placed is None and len(fields[index].extra) < MAX_EXTRA:
                        free = free_bit(fields, limit)
                        if free is not None:
                            f = fields[index]
                            fields[index] = dataclasses.replace(f, extra=(*f.extra, free))
                            bits = max(bits, free + 1)
                            current = self.codes if codes is None else codes
                            placed = place(combo, fields[index], fmask, ids, current, names_)
                    if placed is None:
                        # No bit left: a free value of another field carries the combination
                        # (with the mask's groups there); this field's part stays 0.
                        current = self.codes if codes is None else codes
                        spilt = spill(m, combo, index, fields, combos, current, names_, fixed)
                        if spilt is not None:
                            h, u = spilt
                            hmask, hoffset, hids = combos[h]
                            joint = (m & hmask) | combo
                            combos[h] = (hmask, hoffset, {**hids, joint: u})
                            codes = dict(self.codes) if codes is None else codes
                            key = Ternary(u, field_key(fields[h]) | field_key(fields[index]))
                            for i in bits_of(joint):
                                codes[names_[i]] = (*codes.get(names_[i], ()), key)
                            parts[h] = u
                            fixed |= {h, index}
                            continue
                    if placed is None and live is not None:
                        # No bit left anywhere: lay the field out again (last resort).
                        again = Encoding(
                            self.kind,
                            bits,
                            names_,
                            self.codes if codes is None else codes,
                            patch(class_ids, new_ids),
                            tuple(fields),
                            tuple(combos),
                            self.generation,
                        )
                        wanted = {y & fmask for y in live()} | {y & fmask for y in masks}
                        relaid = again.relaid(index, wanted, limit)
                        if relaid is None:
                            return None
                        # Class ids of every mask with a group of the field moved: all anew.
                        return relaid.extended([*masks, *live()], live, limit)
                    if placed is None:
                        return None
                    x, needs = placed
                    ids = {**ids, combo: x}
                    if combo & (combo - 1):
                        fields[index] = dataclasses.replace(fields[index], kind="classes")
                    codes = dict(self.codes) if codes is None else codes
                    key = Ternary(x, field_key(fields[index]))
                    for i in bits_of(needs):
                        name = names_[i]
                        codes[name] = (*codes.get(name, ()), key)
                    combos[index] = (fmask, offset, ids)
                parts[index] = x
            total = 0
            for x in parts.values():
                total |= x
            new_ids[m] = total
        if not new_ids:
            return self
        kind = self.kind
        if kind == "packed" and any(f.kind == "classes" for f in fields):
            kind = "classes"
        return Encoding(
            kind,
            bits,
            names_,
            self.codes if codes is None else codes,
            patch(class_ids, new_ids),
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
        top = max([top, *(b + 1 for x in self.fields for b in x.extra)])
        if need <= f.width:
            new_offset, new_width = offset, f.width
        elif top + need <= limit:
            new_offset, new_width = top, need
        else:
            return None
        old_key = field_key(f)
        new_key = ((1 << new_width) - 1) << new_offset
        # Every code over the field's bits goes: its groups', and those spilled into it.
        codes = {
            n: tuple(t for t in keys if not t.mask & old_key) for n, keys in self.codes.items()
        }
        ids = {c: k << new_offset for k, c in enumerate(ordered, start=1)}
        for c, k in ids.items():
            key = Ternary(k, new_key)
            for i in bits_of(c):
                name = self.group_names[i]
                codes[name] = (*codes[name], key)
        # Combinations of the field spilled into others go too (their codes did, above).
        combos = [
            (hmask, hoffset, {c: v for c, v in hids.items() if not c & fmask & ~hmask})
            for hmask, hoffset, hids in self.combos
        ]
        combos[index] = (fmask, new_offset, ids)
        fields = list(self.fields)
        overlapping = any(c & (c - 1) for c in ordered)
        fields[index] = dataclasses.replace(
            f,
            offset=new_offset,
            width=new_width,
            kind="classes" if overlapping else f.kind,
            extra=(),
        )
        return Encoding(
            "classes" if overlapping or self.kind == "classes" else self.kind,
            max(self.bits, new_offset + new_width),
            self.group_names,
            codes,
            {x: v for x, v in self.class_ids.items() if not x & fmask and not v & old_key},
            tuple(fields),
            tuple(combos),
            self.generation + 1,
        )

    @property
    def expanded(self) -> int:
        """How many groups need more than one ternary code (their rules get more entries)."""
        return sum(1 for keys in self.codes.values() if len(keys) > 1)


LOOSE_MAX: Final = 4  # loose groups that may get a bit of their own
RESERVE: Final = 3  # bits a merged layout leaves free by default, for fields that fill up
KEEP_FREE: Final = 4  # spare bits kept free before any widens a field at layout


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
    # Spare bits beyond KEEP_FREE: half widen fields (the fullest first), so that combinations
    # of groups met later (a tag attached, an instance created) find free values; the rest
    # stays free, for whichever field fills up to take a bit (`Encoding.extended`).
    spare = max(0, bits - total - KEEP_FREE) // 2 if headroom else 0
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
        ids = {c: k << offset for k, c in enumerate(ordered, start=1)}
        for c, v in ids.items():
            for i in bits_of(c):
                per_group.setdefault(i, []).append(Ternary(v, key_mask))
        disjoint = all(c & (c - 1) == 0 for c in ordered)
        names_ = tuple(sorted(group_names[i] for i in members))
        fields.append(Field(offset, width, names_, "values" if disjoint else "classes"))
        combo_ids.append((fmask, offset, ids))
        offset += width
    codes = {group_names[i]: tuple(keys) for i, keys in per_group.items()}
    class_ids = {m: sum(ids.get(m & fmask, 0) for fmask, _, ids in combo_ids) for m in masks}
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
    while (deficit := sum(w for w, _ in shapes) - bits) > 0:
        best: tuple[float, int, int] | None = None
        closing: tuple[int, int, int] | None = None
        best_added = 0
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
                    best_added = added
                if saved >= deficit and (closing is None or added < closing[0]):
                    closing = (added, a, b)  # closes the gap at once
        if best is None:
            return None
        if closing is not None and closing[0] <= best_added:
            best = (0.0, closing[1], closing[2])  # the last merge: the cheapest that suffices
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
    loose: Collection[int] = (),
    reserve: int = 0,
) -> Encoding:
    """The encoding for these membership masks: bitmap, else packed, else merged classes.

    `kind` forces one: "bitmap" and "packed" raise `EncodingError` when they do not fit,
    "classes" puts every group in one equivalence-class field. A bitmap keeps the bits that
    `previous` gave to groups still present. `loose`: groups (indices) likely to overlap any
    other later, such as a dynamic tag's group that is empty for now; up to `LOOSE_MAX` of
    them get a one-bit field each when that fits, so that a workload joining one changes its
    classification entries only, never a code. `reserve`: bits merged layouts leave free.
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
    alone = [i for i in sorted(loose) if 0 <= i < len(group_names)][:LOOSE_MAX]
    rest = [p for p in ([i for i in part if i not in alone] for part in colour) if p]
    apart = [*rest, *([i] for i in alone)]
    for partition in (apart, colour) if alone else (colour,):
        packed = _build("packed", group_names, masks, partition, bits, headroom)
        if packed is not None:
            return packed
    if kind == "packed":
        raise EncodingError(f"{len(group_names)} groups do not pack into {bits} bits")
    # Merged fields, leaving `reserve` bits free for fields that fill up later (each takes a
    # free bit instead of being laid out again), and the loose groups a bit each; then less.
    tries = [(rest, len(alone) + reserve, alone), (rest, len(alone), alone), (colour, 0, [])]
    for parts, kept, own in tries:
        if kept >= bits:
            continue
        merged = merge_fields(masks, parts, bits - kept)
        if merged is not None:
            done = [*merged, *([i] for i in own)]
            encoding = _build("classes", group_names, masks, done, bits, headroom)
            if encoding is not None:
                return encoding
    raise EncodingError(f"{len(group_names)} groups do not fit {bits} bits in any encoding")

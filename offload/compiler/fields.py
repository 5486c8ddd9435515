"""Class-id fields that grow in place: free bits taken, values reclaimed, values spilled.

A field of a class id holds the index of an address's memberships among its groups. When an
inventory event brings a combination of groups a full field has no value for, `Encoding.
extended` (offload.compiler.classes) asks these helpers for one that leaves every existing
value and code as it is, so only rules over the combination's groups are rewritten.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

from offload.entries import Ternary

Combos = tuple[int, int, Mapping[int, int]]  # (groups' mask bits, offset, combination -> value)


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
    extra: tuple[int, ...] = ()  # class-id bits taken later, when the field ran out of values


MAX_EXTRA: Final = 3  # free bits one field may take (each doubles its room)


def field_key(f: Field) -> int:
    """The class-id bits of field `f`: its contiguous width and the bits it took since."""
    return (((1 << f.width) - 1) << f.offset) | sum(1 << b for b in f.extra)


def free_bit(fields: Sequence[Field], limit: int) -> int | None:
    """The lowest class-id bit below `limit` that no field uses, or None."""
    used = 0
    for f in fields:
        used |= field_key(f)
    return next((b for b in range(limit) if not used >> b & 1), None)


def place(
    combo: int,
    f: Field,
    fmask: int,
    ids: Mapping[int, int],
    codes: Mapping[str, tuple[Ternary, ...]],
    group_names: tuple[str, ...],
) -> tuple[int, int] | None:
    """A value of field `f` for a new combination of its groups, and the groups (a mask) that
    need a new code for it; None when the field has no room.

    A value no code of a group outside `combo` matches is correct once the groups of `combo`
    that no code matches yet get an exact code (over every bit of the field, so it matches
    nothing else). Without taken bits that is a free value, and every group of `combo` needs
    a code. With taken bits, an existing value `v` of a sub-combination plus taken bits is
    matched by `v`'s codes already (they ignore the taken bits): only the groups `v` lacks
    need codes, usually just the one an address joined. The cheapest candidate wins.
    """
    low = ((1 << f.width) - 1) << f.offset
    used = set(ids.values())
    by_low: dict[int, list[tuple[int, int, int]]] = {}
    key = field_key(f)
    for i in bits_of(fmask):
        for t in codes.get(group_names[i], ()):
            if t.mask & key:
                by_low.setdefault(t.value & low, []).append((i, t.value, t.mask))

    def matched(x: int) -> int:
        return sum(1 << i for i, v, m in by_low.get(x & low, ()) if x & m == v)

    # Free values of the contiguous bits first (a few: a reclaimed one may still be matched).
    lows = {v & low for v in used}
    free = (k << f.offset for k in range(1, 1 << f.width) if k << f.offset not in lows)
    candidates = list(itertools.islice(free, 4))
    extras = [1 << b for b in f.extra]
    subsets = [
        sum(e for j, e in enumerate(extras) if n >> j & 1) for n in range(1, 1 << len(extras))
    ]
    bases = [0, *(v for c, v in ids.items() if not c & ~combo)]
    candidates += [v | s for v in bases for s in subsets if not v & s and v | s not in used]
    best: tuple[int, int] | None = None
    for x in candidates:
        have = matched(x)
        if have & ~combo:
            continue  # a group outside the combination would match
        needs = combo & ~have
        if best is None or needs.bit_count() < best[1].bit_count():
            best = (x, needs)
    return best


def spilled(
    m: int, combo: int, index: int, combos: Sequence[Combos], fixed: set[int]
) -> tuple[int, int] | None:
    """A field `h` and value `u` that carry field `index`'s `combo` for mask `m` (see
    `spill`), if one does; None if not. Fields in `fixed` are taken for `m` already."""
    for h, (hmask, _, hids) in enumerate(combos):
        if h != index and h not in fixed:
            u = hids.get((m & hmask) | combo)
            if u is not None:
                return h, u
    return None


def spill(
    m: int,
    combo: int,
    index: int,
    fields: Sequence[Field],
    combos: Sequence[Combos],
    codes: Mapping[str, tuple[Ternary, ...]],
    group_names: tuple[str, ...],
    fixed: set[int],
) -> tuple[int, int] | None:
    """Another field `h` and a free value `u` of it (no code of its groups matches `u`) to
    carry field `index`'s `combo` jointly with mask `m`'s groups in `h`: class ids of `m`
    hold `u` in `h` and 0 in field `index`, and those groups get the exact code (`u`, both
    fields' bits). Nothing else matches that code, nor `u` any other: no value of `h` is
    `u`, no value of field `index` is 0. Values stay where they are, so only rules over the
    groups `m` holds in the two fields are rewritten. Fields that `m` has no group of come
    first (fewer codes), then the one with the most free values. None: no field has room."""
    best: tuple[int, int, int, int] | None = None  # (codes, -free values, field, value)
    for h, (hmask, _, hids) in enumerate(combos):
        f = fields[h]
        if h == index or h in fixed or f.width < 2:
            continue
        low = ((1 << f.width) - 1) << f.offset
        key = field_key(f)
        taken = {v & low for v in hids.values()}
        for i in bits_of(hmask):
            taken.update(t.value & low for t in codes.get(group_names[i], ()) if t.mask & key)
        room = (1 << f.width) - 1 - len(taken - {0})
        if room <= 0:
            continue
        cost = (m & hmask).bit_count()
        if best is None or (cost, -room) < best[:2]:
            u = next(k << f.offset for k in range(1, 1 << f.width) if k << f.offset not in taken)
            best = (cost, -room, h, u)
    return None if best is None else (best[2], best[3])


def reclaim(dead: set[int], ids: Mapping[int, int]) -> dict[int, int]:
    """`ids` without the `dead` combinations: their values are free again. Their codes stay
    (removing them would rewrite rules over groups this change did not touch); `place` only
    reuses such a value for a combination holding every group still matched there."""
    return {c: v for c, v in ids.items() if c not in dead}

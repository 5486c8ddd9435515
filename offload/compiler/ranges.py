"""Port ranges as table keys: one range match, or the minimal set of prefixes (ternary).

Targets with range matching (BMv2) take `Range(low, high)` as is. Targets without it (many
ASICs, DPDK SWX ternary tables) need the classic range-to-prefix expansion: the fewest aligned
power-of-two blocks whose union is exactly the range (at most 2w - 2 for w bits).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from offload.entries import FieldMatch, Range, Ternary

RangeKind = Literal["range", "ternary"]
PORT_BITS = 16


def range_to_prefixes(low: int, high: int, width: int = PORT_BITS) -> list[tuple[int, int]]:
    """The minimal prefix cover of [low, high] as (value, mask) pairs, in ascending order."""
    full = (1 << width) - 1
    if not 0 <= low <= high <= full:
        raise ValueError(f"range {low}-{high} is not inside 0..{full}")
    out: list[tuple[int, int]] = []
    while low <= high:
        # The largest block aligned at `low` (its lowest set bit) that does not pass `high`.
        size = (low & -low) if low else 1 << width
        while size > high - low + 1:
            size >>= 1
        out.append((low, full ^ (size - 1)))
        low += size
    return out


def merge_ranges(ranges: Iterable[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    """Sort ranges and merge the ones that overlap or touch."""
    merged: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if merged and lo <= merged[-1][1] + 1:
            if hi > merged[-1][1]:
                merged[-1] = (merged[-1][0], hi)
        else:
            merged.append((lo, hi))
    return tuple(merged)


def port_matches(
    ranges: tuple[tuple[int, int], ...], kind: RangeKind, width: int = PORT_BITS
) -> list[FieldMatch | None]:
    """The keys that together match `ranges` (empty: any); None stands for an omitted key."""
    full = (1 << width) - 1
    if not ranges:
        return [None]
    out: list[FieldMatch | None] = []
    for lo, hi in ranges:
        if lo == 0 and hi == full:
            # P4Runtime requires a don't-care key to be omitted, not written as the full range.
            return [None]
        if kind == "range":
            out.append(Range(lo, hi))
        else:
            out.extend(Ternary(v, m) for v, m in range_to_prefixes(lo, hi, width))
    return out

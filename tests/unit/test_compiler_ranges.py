"""Port ranges: range keys, and the minimal prefix (ternary) expansion with its cross product."""

from __future__ import annotations

from functools import cache

import pytest
from hypothesis import given
from hypothesis import strategies as st

from offload import names
from offload.compiler import CompileOptions, Compiler, ResolvedRule, Term
from offload.compiler.ranges import merge_ranges, port_matches, range_to_prefixes
from offload.entries import Range, Ternary


def covered(prefixes: list[tuple[int, int]], width: int) -> list[int]:
    full = (1 << width) - 1
    return [v for v in range(1 << width) if any(v & m == p for p, m in prefixes if m <= full)]


@cache
def optimum(lo: int, hi: int, base: int, size: int) -> int:
    """Fewest prefixes covering exactly [lo, hi] inside the aligned block [base, base+size)."""
    top = base + size - 1
    if hi < base or lo > top:
        return 0
    if lo <= base and top <= hi:
        return 1
    half = size // 2
    return optimum(lo, hi, base, half) + optimum(lo, hi, base + half, half)


def test_known_expansions() -> None:
    assert range_to_prefixes(0, 65535) == [(0, 0)]
    assert range_to_prefixes(80, 80) == [(80, 0xFFFF)]
    assert range_to_prefixes(9100, 9199) == [
        (9100, 0xFFFC),
        (9104, 0xFFF0),
        (9120, 0xFFE0),
        (9152, 0xFFE0),
        (9184, 0xFFF0),
    ]
    worst = range_to_prefixes(1, 65534)
    assert len(worst) == 2 * 16 - 2


@pytest.mark.parametrize("width", [1, 3, 5])
def test_every_range_of_a_small_field_is_covered_exactly_and_minimally(width: int) -> None:
    for lo in range(1 << width):
        for hi in range(lo, 1 << width):
            prefixes = range_to_prefixes(lo, hi, width)
            assert covered(prefixes, width) == list(range(lo, hi + 1)), (lo, hi)
            assert len(prefixes) == optimum(lo, hi, 0, 1 << width), (lo, hi)


@given(st.integers(0, 65535), st.integers(0, 65535))
def test_sixteen_bit_expansions_are_disjoint_and_exact(a: int, b: int) -> None:
    lo, hi = min(a, b), max(a, b)
    prefixes = range_to_prefixes(lo, hi)
    assert len(prefixes) == optimum(lo, hi, 0, 1 << 16) <= 30
    spans = [(v, v | (m ^ 0xFFFF)) for v, m in prefixes]
    assert all(v & ~m & 0xFFFF == 0 for v, m in prefixes)  # values inside their masks
    assert spans[0][0] == lo and spans[-1][1] == hi
    # Consecutive and touching: the union is exactly [lo, hi], with no overlap.
    assert all(spans[i][1] + 1 == spans[i + 1][0] for i in range(len(spans) - 1))


def test_bad_ranges_are_refused() -> None:
    for lo, hi in ((5, 4), (-1, 3), (0, 65536)):
        with pytest.raises(ValueError):
            range_to_prefixes(lo, hi)


def test_merge_ranges_joins_overlapping_and_touching() -> None:
    assert merge_ranges([(10, 20), (1, 3), (4, 5), (15, 30), (40, 40)]) == (
        (1, 5),
        (10, 30),
        (40, 40),
    )


def test_port_keys_omit_dont_cares() -> None:
    assert port_matches((), "range") == [None]
    assert port_matches(((0, 65535),), "ternary") == [None]
    assert port_matches(((80, 80), (8000, 8080)), "range") == [Range(80, 80), Range(8000, 8080)]
    assert port_matches(((6, 7),), "ternary") == [Ternary(6, 0xFFFE)]


def test_ternary_ranges_cross_source_and_destination_expansions() -> None:
    rule = ResolvedRule(7, "r", 0, "allow", None, None, (Term(6, ((1, 2),), ((8, 11), (13, 13))),))
    entries = Compiler(CompileOptions(range_kind="ternary")).rule_entries(rule, {}, {})
    # source 1-2 -> 2 prefixes; destination 8-11 -> 1, 13 -> 1: 2 x 2 entries.
    assert len(entries) == 4
    keys = {(e.match_dict["l4_src"], e.match_dict["l4_dst"]) for e in entries}
    assert keys == {
        (Ternary(s, 0xFFFF), d) for s in (1, 2) for d in (Ternary(8, 0xFFFC), Ternary(13, 0xFFFF))
    }
    assert all(e.table == names.ACL and e.match_dict["ip_proto"].value == 6 for e in entries)
    ranged = Compiler().rule_entries(rule, {}, {})
    assert [e.match_dict["l4_dst"] for e in ranged] == [Range(8, 11), Range(13, 13)]

"""The target's match engines against a brute-force reading of the P4Runtime rules.

Random tables and random keys (hypothesis): the LPM engine must return the longest matching
prefix, the ternary/range/optional engine the highest-priority matching entry, exactly as a
linear scan over the P4Runtime definitions says.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from offload import names
from offload.entries import Entry, Lpm, Optional, Range, Ternary
from offload.p4schema import P4Schema
from offload.p4values import prefix_mask
from offload.target.tables import LpmTable, StoredEntry, TernaryTable, make_table

SCHEMA = P4Schema.load()
ACL_INFO = SCHEMA.table(names.ACL)
SRC_INFO = SCHEMA.table(names.SRC_CLASS)
# Small value spaces, so that random keys often hit random entries.
SMALL = st.integers(0, 7)


def stored(entry: Entry, table: LpmTable | TernaryTable) -> StoredEntry:
    rec = StoredEntry(entry, ())
    rec.identity = table.identity(entry)
    return rec


def ternary_entry(priority: int, draw: st.DrawFn) -> Entry:
    match: dict[str, Ternary | Range | Optional] = {}
    if draw(st.booleans()):
        mask = draw(st.integers(1, 7))
        match["src_class"] = Ternary(draw(SMALL) & mask, mask)
    if draw(st.booleans()):
        mask = draw(st.integers(1, 7))
        match["dst_class"] = Ternary(draw(SMALL) & mask, mask)
    if draw(st.booleans()):
        match["ip_proto"] = Optional(draw(SMALL))
    for name in ("l4_src", "l4_dst"):
        if draw(st.booleans()):
            low = draw(SMALL)
            match[name] = Range(low, low + draw(SMALL))
    if draw(st.booleans()):
        match["id_class"] = Ternary(draw(SMALL) & 1, 1)
    return Entry.make(names.ACL, match, names.ACL_ALLOW, {"rule_id": priority}, priority=priority)


def matches(entry: Entry, key: dict[str, int]) -> bool:
    """P4Runtime: every given field matches; omitted fields are wildcards."""
    for name, fm in entry.match:
        value = key[name]
        if isinstance(fm, Ternary) and value & fm.mask != fm.value:
            return False
        if isinstance(fm, Optional) and value != fm.value:
            return False
        if isinstance(fm, Range) and not fm.low <= value <= fm.high:
            return False
    return True


@st.composite
def acl_case(draw: st.DrawFn) -> tuple[list[Entry], list[dict[str, int]]]:
    priorities = draw(st.lists(st.integers(1, 1000), min_size=1, max_size=25, unique=True))
    entries = [ternary_entry(p, draw) for p in priorities]
    fields = [f.name for f in ACL_INFO.match_fields]
    keys = draw(st.lists(st.fixed_dictionaries({f: SMALL for f in fields}), max_size=20))
    return entries, keys


@settings(max_examples=150, deadline=None)
@given(acl_case())
def test_ternary_highest_priority_match_wins(
    case: tuple[list[Entry], list[dict[str, int]]],
) -> None:
    entries, keys = case
    table = make_table(ACL_INFO)
    assert isinstance(table, TernaryTable)
    for entry in entries:
        table.insert(stored(entry, table))
    # Deleting and re-adding must not disturb the order (the index is rebuilt lazily).
    first = table.get(table.identity(entries[0]))
    assert first is not None
    table.remove(first)
    table.insert(stored(entries[0], table))
    order = [f.name for f in ACL_INFO.match_fields]
    for key in keys:
        hits = [e for e in entries if matches(e, key)]
        expected = max(hits, key=lambda e: e.priority) if hits else None
        got = table.lookup(tuple(key[f] for f in order))
        assert (got.entry if got else None) == expected


@st.composite
def lpm_case(draw: st.DrawFn) -> tuple[list[tuple[int, int]], list[int]]:
    prefixes = draw(
        st.lists(
            st.tuples(st.integers(0, 255), st.integers(120, 128)),  # around one IPv4 /24
            max_size=30,
            unique_by=lambda vp: (vp[0] & (prefix_mask(vp[1], 128) & 0xFF), vp[1]),
        )
    )
    base = 0xFFFF0A000000  # ::ffff:10.0.0.0
    nets = [((base | v) & prefix_mask(plen, 128), plen) for v, plen in prefixes]
    nets = list(dict.fromkeys(nets))
    keys = draw(st.lists(st.integers(0, 255).map(lambda v: base | v), max_size=20))
    return nets, keys


@settings(max_examples=150, deadline=None)
@given(lpm_case())
def test_longest_prefix_wins(case: tuple[list[tuple[int, int]], list[int]]) -> None:
    nets, keys = case
    table = make_table(SRC_INFO)
    assert isinstance(table, LpmTable)
    for i, (value, plen) in enumerate(nets):
        entry = Entry.make(
            names.SRC_CLASS,
            {"ip_src": Lpm(value, plen)},
            names.SET_SRC_CLASS,
            {"class_id": i, "workload_id": 0},
        )
        table.insert(stored(entry, table))
    for key in keys:
        covering = [(v, p) for v, p in nets if key & prefix_mask(p, 128) == v]
        expected = max(covering, key=lambda vp: vp[1]) if covering else None
        got = table.lookup(key)
        assert (got.identity if got else None) == expected

"""Random well-formed table entries of firewall.p4, for the codec property tests."""

from __future__ import annotations

from hypothesis import strategies as st

from offload import names
from offload.entries import Entry, Exact, FieldMatch, Lpm, Optional, Range, Ternary
from offload.p4schema import MatchKind, P4Schema

SCHEMA = P4Schema.load()


def field_match(kind: MatchKind, width: int) -> st.SearchStrategy[FieldMatch]:
    """Well-formed keys of one kind (canonical: no don't-care masks, ranges or prefixes)."""
    top = (1 << width) - 1
    value = st.integers(0, top)
    if kind == MatchKind.EXACT:
        return value.map(Exact)
    if kind == MatchKind.OPTIONAL:
        return value.map(Optional)
    if kind == MatchKind.TERNARY:
        return st.tuples(value, st.integers(1, top)).map(lambda vm: Ternary(vm[0] & vm[1], vm[1]))
    if kind == MatchKind.LPM:

        def lpm(vp: tuple[int, int]) -> Lpm:
            v, plen = vp
            return Lpm(v >> (width - plen) << (width - plen), plen)

        return st.tuples(value, st.integers(1, width)).map(lpm)
    return (
        st.tuples(value, value)
        .map(lambda lh: Range(min(lh), max(lh)))
        .filter(lambda r: not (r.low == 0 and r.high == top))
    )


@st.composite
def entries(draw: st.DrawFn) -> Entry:
    """Random valid entries of the firewall tables that take entries."""
    tables = [t for t in SCHEMA.iter_tables() if t.match_fields]
    table = draw(st.sampled_from(tables))
    match = {}
    for f in table.match_fields:
        if f.kind == MatchKind.EXACT or draw(st.booleans()):
            match[f.name] = draw(field_match(f.kind, f.bitwidth))
    actions = sorted(table.action_ids - table.default_only_action_ids)
    action = SCHEMA.action(draw(st.sampled_from(actions)))
    params = {p.name: draw(st.integers(0, (1 << p.bitwidth) - 1)) for p in action.params}
    priority = draw(st.integers(1, 2**31 - 1)) if table.needs_priority else 0
    idle = draw(st.integers(0, 10**12)) if table.supports_idle_timeout else 0
    return Entry.make(
        table.name, match, action.name, params, priority=priority, idle_timeout_ns=idle
    )


def flow_entry(i: int) -> Entry:
    """An ordinary flow_cache entry, all of its values derived from `i`."""
    return Entry.make(
        names.FLOW_CACHE,
        {
            "ip_src": Exact(0xFFFF << 32 | i),
            "ip_dst": Exact(0xFFFF0A000001),
            "ip_proto": Exact(6),
            "l4_src": Exact(i),
            "l4_dst": Exact(443),
        },
        names.FLOW_ALLOW,
        {"rule_id": i},
        idle_timeout_ns=i * 1000,
    )

"""Fast TableEntry decoding: straight to key values, without `Entry` objects.

A full sync writes tens of thousands of entries, and building an `Entry` (a frozen dataclass per
key, sorted tuples) for each costs more than reading the protobuf. `FastTableDecoder` is built
once per table from P4Info and reads a TableEntry into plain values: one slot per key in P4Info
order (an int, or a tuple for the two-part kinds; None when omitted) and the action's arguments
in declaration order. The software target's Write path stores those and builds the `Entry` only
when a Read asks for it; `EntryDecoder` (the client's read-back) builds it at once.

It only ever accepts: on anything it does not handle, or anything wrong with the entry, it
returns None and the caller decodes the entry with `offload.p4entity.decode_table_entry`, which
reports the error with its code and message. So the fast path can never accept an entry the
full decoder rejects, nor reject one it accepts (tests/unit/test_p4decode.py checks both,
and that the values agree, on random valid and mutated entries).
"""

from __future__ import annotations

from offload.entries import Entry, Exact, FieldMatch, Lpm, Optional, Range, Ternary
from offload.p4entity import decode_table_entry
from offload.p4schema import MatchKind, P4Schema, TableInfo
from offload.p4values import prefix_mask
from offload.proto import p4r

# Key kinds as small ints, compared in the per-key loop.
EXACT, LPM, TERNARY, RANGE, OPTIONAL = range(5)
KIND_CODE = {
    MatchKind.EXACT: EXACT,
    MatchKind.LPM: LPM,
    MatchKind.TERNARY: TERNARY,
    MatchKind.RANGE: RANGE,
    MatchKind.OPTIONAL: OPTIONAL,
}

# A key's decoded value: int (exact, optional) or a pair (lpm, ternary, range); None if omitted.
KeyValue = int | tuple[int, int] | None
# (key values in P4Info order, action name or "", arguments in declaration order, priority,
# idle timeout ns)
Decoded = tuple[tuple[KeyValue, ...], str, tuple[int, ...], int, int]

_from_bytes = int.from_bytes


def _make_match(kind: int, value: KeyValue) -> FieldMatch:
    if kind == EXACT:
        return Exact(value)  # type: ignore[arg-type]
    if kind == OPTIONAL:
        return Optional(value)  # type: ignore[arg-type]
    a, b = value  # type: ignore[misc]
    if kind == LPM:
        return Lpm(a, b)
    if kind == TERNARY:
        return Ternary(a, b)
    return Range(a, b)


class FastTableDecoder:
    """Decode the common, valid TableEntry of one table quickly; None means "decode fully"."""

    def __init__(self, schema: P4Schema, table: TableInfo) -> None:
        self.table = table
        fields = table.match_fields
        self.size = len(fields)
        self.fields = {
            f.id: (i, f.bitwidth, KIND_CODE[f.kind], (1 << f.bitwidth) - 1)
            for i, f in enumerate(fields)
        }
        self.exact_slots = tuple(i for i, f in enumerate(fields) if f.kind == MatchKind.EXACT)
        self.all_exact = len(self.exact_slots) == self.size
        self.needs_priority = table.needs_priority
        self.usable = bool(fields)  # keyless tables only take their default action
        self.supports_idle = table.supports_idle_timeout
        # Actions an ordinary (non-default) entry may run: id -> (name, {param id: (slot,
        # width)}, count). Default-only actions are left out: the full decoder reports them.
        self.actions: dict[int, tuple[str, dict[int, tuple[int, int]], int]] = {}
        self.param_names: dict[str, tuple[tuple[str, int], ...]] = {}
        for aid in table.action_ids - table.default_only_action_ids:
            action = schema.action(aid)
            params = {p.id: (j, p.bitwidth) for j, p in enumerate(action.params)}
            self.actions[aid] = (action.name, params, len(action.params))
            self.param_names[action.name] = tuple(
                sorted((p.name, j) for j, p in enumerate(action.params))
            )
        # The Entry's match is sorted by key name.
        self.by_name = tuple(sorted((f.name, i, KIND_CODE[f.kind]) for i, f in enumerate(fields)))

    def decode(self, msg: p4r.TableEntry) -> Decoded | None:
        """The entry's values if it is a valid, ordinary entry of this table; else None."""
        if not self.usable or msg.is_default_action:
            return None
        priority = msg.priority
        if self.needs_priority:
            if priority <= 0:
                return None
        elif priority:
            return None
        idle = msg.idle_timeout_ns
        if idle and not self.supports_idle:
            return None
        vals: list[KeyValue] = [None] * self.size
        fields = self.fields
        for fm in msg.match:
            spec = fields.get(fm.field_id)
            if spec is None:
                return None
            i, width, kind, full = spec
            if vals[i] is not None:
                return None
            # Reading the expected kind's submessage of another kind gives empty bytes, which
            # no kind accepts: a wrong kind falls through to the full decoder like any error.
            if kind == EXACT:
                data = fm.exact.value
                v = _from_bytes(data, "big")
                if not data or v >> width:
                    return None
                vals[i] = v
            elif kind == TERNARY:
                t = fm.ternary
                data = t.value
                mdata = t.mask
                v = _from_bytes(data, "big")
                m = _from_bytes(mdata, "big")
                if not data or not mdata or v >> width or m >> width or not m or v & ~m:
                    return None
                vals[i] = (v, m)
            elif kind == RANGE:
                r = fm.range
                data = r.low
                hdata = r.high
                lo = _from_bytes(data, "big")
                hi = _from_bytes(hdata, "big")
                if not data or not hdata or hi >> width or lo > hi or (not lo and hi == full):
                    return None
                vals[i] = (lo, hi)
            elif kind == OPTIONAL:
                data = fm.optional.value
                v = _from_bytes(data, "big")
                if not data or v >> width:
                    return None
                vals[i] = v
            else:
                lpm = fm.lpm
                data = lpm.value
                plen = lpm.prefix_len
                v = _from_bytes(data, "big")
                if not data or v >> width or not 0 < plen <= width:
                    return None
                if v & ~prefix_mask(plen, width):
                    return None
                vals[i] = (v, plen)
        for i in self.exact_slots:
            if vals[i] is None:
                return None
        act = msg.action.action
        aid = act.action_id
        if not aid:
            if msg.action.WhichOneof("type") is not None:
                return None
            return tuple(vals), "", (), priority, idle
        aplan = self.actions.get(aid)
        if aplan is None:
            return None
        name, pspec, count = aplan
        args: list[int | None] = [None] * count
        for p in act.params:
            ps = pspec.get(p.param_id)
            if ps is None:
                return None
            j, width = ps
            if args[j] is not None:
                return None
            data = p.value
            v = _from_bytes(data, "big")
            if not data or v >> width:
                return None
            args[j] = v
        if None in args:
            return None
        return tuple(vals), name, tuple(args), priority, idle  # type: ignore[arg-type]

    def entry(
        self,
        vals: tuple[KeyValue, ...],
        action: str,
        args: tuple[int, ...],
        priority: int,
        idle: int,
    ) -> Entry:
        """The `Entry` that `decode_table_entry` returns for the same message."""
        match = tuple(
            (name, _make_match(kind, vals[i]))
            for name, i, kind in self.by_name
            if vals[i] is not None
        )
        params = tuple((n, args[j]) for n, j in self.param_names[action]) if action else ()
        return Entry(self.table.name, match, action, params, priority, idle, False)


def fast_decoders(schema: P4Schema) -> dict[int, FastTableDecoder]:
    """A fast decoder per table id."""
    return {t.id: FastTableDecoder(schema, t) for t in schema.iter_tables()}


class EntryDecoder:
    """Decode many TableEntry messages: the fast path where it applies, else the full decoder."""

    def __init__(self, schema: P4Schema) -> None:
        self.schema = schema
        self.fast = fast_decoders(schema)

    def decode(self, msg: p4r.TableEntry) -> Entry:
        """What `decode_table_entry` returns (or raises) for `msg`."""
        fast = self.fast.get(msg.table_id)
        if fast is not None:
            decoded = fast.decode(msg)
            if decoded is not None:
                return fast.entry(*decoded)
        return decode_table_entry(self.schema, msg)

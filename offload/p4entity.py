"""Convert between `Entry` values and P4Runtime `TableEntry` messages, validating both ways.

`decode_table_entry` applies the P4Runtime specification's rules for a well-formed entry
(section 9.1): known ids, widths, canonical "don't care" omission, masks inside values,
priorities only where a key needs one, actions the table allows. The software target uses it to
reject bad writes with the right status code; the controller uses it to read entries back.
"""

from __future__ import annotations

import gc
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from offload.entries import Entry, Exact, FieldMatch, Lpm, Optional, Range, Ternary
from offload.p4schema import MatchKind, P4Schema, SchemaError, TableInfo
from offload.p4values import P4ValueError, decode_int, encode_int, prefix_mask
from offload.p4wire import WireEncoder, update_bytes
from offload.proto import p4r, rpc_code


class EntityError(ValueError):
    """A table entry that P4Runtime does not allow, with the gRPC code to report it by."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def _invalid(message: str) -> EntityError:
    return EntityError(rpc_code.INVALID_ARGUMENT, message)


def encode_field_match(schema_field_id: int, bitwidth: int, fm: FieldMatch) -> p4r.FieldMatch:
    """Encode one key as protobuf."""
    msg = p4r.FieldMatch(field_id=schema_field_id)
    match fm:
        case Exact(value):
            msg.exact.value = encode_int(value, bitwidth)
        case Lpm(value, prefix_len):
            msg.lpm.value = encode_int(value, bitwidth)
            msg.lpm.prefix_len = prefix_len
        case Ternary(value, mask):
            msg.ternary.value = encode_int(value, bitwidth)
            msg.ternary.mask = encode_int(mask, bitwidth)
        case Range(low, high):
            msg.range.low = encode_int(low, bitwidth)
            msg.range.high = encode_int(high, bitwidth)
        case Optional(value):
            msg.optional.value = encode_int(value, bitwidth)
    return msg


def encode_table_entry(schema: P4Schema, entry: Entry) -> p4r.TableEntry:
    """Encode an `Entry` as a P4Runtime TableEntry."""
    table = schema.table(entry.table)
    action = schema.action(entry.action)
    msg = p4r.TableEntry(table_id=table.id, priority=entry.priority)
    if entry.is_default:
        msg.is_default_action = True
    for name, fm in entry.match:
        f = table.match_field(name)
        msg.match.append(encode_field_match(f.id, f.bitwidth, fm))
    act = msg.action.action
    act.action_id = action.id
    for name, value in entry.params:
        p = action.param(name)
        act.params.append(p4r.Action.Param(param_id=p.id, value=encode_int(value, p.bitwidth)))
    if entry.idle_timeout_ns:
        msg.idle_timeout_ns = entry.idle_timeout_ns
    return msg


def _decode_value(data: bytes, bitwidth: int, what: str) -> int:
    try:
        return decode_int(data, bitwidth)
    except P4ValueError as exc:
        raise _invalid(f"{what}: {exc}") from None


# Decoding. The software target decodes every entry of every Write, so what depends only on
# the table (field ids -> name, width, expected match kind; the exact keys; whether entries
# take a priority) is worked out once per TableInfo, and the common exact key is decoded
# inline. The rules and messages are the same for every path.
_ONEOF_OF_KIND = {
    MatchKind.EXACT: "exact",
    MatchKind.LPM: "lpm",
    MatchKind.TERNARY: "ternary",
    MatchKind.RANGE: "range",
    MatchKind.OPTIONAL: "optional",
}


class _TablePlan:
    """The per-table facts decoding needs, computed once."""

    __slots__ = ("exact_names", "fields", "keyless", "needs_priority", "table")

    def __init__(self, table: TableInfo) -> None:
        self.table = table
        self.fields = {
            f.id: (f.name, f.bitwidth, _ONEOF_OF_KIND[f.kind]) for f in table.match_fields
        }
        self.exact_names = tuple(f.name for f in table.match_fields if f.kind == MatchKind.EXACT)
        self.needs_priority = table.needs_priority
        self.keyless = not table.match_fields


_PLANS: dict[int, _TablePlan] = {}


def _plan(table: TableInfo) -> _TablePlan:
    plan = _PLANS.get(id(table))
    if plan is None or plan.table is not table:
        plan = _PLANS[id(table)] = _TablePlan(table)
    return plan


def decode_field_match(table: TableInfo, msg: p4r.FieldMatch) -> tuple[str, FieldMatch]:
    """Decode and validate one key of `table`."""
    return _decode_field_match(table, _plan(table), msg)


def _decode_field_match(
    table: TableInfo, plan: _TablePlan, msg: p4r.FieldMatch
) -> tuple[str, FieldMatch]:
    spec = plan.fields.get(msg.field_id)
    if spec is None:
        raise _invalid(f"table {table.name}: unknown match field id {msg.field_id}")
    name, width, expected = spec
    which = msg.WhichOneof("field_match_type")
    if which != expected:
        raise _invalid(f"{table.name}.{name}: {which} match given, the key is {expected}")
    if which == "exact":
        data = msg.exact.value
        value = int.from_bytes(data, "big")
        if not data or value >> width:
            _decode_value(data, width, f"{table.name}.{name}")  # raises with the reason
        return name, Exact(value)
    what = f"{table.name}.{name}"
    if which == "optional":
        return name, Optional(_decode_value(msg.optional.value, width, what))
    if which == "lpm":
        value = _decode_value(msg.lpm.value, width, what)
        plen = msg.lpm.prefix_len
        if plen == 0:
            raise _invalid(f"{what}: prefix length 0 is a don't-care and must be omitted")
        if not 0 < plen <= width:
            raise _invalid(f"{what}: prefix length {plen} outside 1..{width}")
        if value & ~prefix_mask(plen, width):
            raise _invalid(f"{what}: value has bits set beyond the /{plen} prefix")
        return name, Lpm(value, plen)
    if which == "ternary":
        value = _decode_value(msg.ternary.value, width, what)
        mask = _decode_value(msg.ternary.mask, width, what + " mask")
        if mask == 0:
            raise _invalid(f"{what}: mask 0 is a don't-care and must be omitted")
        if value & ~mask:
            raise _invalid(f"{what}: value has bits set outside the mask")
        return name, Ternary(value, mask)
    low = _decode_value(msg.range.low, width, what + " low")
    high = _decode_value(msg.range.high, width, what + " high")
    if low > high:
        raise _invalid(f"{what}: range low {low} > high {high}")
    if low == 0 and high == (1 << width) - 1:
        raise _invalid(f"{what}: the full range is a don't-care and must be omitted")
    return name, Range(low, high)


def decode_table_entry(schema: P4Schema, msg: p4r.TableEntry) -> Entry:
    """Decode and validate a TableEntry of a write or a read response."""
    table = schema.tables.get(msg.table_id)
    if table is None:
        raise EntityError(rpc_code.NOT_FOUND, f"unknown table id {msg.table_id}")
    plan = _plan(table)
    match: dict[str, FieldMatch] = {}
    for fm in msg.match:
        name, value = _decode_field_match(table, plan, fm)
        if name in match:
            raise _invalid(f"{table.name}: match field {name} given twice")
        match[name] = value
    is_default = msg.is_default_action
    priority = msg.priority
    if is_default:
        if match:
            raise _invalid(f"{table.name}: a default-action entry takes no match fields")
        if priority:
            raise _invalid(f"{table.name}: a default-action entry takes no priority")
    else:
        for name in plan.exact_names:
            if name not in match:
                raise _invalid(f"{table.name}: exact match field {name} is missing")
        if plan.needs_priority:
            if priority <= 0:
                raise _invalid(f"{table.name}: entries of this table need a priority > 0")
        elif priority != 0:
            raise _invalid(f"{table.name}: entries of this table take no priority")
        if plan.keyless:
            raise _invalid(f"{table.name} is keyless: only its default action can be written")
    idle_timeout_ns = msg.idle_timeout_ns
    if idle_timeout_ns and not table.supports_idle_timeout:
        raise _invalid(f"{table.name} does not support idle timeouts")
    action_name: str = ""
    params: dict[str, int] = {}
    which = msg.action.WhichOneof("type")
    if which is not None:
        if which != "action":
            raise _invalid(f"{table.name}: only direct actions are supported, not {which}")
        action_name, params = _decode_action(schema, table, msg.action.action, is_default)
    return Entry.make(
        table.name,
        match,
        action_name,
        params,
        priority=priority,
        idle_timeout_ns=idle_timeout_ns,
        is_default=is_default,
    )


def _decode_action(
    schema: P4Schema, table: TableInfo, msg: p4r.Action, is_default: bool
) -> tuple[str, dict[str, int]]:
    if msg.action_id not in table.action_ids:
        raise _invalid(f"{table.name}: action id {msg.action_id} is not an action of this table")
    if is_default and msg.action_id in table.table_only_action_ids:
        raise _invalid(f"{table.name}: action {msg.action_id} cannot be a default action")
    if not is_default and msg.action_id in table.default_only_action_ids:
        raise _invalid(f"{table.name}: action {msg.action_id} is for the default entry only")
    action = schema.action(msg.action_id)
    params: dict[str, int] = {}
    for p in msg.params:
        info = action.params_by_id.get(p.param_id)
        if info is None:
            raise _invalid(f"{action.name}: unknown parameter id {p.param_id}")
        if info.name in params:
            raise _invalid(f"{action.name}: parameter {info.name} given twice")
        params[info.name] = _decode_value(p.value, info.bitwidth, f"{action.name}.{info.name}")
    missing = [p.name for p in action.params if p.name not in params]
    if missing:
        raise _invalid(f"{action.name}: missing parameter(s) {', '.join(missing)}")
    return action.name, params


# Bulk encoding. A sync of tens of thousands of entries spends most of its client time here, so
# schema look-ups are resolved once per table and action, and each entry is written in place
# into the caller's request (no per-update copy). The result equals `encode_table_entry`'s
# (tests/unit/test_p4client_encoder.py checks it on random entries).

_KIND_CLASS: dict[MatchKind, type] = {
    MatchKind.EXACT: Exact,
    MatchKind.LPM: Lpm,
    MatchKind.TERNARY: Ternary,
    MatchKind.RANGE: Range,
    MatchKind.OPTIONAL: Optional,
}

# per field: (id, bitwidth, the FieldMatch class its kind takes)
_FieldPlan = dict[str, tuple[int, int, type]]
# per action: (id, {param: (id, bitwidth)})
_ActionPlan = tuple[int, dict[str, tuple[int, int]]]


class TableEntryEncoder:
    """Encode many entries quickly, with the schema look-ups cached per table and action."""

    def __init__(self, schema: P4Schema) -> None:
        self.schema = schema
        self._tables: dict[str, tuple[int, _FieldPlan]] = {}
        self._actions: dict[str, _ActionPlan] = {}
        self._wire = WireEncoder(schema)

    def _table(self, name: str) -> tuple[int, _FieldPlan]:
        plan = self._tables.get(name)
        if plan is None:
            t = self.schema.table(name)
            fields = {f.name: (f.id, f.bitwidth, _KIND_CLASS[f.kind]) for f in t.match_fields}
            plan = self._tables[name] = (t.id, fields)
        return plan

    def _action(self, name: str) -> _ActionPlan:
        plan = self._actions.get(name)
        if plan is None:
            a = self.schema.action(name)
            plan = self._actions[name] = (a.id, {p.name: (p.id, p.bitwidth) for p in a.params})
        return plan

    def encode(self, entry: Entry, *, key_only: bool = False) -> p4r.TableEntry:
        """Encode one entry as a new TableEntry."""
        msg = p4r.TableEntry()
        self.encode_into(entry, msg, key_only=key_only)
        return msg

    def encode_into(self, entry: Entry, msg: p4r.TableEntry, *, key_only: bool = False) -> None:
        """Fill an empty TableEntry; `key_only` leaves the action out (enough for a DELETE)."""
        try:
            self._encode_into(entry, msg, key_only)
        except (KeyError, SchemaError, P4ValueError) as exc:
            raise _encode_error(entry, exc) from None

    def _encode_into(self, entry: Entry, msg: p4r.TableEntry, key_only: bool) -> None:
        # Values are encoded inline rather than through `encode_int` (same rule: shortest
        # big-endian bytes, and `v >> width` is non-zero both for negative and too-wide values):
        # the call costs a third of the time of a whole key here.
        plan = self._tables.get(entry.table)
        table_id, fields = plan if plan is not None else self._table(entry.table)
        msg.table_id = table_id
        if entry.priority:
            msg.priority = entry.priority
        if entry.is_default:
            msg.is_default_action = True
        add = msg.match.add
        for name, fm in entry.match:
            fid, width, cls = fields[name]
            if type(fm) is not cls:
                raise SchemaError(f"{name} is a {cls.__name__} key, got {type(fm).__name__}")
            m = add(field_id=fid)
            if type(fm) is Exact:
                v = fm.value
                if v >> width:
                    raise P4ValueError(f"{name}: value {v} does not fit in {width} bits")
                m.exact.value = v.to_bytes((v.bit_length() + 7) >> 3 or 1, "big")
            elif type(fm) is Ternary:
                v, mask = fm.value, fm.mask
                if v >> width or mask >> width:
                    raise P4ValueError(f"{name}: {v}/{mask} does not fit in {width} bits")
                t = m.ternary
                t.value = v.to_bytes((v.bit_length() + 7) >> 3 or 1, "big")
                t.mask = mask.to_bytes((mask.bit_length() + 7) >> 3 or 1, "big")
            elif type(fm) is Range:
                lo, hi = fm.low, fm.high
                if lo >> width or hi >> width:
                    raise P4ValueError(f"{name}: range {lo}..{hi} does not fit in {width} bits")
                r = m.range
                r.low = lo.to_bytes((lo.bit_length() + 7) >> 3 or 1, "big")
                r.high = hi.to_bytes((hi.bit_length() + 7) >> 3 or 1, "big")
            elif type(fm) is Lpm:
                lpm = m.lpm
                lpm.value = encode_int(fm.value, width)
                lpm.prefix_len = fm.prefix_len
            elif type(fm) is Optional:
                m.optional.value = encode_int(fm.value, width)
        if key_only:
            return
        aplan = self._actions.get(entry.action)
        action_id, params = aplan if aplan is not None else self._action(entry.action)
        act = msg.action.action
        act.action_id = action_id
        padd = act.params.add
        for pname, v in entry.params:
            pid, width = params[pname]
            if v >> width:
                raise P4ValueError(f"{pname}: value {v} does not fit in {width} bits")
            padd(param_id=pid, value=v.to_bytes((v.bit_length() + 7) >> 3 or 1, "big"))
        if entry.idle_timeout_ns:
            msg.idle_timeout_ns = entry.idle_timeout_ns

    def add_updates(
        self, request: p4r.WriteRequest, update_type: int, entries: Iterable[Entry]
    ) -> None:
        """Append one update of `update_type` per entry to a WriteRequest, in order.

        An entry that cannot be encoded raises before the request changes.
        """
        request.MergeFromString(self.updates_bytes(update_type, entries))

    def updates_bytes(self, update_type: int, entries: Iterable[Entry]) -> bytes:
        """One update of `update_type` per entry, as the serialized `updates` fields of a
        WriteRequest (append them to a serialized request header); raises as `add_updates`."""
        key_only = update_type == p4r.Update.DELETE
        fast = self._wire.table_entry
        parts = []
        with gc_paused():
            for entry in entries:
                data = fast(entry, key_only)
                if data is None:  # unusual or wrong: the message path, and its errors
                    msg = p4r.TableEntry()
                    self.encode_into(entry, msg, key_only=key_only)
                    data = msg.SerializeToString()
                parts.append(update_bytes(update_type, data))
            return b"".join(parts)


def _encode_error(entry: Entry, exc: Exception) -> EntityError:
    if isinstance(exc, KeyError):
        return _invalid(f"cannot encode an entry of {entry.table}: unknown name {exc}")
    return _invalid(f"cannot encode an entry of {entry.table}: {exc}")


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector for a bulk conversion.

    Each entry allocates a dozen short-lived protobuf wrappers, which keeps triggering
    collections that then walk every live object (tens of thousands of entries): about a
    third of the encode time. Nothing built here forms reference cycles, so reference
    counting alone frees it.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()

"""Convert between `Entry` values and P4Runtime `TableEntry` messages, validating both ways.

`decode_table_entry` applies the P4Runtime specification's rules for a well-formed entry
(section 9.1): known ids, widths, canonical "don't care" omission, masks inside values,
priorities only where a key needs one, actions the table allows. The software target uses it to
reject bad writes with the right status code; the controller uses it to read entries back.
"""

from __future__ import annotations

from offload.entries import Entry, Exact, FieldMatch, Lpm, Optional, Range, Ternary
from offload.p4schema import MatchKind, P4Schema, SchemaError, TableInfo
from offload.p4values import P4ValueError, decode_int, encode_int, prefix_mask
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


def decode_field_match(table: TableInfo, msg: p4r.FieldMatch) -> tuple[str, FieldMatch]:
    """Decode and validate one key of `table`."""
    f = table.fields_by_id.get(msg.field_id)
    if f is None:
        raise _invalid(f"table {table.name}: unknown match field id {msg.field_id}")
    which = msg.WhichOneof("field_match_type")
    expected = {
        MatchKind.EXACT: "exact",
        MatchKind.LPM: "lpm",
        MatchKind.TERNARY: "ternary",
        MatchKind.RANGE: "range",
        MatchKind.OPTIONAL: "optional",
    }[f.kind]
    if which != expected:
        raise _invalid(f"{table.name}.{f.name}: {which} match given, the key is {expected}")
    what = f"{table.name}.{f.name}"
    width = f.bitwidth
    if which == "exact":
        return f.name, Exact(_decode_value(msg.exact.value, width, what))
    if which == "optional":
        return f.name, Optional(_decode_value(msg.optional.value, width, what))
    if which == "lpm":
        value = _decode_value(msg.lpm.value, width, what)
        plen = msg.lpm.prefix_len
        if plen == 0:
            raise _invalid(f"{what}: prefix length 0 is a don't-care and must be omitted")
        if not 0 < plen <= width:
            raise _invalid(f"{what}: prefix length {plen} outside 1..{width}")
        if value & ~prefix_mask(plen, width):
            raise _invalid(f"{what}: value has bits set beyond the /{plen} prefix")
        return f.name, Lpm(value, plen)
    if which == "ternary":
        value = _decode_value(msg.ternary.value, width, what)
        mask = _decode_value(msg.ternary.mask, width, what + " mask")
        if mask == 0:
            raise _invalid(f"{what}: mask 0 is a don't-care and must be omitted")
        if value & ~mask:
            raise _invalid(f"{what}: value has bits set outside the mask")
        return f.name, Ternary(value, mask)
    low = _decode_value(msg.range.low, width, what + " low")
    high = _decode_value(msg.range.high, width, what + " high")
    if low > high:
        raise _invalid(f"{what}: range low {low} > high {high}")
    if low == 0 and high == (1 << width) - 1:
        raise _invalid(f"{what}: the full range is a don't-care and must be omitted")
    return f.name, Range(low, high)


def decode_table_entry(schema: P4Schema, msg: p4r.TableEntry) -> Entry:
    """Decode and validate a TableEntry of a write or a read response."""
    try:
        table = schema.table(msg.table_id)
    except SchemaError:
        raise EntityError(rpc_code.NOT_FOUND, f"unknown table id {msg.table_id}") from None
    match: dict[str, FieldMatch] = {}
    for fm in msg.match:
        name, value = decode_field_match(table, fm)
        if name in match:
            raise _invalid(f"{table.name}: match field {name} given twice")
        match[name] = value
    if msg.is_default_action:
        if match:
            raise _invalid(f"{table.name}: a default-action entry takes no match fields")
        if msg.priority:
            raise _invalid(f"{table.name}: a default-action entry takes no priority")
    else:
        for f in table.match_fields:
            if f.kind == MatchKind.EXACT and f.name not in match:
                raise _invalid(f"{table.name}: exact match field {f.name} is missing")
        if table.needs_priority and msg.priority <= 0:
            raise _invalid(f"{table.name}: entries of this table need a priority > 0")
        if not table.needs_priority and msg.priority != 0:
            raise _invalid(f"{table.name}: entries of this table take no priority")
        if not table.match_fields:
            raise _invalid(f"{table.name} is keyless: only its default action can be written")
    if msg.idle_timeout_ns and not table.supports_idle_timeout:
        raise _invalid(f"{table.name} does not support idle timeouts")
    action_name: str = ""
    params: dict[str, int] = {}
    which = msg.action.WhichOneof("type")
    if which is not None:
        if which != "action":
            raise _invalid(f"{table.name}: only direct actions are supported, not {which}")
        action_name, params = _decode_action(
            schema, table, msg.action.action, msg.is_default_action
        )
    return Entry.make(
        table.name,
        match,
        action_name,
        params,
        priority=msg.priority,
        idle_timeout_ns=msg.idle_timeout_ns,
        is_default=msg.is_default_action,
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

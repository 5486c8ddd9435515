"""A name/id index over P4Info: the contract between firewall.p4 and everything that drives it.

Nothing in nicfw hard-codes a P4Info id. The controller, the software target and the CLI look
tables, match fields, actions, parameters, counters and controller headers up here, by their
fully qualified name or their alias.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import text_format

from offload.proto import p4i

DEFAULT_P4INFO = Path(__file__).resolve().parent.parent / "p4" / "firewall.p4info.txtpb"


class SchemaError(LookupError):
    """A name or id that the P4Info does not define."""


class MatchKind(enum.IntEnum):
    """P4Runtime match kinds, numbered as in p4info.proto."""

    EXACT = 2
    LPM = 3
    TERNARY = 4
    RANGE = 5
    OPTIONAL = 6


class Prefix(enum.IntEnum):
    """The resource-type byte that tops every P4Info id (P4Runtime spec, p4types P4Ids)."""

    ACTION = 0x01
    TABLE = 0x02
    CONTROLLER_HEADER = 0x04
    DIGEST = 0x05
    COUNTER = 0x12
    DIRECT_COUNTER = 0x13


@dataclass(frozen=True)
class MatchFieldInfo:
    """One key of a table."""

    id: int
    name: str
    bitwidth: int
    kind: MatchKind


@dataclass(frozen=True)
class ParamInfo:
    """One parameter of an action."""

    id: int
    name: str
    bitwidth: int


@dataclass(frozen=True)
class ActionInfo:
    """An action and its parameters."""

    id: int
    name: str
    alias: str
    params: tuple[ParamInfo, ...]
    params_by_name: Mapping[str, ParamInfo] = field(repr=False, compare=False)
    params_by_id: Mapping[int, ParamInfo] = field(repr=False, compare=False)

    def param(self, name: str) -> ParamInfo:
        """Look a parameter up by name."""
        try:
            return self.params_by_name[name]
        except KeyError:
            raise SchemaError(f"action {self.name!r} has no parameter {name!r}") from None


@dataclass(frozen=True)
class TableInfo:
    """A table: keys, the actions it may run, its size and its direct resources."""

    id: int
    name: str
    alias: str
    match_fields: tuple[MatchFieldInfo, ...]
    action_ids: frozenset[int]
    table_only_action_ids: frozenset[int]
    default_only_action_ids: frozenset[int]
    initial_default_action_id: int
    initial_default_args: tuple[tuple[int, bytes], ...]
    const_default_action_id: int
    size: int
    supports_idle_timeout: bool
    direct_counter_id: int
    fields_by_name: Mapping[str, MatchFieldInfo] = field(repr=False, compare=False)
    fields_by_id: Mapping[int, MatchFieldInfo] = field(repr=False, compare=False)

    @property
    def needs_priority(self) -> bool:
        """Whether entries carry a priority (any ternary, range or optional key)."""
        return any(
            f.kind in (MatchKind.TERNARY, MatchKind.RANGE, MatchKind.OPTIONAL)
            for f in self.match_fields
        )

    def match_field(self, name: str) -> MatchFieldInfo:
        """Look a key up by name."""
        try:
            return self.fields_by_name[name]
        except KeyError:
            raise SchemaError(f"table {self.name!r} has no match field {name!r}") from None


@dataclass(frozen=True)
class ControllerHeaderInfo:
    """A `@controller_header` (packet_in / packet_out) and its fields in layout order."""

    id: int
    name: str
    fields: tuple[ParamInfo, ...]
    fields_by_name: Mapping[str, ParamInfo] = field(repr=False, compare=False)
    fields_by_id: Mapping[int, ParamInfo] = field(repr=False, compare=False)


class P4Schema:
    """Index of one P4Info: look-ups by name, alias or id."""

    def __init__(self, p4info: p4i.P4Info) -> None:
        self.p4info = p4info
        self.actions: dict[int, ActionInfo] = {}
        self.tables: dict[int, TableInfo] = {}
        self.headers: dict[str, ControllerHeaderInfo] = {}
        self.direct_counter_tables: dict[int, int] = {}
        self._names: dict[tuple[Prefix, str], int] = {}
        for a in p4info.actions:
            params = tuple(ParamInfo(p.id, p.name, p.bitwidth) for p in a.params)
            info = ActionInfo(
                a.preamble.id,
                a.preamble.name,
                a.preamble.alias or a.preamble.name,
                params,
                {p.name: p for p in params},
                {p.id: p for p in params},
            )
            self.actions[info.id] = info
            self._index(Prefix.ACTION, info.id, info.name, info.alias)
        counters = {c.preamble.id: c for c in p4info.direct_counters}
        for c in p4info.direct_counters:
            self.direct_counter_tables[c.preamble.id] = c.direct_table_id
        for t in p4info.tables:
            fields = tuple(
                MatchFieldInfo(m.id, m.name, m.bitwidth, MatchKind(m.match_type))
                for m in t.match_fields
            )
            refs = list(t.action_refs)
            default = t.initial_default_action
            tinfo = TableInfo(
                id=t.preamble.id,
                name=t.preamble.name,
                alias=t.preamble.alias or t.preamble.name,
                match_fields=fields,
                action_ids=frozenset(r.id for r in refs),
                table_only_action_ids=frozenset(r.id for r in refs if r.scope == 1),
                default_only_action_ids=frozenset(r.id for r in refs if r.scope == 2),
                initial_default_action_id=default.action_id,
                initial_default_args=tuple((a.param_id, a.value) for a in default.arguments),
                const_default_action_id=t.const_default_action_id,
                size=t.size,
                supports_idle_timeout=t.idle_timeout_behavior == 1,
                direct_counter_id=next(
                    (rid for rid in t.direct_resource_ids if rid in counters), 0
                ),
                fields_by_name={f.name: f for f in fields},
                fields_by_id={f.id: f for f in fields},
            )
            self.tables[tinfo.id] = tinfo
            self._index(Prefix.TABLE, tinfo.id, tinfo.name, tinfo.alias)
        for c in p4info.direct_counters:
            self._index(Prefix.DIRECT_COUNTER, c.preamble.id, c.preamble.name, c.preamble.alias)
        for h in p4info.controller_packet_metadata:
            hfields = tuple(ParamInfo(m.id, m.name, m.bitwidth) for m in h.metadata)
            self.headers[h.preamble.name] = ControllerHeaderInfo(
                h.preamble.id,
                h.preamble.name,
                hfields,
                {f.name: f for f in hfields},
                {f.id: f for f in hfields},
            )

    def _index(self, kind: Prefix, ident: int, name: str, alias: str) -> None:
        self._names[(kind, name)] = ident
        if alias:
            self._names.setdefault((kind, alias), ident)

    @classmethod
    def from_text(cls, text: str) -> P4Schema:
        """Parse P4Info in protobuf text format."""
        return cls(text_format.Parse(text, p4i.P4Info()))

    @classmethod
    def load(cls, path: str | Path = DEFAULT_P4INFO) -> P4Schema:
        """Load a P4Info file: text format (.txt, .txtpb, .pb.txt) or binary."""
        path = Path(path)
        data = path.read_bytes()
        if path.suffix in (".txt", ".txtpb") or path.name.endswith(".pb.txt"):
            return cls.from_text(data.decode())
        info = p4i.P4Info()
        info.ParseFromString(data)
        return cls(info)

    def _id(self, kind: Prefix, name: str) -> int:
        try:
            return self._names[(kind, name)]
        except KeyError:
            raise SchemaError(f"P4Info has no {kind.name.lower()} named {name!r}") from None

    def table(self, name_or_id: str | int) -> TableInfo:
        """A table by fully qualified name, alias or id."""
        ident = name_or_id if isinstance(name_or_id, int) else self._id(Prefix.TABLE, name_or_id)
        try:
            return self.tables[ident]
        except KeyError:
            raise SchemaError(f"P4Info has no table with id {ident:#x}") from None

    def action(self, name_or_id: str | int) -> ActionInfo:
        """An action by fully qualified name, alias or id."""
        ident = name_or_id if isinstance(name_or_id, int) else self._id(Prefix.ACTION, name_or_id)
        try:
            return self.actions[ident]
        except KeyError:
            raise SchemaError(f"P4Info has no action with id {ident:#x}") from None

    def direct_counter_id(self, name: str) -> int:
        """A direct counter's id by name or alias."""
        return self._id(Prefix.DIRECT_COUNTER, name)

    def header(self, name: str) -> ControllerHeaderInfo:
        """A controller header (`packet_in`, `packet_out`)."""
        try:
            return self.headers[name]
        except KeyError:
            raise SchemaError(f"P4Info has no controller header {name!r}") from None

    def iter_tables(self) -> Iterator[TableInfo]:
        """All tables in P4Info order."""
        return iter(self.tables.values())

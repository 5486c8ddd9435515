"""Table entries as plain values: what the compiler produces and the controller writes.

An `Entry` names its table, keys, action and parameters the way P4Info does; it holds integers,
not protobuf. `offload.p4entity` converts to and from P4Runtime messages through the schema.
Entries are hashable; `Entry.key` is the identity P4Runtime gives an entry (table, match,
priority), so a desired set and a read-back set can be diffed with dictionaries.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Exact:
    """Exact match on a value."""

    value: int


@dataclass(frozen=True, slots=True)
class Lpm:
    """Longest-prefix match: the top `prefix_len` bits of `value`."""

    value: int
    prefix_len: int


@dataclass(frozen=True, slots=True)
class Ternary:
    """Ternary match: `packet & mask == value`."""

    value: int
    mask: int


@dataclass(frozen=True, slots=True)
class Range:
    """Range match: `low <= packet <= high`."""

    low: int
    high: int


@dataclass(frozen=True, slots=True)
class Optional:
    """Optional match: present means exact; an absent key matches anything."""

    value: int


FieldMatch = Exact | Lpm | Ternary | Range | Optional

# (table, match, priority): what makes two entries the same entry in P4Runtime.
EntryKey = tuple[str, tuple[tuple[str, FieldMatch], ...], int]


@dataclass(frozen=True, slots=True)
class Entry:
    """One table entry (or a table's default action when `is_default`)."""

    table: str
    match: tuple[tuple[str, FieldMatch], ...]
    action: str
    params: tuple[tuple[str, int], ...] = ()
    priority: int = 0
    idle_timeout_ns: int = 0
    is_default: bool = False

    @classmethod
    def make(
        cls,
        table: str,
        match: Mapping[str, FieldMatch] | None = None,
        action: str = "NoAction",
        params: Mapping[str, int] | None = None,
        *,
        priority: int = 0,
        idle_timeout_ns: int = 0,
        is_default: bool = False,
    ) -> Entry:
        """Build an entry from mappings; keys are kept sorted so equal entries compare equal."""
        return cls(
            table,
            tuple(sorted((match or {}).items())),
            action,
            tuple(sorted((params or {}).items())),
            priority,
            idle_timeout_ns,
            is_default,
        )

    @property
    def key(self) -> EntryKey:
        """The entry's identity in its table."""
        return (self.table, self.match, self.priority)

    @property
    def match_dict(self) -> dict[str, FieldMatch]:
        """The keys as a dictionary."""
        return dict(self.match)

    @property
    def params_dict(self) -> dict[str, int]:
        """The action parameters as a dictionary."""
        return dict(self.params)

    def same_action(self, other: Entry) -> bool:
        """Whether two entries with the same key would need no MODIFY."""
        return (
            self.action == other.action
            and self.params == other.params
            and self.idle_timeout_ns == other.idle_timeout_ns
        )

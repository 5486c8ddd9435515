"""Direct counters: per-entry packet and byte counts, and per-rule hits for the ACL.

One compiled rule may become several ACL entries (range and class expansion), all carrying the
rule's `rule_id`, so per-rule hits are the sum over the entries that name it. Counts are read
with the entries themselves (a TableEntry read with `counter_data` set), which gives each count
with the full entry it belongs to, action parameters included.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, NamedTuple

from offload.entries import Entry
from offload.names import ACL
from offload.p4schema import P4Schema

if TYPE_CHECKING:
    from offload.p4client import P4Client


class Counts(NamedTuple):
    """A counter value: packets and bytes."""

    packets: int
    bytes: int

    def __add__(self, other: object) -> Counts:
        """Sum two counts (not tuple concatenation)."""
        if not isinstance(other, Counts):
            return NotImplemented
        return Counts(self.packets + other.packets, self.bytes + other.bytes)


ZERO = Counts(0, 0)


def read_direct_counters(
    client: P4Client, schema: P4Schema, table: str = ACL
) -> dict[Entry, Counts]:
    """Each entry of `table` with the value of its direct counter."""
    if not schema.table(table).direct_counter_id:
        raise ValueError(f"table {table} has no direct counter")
    return dict(client.read_table_entries(schema, table, with_counters=True))


def hits_by_param(counts: Mapping[Entry, Counts], param: str = "rule_id") -> dict[int, Counts]:
    """Sum counts by an action parameter (by default the `rule_id` every ACL action carries)."""
    out: dict[int, Counts] = {}
    for entry, value in counts.items():
        for name, pvalue in entry.params:
            if name == param:
                out[pvalue] = out.get(pvalue, ZERO) + value
                break
    return out


def counter_delta(
    before: Mapping[Entry, Counts], after: Mapping[Entry, Counts]
) -> dict[Entry, Counts]:
    """Per-entry increase between two reads; entries new in `after` count from zero."""
    return {
        entry: Counts(
            value.packets - before.get(entry, ZERO).packets,
            value.bytes - before.get(entry, ZERO).bytes,
        )
        for entry, value in after.items()
    }


def total(counts: Iterable[Counts]) -> Counts:
    """The sum of many counts."""
    packets = bytes_ = 0
    for c in counts:
        packets += c.packets
        bytes_ += c.bytes
    return Counts(packets, bytes_)

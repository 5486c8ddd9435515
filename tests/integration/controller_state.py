"""Helpers for the controller's integration tests: a primary P4Client, and leaving state as found.

Election ids come from `vectors.session.next_election`, which every test of the run shares: each id
is above all earlier ones, so its holder becomes primary, and no two sessions ever share one.
The schema is the target's own P4Info (p4c's for BMv2), so the tests drive any target by name.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

from vectors.session import next_election

from offload.entries import Entry
from offload.p4client import P4Client
from offload.p4schema import P4Schema
from offload.sync import sync


def election() -> int:
    """A fresh election id, higher than every one handed out before in this run."""
    e = next_election()
    return e.high << 64 | e.low


@cache
def _schema(path: Path) -> P4Schema:
    return P4Schema.load(path)


def schema_of(target: Any) -> P4Schema:
    """The P4Info the target runs (the hand-kept one, or p4c's output for BMv2)."""
    return _schema(Path(target.p4info_path))


def connect(target: Any, election_id: int | None = None, **kwargs: Any) -> P4Client:
    """A P4Client for the target (primary, with a fresh election id, unless told otherwise)."""
    if election_id is None:
        election_id = election()
    return P4Client.connect(
        target.address, target.device_id, election_id, schema=schema_of(target), **kwargs
    )


def snapshot(client: P4Client, schema: P4Schema) -> list[Entry]:
    """Every entry and every default entry the target holds."""
    entries = client.read_table_entries(schema)
    for table in schema.iter_tables():
        default = client.read_default_entry(schema, table.name)
        if default is not None:
            entries.append(default)
    return entries


@contextmanager
def primary_with_restore(target: Any) -> Iterator[P4Client]:
    """A primary client (the pipeline is in place: `p4rt` pushed it); tables put back after."""
    client = connect(target)
    try:
        schema = schema_of(target)
        before = snapshot(client, schema)
        yield client
        if client.is_primary:
            sync(client, schema, before)
    finally:
        client.close()

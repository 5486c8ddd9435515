"""Controller sessions for tests: rising election ids, connecting, and cleaning up after a test."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

from google.protobuf import text_format

from offload.p4schema import P4Schema
from offload.proto import p4i, p4r, rpc_code
from vectors.p4rt import Client, Election
from vectors.targets import TargetHandle

_BASE = time.time_ns() // 1000  # above every election id an earlier run used on this target
_counter = itertools.count(1)


def next_election() -> Election:
    """An election id higher than any handed out before (so its holder becomes primary)."""
    return Election(high=0, low=_BASE + next(_counter))


def load_p4info(path: Path) -> p4i.P4Info:
    """A P4Info text file."""
    return text_format.Parse(path.read_text(), p4i.P4Info())


def connect(handle: TargetHandle, push: bool = True) -> Client:
    """A primary controller connection; pushes firewall.p4 unless the target already has it."""
    client = Client(handle.address, handle.device_id, next_election())
    reply = client.arbitrate()
    assert reply.status.code == rpc_code.OK, f"not primary: {reply}"
    p4info = load_p4info(handle.p4info_path)
    try:
        current = client.get_pipeline(p4r.GetForwardingPipelineConfigRequest.P4INFO_AND_COOKIE)
        have = current.p4info if current.HasField("p4info") else None
    except Exception:  # FAILED_PRECONDITION: no pipeline yet
        have = None
    if have is not None and have == p4info:
        client.schema = P4Schema(have)
    elif push:
        client.set_pipeline(p4info, handle.device_config)
    return client


def snapshot(client: Client) -> set[bytes]:
    """Everything a test could leave behind: entries, default entries, multicast groups."""
    assert client.schema is not None
    queries = [p4r.Entity(table_entry=p4r.TableEntry())]
    for table in client.schema.iter_tables():
        queries.append(
            p4r.Entity(table_entry=p4r.TableEntry(table_id=table.id, is_default_action=True))
        )
    group = p4r.Entity()
    group.packet_replication_engine_entry.multicast_group_entry.multicast_group_id = 0
    queries.append(group)
    return {e.SerializeToString(deterministic=True) for e in client.read(queries)}


def restore(client: Client, before: set[bytes], after: set[bytes]) -> None:
    """Undo what a test left: delete what it added, put back default entries it changed."""
    updates = []
    for blob in after - before:
        entity = p4r.Entity.FromString(blob)
        if entity.HasField("table_entry") and entity.table_entry.is_default_action:
            continue
        updates.append(p4r.Update(type=p4r.Update.DELETE, entity=entity))
    for blob in before - after:
        entity = p4r.Entity.FromString(blob)
        if entity.HasField("table_entry") and entity.table_entry.is_default_action:
            updates.append(p4r.Update(type=p4r.Update.MODIFY, entity=entity))
    if updates:
        client.write(updates)

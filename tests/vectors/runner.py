"""Run pipeline vectors against a target over P4Runtime, and leave the target as it was.

`run_vector` installs a vector's groups, entries and default actions, sends its frame (into a
port, or as a PacketOut), checks what came out of every data port and the stream, reads the
counters it names, and then removes everything it added and restores the defaults it changed.
"""

from __future__ import annotations

import queue
import time

from offload.proto import p4r
from vectors.p4rt import Client, Update
from vectors.pipeline_vectors import Vector
from vectors.targets import DATA_PORTS, TargetHandle

WAIT_S = 2.0  # longest wait for an expected frame or PacketIn


def _read_default(client: Client, table: str) -> p4r.TableEntry:
    assert client.schema is not None
    query = p4r.TableEntry(table_id=client.schema.table(table).id, is_default_action=True)
    (entity,) = client.read([p4r.Entity(table_entry=query)])
    return entity.table_entry


def _counter(client: Client, update: p4r.Update) -> tuple[int, int]:
    query = p4r.TableEntry()
    query.CopyFrom(update.entity.table_entry)
    query.ClearField("action")
    entity = p4r.Entity()
    entity.direct_counter_entry.table_entry.CopyFrom(query)
    (result,) = client.read([entity])
    data = result.direct_counter_entry.data
    return data.packet_count, data.byte_count


def _collect(handle: TargetHandle, vector: Vector) -> dict[int, list[bytes]]:
    """Frames out of every data port: wait for the expected ones, then a grace period."""
    got: dict[int, list[bytes]] = {p: [] for p in DATA_PORTS}
    deadline = time.monotonic() + WAIT_S
    while True:
        for port in DATA_PORTS:
            got[port].extend(handle.receive(port))
        done = all(len(got[p]) >= len(frames) for p, frames in vector.out.items())
        if done or time.monotonic() > deadline:
            break
        time.sleep(0.005)
    time.sleep(handle.grace)
    for port in DATA_PORTS:
        got[port].extend(handle.receive(port))
    return {p: frames for p, frames in got.items() if frames}


def run_vector(client: Client, handle: TargetHandle, vector: Vector) -> None:
    """Run one vector; AssertionError says what differed."""
    updates = [
        client.update(Update.MODIFY if e.is_default else Update.INSERT, e) for e in vector.entries
    ]
    saved_defaults = [_read_default(client, e.table) for e in vector.entries if e.is_default]
    inserted_groups: list[int] = []
    inserted = False
    try:
        for group, ports in vector.groups.items():
            client.write([client.group_update(Update.INSERT, group, ports)])
            inserted_groups.append(group)
        if updates:
            client.write(updates)
        inserted = True
        client.drain()
        for port in DATA_PORTS:
            handle.receive(port)
        if vector.packet_out_port is not None:
            client.packet_out(vector.packet, egress_port=vector.packet_out_port, flags=0)
        else:
            handle.send(vector.ingress, vector.packet)
        handle.settle()
        got = _collect(handle, vector)
        want = {p: list(frames) for p, frames in vector.out.items()}
        assert got == want, f"{vector.name}: out of ports {got!r}, expected {want!r}"
        _check_packet_in(client, vector)
        for index, packets, nbytes in vector.counters:
            counted = _counter(client, updates[index])
            assert counted == (packets, nbytes), (
                f"{vector.name}: counter of entry {index} is {counted}, expected "
                f"{(packets, nbytes)}"
            )
    finally:
        cleanup = [
            p4r.Update(type=Update.DELETE, entity=u.entity)
            for u in reversed(updates)
            if inserted and u.type == Update.INSERT
        ]
        cleanup += [
            p4r.Update(type=Update.MODIFY, entity=p4r.Entity(table_entry=d)) for d in saved_defaults
        ]
        cleanup += [client.group_update(Update.DELETE, g, ()) for g in inserted_groups]
        if cleanup:
            client.write(cleanup)


def _check_packet_in(client: Client, vector: Vector) -> None:
    expected = vector.packet_in
    if expected is None:
        stray = [m for m in client.drain() if m.WhichOneof("update") == "packet"]
        assert not stray, f"{vector.name}: unexpected PacketIn {stray[0].packet.payload!r}"
        return
    try:
        payload, metadata = client.packet_in(timeout=WAIT_S)
    except queue.Empty:
        raise AssertionError(f"{vector.name}: no PacketIn") from None
    assert payload == expected.payload, f"{vector.name}: PacketIn payload {payload!r}"
    assert metadata == expected.metadata(), f"{vector.name}: PacketIn metadata {metadata}"

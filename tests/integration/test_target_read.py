"""Read: wildcards, match filters, counters, direct counter entries, chunked responses."""

from __future__ import annotations

import grpc
import pytest
from vectors.p4rt import Client, Update

from offload import names
from offload.entries import Entry, Exact, Range
from offload.p4values import ip_to_int128
from offload.proto import p4r

FLOW_KEY = {
    "ip_src": Exact(ip_to_int128("10.0.0.1")),
    "ip_dst": Exact(ip_to_int128("10.0.0.2")),
    "ip_proto": Exact(6),
    "l4_src": Exact(1234),
    "l4_dst": Exact(80),
}


def l2(mac: int, port: int = 1) -> Entry:
    return Entry.make(
        names.L2_FORWARD, {"eth_dst": Exact(mac)}, names.SET_EGRESS_PORT, {"port": port}
    )


def acl(priority: int, low: int) -> Entry:
    return Entry.make(
        names.ACL, {"l4_dst": Range(low, low + 9)}, names.ACL_ALLOW, {"rule_id": low},
        priority=priority,
    )  # fmt: skip


FLOW = Entry.make(names.FLOW_CACHE, FLOW_KEY, names.FLOW_ALLOW, {"rule_id": 1})


@pytest.fixture
def entries(p4rt: Client) -> list[Entry]:
    """A few entries in three tables, removed afterwards."""
    written = [l2(0x1), l2(0x2), acl(10, 100), acl(20, 200), FLOW]
    p4rt.insert(written)
    yield written
    p4rt.delete(written)


def query(p4rt: Client, table: str | None = None, **fields: object) -> p4r.Entity:
    assert p4rt.schema is not None
    te = p4r.TableEntry(table_id=p4rt.schema.table(table).id if table else 0)
    for key, value in fields.items():
        if key in ("counter_data", "time_since_last_hit"):
            getattr(te, key).SetInParent()
        else:
            setattr(te, key, value)
    return p4r.Entity(table_entry=te)


def test_wildcard_over_all_tables(p4rt: Client, entries: list[Entry]) -> None:
    got = [e.table_entry for e in p4rt.read([query(p4rt)])]
    assert len(got) == len(entries)
    assert not any(e.is_default_action for e in got)


def test_by_table(p4rt: Client, entries: list[Entry]) -> None:
    assert p4rt.schema is not None
    got = [e.table_entry for e in p4rt.read([query(p4rt, names.ACL)])]
    assert {e.priority for e in got} == {10, 20}
    assert {e.table_id for e in got} == {p4rt.schema.table(names.ACL).id}


def test_written_entries_read_back_the_same(p4rt: Client) -> None:
    """Read-write symmetry: canonical values, metadata and controller_metadata come back."""
    update = p4rt.update(Update.INSERT, acl(30, 300))
    update.entity.table_entry.metadata = b"cookie"
    update.entity.table_entry.controller_metadata = 77
    p4rt.write([update])
    (got,) = p4rt.read([query(p4rt, names.ACL)])
    assert got.table_entry == update.entity.table_entry
    p4rt.delete([acl(30, 300)])


def test_match_filtered_read(p4rt: Client, entries: list[Entry]) -> None:
    one = p4rt.update(Update.INSERT, acl(20, 200)).entity
    one.table_entry.ClearField("action")
    (got,) = p4rt.read([one])
    assert got.table_entry.priority == 20
    missing = p4rt.update(Update.INSERT, acl(20, 300)).entity
    assert p4rt.read([missing]) == []


def test_priority_filters_a_wildcard_read(p4rt: Client, entries: list[Entry]) -> None:
    (got,) = p4rt.read([query(p4rt, names.ACL, priority=10)])
    assert got.table_entry.priority == 10


def test_counters_only_when_asked(p4rt: Client, entries: list[Entry]) -> None:
    plain = [e.table_entry for e in p4rt.read([query(p4rt)])]
    assert not any(e.HasField("counter_data") for e in plain)
    counted = [e.table_entry for e in p4rt.read([query(p4rt, counter_data=True)])]
    assert p4rt.schema is not None
    with_counters = {
        t.id for t in p4rt.schema.iter_tables() if t.direct_counter_id
    }  # acl and flow_cache
    for e in counted:
        assert e.HasField("counter_data") == (e.table_id in with_counters)


def test_time_since_last_hit(p4rt: Client, entries: list[Entry]) -> None:
    (flow,) = [
        e.table_entry for e in p4rt.read([query(p4rt, names.FLOW_CACHE, time_since_last_hit=True)])
    ]
    assert flow.HasField("time_since_last_hit")
    assert 0 <= flow.time_since_last_hit.elapsed_ns < 60 * 10**9


def test_direct_counter_entries(p4rt: Client, entries: list[Entry]) -> None:
    assert p4rt.schema is not None
    by_table = p4r.Entity()
    by_table.direct_counter_entry.table_entry.table_id = p4rt.schema.table(names.ACL).id
    got = p4rt.read([by_table])
    assert len(got) == 2
    assert all(e.direct_counter_entry.data.packet_count == 0 for e in got)
    one = p4r.Entity()
    key = p4rt.update(Update.INSERT, acl(10, 100)).entity.table_entry
    key.ClearField("action")
    one.direct_counter_entry.table_entry.CopyFrom(key)
    (single,) = p4rt.read([one])
    assert single.direct_counter_entry.table_entry.priority == 10
    everything = p4r.Entity()
    everything.direct_counter_entry.table_entry.table_id = 0
    assert len(p4rt.read([everything])) == 3  # 2 ACL entries + 1 flow entry
    # Writing a DirectCounterEntry sets the counter.
    write = p4r.Update(type=Update.MODIFY, entity=one)
    write.entity.direct_counter_entry.data.packet_count = 9
    p4rt.write([write])
    (single,) = p4rt.read([one])
    assert single.direct_counter_entry.data.packet_count == 9


def test_default_entry_read(p4rt: Client) -> None:
    assert p4rt.schema is not None
    (got,) = p4rt.read([query(p4rt, names.ACL, is_default_action=True)])
    te = got.table_entry
    assert te.is_default_action
    assert te.action.action.action_id == p4rt.schema.action(names.ACL_DROP).id
    assert te.action.action.params[0].value == b"\x00"


def test_unknown_table(p4rt: Client) -> None:
    bogus = p4r.Entity(table_entry=p4r.TableEntry(table_id=0x02FFFFFF))
    with pytest.raises(grpc.RpcError) as info:
        p4rt.read([bogus])
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_big_reads_come_in_chunks(p4rt: Client) -> None:
    many = [l2(0x10000 + i) for i in range(2500)]
    p4rt.insert(many)
    request = p4r.ReadRequest(device_id=p4rt.device_id, entities=[query(p4rt, names.L2_FORWARD)])
    responses = list(p4rt.stub.Read(request, timeout=30))
    assert sum(len(r.entities) for r in responses) == 2500
    assert len(responses) > 1
    p4rt.delete(many)


def test_group_reads(p4rt: Client) -> None:
    p4rt.write([p4rt.group_update(Update.INSERT, g, [1, 2]) for g in (3, 4)])
    all_groups = p4r.Entity()
    all_groups.packet_replication_engine_entry.multicast_group_entry.multicast_group_id = 0
    got = p4rt.read([all_groups])
    ids = [e.packet_replication_engine_entry.multicast_group_entry.multicast_group_id for e in got]
    assert sorted(ids) == [3, 4]
    p4rt.write([p4rt.group_update(Update.DELETE, g, ()) for g in (3, 4)])

"""Write: batches, per-update errors (as p4runtime-shell decodes them), defaults, groups."""

from __future__ import annotations

import grpc
import pytest
from vectors.p4rt import Client, Update, WriteError

from offload import names
from offload.entries import Entry, Exact, Lpm, Optional, Range, Ternary
from offload.p4values import network_to_lpm128
from offload.proto import p4r, rpc_code

Atomicity = p4r.WriteRequest.Atomicity


def l2(mac: int, port: int = 1) -> Entry:
    return Entry.make(
        names.L2_FORWARD, {"eth_dst": Exact(mac)}, names.SET_EGRESS_PORT, {"port": port}
    )


def acl(priority: int, rule: int, **match: Ternary | Optional | Range) -> Entry:
    return Entry.make(names.ACL, match, names.ACL_ALLOW, {"rule_id": rule}, priority=priority)


def raw_update(p4rt: Client, utype: int, entry: Entry, **tweak: object) -> p4r.Update:
    """An update whose TableEntry is then bent out of shape by `tweak`."""
    update = p4rt.update(utype, entry)
    te = update.entity.table_entry
    for key, value in tweak.items():
        if key == "ternary_value":
            te.match[0].ternary.value = value  # type: ignore[assignment]
        elif key == "exact_value":
            te.match[0].exact.value = value  # type: ignore[assignment]
        elif key == "priority":
            te.priority = value  # type: ignore[assignment]
        elif key == "idle_timeout_ns":
            te.idle_timeout_ns = value  # type: ignore[assignment]
        elif key == "counter_data":
            te.counter_data.packet_count = value  # type: ignore[assignment]
    return update


def test_per_update_errors_in_order(p4rt: Client) -> None:
    """CONTINUE_ON_ERROR: every update is tried; the status details list one Error each."""
    p4rt.insert([l2(0x10)])
    batch = [
        p4rt.update(Update.INSERT, l2(0x11)),  # OK
        p4rt.update(Update.INSERT, l2(0x10)),  # duplicate
        p4rt.update(Update.MODIFY, l2(0x12)),  # missing
        p4rt.update(Update.DELETE, l2(0x13)),  # missing
        raw_update(p4rt, Update.INSERT, acl(5, 1, src_class=Ternary(1, 1)), ternary_value=b"\x03"),
        raw_update(p4rt, Update.INSERT, l2(0x14), exact_value=b"\x01" * 7),  # 56 bits in 48
        raw_update(p4rt, Update.INSERT, acl(5, 1, ip_proto=Optional(6)), priority=0),
        p4rt.update(Update.INSERT, l2(0x15)),  # OK
    ]
    with pytest.raises(WriteError) as info:
        p4rt.write(batch)
    err = info.value
    assert err.code == grpc.StatusCode.UNKNOWN
    assert err.codes() == [
        rpc_code.OK,
        rpc_code.ALREADY_EXISTS,
        rpc_code.NOT_FOUND,
        rpc_code.NOT_FOUND,
        rpc_code.INVALID_ARGUMENT,
        rpc_code.INVALID_ARGUMENT,
        rpc_code.INVALID_ARGUMENT,
        rpc_code.OK,
    ]
    assert [i for i, _ in err.errors] == [1, 2, 3, 4, 5, 6]
    assert all(e.message for _, e in err.errors)
    macs = {e.match[0].exact.value for e in p4rt.read_table(names.L2_FORWARD)}
    assert macs == {b"\x10", b"\x11", b"\x15"}  # the good updates were applied
    p4rt.delete([l2(0x10), l2(0x11), l2(0x15)])


@pytest.mark.parametrize(
    "entry, tweak",
    [
        (l2(0x20), {"priority": 5}),  # exact table: no priority
        (acl(5, 1, l4_dst=Range(80, 80)), {"priority": -1}),
        (l2(0x21), {"idle_timeout_ns": 10**9}),  # l2_forward has no idle timeout
        (l2(0x22), {"counter_data": 1}),  # l2_forward has no direct counter
    ],
)
def test_invalid_entries(p4rt: Client, entry: Entry, tweak: dict[str, object]) -> None:
    with pytest.raises(WriteError) as info:
        p4rt.write([raw_update(p4rt, Update.INSERT, entry, **tweak)])
    assert info.value.codes() == [rpc_code.INVALID_ARGUMENT]
    assert p4rt.read_table(entry.table) == []


def test_lpm_value_beyond_prefix_is_invalid(p4rt: Client) -> None:
    value, _plen = network_to_lpm128("10.1.0.0/16")
    bad = Entry.make(
        names.SRC_CLASS,
        {"ip_src": Lpm(value, 104)},  # a /8 in IPv4 terms, with bits of the /16 set
        names.SET_SRC_CLASS,
        {"class_id": 1, "workload_id": 0},
    )
    with pytest.raises(WriteError) as info:
        p4rt.insert([bad])
    assert info.value.codes() == [rpc_code.INVALID_ARGUMENT]


def test_rollback_on_error_is_all_or_nothing(p4rt: Client) -> None:
    batch = [
        p4rt.update(Update.INSERT, l2(0x30)),
        p4rt.update(Update.INSERT, l2(0x31)),
        p4rt.update(Update.INSERT, l2(0x30)),  # duplicate of the first
    ]
    for atomicity in (Atomicity.ROLLBACK_ON_ERROR, Atomicity.DATAPLANE_ATOMIC):
        with pytest.raises(WriteError) as info:
            p4rt.write(batch, atomicity=atomicity)
        if info.value.code == grpc.StatusCode.UNIMPLEMENTED:
            continue  # optional in the spec
        assert info.value.code == grpc.StatusCode.UNKNOWN
        assert info.value.codes()[2] == rpc_code.ALREADY_EXISTS
        assert all(c != rpc_code.OK for c in info.value.codes())
        assert p4rt.read_table(names.L2_FORWARD) == []


def test_modify_and_delete(p4rt: Client) -> None:
    p4rt.insert([l2(0x40, 1)])
    p4rt.write([p4rt.update(Update.MODIFY, l2(0x40, 3))])
    (entry,) = p4rt.read_table(names.L2_FORWARD)
    assert entry.action.action.params[0].value == b"\x03"
    p4rt.delete([l2(0x40)])  # DELETE matches on the key only
    assert p4rt.read_table(names.L2_FORWARD) == []


def test_default_entry_modify_reset_and_no_delete(p4rt: Client) -> None:
    assert p4rt.schema is not None
    table_id = p4rt.schema.table(names.ACL).id
    query = p4r.Entity(table_entry=p4r.TableEntry(table_id=table_id, is_default_action=True))
    (initial,) = p4rt.read([query])
    service = Entry.make(names.ACL, None, names.ACL_SERVICE, {"rule_id": 3}, is_default=True)
    p4rt.write([p4rt.update(Update.MODIFY, service)])
    (changed,) = p4rt.read([query])
    assert changed.table_entry.is_default_action
    assert changed.table_entry.action.action.action_id == p4rt.schema.action(names.ACL_SERVICE).id
    for utype in (Update.INSERT, Update.DELETE):
        with pytest.raises(WriteError) as info:
            p4rt.write([p4rt.update(utype, service)])
        assert info.value.codes() == [rpc_code.INVALID_ARGUMENT]
    # MODIFY without an action puts the initial default back.
    reset = p4r.TableEntry(table_id=table_id, is_default_action=True)
    try:
        p4rt.write([p4r.Update(type=Update.MODIFY, entity=p4r.Entity(table_entry=reset))])
    except WriteError:  # targets older than P4Runtime 1.3 need the action written out
        p4rt.write([p4r.Update(type=Update.MODIFY, entity=initial)])
    assert p4rt.read([query]) == [initial]


def test_default_only_and_table_only_actions(p4rt: Client) -> None:
    default_only = Entry.make(names.SERVICE_CONFIG, None, names.SET_SERVICE_PORT, {"port": 7})
    with pytest.raises(WriteError) as keyless:
        p4rt.insert([default_only])
    assert keyless.value.codes() == [rpc_code.INVALID_ARGUMENT]
    table_only = Entry.make(
        names.SRC_CLASS, None, names.SET_SRC_CLASS, {"class_id": 1, "workload_id": 0},
        is_default=True,
    )  # fmt: skip
    with pytest.raises(WriteError) as scoped:
        p4rt.write([p4rt.update(Update.MODIFY, table_only)])
    assert scoped.value.codes() == [rpc_code.INVALID_ARGUMENT]


def test_table_full(p4rt: Client) -> None:
    assert p4rt.schema is not None
    size = p4rt.schema.table(names.L2_FORWARD).size
    entries = [l2(0x1000 + i) for i in range(size)]
    for start in range(0, size, 1024):
        p4rt.insert(entries[start : start + 1024])
    with pytest.raises(WriteError) as info:
        p4rt.insert([l2(0x99999)])
    assert info.value.codes() == [rpc_code.RESOURCE_EXHAUSTED]
    for start in range(0, size, 1024):
        p4rt.delete(entries[start : start + 1024])


def test_multicast_groups(p4rt: Client) -> None:
    group = p4r.Entity()
    group.packet_replication_engine_entry.multicast_group_entry.multicast_group_id = 5
    p4rt.write([p4rt.group_update(Update.INSERT, 5, [1, 2])])
    with pytest.raises(WriteError) as dup:
        p4rt.write([p4rt.group_update(Update.INSERT, 5, [3])])
    assert dup.value.codes() == [rpc_code.ALREADY_EXISTS]
    p4rt.write([p4rt.group_update(Update.MODIFY, 5, [2, 3, 4])])
    (read,) = p4rt.read([group])
    replicas = read.packet_replication_engine_entry.multicast_group_entry.replicas
    assert sorted(int.from_bytes(r.port, "big") or r.egress_port for r in replicas) == [2, 3, 4]
    p4rt.write([p4rt.group_update(Update.DELETE, 5, ())])
    for utype in (Update.MODIFY, Update.DELETE):
        with pytest.raises(WriteError) as missing:
            p4rt.write([p4rt.group_update(utype, 5, [1])])
        assert missing.value.codes() == [rpc_code.NOT_FOUND]
    with pytest.raises(WriteError) as zero:
        p4rt.write([p4rt.group_update(Update.INSERT, 0, [1])])
    assert zero.value.codes() == [rpc_code.INVALID_ARGUMENT]


def test_counter_data_on_insert_and_modify(p4rt: Client) -> None:
    entry = acl(7, 1, l4_dst=Range(443, 443))
    insert = p4rt.update(Update.INSERT, entry)
    insert.entity.table_entry.counter_data.packet_count = 5
    insert.entity.table_entry.counter_data.byte_count = 500
    p4rt.write([insert])
    (read,) = p4rt.read_table(names.ACL, counters=True)
    assert (read.counter_data.packet_count, read.counter_data.byte_count) == (5, 500)
    # MODIFY without counter_data leaves the counter alone.
    p4rt.write([p4rt.update(Update.MODIFY, acl(7, 2, l4_dst=Range(443, 443)))])
    (read,) = p4rt.read_table(names.ACL, counters=True)
    assert read.counter_data.packet_count == 5
    assert read.action.action.params[0].value == b"\x02"
    p4rt.delete([entry])


def test_large_batch(p4rt: Client) -> None:
    entries = [acl(i + 1, i, l4_dst=Range(i, i + 10)) for i in range(5000)]
    p4rt.insert(entries)
    assert len(p4rt.read_table(names.ACL)) == 5000
    p4rt.delete(entries)
    assert p4rt.read_table(names.ACL) == []


def test_unsupported_entities(p4rt: Client) -> None:
    meter = p4r.Update(type=Update.MODIFY)
    meter.entity.meter_entry.meter_id = 0x15000001
    with pytest.raises(WriteError) as info:
        p4rt.write([meter])
    assert info.value.codes()[0] in (rpc_code.UNIMPLEMENTED, rpc_code.NOT_FOUND)
    unspecified = p4rt.update(Update.INSERT, l2(0x50))
    unspecified.type = Update.UNSPECIFIED
    with pytest.raises(WriteError) as bad:
        p4rt.write([unspecified])
    assert bad.value.codes() == [rpc_code.INVALID_ARGUMENT]

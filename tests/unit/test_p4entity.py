"""Entry <-> TableEntry conversion and the P4Runtime well-formedness rules it enforces."""

from __future__ import annotations

import pytest

from offload import names
from offload.entries import Entry, Exact, Lpm, Optional, Range, Ternary
from offload.p4entity import EntityError, decode_table_entry, encode_table_entry
from offload.p4schema import P4Schema
from offload.p4values import (
    P4ValueError,
    canonical,
    decode_int,
    encode_int,
    int128_to_ip,
    ip_to_int128,
    lpm128_to_network,
    network_to_lpm128,
)
from offload.proto import p4r, rpc_code


@pytest.fixture(scope="module")
def schema() -> P4Schema:
    return P4Schema.load()


def acl_entry(**overrides: object) -> Entry:
    fields: dict = {
        "match": {"src_class": Ternary(4, 4), "ip_proto": Optional(6), "l4_dst": Range(80, 443)},
        "params": {"rule_id": 7},
        "priority": 10,
    }
    fields.update(overrides)
    return Entry.make(
        names.ACL, fields["match"], names.ACL_ALLOW, fields["params"], priority=fields["priority"]
    )


def test_canonical_encoding() -> None:
    assert encode_int(0, 16) == b"\x00"
    assert encode_int(0x1234, 16) == b"\x12\x34"
    assert encode_int(1, 9) == b"\x01"
    assert canonical(b"\x00\x00\x05") == b"\x05"
    assert decode_int(b"\x00\x05", 8) == 5  # padded but fits: accepted
    with pytest.raises(P4ValueError):
        encode_int(512, 9)
    with pytest.raises(P4ValueError):
        decode_int(b"\x02\x00", 9)


def test_ipv4_is_mapped_into_ipv6_space() -> None:
    assert ip_to_int128("10.0.0.1") == (0xFFFF << 32) | 0x0A000001
    assert network_to_lpm128("10.0.0.0/24") == ((0xFFFF << 32) | 0x0A000000, 120)
    assert str(int128_to_ip(ip_to_int128("10.1.2.3"))) == "10.1.2.3"
    assert str(int128_to_ip(ip_to_int128("2001:db8::1"))) == "2001:db8::1"
    assert str(lpm128_to_network(*network_to_lpm128("2001:db8::/32"))) == "2001:db8::/32"
    assert str(lpm128_to_network(*network_to_lpm128("192.168.0.0/16"))) == "192.168.0.0/16"


def test_round_trip(schema: P4Schema) -> None:
    entry = acl_entry()
    assert decode_table_entry(schema, encode_table_entry(schema, entry)) == entry


def test_round_trip_exact_and_lpm(schema: P4Schema) -> None:
    flow = Entry.make(
        names.FLOW_CACHE,
        {
            "ip_src": Exact(ip_to_int128("10.0.0.1")),
            "ip_dst": Exact(ip_to_int128("10.0.0.2")),
            "ip_proto": Exact(6),
            "l4_src": Exact(40000),
            "l4_dst": Exact(80),
        },
        names.FLOW_ALLOW,
        {"rule_id": 3},
        idle_timeout_ns=10**9,
    )
    assert decode_table_entry(schema, encode_table_entry(schema, flow)) == flow
    value, plen = network_to_lpm128("10.0.0.0/24")
    cls = Entry.make(
        names.SRC_CLASS,
        {"ip_src": Lpm(value, plen)},
        names.SET_SRC_CLASS,
        {"class_id": 1 << 63, "workload_id": 2},
    )
    assert decode_table_entry(schema, encode_table_entry(schema, cls)) == cls


def reject(schema: P4Schema, msg: p4r.TableEntry, code: int, words: str) -> None:
    with pytest.raises(EntityError) as info:
        decode_table_entry(schema, msg)
    assert info.value.code == code
    assert words in str(info.value)


def test_rejects_mask_bits_outside_value(schema: P4Schema) -> None:
    msg = encode_table_entry(schema, acl_entry())
    msg.match[-1].ternary.value = b"\x05"  # value 5 under mask 4
    reject(schema, msg, rpc_code.INVALID_ARGUMENT, "outside the mask")


def test_rejects_wrong_width(schema: P4Schema) -> None:
    msg = encode_table_entry(schema, acl_entry())
    msg.match[0].optional.value = b"\x01\x00"  # 256 in an 8-bit field
    reject(schema, msg, rpc_code.INVALID_ARGUMENT, "does not fit")


def test_rejects_dont_care_that_is_not_omitted(schema: P4Schema) -> None:
    msg = encode_table_entry(schema, acl_entry(match={"l4_dst": Range(0, 65535)}))
    reject(schema, msg, rpc_code.INVALID_ARGUMENT, "full range")
    msg = encode_table_entry(schema, acl_entry(match={"src_class": Ternary(0, 1)}))
    msg.match[0].ternary.mask = b"\x00"
    reject(schema, msg, rpc_code.INVALID_ARGUMENT, "mask 0")


def test_rejects_lpm_bits_beyond_prefix(schema: P4Schema) -> None:
    value, _ = network_to_lpm128("10.0.0.0/24")
    msg = encode_table_entry(
        schema,
        Entry.make(
            names.SRC_CLASS,
            {"ip_src": Lpm(value | 1, 120)},
            names.SET_SRC_CLASS,
            {"class_id": 1, "workload_id": 0},
        ),
    )
    reject(schema, msg, rpc_code.INVALID_ARGUMENT, "beyond the /120")


def test_priority_rules(schema: P4Schema) -> None:
    reject(
        schema,
        encode_table_entry(schema, acl_entry(priority=0)),
        rpc_code.INVALID_ARGUMENT,
        "need a priority",
    )
    flow = Entry.make(
        names.L2_FORWARD, {"eth_dst": Exact(1)}, names.SET_EGRESS_PORT, {"port": 1}, priority=5
    )
    reject(schema, encode_table_entry(schema, flow), rpc_code.INVALID_ARGUMENT, "no priority")


def test_rejects_missing_exact_field_and_duplicates(schema: P4Schema) -> None:
    msg = encode_table_entry(
        schema,
        Entry.make(names.L2_FORWARD, {"eth_dst": Exact(1)}, names.SET_EGRESS_PORT, {"port": 1}),
    )
    dup = p4r.TableEntry()
    dup.CopyFrom(msg)
    dup.match.append(msg.match[0])
    reject(schema, dup, rpc_code.INVALID_ARGUMENT, "given twice")
    del msg.match[:]
    reject(schema, msg, rpc_code.INVALID_ARGUMENT, "is missing")


def test_rejects_foreign_action_and_bad_params(schema: P4Schema) -> None:
    msg = encode_table_entry(schema, acl_entry())
    msg.action.action.action_id = schema.action(names.SET_EGRESS_PORT).id
    reject(schema, msg, rpc_code.INVALID_ARGUMENT, "not an action of this table")
    msg = encode_table_entry(schema, acl_entry())
    del msg.action.action.params[:]
    reject(schema, msg, rpc_code.INVALID_ARGUMENT, "missing parameter")


def test_default_only_action_as_entry_is_rejected(schema: P4Schema) -> None:
    msg = encode_table_entry(
        schema, Entry.make(names.SRC_CLASS, {"ip_src": Lpm(1 << 127, 1)}, names.NO_ACTION)
    )
    reject(schema, msg, rpc_code.INVALID_ARGUMENT, "default entry only")


def test_unknown_table_is_not_found(schema: P4Schema) -> None:
    reject(schema, p4r.TableEntry(table_id=0x02000001), rpc_code.NOT_FOUND, "unknown table")


def test_idle_timeout_only_where_supported(schema: P4Schema) -> None:
    msg = encode_table_entry(schema, acl_entry())
    msg.idle_timeout_ns = 1000
    reject(schema, msg, rpc_code.INVALID_ARGUMENT, "idle timeouts")


def test_default_entry(schema: P4Schema) -> None:
    entry = Entry.make(names.ACL, {}, names.ACL_ALLOW, {"rule_id": 0}, is_default=True)
    assert decode_table_entry(schema, encode_table_entry(schema, entry)) == entry
    msg = encode_table_entry(schema, entry)
    msg.priority = 3
    reject(schema, msg, rpc_code.INVALID_ARGUMENT, "no priority")


def test_schema_lookups_by_name_alias_and_id(schema: P4Schema) -> None:
    acl = schema.table(names.ACL)
    assert schema.table("acl") is acl
    assert schema.table(acl.id) is acl
    assert acl.id >> 24 == 0x02
    assert acl.direct_counter_id == schema.direct_counter_id(names.ACL_COUNTER)
    assert schema.table(names.FLOW_CACHE).supports_idle_timeout
    assert [f.name for f in schema.header(names.PACKET_IN).fields][:3] == [
        "ingress_port",
        "egress_port",
        "reason",
    ]

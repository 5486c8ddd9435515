"""Write over gRPC with the wire decoder on and off: the same errors, the same state.

The software target decodes bulk Writes from the request bytes (offload/target/wire.py) once its
numba kernel is loaded; NICFW_WIRE_DECODE=0 turns that off. Each test runs the same writes
through a target of each kind and compares everything a client can see.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import grpc
import pytest

from offload import names
from offload.entries import Entry, Exact, Optional, Range, Ternary
from offload.p4client import INSERT, MODIFY, P4Client
from offload.p4schema import P4Schema
from offload.proto import rpc_code
from offload.target import SoftwareTarget, wire

SCHEMA = P4Schema.load()


@contextmanager
def connected(use_wire: bool, monkeypatch: pytest.MonkeyPatch) -> Iterator[P4Client]:
    """A client of a fresh target that decodes Writes from the wire bytes or not."""
    if use_wire:
        monkeypatch.delenv("NICFW_WIRE_DECODE", raising=False)
        assert wire.kernel(wait=True) is not None, "the wire kernel did not compile"
    else:
        monkeypatch.setenv("NICFW_WIRE_DECODE", "0")
    with SoftwareTarget("127.0.0.1:0") as target:
        c = P4Client.connect(target.address, target.device_id, 1, schema=SCHEMA)
        try:
            c.set_pipeline(SCHEMA)
            yield c
        finally:
            c.close()


@pytest.fixture(params=[True, False], ids=["wire", "messages"])
def client(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[P4Client]:
    with connected(request.param, monkeypatch) as c:
        yield c


def acl(i: int, **match: Ternary | Optional | Range) -> Entry:
    match = match or {"src_class": Ternary(1 << (i % 64), 1 << (i % 64))}
    return Entry.make(names.ACL, match, names.ACL_ALLOW, {"rule_id": i}, priority=i + 1)


def flow(i: int) -> Entry:
    return Entry.make(
        names.FLOW_CACHE,
        {
            "ip_src": Exact(0xFFFF0A000000 | i),
            "ip_dst": Exact(0xFFFF0A800001),
            "ip_proto": Exact(17),
            "l4_src": Exact(i),
            "l4_dst": Exact(53),
        },
        names.FLOW_DROP,
        {"rule_id": i},
    )


def outcome(client: P4Client) -> tuple[list[tuple[int, int, str]], list[str]]:
    """Per-update errors of a batch with good and bad updates, then the table contents."""
    client.write_entries(SCHEMA, INSERT, [acl(i) for i in range(20)] + [flow(i) for i in range(20)])
    request = client.new_write_request()
    client.encoder(SCHEMA).add_updates(request, INSERT, [acl(i) for i in range(18, 30)])
    client.encoder(SCHEMA).add_updates(request, MODIFY, [flow(i) for i in range(15, 25)])
    bad = request.updates.add(type=INSERT)
    bad.entity.table_entry.CopyFrom(client.encoder(SCHEMA).encode(acl(99)))
    bad.entity.table_entry.match[0].ternary.value = b"\x03"  # outside the mask
    bad = request.updates.add(type=INSERT)
    bad.entity.table_entry.CopyFrom(client.encoder(SCHEMA).encode(flow(99)))
    proto = SCHEMA.table(names.FLOW_CACHE).match_field("ip_proto").id
    key = next(m for m in bad.entity.table_entry.match if m.field_id == proto)
    key.exact.value = b"\x01\x00"  # 9 bits in 8
    errors = [(e.index, e.code, e.message) for e in client.write_request(request)]
    entries = sorted(map(repr, client.read_table_entries(SCHEMA)))
    return errors, entries


def test_errors_and_state_match_across_decoders(monkeypatch: pytest.MonkeyPatch) -> None:
    results = []
    for use_wire in (True, False):
        with connected(use_wire, monkeypatch) as c:
            results.append(outcome(c))
    errors, entries = results[0]
    codes = [code for _i, code, _m in errors]
    assert codes.count(rpc_code.ALREADY_EXISTS) == 2  # acl 18, 19
    assert codes.count(rpc_code.NOT_FOUND) == 5  # flows 20..24
    assert codes.count(rpc_code.INVALID_ARGUMENT) == 2
    assert len(entries) == 40 + 10
    assert results[0] == results[1]


def test_undecodable_request_fails_as_grpc_fails_it(client: P4Client) -> None:
    channel = client._channel
    assert channel is not None
    write = channel.unary_unary("/p4.v1.P4Runtime/Write")
    good = client.new_write_request().SerializeToString()
    with pytest.raises(grpc.RpcError) as info:
        write(good + b"\x22\x05\x0a", timeout=5)  # an update cut short
    assert info.value.code() == grpc.StatusCode.INTERNAL


def test_header_checks_still_apply(client: P4Client) -> None:
    request = client.new_write_request()
    client.encoder(SCHEMA).add_updates(request, INSERT, [acl(i) for i in range(10)])
    request.device_id = 77
    with pytest.raises(grpc.RpcError) as info:
        client._stub_or_raise().Write(request, timeout=5)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    request.device_id = client.device_id
    request.election_id.low = 0
    request.election_id.high = 5
    with pytest.raises(grpc.RpcError) as info:
        client._stub_or_raise().Write(request, timeout=5)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert len(client.read_table_entries(SCHEMA)) == 0

"""The controller's session with a real target: arbitration, pipeline, packets, notifications."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from controller_state import connect, election, primary_with_restore, schema_of
from test_controller_sync import acl, flow, tcp_frame

from offload import names
from offload.entries import Entry
from offload.p4client import DELETE, INSERT, P4Client
from offload.p4errors import NotPrimary, P4ClientError, TargetUnreachable
from offload.p4schema import P4Schema
from offload.packetio import PacketIn


@pytest.fixture
def schema(target: Any) -> P4Schema:
    return schema_of(target)


@pytest.fixture
def client(target: Any, p4rt: Any) -> Iterator[P4Client]:
    """A primary P4Client; `p4rt` pushed the pipeline and fails the test if state is left."""
    with primary_with_restore(target) as c:
        yield c


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_connect_arbitrates_as_primary(client: P4Client) -> None:
    assert client.is_primary
    assert client.primary_election_id == client.election_id
    assert client.capabilities().startswith("1.")


def test_pipeline_push_and_read_back(target: Any, client: P4Client, schema: P4Schema) -> None:
    original = client.get_pipeline()
    assert original.p4info == schema.p4info
    try:
        client.set_pipeline(schema, target.device_config, cookie=77)
        config = client.get_pipeline()
        assert config.p4info == schema.p4info
        assert config.cookie == 77
    finally:  # the entries come back with the fixture's restore
        client.set_pipeline(schema, target.device_config, cookie=original.cookie)


def test_unreachable_target_is_one_clear_line() -> None:
    address = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(TargetUnreachable) as info:
        P4Client.connect(address, connect_timeout=2)
    assert str(info.value) == f"P4Runtime target {address} unreachable: connection refused"
    assert time.monotonic() - started < 2  # refused at once, not after the timeout


def test_unknown_host_is_one_clear_line() -> None:
    with pytest.raises(TargetUnreachable) as info:
        P4Client.connect("nicfw-no-such-host.invalid:9559", connect_timeout=2)
    assert str(info.value) == (
        "P4Runtime target nicfw-no-such-host.invalid:9559 unreachable: unknown host"
    )


def test_backup_cannot_write_and_primary_can(target: Any, p4rt: Any, schema: P4Schema) -> None:
    backup_id, primary_id = election(), election()  # the backup's is lower and unused
    entry = acl(4290, 90)
    with connect(target, primary_id) as primary:
        with connect(target, backup_id, require_primary=False) as backup:
            assert primary.is_primary and not backup.is_primary
            assert backup.primary_election_id == primary_id
            with pytest.raises(NotPrimary):
                backup.write_entries(schema, INSERT, [entry])
            assert entry not in primary.read_table_entries(schema, names.ACL)
            primary.write_entries(schema, INSERT, [entry])
            assert entry in backup.read_table_entries(schema, names.ACL)  # reads are open to all
            primary.write_entries(schema, DELETE, [entry])
        with pytest.raises(NotPrimary, match="not the highest"):
            connect(target, election() - 1_000_000)


def test_read_only_client_never_takes_the_device(
    target: Any, client: P4Client, schema: P4Schema
) -> None:
    with P4Client.connect(target.address, target.device_id, None, schema=schema) as viewer:
        assert not viewer.is_primary
        client.write_entries(schema, INSERT, [acl(4291, 91)])
        assert acl(4291, 91) in viewer.read_table_entries(schema, names.ACL)
        with pytest.raises(NotPrimary):
            viewer.write_entries(schema, DELETE, [acl(4291, 91)])
        time.sleep(0.05)  # an arbitration update, had there been one, would have arrived
        assert client.is_primary
    client.write_entries(schema, DELETE, [acl(4291, 91)])


def _need_packets(target: Any) -> None:
    if not target.has_packets:
        pytest.skip(target.packets_reason)


def test_punted_packet_arrives_as_packet_in_with_decoded_metadata(
    target: Any, client: P4Client, schema: P4Schema
) -> None:
    _need_packets(target)
    client.write_entries(schema, INSERT, [acl(4292, 92, names.ACL_SERVICE)])
    frame = tcp_frame(4292)
    target.send(1, frame)
    pin = client.packet_in(timeout=3)
    assert isinstance(pin, PacketIn)
    assert pin.payload == frame
    header = pin.service_header
    assert (header.ingress_port, header.reason, header.rule_id) == (1, names.Reason.PUNT, 92)


def test_packet_in_callback_gets_packets_instead_of_the_queue(
    target: Any, client: P4Client, schema: P4Schema
) -> None:
    _need_packets(target)
    got: list[PacketIn] = []
    arrived = threading.Event()

    def on_packet(packet: PacketIn) -> None:
        got.append(packet)
        arrived.set()

    client.on_packet_in = on_packet
    client.write_entries(schema, INSERT, [acl(4293, 93, names.ACL_REJECT)])
    target.send(2, tcp_frame(4293))
    assert arrived.wait(3)
    assert got[0].metadata["reason"] == names.Reason.REJECT
    assert got[0].metadata["rule_id"] == 93
    assert client.packet_in(timeout=0.1) is None


def test_packet_out_leaves_by_the_egress_port(target: Any, client: P4Client) -> None:
    _need_packets(target)
    target.receive(7)  # forget anything sent there before
    frame = tcp_frame(4294)
    client.packet_out(frame, {"egress_port": 7, "flags": 0})
    deadline = time.monotonic() + 3
    sent: list[bytes] = []
    while not sent and time.monotonic() < deadline:
        sent = target.receive(7, timeout=0.1)
        time.sleep(0.02)
    assert sent == [frame]


def test_idle_timeout_notification_is_decoded(client: P4Client, schema: P4Schema) -> None:
    expired: list[Entry] = []
    arrived = threading.Event()

    def on_idle(entries: list[Entry]) -> None:
        expired.extend(entries)
        arrived.set()

    client.on_idle_timeout = on_idle
    base = flow(41000, 5)
    short = Entry.make(
        base.table, base.match_dict, base.action, base.params_dict, idle_timeout_ns=50_000_000
    )
    client.write_entries(schema, INSERT, [short])
    assert arrived.wait(5), "no idle-timeout notification within 5 s"
    assert short.key in {e.key for e in expired}


def test_wrong_device_id_and_duplicate_election_id_are_refused(
    target: Any, client: P4Client, schema: P4Schema
) -> None:
    with pytest.raises(P4ClientError, match="NOT_FOUND"):
        P4Client.connect(target.address, target.device_id + 1, election(), schema=schema)
    with pytest.raises(P4ClientError, match="INVALID_ARGUMENT"):
        connect(target, client.election_id, require_primary=False)
    assert client.is_primary

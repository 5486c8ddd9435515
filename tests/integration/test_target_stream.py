"""The StreamChannel: idle-timeout notifications, packet-in to the primary only, packet-out."""

from __future__ import annotations

import queue
import time

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from vectors.p4rt import Client, Update
from vectors.session import next_election
from vectors.targets import DATA_PORTS, TargetHandle

from offload import names
from offload.entries import Entry, Exact
from offload.p4schema import P4Schema
from offload.p4values import ip_to_int128
from offload.proto import p4r, rpc_code

TTL_NS = 300_000_000  # 0.3 s


def flow(sport: int, idle_timeout_ns: int = 0) -> Entry:
    key = {
        "ip_src": Exact(ip_to_int128("10.0.0.1")),
        "ip_dst": Exact(ip_to_int128("10.0.0.2")),
        "ip_proto": Exact(6),
        "l4_src": Exact(sport),
        "l4_dst": Exact(80),
    }
    return Entry.make(
        names.FLOW_CACHE, key, names.FLOW_ALLOW, {"rule_id": sport},
        idle_timeout_ns=idle_timeout_ns,
    )  # fmt: skip


def frame(sport: int) -> bytes:
    return bytes(
        Ether(src="00:00:00:00:00:01", dst="00:00:00:00:00:02")
        / IP(src="10.0.0.1", dst="10.0.0.2")
        / TCP(sport=sport, dport=80)
    )


def notified_ports(msg: p4r.StreamMessageResponse, schema: P4Schema) -> list[int]:
    """The l4_src keys of the entries an IdleTimeoutNotification names."""
    l4_src = schema.table(names.FLOW_CACHE).match_field("l4_src").id
    return [
        int.from_bytes(m.exact.value, "big")
        for e in msg.idle_timeout_notification.table_entry
        for m in e.match
        if m.field_id == l4_src
    ]


def test_idle_timeout_notification(p4rt: Client) -> None:
    assert p4rt.schema is not None
    aging, forever = flow(1001, TTL_NS), flow(1002)
    p4rt.insert([aging, forever])
    started = time.monotonic()
    try:
        msg = p4rt.next("idle_timeout_notification", timeout=5)
        waited = time.monotonic() - started
        assert notified_ports(msg, p4rt.schema) == [1001]
        (entry,) = msg.idle_timeout_notification.table_entry
        assert entry.table_id == p4rt.schema.table(names.FLOW_CACHE).id
        assert entry.idle_timeout_ns == TTL_NS
        assert msg.idle_timeout_notification.timestamp > 0
        assert waited >= 0.25  # not before the TTL (with scheduling slack)
        # The timer restarts after a notification: another one follows after another TTL.
        again = p4rt.next("idle_timeout_notification", timeout=5)
        assert notified_ports(again, p4rt.schema) == [1001]
    finally:
        p4rt.delete([aging, forever])


def test_hits_keep_an_entry_alive(p4rt: Client, target: TargetHandle) -> None:
    if not target.has_packets:
        pytest.skip(target.packets_reason)
    # The busy entry's TTL leaves room for a slow machine between two hits.
    busy, idle = flow(2001, 4 * TTL_NS), flow(2002, TTL_NS)
    l2 = Entry.make(names.L2_FORWARD, {"eth_dst": Exact(2)}, names.SET_EGRESS_PORT, {"port": 2})
    p4rt.insert([l2, busy, idle])
    try:
        notified: list[int] = []
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            target.send(1, frame(2001))
            time.sleep(0.05)
            for msg in p4rt.drain():
                if msg.WhichOneof("update") == "idle_timeout_notification":
                    notified += notified_ports(msg, p4rt.schema)
        assert 2002 in notified
        assert 2001 not in notified
    finally:
        p4rt.delete([l2, busy, idle])
        for port in DATA_PORTS:
            target.receive(port)


def punt_everything(p4rt: Client) -> Entry:
    """Make the ACL default send every IP packet to the controller."""
    service = Entry.make(names.ACL, None, names.ACL_SERVICE, {"rule_id": 42}, is_default=True)
    p4rt.write([p4rt.update(Update.MODIFY, service)])
    return Entry.make(names.ACL, None, names.ACL_DROP, {"rule_id": 0}, is_default=True)


def test_packet_in_goes_to_the_primary_only(p4rt: Client, target: TargetHandle) -> None:
    if not target.has_packets:
        pytest.skip(target.packets_reason)
    backup = Client(target.address, target.device_id, next_election())
    backup.election.low -= 10**6  # lower than the primary's, and than any other in use
    restore = punt_everything(p4rt)
    try:
        assert backup.arbitrate().status.code == rpc_code.ALREADY_EXISTS
        target.send(1, frame(3001))
        payload, meta = p4rt.packet_in()
        assert payload == frame(3001)
        assert meta["reason"] == 2 and meta["rule_id"] == 42 and meta["ingress_port"] == 1
        time.sleep(0.2)
        assert not [m for m in backup.drain() if m.WhichOneof("update") == "packet"]
    finally:
        backup.close()
        p4rt.write([p4rt.update(Update.MODIFY, restore)])


def test_packet_out_from_a_backup_is_dropped(p4rt: Client, target: TargetHandle) -> None:
    if not target.has_packets:
        pytest.skip(target.packets_reason)
    backup = Client(target.address, target.device_id, next_election())
    backup.election.low -= 10**6
    try:
        assert backup.arbitrate().status.code == rpc_code.ALREADY_EXISTS
        backup.schema = p4rt.schema
        backup.packet_out(frame(4001), egress_port=2, flags=0)
        time.sleep(0.3)
        assert target.receive(2) == []
        errors = [m.error for m in backup.drain() if m.WhichOneof("update") == "error"]
        assert all(e.canonical_code == rpc_code.PERMISSION_DENIED for e in errors)
    finally:
        backup.close()


def test_packet_out_with_bad_metadata(p4rt: Client, target: TargetHandle) -> None:
    if not target.has_packets:
        pytest.skip(target.packets_reason)
    msg = p4r.StreamMessageRequest()
    msg.packet.payload = frame(5001)
    msg.packet.metadata.add(metadata_id=99, value=b"\x02")
    p4rt.send(msg)
    p4rt.packet_out(frame(5002), flags=0)  # no egress_port
    time.sleep(0.3)
    for port in DATA_PORTS:
        assert target.receive(port) == []
    errors = [m.error for m in p4rt.drain() if m.WhichOneof("update") == "error"]
    for error in errors:
        assert error.canonical_code == rpc_code.INVALID_ARGUMENT
        assert error.WhichOneof("details") == "packet_out"


def test_packet_out_then_in_roundtrip(p4rt: Client, target: TargetHandle) -> None:
    """A PacketOut to port 2 comes out of port 2 unchanged, however many are sent."""
    if not target.has_packets:
        pytest.skip(target.packets_reason)
    frames = [frame(6000 + i) for i in range(20)]
    for f in frames:
        p4rt.packet_out(f, egress_port=2, flags=0)
    got: list[bytes] = []
    deadline = time.monotonic() + 3
    while len(got) < len(frames) and time.monotonic() < deadline:
        got += target.receive(2)
        time.sleep(0.01)
    assert got == frames
    with pytest.raises(queue.Empty):
        p4rt.next("packet", timeout=0.1)

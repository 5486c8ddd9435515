"""Client arbitration, pipeline configs and capabilities, over P4Runtime (spec sections 5, 7).

Election ids come from `next_election()`, each higher than the last, so these tests work on a
target that has seen other controllers before.
"""

from __future__ import annotations

import re

import grpc
import pytest
from vectors.p4rt import Client, Election, WriteError
from vectors.session import load_p4info, next_election
from vectors.targets import TargetHandle

from offload import names
from offload.entries import Entry, Exact
from offload.proto import p4i, p4r, rpc_code

Action = p4r.SetForwardingPipelineConfigRequest.Action
ResponseType = p4r.GetForwardingPipelineConfigRequest.ResponseType


def l2_entry(mac: int, port: int = 1) -> Entry:
    return Entry.make(
        names.L2_FORWARD, {"eth_dst": Exact(mac)}, names.SET_EGRESS_PORT, {"port": port}
    )


def client(target: TargetHandle, election: Election | None = None) -> Client:
    return Client(target.address, target.device_id, election or next_election())


def test_primary_and_backup(target: TargetHandle, p4rt: Client) -> None:
    primary = client(target)
    backup = client(target, Election(0, 1))  # lower than anything next_election() gives
    try:
        arb = primary.arbitrate()
        assert arb.status.code == rpc_code.OK
        assert arb.device_id == target.device_id
        assert (arb.election_id.high, arb.election_id.low) == (
            primary.election.high,
            primary.election.low,
        )
        seen = backup.arbitrate()
        assert seen.status.code == rpc_code.ALREADY_EXISTS
        # The backup learns the primary's election id, not its own.
        assert seen.election_id.low == primary.election.low
        # Only the primary writes.
        backup.schema = p4rt.schema
        with pytest.raises(WriteError) as info:
            backup.insert([l2_entry(0xA1)])
        assert info.value.code == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.RpcError) as denied:
            backup.set_pipeline(load_p4info(target.p4info_path), target.device_config)
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
        # Everyone may read.
        assert backup.read_table(names.L2_FORWARD) == []
    finally:
        backup.close()
        primary.close()


def test_higher_election_id_takes_over_and_everyone_is_told(
    target: TargetHandle, p4rt: Client
) -> None:
    first = client(target)
    second = client(target)
    try:
        assert first.arbitrate().status.code == rpc_code.OK
        assert second.arbitrate().status.code == rpc_code.OK
        demoted = first.next("arbitration").arbitration
        assert demoted.status.code == rpc_code.ALREADY_EXISTS
        assert demoted.election_id.low == second.election.low
        # The old primary's writes are refused now.
        first.schema = second.schema = p4rt.schema
        with pytest.raises(WriteError) as info:
            first.insert([l2_entry(0xA2)])
        assert info.value.code == grpc.StatusCode.PERMISSION_DENIED
    finally:
        first.close()
        second.close()


def test_primary_leaving_leaves_no_primary(target: TargetHandle) -> None:
    backup = client(target, Election(0, 2))
    primary = client(target)
    try:
        assert primary.arbitrate().status.code == rpc_code.OK
        assert backup.arbitrate().status.code == rpc_code.ALREADY_EXISTS
        primary.close()
        note = backup.next("arbitration").arbitration
        assert note.status.code == rpc_code.NOT_FOUND
        # election_id still tells the highest id the device has seen.
        assert note.election_id.low == primary.election.low
    finally:
        backup.close()


def test_primary_demoting_itself(target: TargetHandle) -> None:
    primary = client(target)
    try:
        assert primary.arbitrate().status.code == rpc_code.OK
        lower = Election(0, 3)
        note = primary.arbitrate(lower)
        assert note.status.code == rpc_code.NOT_FOUND
    finally:
        primary.close()


def test_duplicate_election_id_ends_the_stream(target: TargetHandle) -> None:
    election = next_election()
    first, second = client(target, election), client(target, election)
    try:
        assert first.arbitrate().status.code == rpc_code.OK
        with pytest.raises(grpc.RpcError) as info:
            second.arbitrate()
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert re.search(r"election id .*\b(?:used|exists)\b", info.value.details(), re.I)
    finally:
        first.close()
        second.close()


def test_unknown_device_id(target: TargetHandle) -> None:
    stranger = client(target)
    try:
        with pytest.raises(grpc.RpcError) as info:
            stranger.arbitrate(device_id=target.device_id + 100)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        stranger.close()
    other = Client(target.address, target.device_id + 100)
    try:
        with pytest.raises(grpc.RpcError) as read:
            other.read([p4r.Entity(table_entry=p4r.TableEntry())])
        assert read.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        other.close()


def test_stream_must_start_with_arbitration(target: TargetHandle) -> None:
    early = client(target)
    try:
        msg = p4r.StreamMessageRequest()
        msg.packet.payload = b"x" * 64
        early.send(msg)
        with pytest.raises(grpc.RpcError) as info:
            early.next("arbitration")
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    finally:
        early.close()


def test_write_with_a_stale_election_id(p4rt: Client) -> None:
    p4rt.election = Election(0, 4)
    with pytest.raises(WriteError) as info:
        p4rt.insert([l2_entry(0xA3)])
    assert info.value.code == grpc.StatusCode.PERMISSION_DENIED


# ------------------------------------------------------------------ pipeline config
def test_capabilities(target: TargetHandle) -> None:
    c = client(target)
    try:
        version = c.stub.Capabilities(p4r.CapabilitiesRequest(), timeout=5).p4runtime_api_version
    finally:
        c.close()
    assert re.fullmatch(r"1\.\d+\.\d+(-.+)?", version), version


def test_get_pipeline_by_response_type(target: TargetHandle, p4rt: Client) -> None:
    p4info = load_p4info(target.p4info_path)
    blob = target.device_config or b"nicfw device config"
    p4rt.set_pipeline(p4info, blob, cookie=0xC0FFEE)
    everything = p4rt.get_pipeline(ResponseType.ALL)
    assert everything.p4info == p4info
    assert everything.p4_device_config == blob
    assert everything.cookie.cookie == 0xC0FFEE
    cookie = p4rt.get_pipeline(ResponseType.COOKIE_ONLY)
    assert cookie.cookie.cookie == 0xC0FFEE
    assert not cookie.HasField("p4info") and not cookie.p4_device_config
    info = p4rt.get_pipeline(ResponseType.P4INFO_AND_COOKIE)
    assert info.p4info == p4info and not info.p4_device_config
    device = p4rt.get_pipeline(ResponseType.DEVICE_CONFIG_AND_COOKIE)
    assert device.p4_device_config == blob and not device.HasField("p4info")


def foreign(p4info: p4i.P4Info, change: str) -> p4i.P4Info:
    """A P4Info that is not firewall.p4's."""
    other = p4i.P4Info()
    other.CopyFrom(p4info)
    if change == "extra table":
        extra = other.tables.add()
        extra.CopyFrom(other.tables[1])
        extra.preamble.id += 7
        extra.preamble.name = "FirewallIngress.other.table"
        extra.preamble.alias = "other_table"
    elif change == "width":
        other.tables[1].match_fields[0].bitwidth = 32
    elif change == "action param":
        other.actions[2].params[0].name = "egress"
    elif change == "missing table":
        del other.tables[-1]
    return other


@pytest.mark.parametrize("change", ["extra table", "width", "action param", "missing table"])
def test_foreign_p4info_is_rejected(target: TargetHandle, p4rt: Client, change: str) -> None:
    p4info = foreign(load_p4info(target.p4info_path), change)
    for action in (Action.VERIFY, Action.VERIFY_AND_COMMIT):
        with pytest.raises(grpc.RpcError) as info:
            p4rt.set_pipeline(p4info, target.device_config, action=action)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_verify_changes_nothing_and_commit_clears(target: TargetHandle, p4rt: Client) -> None:
    p4info = load_p4info(target.p4info_path)
    p4rt.insert([l2_entry(0xB1)])
    p4rt.set_pipeline(p4info, target.device_config, action=Action.VERIFY)
    assert len(p4rt.read_table(names.L2_FORWARD)) == 1
    p4rt.set_pipeline(p4info, target.device_config, action=Action.VERIFY_AND_COMMIT)
    assert p4rt.read_table(names.L2_FORWARD) == []


def test_save_then_commit(target: TargetHandle, p4rt: Client) -> None:
    p4info = load_p4info(target.p4info_path)
    p4rt.insert([l2_entry(0xB2)])
    p4rt.set_pipeline(p4info, target.device_config, action=Action.VERIFY_AND_SAVE, cookie=5)
    assert len(p4rt.read_table(names.L2_FORWARD)) == 1
    req = p4r.SetForwardingPipelineConfigRequest(device_id=p4rt.device_id, action=Action.COMMIT)
    req.election_id.CopyFrom(p4rt.election.message())
    p4rt.stub.SetForwardingPipelineConfig(req, timeout=10)
    assert p4rt.read_table(names.L2_FORWARD) == []
    assert p4rt.get_pipeline(ResponseType.COOKIE_ONLY).cookie.cookie == 5
    with pytest.raises(grpc.RpcError) as info:  # nothing saved any more
        p4rt.stub.SetForwardingPipelineConfig(req, timeout=10)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_reconcile_keeps_entries_under_new_ids(target: TargetHandle, p4rt: Client) -> None:
    p4info = load_p4info(target.p4info_path)
    p4rt.insert([l2_entry(0xB3, 2)])
    renumbered = p4i.P4Info()
    renumbered.CopyFrom(p4info)
    for table in renumbered.tables:
        if table.preamble.name == names.L2_FORWARD:
            table.preamble.id = 0x02ABCDEF  # what another p4c run could assign
    try:
        p4rt.set_pipeline(renumbered, target.device_config, action=Action.RECONCILE_AND_COMMIT)
    except grpc.RpcError as exc:  # optional in the spec
        assert exc.code() == grpc.StatusCode.UNIMPLEMENTED
        p4rt.delete([l2_entry(0xB3, 2)])
        return
    (entry,) = p4rt.read_table(names.L2_FORWARD)
    assert entry.table_id == 0x02ABCDEF
    p4rt.delete([l2_entry(0xB3, 2)])
    p4rt.set_pipeline(p4info, target.device_config)


def test_no_pipeline_yet() -> None:
    """A fresh software target: every entity RPC says the pipeline is missing, as BMv2 does."""
    from offload.target import SoftwareTarget

    with SoftwareTarget("127.0.0.1:0") as fresh:
        c = Client(fresh.address)
        try:
            assert c.arbitrate().status.code == rpc_code.OK
            with pytest.raises(grpc.RpcError) as get:
                c.get_pipeline()
            assert get.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert re.search(r"no .*\bforwarding pipeline config", get.value.details(), re.I)
            with pytest.raises(grpc.RpcError) as read:
                c.read([p4r.Entity(table_entry=p4r.TableEntry())])
            assert read.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            with pytest.raises(WriteError) as write:
                c.write([])
            assert write.value.code == grpc.StatusCode.FAILED_PRECONDITION
        finally:
            c.close()

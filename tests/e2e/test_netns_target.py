"""Two hosts in network namespaces, joined through the software target by veth pairs.

    [ns h1: veth 10.0.0.1] --- veth ---> target port 1 | port 2 <--- veth --- [ns h2: 10.0.0.2]

The firewall allows ICMP and TCP to port 5001 (and its replies) and nothing else: ping and a
1 MB transfer get through, a connection to port 5002 does not, and the ACL counters move.
ARP goes through l2_forward's broadcast entry and a multicast group. Needs root and `ip`;
the namespaces, named uniquely per run, are always removed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import time
from collections.abc import Iterator

import pytest
from netns import ADDR, CLIENT, MAC, PING, SERVER, Topology, hosts
from vectors.p4rt import Client, Update
from vectors.session import load_p4info, next_election
from vectors.targets import P4INFO

from offload import names
from offload.entries import Entry, Exact, Optional, Range
from offload.proto import p4r, rpc_code
from offload.target import SoftwareTarget

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root"),
    pytest.mark.skipif(shutil.which("ip") is None, reason="`ip` (iproute2) is not installed"),
]

ALLOWED_PORT, DENIED_PORT = 5001, 5002
TRANSFER = 1 << 20


@pytest.fixture(scope="module")
def topology() -> Iterator[Topology]:
    with hosts(f"{os.getpid() % 100000}") as topo:
        yield topo


def l2(mac: str, port: int) -> Entry:
    value = int(mac.replace(":", ""), 16)
    return Entry.make(
        names.L2_FORWARD, {"eth_dst": Exact(value)}, names.SET_EGRESS_PORT, {"port": port}
    )


def acl(priority: int, rule: int, **match: Optional | Range) -> Entry:
    return Entry.make(names.ACL, match, names.ACL_ALLOW, {"rule_id": rule}, priority=priority)


ICMP_RULE = acl(30, 1, ip_proto=Optional(1))
TCP_TO_RULE = acl(20, 2, ip_proto=Optional(6), l4_dst=Range(ALLOWED_PORT, ALLOWED_PORT))
TCP_FROM_RULE = acl(20, 3, ip_proto=Optional(6), l4_src=Range(ALLOWED_PORT, ALLOWED_PORT))
BROADCAST = Entry.make(
    names.L2_FORWARD, {"eth_dst": Exact(0xFFFFFFFFFFFF)}, names.SET_MCAST_GROUP, {"group": 1}
)


@pytest.fixture(scope="module")
def firewall(topology: Topology) -> Iterator[tuple[SoftwareTarget, Client]]:
    target = SoftwareTarget("127.0.0.1:0", interfaces=topology.switch_if)
    target.start()
    client = Client(target.address, election=next_election())
    try:
        assert client.arbitrate().status.code == rpc_code.OK
        client.set_pipeline(load_p4info(P4INFO))
        client.write([client.group_update(Update.INSERT, 1, [1, 2])])
        client.insert([l2(MAC[1], 1), l2(MAC[2], 2), BROADCAST])
        client.insert([ICMP_RULE, TCP_TO_RULE, TCP_FROM_RULE])
        yield target, client
    finally:
        client.close()
        target.stop()


def counters(client: Client) -> dict[int, tuple[int, int]]:
    """ACL counters by rule id: (packets, bytes)."""
    out = {}
    for entry in client.read_table(names.ACL, counters=True):
        rule = int.from_bytes(entry.action.action.params[0].value, "big")
        out[rule] = (entry.counter_data.packet_count, entry.counter_data.byte_count)
    return out


def test_ping(topology: Topology, firewall: tuple[SoftwareTarget, Client]) -> None:
    _target, client = firewall
    before = counters(client)[1]
    ping = topology.run(1, sys.executable, "-c", PING, ADDR[2], "3")
    assert ping.returncode == 0, ping.stdout + ping.stderr
    after = counters(client)[1]
    assert after[0] - before[0] >= 6  # 3 requests and 3 replies hit the ICMP rule


def test_tcp_transfer_of_1mb(topology: Topology, firewall: tuple[SoftwareTarget, Client]) -> None:
    _target, client = firewall
    before = counters(client)[2]
    server = topology.popen(2, sys.executable, "-c", SERVER, str(ALLOWED_PORT), str(TRANSFER))
    try:
        assert server.stdout is not None
        assert server.stdout.readline().strip() == "ready"
        started = time.monotonic()
        run = topology.run(
            1, sys.executable, "-c", CLIENT, ADDR[2], str(ALLOWED_PORT), str(TRANSFER), "20",
            timeout=40,
        )  # fmt: skip
        elapsed = time.monotonic() - started
        assert run.returncode == 0, run.stderr
        total, digest = run.stdout.split()
        expected = hashlib.sha256(bytes(range(256)) * (TRANSFER // 256)).hexdigest()
        assert (int(total), digest) == (TRANSFER, expected)
        assert elapsed < 30
    finally:
        server.kill()
        server.wait()
    after = counters(client)[2]
    assert after[1] - before[1] >= TRANSFER  # the data segments crossed the ACL rule


def test_denied_port(topology: Topology, firewall: tuple[SoftwareTarget, Client]) -> None:
    target, _client = firewall
    server = topology.popen(2, sys.executable, "-c", SERVER, str(DENIED_PORT), "1")
    try:
        assert server.stdout is not None
        assert server.stdout.readline().strip() == "ready"
        drops = target.stats()["drops"].get("acl_drop", 0)
        run = topology.run(1, sys.executable, "-c", CLIENT, ADDR[2], str(DENIED_PORT), "256", "2")
        assert run.returncode != 0  # the SYN never arrives: the connection times out
        assert "timed out" in run.stderr
        assert target.stats()["drops"].get("acl_drop", 0) > drops
    finally:
        server.kill()
        server.wait()


def test_target_saw_no_port_errors(firewall: tuple[SoftwareTarget, Client]) -> None:
    target, client = firewall
    assert target.stats()["port_errors"] == {}
    assert client.read([p4r.Entity(table_entry=p4r.TableEntry())])

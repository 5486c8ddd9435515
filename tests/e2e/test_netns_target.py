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
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
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

MAC = {1: "02:00:00:00:00:01", 2: "02:00:00:00:00:02"}
ADDR = {1: "10.0.0.1", 2: "10.0.0.2"}
ALLOWED_PORT, DENIED_PORT = 5001, 5002
TRANSFER = 1 << 20


def sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=30)


@dataclass
class Topology:
    """The namespaces and the root-side veth ends attached to the target."""

    ns: dict[int, str]
    switch_if: dict[int, str]
    host_if: dict[int, str]

    def run(self, host: int, *cmd: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", self.ns[host], *cmd],
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def popen(self, host: int, *cmd: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            ["ip", "netns", "exec", self.ns[host], *cmd],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )


@pytest.fixture(scope="module")
def topology() -> Iterator[Topology]:
    tag = f"{os.getpid() % 100000}"
    topo = Topology(
        ns={h: f"nicfw-h{h}-{tag}" for h in (1, 2)},
        switch_if={h: f"nfs{h}-{tag}" for h in (1, 2)},
        host_if={h: f"nfh{h}-{tag}" for h in (1, 2)},
    )
    try:
        for h in (1, 2):
            ns, sw, host = topo.ns[h], topo.switch_if[h], topo.host_if[h]
            sh("ip", "netns", "add", ns)
            sh("ip", "link", "add", host, "type", "veth", "peer", "name", sw)
            sh("ip", "link", "set", host, "netns", ns)
            sh("ip", "link", "set", sw, "up")
            # Keep the root namespace's own IPv6 chatter off the test link.
            sh("sysctl", "-q", "-w", f"net.ipv6.conf.{sw}.disable_ipv6=1", check=False)
            inside = ["ip", "netns", "exec", ns]
            sh(*inside, "ip", "link", "set", host, "address", MAC[h])
            sh(*inside, "ip", "addr", "add", f"{ADDR[h]}/24", "dev", host)
            sh(*inside, "ip", "link", "set", host, "up")
            sh(*inside, "ip", "link", "set", "lo", "up")
            # Frames must leave the host complete: no segmentation or checksum offload
            # (a software switch on AF_PACKET sees them before the NIC would have).
            if shutil.which("ethtool"):
                sh(*inside, "ethtool", "-K", host, "tx", "off", "tso", "off", "gso", "off",
                   check=False)  # fmt: skip
        yield topo
    finally:
        for h in (1, 2):
            subprocess.run(["ip", "netns", "del", topo.ns[h]], capture_output=True)
            subprocess.run(["ip", "link", "del", topo.switch_if[h]], capture_output=True)


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


# `ping` (iputils) is not always installed; this is the same ICMP echo, from a raw socket.
PING = textwrap.dedent(
    """
    import os, socket, struct, sys, time

    def checksum(data):
        total = sum(struct.unpack(f"!{len(data) // 2}H", data))
        while total >> 16:
            total = (total & 0xFFFF) + (total >> 16)
        return ~total & 0xFFFF

    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    s.settimeout(2)
    ident, replies = os.getpid() & 0xFFFF, 0
    for seq in range(1, int(sys.argv[2]) + 1):
        body = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + b"nicfw-ping-" * 4
        body = body[:2] + struct.pack("!H", checksum(body)) + body[4:]
        s.sendto(body, (sys.argv[1], 0))
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            try:
                packet = s.recv(2048)
            except socket.timeout:
                break
            icmp = packet[(packet[0] & 15) * 4:]
            if icmp[0] == 0 and struct.unpack("!HH", icmp[4:8]) == (ident, seq):
                replies += 1
                break
        time.sleep(0.1)
    print(replies)
    sys.exit(0 if replies == int(sys.argv[2]) else 1)
    """
)


def test_ping(topology: Topology, firewall: tuple[SoftwareTarget, Client]) -> None:
    _target, client = firewall
    before = counters(client)[1]
    ping = topology.run(1, sys.executable, "-c", PING, ADDR[2], "3")
    assert ping.returncode == 0, ping.stdout + ping.stderr
    after = counters(client)[1]
    assert after[0] - before[0] >= 6  # 3 requests and 3 replies hit the ICMP rule


SERVER = textwrap.dedent(
    """
    import hashlib, socket, sys
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", int(sys.argv[1])))
    s.listen(1)
    print("ready", flush=True)
    conn, _ = s.accept()
    digest, total = hashlib.sha256(), 0
    while chunk := conn.recv(65536):
        digest.update(chunk)
        total += len(chunk)
        if total >= int(sys.argv[2]):
            break
    conn.sendall(f"{total} {digest.hexdigest()}".encode())
    conn.close()
    """
)

CLIENT = textwrap.dedent(
    """
    import os, socket, sys
    data = bytes(range(256)) * (int(sys.argv[3]) // 256)
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[4]))
    s.sendall(data)
    print(s.recv(1024).decode())
    """
)


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

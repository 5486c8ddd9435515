"""Network namespaces for the e2e tests: hosts behind veth pairs, and traffic scripts.

    [ns h1: veth 10.0.0.1] --- veth ---> switch side 1 | switch side 2 <--- veth --- [ns h2]

`hosts(tag)` creates the namespaces and veth pairs (named uniquely per run) and always removes
them; `veth_pair` adds a root-side pair (a service port and its peer). Needs root and `ip`.
"""

from __future__ import annotations

import shutil
import subprocess
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

MAC = {1: "02:00:00:00:00:01", 2: "02:00:00:00:00:02"}
ADDR = {1: "10.0.0.1", 2: "10.0.0.2"}


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

    def popen(self, host: int, *cmd: str, stdin: int | None = None) -> subprocess.Popen[str]:
        return subprocess.Popen(
            ["ip", "netns", "exec", self.ns[host], *cmd],
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def static_arp(self) -> None:
        """Each host knows the other's MAC: no ARP through the switch."""
        for h, other in ((1, 2), (2, 1)):
            self.run(h, "ip", "neigh", "replace", ADDR[other], "lladdr", MAC[other], "dev",
                     self.host_if[h], "nud", "permanent")  # fmt: skip


def _no_offloads(*prefix: str, dev: str) -> None:
    # Frames must leave the host complete: no segmentation or checksum offload (a software
    # switch on AF_PACKET sees them before the NIC would have).
    if shutil.which("ethtool"):
        sh(*prefix, "ethtool", "-K", dev, "tx", "off", "tso", "off", "gso", "off", check=False)


@contextmanager
def hosts(tag: str, prefix: str = "nicfw") -> Iterator[Topology]:
    """Two hosts (ADDR, MAC) in namespaces, each behind a veth pair whose root end is free."""
    topo = Topology(
        ns={h: f"{prefix}-h{h}-{tag}" for h in (1, 2)},
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
            _no_offloads(*inside, dev=host)
        yield topo
    finally:
        for h in (1, 2):
            subprocess.run(["ip", "netns", "del", topo.ns[h]], capture_output=True)
            subprocess.run(["ip", "link", "del", topo.switch_if[h]], capture_output=True)


@contextmanager
def veth_pair(a: str, b: str, mtu: int = 1500) -> Iterator[tuple[str, str]]:
    """A veth pair in the root namespace, both ends up, no IPv6, removed afterwards."""
    try:
        sh("ip", "link", "add", a, "type", "veth", "peer", "name", b)
        for dev in (a, b):
            sh("sysctl", "-q", "-w", f"net.ipv6.conf.{dev}.disable_ipv6=1", check=False)
            sh("ip", "link", "set", dev, "mtu", str(mtu))
            sh("ip", "link", "set", dev, "up")
            _no_offloads(dev=dev)
        yield a, b
    finally:
        subprocess.run(["ip", "link", "del", a], capture_output=True)


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
    if len(sys.argv) > 3:  # keep the connection: echo whatever comes next
        while chunk := conn.recv(65536):
            conn.sendall(chunk)
    conn.close()
    """
)

CLIENT = textwrap.dedent(
    """
    import os, socket, sys
    data = bytes(range(256)) * (int(sys.argv[3]) // 256)
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[4]))
    s.sendall(data)
    print(s.recv(1024).decode(), flush=True)
    if len(sys.argv) > 5:  # hold the connection; on each stdin line, ping it through
        s.settimeout(float(sys.argv[5]))
        for line in sys.stdin:
            try:
                s.sendall(line.encode())
                print("alive" if s.recv(1024) == line.encode() else "garbled", flush=True)
            except OSError as exc:
                print(f"cut {exc}", flush=True)
    """
)

"""What only the nicfw software target has: its command line, pcap replay, robustness."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import ARP, Ether
from scapy.utils import rdpcap, wrpcap
from vectors.p4rt import Client, Update
from vectors.pipeline_vectors import VECTORS
from vectors.session import load_p4info, next_election
from vectors.targets import P4INFO

from offload import names
from offload.entries import Entry, Exact, Optional, Range
from offload.proto import p4r, rpc_code
from offload.target import SoftwareTarget

H1, H2 = "00:00:00:00:00:01", "00:00:00:00:00:02"
ALLOWED = bytes(Ether(src=H1, dst=H2) / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(dport=80))
DENIED = bytes(Ether(src=H1, dst=H2) / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(dport=81))
ARP_REQ = bytes(Ether(src=H1, dst=H2) / ARP(psrc="10.0.0.1", pdst="10.0.0.2"))
ENTRIES = [
    Entry.make(names.L2_FORWARD, {"eth_dst": Exact(2)}, names.SET_EGRESS_PORT, {"port": 2}),
    Entry.make(
        names.ACL,
        {"ip_proto": Optional(6), "l4_dst": Range(80, 80)},
        names.ACL_ALLOW,
        {"rule_id": 1},
        priority=10,
    ),
]


def start_cli(*args: str) -> tuple[subprocess.Popen[str], str]:
    """Run `python -m offload.target` and wait for the address it listens on."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "offload.target", "--grpc-server-addr", "127.0.0.1:0", *args],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        found = re.search(r"listening on (\S+)", line)
        if found:
            return proc, found.group(1)
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError("the target did not report its address")


def stop_cli(proc: subprocess.Popen[str]) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_command_line(tmp_path: Path) -> None:
    proc, address = start_cli("--device-id", "3", "--cpu-port", "200", "--log-level", "warning")
    try:
        c = Client(address, device_id=3, election=next_election())
        try:
            reply = c.stub.Capabilities(p4r.CapabilitiesRequest(), timeout=5)
            assert reply.p4runtime_api_version
            assert c.arbitrate().status.code == rpc_code.OK
            c.set_pipeline(load_p4info(P4INFO))
            c.insert(ENTRIES[:1])
            assert len(c.read_table(names.L2_FORWARD)) == 1
        finally:
            c.close()
    finally:
        assert stop_cli(proc) == 0


@pytest.mark.parametrize(
    "args, message",
    [
        (["-i", "one@veth1"], "PORT@IFACE"),
        (["-i", "1@nicfw-no-such-if"], "nicfw-no-such-if"),
        (["-i", "255@lo"], "CPU port"),
    ],
)
def test_command_line_errors(args: list[str], message: str) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "offload.target", "--grpc-server-addr", "127.0.0.1:0", *args],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.returncode != 0
    assert message in run.stderr


def install(address: str) -> Client:
    c = Client(address, election=next_election())
    assert c.arbitrate().status.code == rpc_code.OK
    c.set_pipeline(load_p4info(P4INFO))
    c.insert(ENTRIES)
    return c


def test_pcap_replay(tmp_path: Path) -> None:
    wrpcap(str(tmp_path / "port1_in.pcap"), [Ether(f) for f in (ALLOWED, DENIED, ARP_REQ)])
    with SoftwareTarget("127.0.0.1:0", pcap_dir=tmp_path) as target:
        c = install(target.address)
        try:
            assert target.replay_pcaps() == 3
        finally:
            c.close()
        out = [bytes(p) for p in rdpcap(str(tmp_path / "port2_out.pcap"))]
        assert out == [ALLOWED, ARP_REQ]
        assert target.stats()["drops"] == {"acl_drop": 1}


def test_pcap_replay_from_the_command_line(tmp_path: Path) -> None:
    wrpcap(str(tmp_path / "port1_in.pcap"), [Ether(ALLOWED), Ether(DENIED)])
    proc, address = start_cli("--pcap-dir", str(tmp_path), "--pcap-wait", "3")
    try:
        install(address).close()
        output = tmp_path / "port2_out.pcap"
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if output.exists() and output.stat().st_size > 24:
                break
            time.sleep(0.1)
        assert [bytes(p) for p in rdpcap(str(output))] == [ALLOWED]
    finally:
        assert stop_cli(proc) == 0


def test_garbage_never_crashes_the_target() -> None:
    """Random bytes and mangled vector frames into every port: no exception, target alive."""
    rng = random.Random(1234)
    frames = [rng.randbytes(rng.randrange(0, 120)) for _ in range(1500)]
    for vector in VECTORS:
        for _ in range(20):
            mangled = bytearray(vector.packet)
            for _ in range(rng.randrange(1, 4)):
                if mangled:
                    mangled[rng.randrange(len(mangled))] = rng.randrange(256)
            frames.append(bytes(mangled[: rng.randrange(len(mangled) + 1)]))
    with SoftwareTarget("127.0.0.1:0", p4info=P4INFO) as target:
        c = install(target.address)
        try:
            service = Entry.make(
                names.SERVICE_CONFIG, None, names.SET_SERVICE_PORT, {"port": 7}, is_default=True
            )
            punt = Entry.make(names.ACL, None, names.ACL_SERVICE, {"rule_id": 0}, is_default=True)
            c.write([c.update(Update.MODIFY, punt)])
            for i, frame in enumerate(frames):
                if i == len(frames) // 2:
                    c.write([c.update(Update.MODIFY, service)])
                for port in (1, 7, 255):
                    for egress, data in target.inject(port, frame):
                        assert 0 <= egress < 511 and isinstance(data, bytes)
            assert target.stats()["drops"].get("internal_error", 0) == 0
            assert target.stats()["drops"]["parser_error"] > 0
            assert len(c.read_table(names.ACL)) == 1  # still answering
        finally:
            c.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="raw sockets need root (CAP_NET_RAW)")
def test_raw_port_on_loopback() -> None:
    """An interface port opens, and stops cleanly (traffic itself: tests/e2e)."""
    with SoftwareTarget("127.0.0.1:0", interfaces={1: "lo"}) as target:
        assert target.stats()["port_errors"] == {}

"""The DPDK fast path on a live service port: a veth pair, net_af_packet, frames in real time.

The test creates a veth pair (and removes it), runs nicfw-fastpath on one end through
net_af_packet, and plays the pipeline on the other end with a raw socket: it sends
service-encapsulated frames and reads back what the fast path re-injects. Unlike the pcap tests
this lets a test change the rule set between packets: resimulation, flush, idle timeouts.
Needs root (veth, AF_PACKET) and the built binary.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Packet, Raw

from dpdk_app import fastpath
from dpdk_app.fastpath import (
    ControlClient,
    CtState,
    FastPath,
    FastPathError,
    ServiceHeader,
    decapsulate,
    encapsulate,
    make_flow_del,
    make_rule,
)
from dpdk_app.layout import ACT_ALLOW, ACT_DROP, EV_END, EV_NEW, EV_UPDATE

BINARY = fastpath.find_binary()
ETH_P_SERVICE = 0x88B5
PACKET_OUTGOING = 4

pytestmark = [
    pytest.mark.dpdk,
    pytest.mark.netns,
    pytest.mark.skipif(BINARY is None, reason="nicfw-fastpath is not built (make dpdk)"),
    pytest.mark.skipif(os.geteuid() != 0, reason="veth pairs and AF_PACKET need root"),
    pytest.mark.skipif(shutil.which("ip") is None, reason="iproute2 (ip) is not installed"),
]

L2 = Ether(src="02:00:00:00:00:0a", dst="02:00:00:00:00:0b")
C, S = "10.1.0.1", "10.2.0.1"


@pytest.fixture
def veth() -> Iterator[tuple[str, str]]:
    """A veth pair (fast path end, pipeline end) that exists for one test."""
    a, b = f"nfp{os.getpid() % 100000}a", f"nfp{os.getpid() % 100000}b"
    subprocess.run(["ip", "link", "del", a], capture_output=True, check=False)
    made = subprocess.run(
        ["ip", "link", "add", a, "type", "veth", "peer", "name", b], capture_output=True
    )
    if made.returncode != 0:
        pytest.skip(f"cannot create a veth pair: {made.stderr.decode().strip()}")
    try:
        for dev in (a, b):
            # No IPv6 autoconfiguration chatter on the service port.
            with open(f"/proc/sys/net/ipv6/conf/{dev}/disable_ipv6", "w") as fh:
                fh.write("1")
            subprocess.run(["ip", "link", "set", dev, "up"], check=True)
        yield a, b
    finally:
        subprocess.run(["ip", "link", "del", a], capture_output=True, check=False)


@dataclass
class Pipeline:
    """The pipeline's end of the service port: sends frames, reads re-injected ones."""

    sock: socket.socket
    ctl: ControlClient
    sent: int = 0

    def exchange(self, *pkts: Packet, reason: int = 1) -> dict[int, tuple[ServiceHeader, bytes]]:
        """Send frames i = 0.. (egress port 1000 + i); return the re-injected ones by i."""
        base = self.ctl.stats()["rx"]
        for i, pkt in enumerate(pkts):
            self.sock.send(encapsulate(bytes(pkt), ServiceHeader(2000 + i, 1000 + i, reason)))
        self.wait_decided(base + len(pkts))
        out = {}
        for frame in self.drain():
            got = decapsulate(frame)
            if got and 1000 <= got[0].egress_port < 2000:
                out[got[0].egress_port - 1000] = got
        return out

    def wait_decided(self, rx: int, timeout: float = 10.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            st = self.ctl.stats()
            if st["rx"] >= rx and st["allowed"] + st["dropped"] + st["rejected"] == st["rx"]:
                return st
            assert time.monotonic() < deadline, f"fast path saw {st['rx']} of {rx} frames"
            time.sleep(0.005)

    def drain(self, quiet: float = 0.05) -> list[bytes]:
        frames = []
        self.sock.settimeout(quiet)
        while True:
            try:
                data, addr = self.sock.recvfrom(65536)
            except TimeoutError:
                return frames
            if addr[2] != PACKET_OUTGOING:
                frames.append(data)


@pytest.fixture
def open_port(veth: tuple[str, str]) -> Iterator[Callable[..., tuple[FastPath, Pipeline]]]:
    """Start the fast path on the veth pair with the given options: (FastPath, Pipeline)."""
    started: list[tuple[FastPath, socket.socket, ControlClient]] = []

    def start(*options: str) -> tuple[FastPath, Pipeline]:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_SERVICE))
        sock.bind((veth[1], 0))
        fp = FastPath([f"net_af_packet0,iface={veth[0]}"], options=options)
        try:
            fp.start(timeout=30)
        except Exception:
            fp.close()
            sock.close()
            raise
        ctl = fp.client()
        started.append((fp, sock, ctl))
        return fp, Pipeline(sock, ctl)

    yield start
    for fp, sock, ctl in started:
        ctl.close()
        sock.close()
        try:
            assert fp.alive(), fp.log()
            assert fp.stop() == 0, fp.log()
        finally:
            fp.close()


def tcp(src: str, dst: str, sport: int, dport: int, flags: str, payload: bytes = b"") -> Packet:
    pkt = L2 / IP(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags=flags)
    return pkt / Raw(payload) if payload else pkt


def handshake(sport: int, dport: int) -> list[Packet]:
    return [
        tcp(C, S, sport, dport, "S"),
        tcp(S, C, dport, sport, "SA"),
        tcp(C, S, sport, dport, "A"),
    ]


def web_rules(http_id: int = 10, https_id: int = 11, http: bool = True) -> np.ndarray:
    rules = [make_rule(https_id, ACT_ALLOW, src="10.1.0.0/16", proto=6, dport=(443, 443))]
    if http:
        rules.append(make_rule(http_id, ACT_ALLOW, src="10.1.0.0/16", proto=6, dport=(80, 80)))
    return np.concatenate(rules)


def test_resimulation_removes_only_flows_no_longer_allowed(open_port: Callable) -> None:
    fp, pipe = open_port()
    pipe.ctl.load_rules(web_rules())
    with fp.subscribe() as sub:
        assert set(pipe.exchange(*handshake(50000, 80), *handshake(50001, 443))) == set(range(6))
        sub.collect(until=0.5)
        # The new policy drops HTTP and allows HTTPS by another rule.
        pipe.ctl.load_rules(web_rules(https_id=12, http=False))
        res = pipe.ctl.resimulate()
        assert res.checked == 2
        gone = [(int(r["sport"]), int(r["event"]), int(r["verdict"])) for r in res.records]
        assert gone == [(50000, EV_END, ACT_DROP)]
        updates = sub.collect(until=1.0)
        assert [(int(u["sport"]), int(u["event"]), int(u["rule_id"])) for u in updates] == [
            (50001, EV_UPDATE, 12)
        ]
    flows = pipe.ctl.flow_dump().records
    assert [(int(f["sport"]), int(f["rule_id"])) for f in flows] == [(50001, 12)]
    # The removed connection's next packets are dropped, in both directions ...
    assert pipe.exchange(tcp(C, S, 50000, 80, "PA", b"x"), tcp(S, C, 80, 50000, "PA", b"y")) == {}
    # ... the connection still allowed goes on untouched.
    out = pipe.exchange(tcp(C, S, 50001, 443, "PA", b"x"), tcp(S, C, 443, 50001, "PA", b"y"))
    assert set(out) == {0, 1} and out[1][0].rule_id == 12


def test_flush_forgets_every_flow(open_port: Callable) -> None:
    _fp, pipe = open_port()
    pipe.ctl.load_rules(web_rules())
    assert len(pipe.exchange(*handshake(50010, 80), *handshake(50011, 443))) == 6
    res = pipe.ctl.flush_flows()
    assert sorted(int(r["sport"]) for r in res.records) == [50010, 50011]
    assert set(res.records["event"]) == {EV_END}
    assert pipe.ctl.stats()["flows_active"] == 0
    # Without state the server's packet is a new, unallowed flow; the client's is picked up.
    assert set(pipe.exchange(tcp(S, C, 80, 50010, "PA", b"y"))) == set()
    assert set(pipe.exchange(tcp(C, S, 50010, 80, "PA", b"x"))) == {0}


def test_idle_timeouts_end_flows_and_an_open_connection_resumes(open_port: Callable) -> None:
    fp, pipe = open_port("--udp-timeout", "1", "--tcp-est-timeout", "1")
    pipe.ctl.load_rules(
        np.concatenate([web_rules(), make_rule(13, ACT_ALLOW, proto=17, dport=(53, 53))])
    )
    with fp.subscribe() as sub:
        dns = L2 / IP(src=C, dst=S) / UDP(sport=50020, dport=53) / Raw(b"q")
        assert len(pipe.exchange(*handshake(50021, 80), dns)) == 4
        new = sub.collect(until=0.5)
        assert sorted(int(r["sport"]) for r in new if r["event"] == EV_NEW) == [50020, 50021]
        ended: dict[int, int] = {}
        deadline = time.monotonic() + 5
        while len(ended) < 2 and time.monotonic() < deadline:
            for r in sub.read(0.2):
                if r["event"] == EV_END:
                    ended[int(r["sport"])] = int(r["tcp_state"])
        assert ended == {50020: CtState.UNREPLIED, 50021: CtState.TCP_ESTABLISHED}
        # The DNS answer comes too late: its flow is gone.
        late = L2 / IP(src=S, dst=C) / UDP(sport=53, dport=50020) / Raw(b"a")
        assert pipe.exchange(late) == {}
        # The idle TCP connection is still open at both ends: the client's next segment is
        # allowed by the rules again and brings the connection back, replies included.
        out = pipe.exchange(tcp(C, S, 50021, 80, "PA", b"x"), tcp(S, C, 80, 50021, "PA", b"y"))
        assert set(out) == {0, 1}
        again = sub.collect(until=0.5)
        again = again[again["sport"] == 50021]
        assert [(int(r["event"]), int(r["tcp_state"]), int(r["rule_id"])) for r in again] == [
            (EV_NEW, CtState.TCP_ESTABLISHED, 10)
        ]


def test_flow_del_removes_both_directions_unless_seen_since(open_port: Callable) -> None:
    fp, pipe = open_port()
    pipe.ctl.load_rules(
        np.concatenate([web_rules(), make_rule(13, ACT_ALLOW, proto=17, dport=(53, 53))])
    )
    with fp.subscribe() as sub:
        dns = L2 / IP(src=C, dst=S) / UDP(sport=50030, dport=53) / Raw(b"q")
        assert len(pipe.exchange(*handshake(50031, 80), *handshake(50032, 443), dns)) == 7
        sub.collect(until=0.5)
        seen = {int(f["sport"]): int(f["last_seen_ns"]) for f in pipe.ctl.flow_dump().records}
        assert set(seen) == {50030, 50031, 50032}
        dels = np.concatenate(
            [
                # the reply direction names the same connection
                make_flow_del(S, C, 80, 50031, 6),
                # seen after the mark: alive in software, kept
                make_flow_del(C, S, 50032, 443, 6, idle_before_ns=seen[50032] - 1),
                # not seen after the mark: removed
                make_flow_del(C, S, 50030, 53, 17, idle_before_ns=seen[50030]),
                make_flow_del(C, S, 50099, 80, 6),  # unknown: nothing happens
            ]
        )
        res = pipe.ctl.flow_del(dels)
        assert res.checked == 4
        got = sorted((int(r["sport"]), int(r["event"]), int(r["tcp_state"])) for r in res.records)
        assert got == [(50030, EV_END, CtState.UNREPLIED), (50031, EV_END, CtState.TCP_ESTABLISHED)]
        streamed = sub.collect(until=0.5)
        assert sorted(int(r["sport"]) for r in streamed if r["event"] == EV_END) == [50030, 50031]
        assert pipe.ctl.flow_del(dels).records.size == 0  # already gone
        with pytest.raises(FastPathError, match="not a multiple of 48"):
            pipe.ctl.request(fastpath.MSG_FLOW_DEL, b"x" * 47)
        assert sorted(int(f["sport"]) for f in pipe.ctl.flow_dump().records) == [50032]
        # Without state the server's segment is a new, unallowed flow (both directions went);
        # the client's next segment is picked up mid-stream and brings the connection back.
        assert pipe.exchange(tcp(S, C, 80, 50031, "PA", b"y")) == {}
        out = pipe.exchange(tcp(C, S, 50031, 80, "PA", b"x"), tcp(S, C, 80, 50031, "PA", b"y"))
        assert set(out) == {0, 1}
        again = sub.collect(until=0.5)
        again = again[again["sport"] == 50031]
        assert [(int(r["event"]), int(r["tcp_state"]), int(r["rule_id"])) for r in again] == [
            (EV_NEW, CtState.TCP_ESTABLISHED, 10)
        ]


def test_a_storm_of_garbage_changes_nothing(open_port: Callable) -> None:
    fp, pipe = open_port()
    pipe.ctl.load_rules(web_rules())
    rng = random.Random(3)
    base = pipe.ctl.stats()["rx"]
    for n in range(2000):
        inner = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 120)))
        if n % 2:  # half of them look like IPv4 inside the encapsulation
            inner = bytes(L2)[:12] + b"\x08\x00\x45" + inner
        pipe.sock.send(encapsulate(inner, ServiceHeader(1, 2)))
        if n % 200 == 199:  # paced: the kernel's ring must not overflow on a busy machine
            pipe.wait_decided(base + n + 1)
    st = pipe.wait_decided(base + 2000)
    assert st["allowed"] == 0
    pipe.drain()
    assert set(pipe.exchange(*handshake(50030, 443))) == {0, 1, 2}
    assert pipe.ctl.ping()["pid"] == fp.pid

"""ICMP/ICMPv6 errors about tracked connections pass as related, in both service datapaths.

One scenario of service-encapsulated frames (scapy) runs through the DPDK app and the numba
service on net_pcap (test_dpdk_fastpath.run_pcap): a few connections the rules allow, then ICMP
errors from a router (no rule allows them) about those connections and about others, well and
badly formed, and every truncation of a quote. What must happen is written beside each frame,
from the spec (dpdk_app/README.md, "What the datapath decides", step 6): an error whose quoted
packet is a live connection's and that travels toward the quoted packet's sender is forwarded
with the connection's rule id and counted `ct_related`, without a record and without touching
the connection (FLOW_DUMP at the end: packets, bytes and state as the connection's own packets
left them); anything else goes to the rules, which drop it. The same frames also run under
AddressSanitizer. test_pyservice_differential.py replays mutated errors through both backends.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import test_dpdk_fastpath as dpdk_tests
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption
from scapy.layers.inet6 import (
    ICMPv6DestUnreach,
    ICMPv6EchoRequest,
    ICMPv6PacketTooBig,
    ICMPv6TimeExceeded,
    IPv6,
    IPv6ExtHdrDestOpt,
)
from scapy.packet import Packet, Raw

from dpdk_app import fastpath
from dpdk_app.fastpath import CtState, FastPath, make_rule
from dpdk_app.layout import ACT_ALLOW, EV_NEW

L2 = dpdk_tests.L2
C4, S4, R4 = "10.1.0.1", "10.2.0.1", "10.9.9.9"  # client, server, a router on the path
C6, S6, R6 = "2001:db8:1::1", "2001:db8:2::1", "2001:db8:9::1"
BACKENDS = (pytest.param("dpdk", marks=pytest.mark.dpdk), "numba")


def related_rules() -> np.ndarray:
    """test_dpdk_fastpath's stateful rules plus TCP 443 over IPv6; none allows the router."""
    v6 = make_rule(
        16, ACT_ALLOW, src="2001:db8:1::/48", dst="2001:db8:2::/48", proto=6, dport=(443, 443)
    )
    return np.concatenate([dpdk_tests.stateful_rules(), v6])


def seg4(sport: int, dport: int, flags: str = "A", src: str = C4, dst: str = S4) -> bytes:
    """An IPv4 TCP segment (the quoted packet of an error)."""
    return bytes(IP(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags=flags))


def seg6(sport: int, dport: int, flags: str = "S", *ext: Packet) -> bytes:
    """An IPv6 TCP segment from the client, extension headers in between."""
    pkt: Packet = IPv6(src=C6, dst=S6)
    for hdr in ext:
        pkt = pkt / hdr
    return bytes(pkt / TCP(sport=sport, dport=dport, flags=flags))


def error4(quote: bytes, dst: str = C4, src: str = R4, kind: int = 3, code: int = 4) -> Packet:
    """An ICMP error quoting `quote`; scapy computes lengths and checksum."""
    icmp = ICMP(type=kind, code=code, nexthopmtu=1400) if kind == 3 else ICMP(type=kind, code=code)
    return L2 / IP(src=src, dst=dst) / icmp / Raw(quote)


def error6(quote: bytes, dst: str = C6, src: str = R6, kind: Packet | None = None) -> Packet:
    """An ICMPv6 error (default: packet too big) quoting `quote`."""
    msg = ICMPv6PacketTooBig(mtu=1280) if kind is None else kind
    return L2 / IPv6(src=src, dst=dst) / msg / Raw(quote)


@dataclass
class Step:
    """One frame of the scenario and what must become of it."""

    name: str
    pkt: Packet
    forwarded: bool
    related: bool = False
    rule_id: int = 0  # of the connection, for a related error
    rebuild: Callable[[bytes], Packet] | None = None  # same error around another quote
    quote: bytes = b""


def _err(name: str, quote: bytes, related: bool, rule_id: int = 0, **kw: Any) -> Step:
    def build(q: bytes) -> Packet:
        return error4(q, **kw)

    return Step(name, build(quote), related, related, rule_id, build, quote)


def _err6(name: str, quote: bytes, related: bool, kind: Packet | None = None) -> Step:
    build = functools.partial(error6, kind=kind)
    return Step(name, build(quote), related, related, 16 if related else 0, build, quote)


def scenario() -> list[Step]:
    """The connections, the errors about them, and the errors that are not related."""
    tcp, up = dpdk_tests.tcp, dpdk_tests.udp
    q4 = seg4(40000, 80)
    q4_reply = seg4(80, 40000, src=S4, dst=C4)
    q6 = seg6(40000, 443)
    dns = bytes(IP(src=C4, dst=S4) / UDP(sport=40005, dport=53) / Raw(b"q" * 12))
    echo = bytes(IP(src=C4, dst=S4) / ICMP(type=8, id=9))
    ihl6 = bytes(IP(src=C4, dst=S4, options=[IPOption(b"\x01" * 4)]) / TCP(sport=40000, dport=80))
    dest8 = tuple(IPv6ExtHdrDestOpt() for _ in range(8))
    steps = [
        Step("syn", tcp(C4, S4, 40000, 80, "S", seq=1), True),
        Step("syn-ack", tcp(S4, C4, 80, 40000, "SA", seq=9, ack=2), True),
        Step("ack", tcp(C4, S4, 40000, 80, "A", seq=2, ack=10), True),
        Step("dns query", up(C4, S4, 40005, 53), True),
        Step("echo request", L2 / IP(src=C4, dst=S4) / ICMP(type=8, id=9), True),
        Step("v6 syn", L2 / IPv6(src=C6, dst=S6) / TCP(sport=40000, dport=443, flags="S"), True),
        # related: forwarded with the connection's rule id
        _err("frag needed to the client", q4, True, 10),
        _err("time exceeded to the server", q4_reply, True, 10, dst=S4, kind=11, code=0),
        _err("parameter problem", q4, True, 10, kind=12, code=0),
        _err("quote of 28 bytes", q4[:28], True, 10),
        _err("quote with IP options", ihl6, True, 10),
        _err("port unreachable from the server", dns, True, 13, src=S4, code=3),
        _err("time exceeded about an echo", echo, True, 15, kind=11, code=0),
        _err6("packet too big", q6, True),
        _err6("v6 quote with 8 extension headers", seg6(40000, 443, "S", *dest8), True),
        _err6("v6 unreachable", q6, True, ICMPv6DestUnreach(code=1)),
        _err6("v6 time exceeded", q6, True, ICMPv6TimeExceeded()),
        # not related: the rules decide (no rule allows the router: dropped)
        _err("unknown tuple", seg4(40001, 80), False),
        _err("toward another host", q4, False, dst="10.1.0.77"),
        _err("toward the peer", q4, False, dst=S4),
        _err("redirect", q4, False, kind=5, code=1),
        _err("source quench", q4, False, kind=4, code=0),
        _err("another echo", bytes(IP(src=C4, dst=S4) / ICMP(type=8, id=10)), False, kind=11),
        _err("quote of 27 bytes", q4[:27], False),
        _err("quoted IHL 4", b"\x44" + q4[1:], False),
        _err("quoted IHL 15", b"\x4f" + q4[1:], False),
        _err("quoted version 6", b"\x65" + q4[1:], False),
        _err("IPv6 quote in ICMP", q6, False),
        _err("quoted later fragment", seg4(40000, 80)[:6] + b"\x00\x05" + q4[8:], False),
        _err(
            "error quoting an error",
            bytes(IP(src=C4, dst=S4) / ICMP(type=3, code=1) / Raw(q4[:28])),
            False,
        ),
        Step("bad checksum", L2 / IP(src=R4, dst=C4) / ICMP(type=3, code=4, chksum=7) / q4, False),
        Step("fragmented error", L2 / IP(src=R4, dst=C4, flags="MF") / ICMP(type=3) / q4, False),
        _err6(
            "v6 quote with 9 extension headers", seg6(40000, 443, "S", *dest8, *dest8[:1]), False
        ),
        _err6("IPv4 quote in ICMPv6", q4, False),
        Step("echo request with a quote", error6(q6, kind=ICMPv6EchoRequest()), False),
        # a reset connection: errors about it are no longer related
        Step("syn 40010", tcp(C4, S4, 40010, 80, "S", seq=1), True),
        Step("rst 40010", tcp(C4, S4, 40010, 80, "R", seq=2), True),
        _err("frag needed after the reset", seg4(40010, 80), False),
    ]
    # Every truncation of a quote: related once the IP header and 8 bytes of TCP are there.
    steps += [_err(f"quote[:{n}]", q4[:n], n >= 28, 10 if n >= 28 else 0) for n in range(41)]
    steps += [_err6(f"v6 quote[:{n}]", q6[:n], n >= 48) for n in range(61)]
    return steps


def frames_of(steps: list[Step]) -> list[bytes]:
    """The encapsulated frames (frame i answers to egress port 1000 + i)."""
    return [dpdk_tests.svc(i, s.pkt) for i, s in enumerate(steps)]


def mutants(steps: list[Step], count: int, seed: int) -> list[Packet]:
    """Errors of the scenario around cut, flipped and overwritten quotes (checksums correct)."""
    rng = random.Random(seed)
    errors = [s for s in steps if s.rebuild is not None and len(s.quote) >= 28]
    out = []
    for _ in range(count):
        s = rng.choice(errors)
        q = bytearray(s.quote)
        for _ in range(rng.randrange(1, 4)):
            pos = rng.randrange(min(len(q), 64))
            if rng.random() < 0.5:
                q[pos] ^= 1 << rng.randrange(8)
            else:
                q[pos] = rng.randrange(256)
        if rng.random() < 0.3:
            q = q[: rng.randrange(len(q) + 1)]
        assert s.rebuild is not None
        out.append(s.rebuild(bytes(q)))
    return out


def run_backend(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str, frames: list[bytes], **kw: Any
) -> dpdk_tests.Run:
    """run_pcap against one backend ("dpdk", "numba"), flows dumped at the end."""
    if backend == "dpdk" and fastpath.find_binary() is None:
        pytest.skip("nicfw-fastpath is not built (make dpdk)")
    monkeypatch.setattr(dpdk_tests, "FastPath", functools.partial(FastPath, backend=backend))
    run = dpdk_tests.run_pcap(tmp_path, frames, related_rules(), dump=True, **kw)
    assert (run.stats.get("backend") == "numba") == (backend == "numba"), run.stats
    return run


def check_scenario(run: dpdk_tests.Run, steps: list[Step], frames: list[bytes]) -> None:
    """Verdicts, rule ids, counters, records and connection state as the steps say."""
    assert run.exit_code == 0, run.log
    names = {i: s.name for i, s in enumerate(steps)}
    want = {i for i, s in enumerate(steps) if s.forwarded}
    got = run.forwarded()
    assert sorted(names[i] for i in got - want) == [], "forwarded, should not be"
    assert sorted(names[i] for i in want - got) == [], "dropped, should be forwarded"
    rule_of = {h.egress_port - 1000: h.rule_id for h, _ in run.out}
    assert {names[i]: rule_of[i] for i, s in enumerate(steps) if s.related} == {
        s.name: s.rule_id for s in steps if s.related
    }
    stats = run.stats
    assert stats["ct_related"] == sum(s.related for s in steps)
    assert {k: v for k, v in stats["drop"].items() if v} == {"default": len(steps) - len(want)}
    assert (stats["ct_new"], stats["flows_active"], stats["ct_end"]) == (5, 5, 1)
    # Related errors leave no record: NEW allows of the five connections, drops, 40010's END.
    recs = run.records
    allows = recs[(recs["event"] == EV_NEW) & (recs["verdict"] == ACT_ALLOW)]
    conns = sorted((int(r["proto"]), int(r["sport"]), int(r["dport"])) for r in allows)
    assert conns == [
        (1, 9, 0x0800),
        (6, 40000, 80),
        (6, 40000, 443),
        (6, 40010, 80),
        (17, 40005, 53),
    ]
    assert len(recs) == len(allows) + (len(steps) - len(want)) + 1
    # The connections are as their own packets left them: no packet, byte or state from errors.
    at = {s.name: i for i, s in enumerate(steps)}

    def size(*which: str) -> int:
        return sum(len(frames[at[n]]) for n in which)

    assert run.flows is not None
    got_flows = {
        (int(f["proto"]), int(f["sport"]), int(f["dport"])): (
            int(f["packets"]),
            int(f["bytes"]),
            int(f["tcp_state"]),
        )
        for f in run.flows
    }
    assert got_flows == {
        (6, 40000, 80): (3, size("syn", "syn-ack", "ack"), CtState.TCP_ESTABLISHED),
        (6, 40000, 443): (1, size("v6 syn"), CtState.TCP_SYN_SENT),
        (17, 40005, 53): (1, size("dns query"), CtState.UNREPLIED),
        (1, 9, 0x0800): (1, size("echo request"), CtState.UNREPLIED),
        (6, 40010, 80): (2, size("syn 40010", "rst 40010"), CtState.TCP_CLOSED),
    }


@pytest.mark.parametrize("backend", BACKENDS)
def test_errors_about_tracked_connections_pass_as_related(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    steps = scenario()
    frames = frames_of(steps)
    check_scenario(run_backend(tmp_path, monkeypatch, backend, frames), steps, frames)


@pytest.mark.dpdk
def test_quotes_are_read_within_bounds_under_asan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The scenario and mutated quotes (cut, flipped, overwritten), on the sanitizer build."""
    if fastpath.find_binary() is None:
        pytest.skip("nicfw-fastpath is not built (make dpdk)")
    binary, env = dpdk_tests.asan_build()
    steps = scenario()
    frames = frames_of(steps)
    extra = [dpdk_tests.svc(len(frames) + j, m) for j, m in enumerate(mutants(steps, 400, 3))]
    run = run_backend(tmp_path, monkeypatch, "dpdk", frames + extra, binary=binary, env=env)
    assert "AddressSanitizer" not in run.log and "runtime error" not in run.log, run.log
    assert run.stats["rx"] == len(frames) + len(extra)
    assert {i for i in run.forwarded() if i < len(steps)} == {
        i for i, s in enumerate(steps) if s.forwarded
    }

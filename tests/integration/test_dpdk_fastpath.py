"""The DPDK fast path on net_pcap: verdicts, malformed input, conntrack, reject, identity.

Each test writes service-encapsulated frames (built with scapy) to in.pcap, starts
nicfw-fastpath on `net_pcap0,rx_pcap=in.pcap,tx_pcap=out.pcap` with --wait-rules, loads rules
over the control channel, waits until every frame has been decided, and reads out.pcap: a frame
is forwarded when it comes back with its own egress port. Every frame gets unique ports
(ingress 2000 + i, egress 1000 + i) so that the output names its input. Needs only the built
binary (no root); the malformed set also runs under AddressSanitizer + UBSan.
"""

from __future__ import annotations

import json
import os
import random
import struct
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPerror, IPOption, UDPerror
from scapy.layers.inet6 import (
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)
from scapy.layers.l2 import ARP, Dot1Q, Ether
from scapy.packet import Packet, Raw

from dpdk_app import fastpath
from dpdk_app.fastpath import (
    CtState,
    FastPath,
    FastPathError,
    ServiceHeader,
    decapsulate,
    encapsulate,
    make_flow_del,
    make_identity,
    make_rule,
)
from dpdk_app.layout import ACT_ALLOW, ACT_DROP, ACT_REJECT, EV_END, EV_NEW

BINARY = fastpath.find_binary()
pytestmark = [
    pytest.mark.dpdk,
    pytest.mark.skipif(BINARY is None, reason="nicfw-fastpath is not built (make dpdk)"),
]

L2 = Ether(src="02:00:00:00:00:0a", dst="02:00:00:00:00:0b")
C4, S4 = "10.1.0.1", "10.2.0.1"


# --- pcap files ---------------------------------------------------------------------------


def write_pcap(path: Path, frames: list[bytes]) -> None:
    """A classic little-endian pcap of Ethernet frames."""
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    for i, fr in enumerate(frames):
        out.append(struct.pack("<IIII", 1, i, len(fr), len(fr)) + fr)
    path.write_bytes(b"".join(out))


def read_pcap(path: Path) -> list[bytes]:
    """Frames of a pcap written by write_pcap or by DPDK's net_pcap."""
    data = path.read_bytes() if path.exists() else b""
    frames, off = [], 24
    while off + 16 <= len(data):
        incl = struct.unpack_from("<I", data, off + 8)[0]
        frames.append(data[off + 16 : off + 16 + incl])
        off += 16 + incl
    return frames


# --- running the fast path on a pcap ------------------------------------------------------------


@dataclass
class Run:
    """What one pcap run produced."""

    out: list[tuple[ServiceHeader, bytes]]
    stats: dict
    records: np.ndarray
    log: str
    exit_code: int | None
    flows: np.ndarray | None = None  # FLOW_DUMP records at the end (run_pcap(dump=True))

    def forwarded(self) -> set[int]:
        """Indexes of the input frames that came back (egress port 1000 + i)."""
        return {h.egress_port - 1000 for h, _ in self.out if 1000 <= h.egress_port < 2000}

    def responses(self) -> dict[int, tuple[ServiceHeader, bytes]]:
        """Reject responses, by the index of the frame they answer (egress 2000 + i)."""
        return {h.egress_port - 2000: (h, f) for h, f in self.out if h.egress_port >= 2000}


def svc(i: int, frame: bytes | Packet, **kw: int) -> bytes:
    """Frame i, encapsulated with its unique ports."""
    raw = bytes(frame)
    return encapsulate(raw, ServiceHeader(ingress_port=2000 + i, egress_port=1000 + i, **kw))


def run_pcap(
    tmp_path: Path,
    frames: list[bytes],
    rules: np.ndarray,
    *,
    identities: np.ndarray | None = None,
    options: tuple[str, ...] = (),
    binary: Path | None = BINARY,
    env: dict[str, str] | None = None,
    expect_rx: int | None = None,
    dump: bool = False,
) -> Run:
    """Feed frames through the fast path once; see the module docstring."""
    write_pcap(tmp_path / "in.pcap", frames)
    vdev = f"net_pcap0,rx_pcap={tmp_path / 'in.pcap'},tx_pcap={tmp_path / 'out.pcap'}"
    fp = FastPath([vdev], binary=binary, options=("--wait-rules", *options), env=env)
    try:
        fp.start(timeout=60)
        with fp.subscribe() as sub, fp.client() as ctl:
            if identities is not None:
                assert ctl.identity_add(identities) == len(identities)
            ctl.load_rules(rules)
            want = len(frames) if expect_rx is None else expect_rx
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                stats = ctl.stats()
                done = stats["allowed"] + stats["dropped"] + stats["rejected"]
                if stats["rx"] >= want and done == stats["rx"]:
                    break
                time.sleep(0.02)
            records = sub.collect(until=2.0, quiet=0.3)
            flows = ctl.flow_dump().records if dump else None
            assert fp.alive(), fp.log()
        code = fp.stop()
        log = fp.log()
    finally:
        fp.close()
    out = [d for d in (decapsulate(f) for f in read_pcap(tmp_path / "out.pcap")) if d]
    return Run(out, stats, records, log, code, flows)


# --- the malformed set --------------------------------------------------------------------------


@dataclass
class Case:
    """One input frame (inner Ethernet frame or a whole raw frame) and what must happen."""

    name: str
    frame: bytes
    drop: str | None = None  # expected drop reason (STATS drop.<reason>), None = forwarded
    whole: bool = field(default=False)  # frame is already the complete wire frame


def _ipv4_fixed(pkt: Packet, cut: int | None = None, **overrides: int) -> bytes:
    """Raw IPv4 frame with header fields overridden, length/checksum recomputed on the result."""
    raw = bytearray(bytes(pkt))
    l3 = 18 if Dot1Q in pkt else 14
    if cut is not None:
        raw = raw[: l3 + cut]
        struct.pack_into("!H", raw, l3 + 2, cut)
    for off, value in overrides.items():
        raw[l3 + int(off[1:])] = value
    ihl = (raw[l3] & 0xF) * 4
    struct.pack_into("!H", raw, l3 + 10, 0)
    hdr = bytes(raw[l3 : l3 + max(ihl, 20)])
    s = sum(struct.unpack(f"!{len(hdr) // 2}H", hdr))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    struct.pack_into("!H", raw, l3 + 10, ~s & 0xFFFF)
    return bytes(raw)


def malformed_cases() -> list[Case]:
    """Valid frames the rules allow, and malformed ones that must be dropped, with reasons."""
    ip = L2 / IP(src=C4, dst=S4)
    ip6 = L2 / IPv6(src="2001:db8:1::1", dst="2001:db8:2::1")
    syn = TCP(sport=1000, dport=80, flags="S")
    svc_hdr = ServiceHeader(1, 2).pack()
    outer = bytes(Ether(src="02:00:00:00:00:02", dst="02:00:00:00:00:01", type=0x88B5))
    return [
        # forwarded
        Case("v4_tcp_syn", bytes(ip / syn)),
        Case("v4_options", bytes(L2 / IP(src=C4, dst=S4, options=[IPOption(b"\x01" * 4)]) / syn)),
        Case("vlan_udp", bytes(L2 / Dot1Q(vlan=5) / IP(src=C4, dst=S4) / UDP(dport=53))),
        Case("v6_tcp", bytes(ip6 / syn)),
        Case("v6_ext_udp", bytes(ip6 / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt() / UDP(dport=53))),
        Case("v6_atomic_frag", bytes(ip6 / IPv6ExtHdrFragment(offset=0, m=0) / syn)),
        Case(
            "v4_frag_wild",
            bytes(L2 / IP(src="10.9.0.1", dst=S4, proto=17, frag=100) / Raw(b"x" * 16)),
        ),
        Case(
            "v6_frag_wild",
            bytes(
                L2
                / IPv6(src="2001:db8:9::1", dst="2001:db8:2::1")
                / IPv6ExtHdrFragment(offset=100, nh=17)
                / Raw(b"x" * 16)
            ),
        ),
        Case(
            "v4_first_frag",
            bytes(L2 / IP(src=C4, dst=S4, flags="MF") / UDP(dport=53, len=1000) / Raw(b"x" * 32)),
        ),
        Case("icmp_echo", bytes(ip / ICMP(type=8, id=7))),
        Case(
            "v6_8_ext_headers",
            bytes(
                ip6
                / (IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt())
                / IPv6ExtHdrDestOpt()
                / IPv6ExtHdrDestOpt()
                / IPv6ExtHdrDestOpt()
                / IPv6ExtHdrDestOpt()
                / IPv6ExtHdrDestOpt()
                / IPv6ExtHdrDestOpt()
                / UDP(dport=53)
            ),
        ),
        # dropped
        Case("not_service", bytes(ip / syn), "not_service", whole=True),
        Case("outer_truncated", outer[:10], "truncated", whole=True),
        Case("service_truncated", outer + svc_hdr[:6], "truncated", whole=True),
        Case("inner_eth_truncated", bytes(ip / syn)[:8], "truncated"),
        Case("arp", bytes(L2 / ARP()), "non_ip"),
        Case("qinq", bytes(L2 / Dot1Q() / Dot1Q() / IP(src=C4, dst=S4) / syn), "non_ip"),
        Case(
            "vlan_truncated",
            bytes(Ether(src=L2.src, dst=L2.dst, type=0x8100)) + b"\x00\x05",
            "truncated",
        ),
        Case("v4_header_truncated", bytes(ip / syn)[: 14 + 12], "truncated"),
        Case("v4_ihl4", _ipv4_fixed(ip / syn, v0=0x44), "bad_ipv4"),
        Case("v4_ihl15", _ipv4_fixed(ip / syn, v0=0x4F), "truncated"),
        Case("v4_totlen_long", bytes(L2 / IP(src=C4, dst=S4, len=1500) / syn), "truncated"),
        Case("v4_totlen_short", bytes(L2 / IP(src=C4, dst=S4, len=10) / syn), "bad_ipv4"),
        Case("v4_bad_checksum", bytes(L2 / IP(src=C4, dst=S4, chksum=0x1234) / syn), "bad_ipv4"),
        Case("v4_version6", _ipv4_fixed(ip / syn, v0=0x65), "bad_ipv4"),
        Case("v4_reserved_flag", bytes(L2 / IP(src=C4, dst=S4, flags="evil") / syn), "bad_ipv4"),
        Case("tcp_truncated", _ipv4_fixed(ip / syn, cut=30), "bad_l4"),
        Case("tcp_doff4", bytes(ip / TCP(dport=80, flags="S", dataofs=4)), "bad_l4"),
        Case("tcp_doff15", bytes(ip / TCP(dport=80, flags="S", dataofs=15)), "bad_l4"),
        Case("tcp_port0", bytes(ip / TCP(sport=1000, dport=0, flags="S")), "bad_l4"),
        Case("tcp_syn_fin", bytes(ip / TCP(dport=80, flags="SF")), "bad_tcp_flags"),
        Case("tcp_null", bytes(ip / TCP(dport=80, flags="")), "bad_tcp_flags"),
        Case("tcp_xmas", bytes(ip / TCP(dport=80, flags="FPU")), "bad_tcp_flags"),
        Case("udp_len_short", bytes(ip / UDP(dport=53, len=4)), "bad_l4"),
        Case("udp_len_long", bytes(ip / UDP(dport=53, len=500) / Raw(b"x" * 8)), "bad_l4"),
        Case("udp_port0", bytes(ip / UDP(sport=53, dport=0)), "bad_l4"),
        Case(
            "icmp_truncated",
            bytes(L2 / IP(src=C4, dst=S4, proto=1) / Raw(b"\x08\x00\x00\x00")),
            "bad_l4",
        ),
        Case(
            "v4_tiny_first_frag",
            _ipv4_fixed(L2 / IP(src=C4, dst=S4, flags="MF") / syn, cut=28),
            "bad_l4",
        ),
        Case(
            "v4_frag_offset1_tcp",
            bytes(L2 / IP(src=C4, dst=S4, proto=6, frag=1) / Raw(b"x" * 16)),
            "bad_l4",
        ),
        Case(
            "v4_frag_port_rule",
            bytes(L2 / IP(src=C4, dst=S4, proto=6, frag=100) / Raw(b"x" * 16)),
            "fragment",
        ),
        Case("v6_header_truncated", bytes(ip6 / syn)[: 14 + 30], "truncated"),
        Case(
            "v6_plen_long",
            bytes(L2 / IPv6(src="2001:db8:1::1", dst="2001:db8:2::1", plen=1000) / syn),
            "truncated",
        ),
        Case(
            "v6_plen0",
            bytes(L2 / IPv6(src="2001:db8:1::1", dst="2001:db8:2::1", plen=0) / syn),
            "bad_ipv6",
        ),
        Case(
            "v6_9_ext_headers",
            bytes(
                ip6
                / IPv6ExtHdrDestOpt()
                / IPv6ExtHdrDestOpt()
                / IPv6ExtHdrDestOpt()
                / IPv6ExtHdrDestOpt()
                / IPv6ExtHdrDestOpt()
                / IPv6ExtHdrDestOpt()
                / IPv6ExtHdrDestOpt()
                / IPv6ExtHdrDestOpt()
                / IPv6ExtHdrDestOpt()
                / UDP(dport=53)
            ),
            "bad_ipv6",
        ),
        Case(
            "v6_ext_truncated",
            bytes(ip6 / IPv6ExtHdrHopByHop(len=10, autopad=0) / UDP(dport=53)),
            "bad_ipv6",
        ),
        Case(
            "v6_routing_type0", bytes(ip6 / IPv6ExtHdrRouting(type=0) / UDP(dport=53)), "bad_ipv6"
        ),
        Case(
            "v6_hbh_not_first",
            bytes(ip6 / IPv6ExtHdrDestOpt() / IPv6ExtHdrHopByHop() / UDP(dport=53)),
            "bad_ipv6",
        ),
        Case(
            "v6_v4mapped_src",
            bytes(L2 / IPv6(src="::ffff:10.1.0.1", dst="2001:db8:2::1") / syn),
            "bad_ipv6",
        ),
        Case(
            "v6_tiny_first_frag",
            bytes(ip6 / IPv6ExtHdrFragment(offset=0, m=1, nh=6) / Raw(bytes(syn)[:8])),
            "bad_l4",
        ),
        Case(
            "v6_frag_port_rule",
            bytes(ip6 / IPv6ExtHdrFragment(offset=50, nh=6) / Raw(b"x" * 16)),
            "fragment",
        ),
        Case("v4_gre_no_rule", bytes(L2 / IP(src=C4, dst=S4, proto=47) / Raw(b"x" * 8)), "default"),
        Case("jumbo", bytes(ip / UDP(dport=53) / Raw(b"x" * 4000)), "multiseg"),
    ]


def malformed_rules() -> np.ndarray:
    """Wildcard-port allows for UDP from 10.9/16 and for 2001:db8:9::/48, then every protocol
    with destination ports 1-65535 (a port-specific allow: no fragment may pass by it)."""
    return np.concatenate(
        [
            make_rule(1, ACT_ALLOW, priority=3, src="10.9.0.0/16", proto=17),
            make_rule(2, ACT_ALLOW, priority=3, src="2001:db8:9::/48"),
            make_rule(3, ACT_ALLOW, priority=2, dport=(1, 0xFFFF)),
        ]
    )


def malformed_frames(cases: list[Case]) -> list[bytes]:
    return [c.frame if c.whole else svc(i, c.frame) for i, c in enumerate(cases)]


def check_malformed_run(run: Run, cases: list[Case]) -> None:
    assert run.exit_code == 0, run.log
    want_fwd = {i for i, c in enumerate(cases) if c.drop is None}
    got = run.forwarded()
    names = {i: c.name for i, c in enumerate(cases)}
    assert sorted(names[i] for i in got - want_fwd) == [], "malformed frames were forwarded"
    assert sorted(names[i] for i in want_fwd - got) == [], "valid frames were dropped"
    want_drops = Counter(c.drop for c in cases if c.drop)
    got_drops = {k: v for k, v in run.stats["drop"].items() if v}
    assert got_drops == dict(want_drops)
    assert run.stats["allowed"] == len(want_fwd) == run.stats["tx"]


def test_malformed_frames_are_dropped_and_valid_ones_forwarded(tmp_path: Path) -> None:
    cases = malformed_cases()
    run = run_pcap(tmp_path, malformed_frames(cases), malformed_rules())
    check_malformed_run(run, cases)
    # Re-injected frames are the input, rule id written into the service header.
    by_egress = {h.egress_port: (h, inner) for h, inner in run.out}
    h, inner = by_egress[1000]
    assert (h.ingress_port, h.rule_id) == (2000, 3)
    assert inner == cases[0].frame
    assert by_egress[1000 + 6][0].rule_id == 1  # the fragment went by the wildcard rule


def asan_build() -> tuple[Path, dict[str, str]]:
    """The AddressSanitizer/UBSan binary and the environment that makes any finding fatal;
    skips (saying why) when it does not build."""
    try:  # `make asan` is incremental: this also rebuilds a stale sanitizer binary
        binary = fastpath.build(asan=True)
    except FastPathError as exc:
        pytest.skip(f"the AddressSanitizer build failed: {str(exc)[:300]}")
    env = dict(os.environ)
    env["ASAN_OPTIONS"] = "detect_leaks=0:halt_on_error=1:abort_on_error=0"
    env["UBSAN_OPTIONS"] = "print_stacktrace=1:halt_on_error=1"
    return binary, env


def test_malformed_frames_under_asan(tmp_path: Path) -> None:
    binary, env = asan_build()
    cases = malformed_cases()
    frames = malformed_frames(cases)
    rng = random.Random(7)
    fuzz = [svc(5000, bytes(c.frame)[: rng.randrange(len(c.frame) + 1)]) for c in cases] * 2
    run = run_pcap(tmp_path, frames + fuzz, malformed_rules(), binary=binary, env=env)
    assert "AddressSanitizer" not in run.log and "runtime error" not in run.log, run.log
    assert run.exit_code == 0, run.log
    assert run.stats["rx"] == len(frames) + len(fuzz)
    want = {i for i, c in enumerate(cases) if c.drop is None}
    assert {i for i in run.forwarded() if i < len(cases)} == want


def test_every_truncation_and_bit_flip_is_survived(tmp_path: Path) -> None:
    """All prefixes of a valid SYN are dropped; random bit flips never crash the process."""
    good = bytes(L2 / IP(src=C4, dst=S4) / TCP(sport=1000, dport=80, flags="S"))
    frames = [svc(i, good[:n]) for i, n in enumerate(range(len(good)))]
    rng = random.Random(11)
    flipped = []
    for _ in range(300):
        b = bytearray(svc(4000, good))
        for _ in range(rng.randrange(1, 4)):
            pos = rng.randrange(len(b))
            b[pos] ^= 1 << rng.randrange(8)
        flipped.append(bytes(b))
    run = run_pcap(tmp_path, frames + flipped + [svc(len(good), good)], malformed_rules())
    assert run.exit_code == 0, run.log
    fwd = run.forwarded()
    assert len(good) in fwd  # the intact frame goes through ...
    assert not fwd & set(range(len(good)))  # ... none of its truncations does
    s = run.stats
    assert s["rx"] == len(frames) + len(flipped) + 1
    assert s["allowed"] + s["dropped"] == s["rx"]


# --- connection tracking, reject, identity ------------------------------------------------------


def tcp(
    src: str,
    dst: str,
    sport: int,
    dport: int,
    flags: str,
    seq: int = 0,
    ack: int = 0,
    payload: bytes = b"",
) -> Packet:
    pkt = L2 / IP(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags=flags, seq=seq, ack=ack)
    return pkt / Raw(payload) if payload else pkt


def udp(src: str, dst: str, sport: int, dport: int) -> Packet:
    return L2 / IP(src=src, dst=dst) / UDP(sport=sport, dport=dport) / Raw(b"q" * 12)


def stateful_rules() -> np.ndarray:
    return np.concatenate(
        [
            make_rule(10, ACT_ALLOW, src="10.1.0.0/16", dst="10.2.0.0/16", proto=6, dport=(80, 80)),
            make_rule(11, ACT_DROP, proto=6, dport=(22, 22)),
            make_rule(12, ACT_REJECT, proto=6, dport=(23, 23)),
            make_rule(
                13, ACT_ALLOW, src="10.1.0.0/16", dst="10.2.0.0/16", proto=17, dport=(53, 53)
            ),
            make_rule(14, ACT_REJECT, proto=17, dport=(69, 69)),
            make_rule(15, ACT_ALLOW, src="10.1.0.0/16", dst="10.2.0.0/16", proto=1),
        ]
    )


def records_of(run: Run, sport: int, dport: int) -> list[tuple[int, int, int, int]]:
    """(event, verdict, rule_id, tcp_state) of the records of one port pair, in order."""
    recs = run.records
    sel = recs[(recs["sport"] == sport) & (recs["dport"] == dport)]
    return [
        (int(r["event"]), int(r["verdict"]), int(r["rule_id"]), int(r["tcp_state"])) for r in sel
    ]


def test_tcp_udp_icmp_connection_tracking(tmp_path: Path) -> None:
    c, s = C4, S4
    seq = [
        tcp(c, s, 40000, 80, "S", seq=100),  # 0 allowed by rule 10
        tcp(s, c, 80, 40000, "SA", seq=500, ack=101),  # 1 reply: by conntrack
        tcp(c, s, 40000, 80, "A", seq=101, ack=501),  # 2 established
        tcp(c, s, 40000, 80, "PA", seq=101, ack=501, payload=b"GET /"),  # 3
        tcp(s, c, 80, 40000, "PA", seq=501, ack=106, payload=b"200 OK"),  # 4
        tcp(c, s, 40000, 80, "FA", seq=106, ack=507),  # 5 first FIN
        tcp(s, c, 80, 40000, "FA", seq=507, ack=107),  # 6 second FIN: END
        tcp(c, s, 40000, 80, "A", seq=107, ack=508),  # 7 last ACK still passes
        tcp(s, c, 80, 40001, "SA", seq=1, ack=1),  # 8 reply of nothing: dropped
        tcp(c, s, 40002, 22, "S"),  # 9 dropped by rule 11
        tcp(c, s, 40003, 80, "S", seq=10),  # 10
        tcp(s, c, 80, 40003, "SA", seq=20, ack=11),  # 11
        tcp(s, c, 80, 40003, "R", seq=21),  # 12 RST: END
        tcp(c, s, 40003, 80, "A", seq=11, ack=21),  # 13 after the RST: dropped
        tcp(c, s, 40003, 80, "S", seq=30),  # 14 a new connection on the same ports
        udp(c, s, 40005, 53),  # 15 allowed by rule 13
        udp(s, c, 53, 40005),  # 16 its reply
        udp(s, c, 53, 40099),  # 17 a reply to nothing: dropped
        L2 / IP(src=c, dst=s) / ICMP(type=8, id=9),  # 18 echo request: rule 15
        L2 / IP(src=s, dst=c) / ICMP(type=0, id=9),  # 19 its reply
        L2 / IP(src=s, dst=c) / ICMP(type=0, id=10),  # 20 a reply to nothing
        tcp(c, s, 40008, 80, "A", seq=7, ack=9),  # 21 mid-stream: picked up (rule 10)
        tcp(s, c, 80, 40008, "A", seq=9, ack=7),  # 22 its reply
    ]
    run = run_pcap(tmp_path, [svc(i, p) for i, p in enumerate(seq)], stateful_rules())
    assert run.exit_code == 0, run.log
    assert run.forwarded() == set(range(len(seq))) - {8, 9, 13, 17, 20}
    assert run.stats["drop"]["ct_invalid"] == 1  # frame 13
    est, tw, closed = CtState.TCP_ESTABLISHED, CtState.TCP_TIME_WAIT, CtState.TCP_CLOSED
    assert records_of(run, 40000, 80) == [
        (EV_NEW, ACT_ALLOW, 10, CtState.TCP_SYN_SENT),
        (EV_END, ACT_ALLOW, 10, tw),
    ]
    assert records_of(run, 40002, 22) == [(EV_NEW, ACT_DROP, 11, 0)]
    assert records_of(run, 40003, 80) == [
        (EV_NEW, ACT_ALLOW, 10, CtState.TCP_SYN_SENT),
        (EV_END, ACT_ALLOW, 10, closed),
        (EV_NEW, ACT_ALLOW, 10, CtState.TCP_SYN_SENT),
    ]
    assert records_of(run, 40005, 53) == [(EV_NEW, ACT_ALLOW, 13, CtState.UNREPLIED)]
    assert records_of(run, 40008, 80) == [(EV_NEW, ACT_ALLOW, 10, est)]
    end = run.records[(run.records["sport"] == 40000) & (run.records["event"] == EV_END)][0]
    assert (end["packets"], end["ingress_port"], end["egress_port"]) == (7, 2000, 1000)


def test_no_tcp_pickup_drops_mid_stream_segments(tmp_path: Path) -> None:
    frames = [svc(0, tcp(C4, S4, 40008, 80, "A")), svc(1, tcp(C4, S4, 40009, 80, "S"))]
    run = run_pcap(tmp_path, frames, stateful_rules(), options=("--no-tcp-pickup",))
    assert run.forwarded() == {1}
    assert run.stats["drop"]["ct_invalid"] == 1


def test_reject_answers_with_rst_and_icmp(tmp_path: Path) -> None:
    frames = [
        svc(0, tcp(C4, S4, 40004, 23, "S", seq=1000)),  # reject rule 12: RST-ACK
        svc(1, udp(C4, S4, 40006, 69)),  # reject rule 14: ICMP admin prohibited
        svc(2, tcp(C4, S4, 40007, 443, "S", seq=5), reason=5, rule_id=77),  # pipeline's reject
        svc(3, tcp(C4, S4, 40010, 23, "R", seq=1)),  # never answer a RST
        svc(4, L2 / IPv6(src="2001:db8:1::1", dst="2001:db8:2::1") / UDP(sport=7, dport=69)),
    ]
    run = run_pcap(tmp_path, frames, stateful_rules())
    assert run.forwarded() == set()
    resp = run.responses()
    assert set(resp) == {0, 1, 2, 4}
    h, inner = resp[0]
    assert (h.ingress_port, h.reason, h.rule_id) == (1000, 5, 12)
    rst = Ether(inner)
    assert (rst[IP].src, rst[IP].dst, rst[TCP].sport, rst[TCP].dport) == (S4, C4, 23, 40004)
    assert (str(rst[TCP].flags), rst[TCP].ack) == ("RA", 1001)
    assert rst[Ether].dst == L2.src
    h, inner = resp[1]
    icmp = Ether(inner)
    assert (icmp[ICMP].type, icmp[ICMP].code, h.rule_id) == (3, 13, 14)
    assert icmp[IPerror].dst == S4 and icmp[UDPerror].dport == 69
    assert resp[2][0].rule_id == 77 and str(Ether(resp[2][1])[TCP].flags) == "RA"
    assert Ether(resp[4][1])[IPv6].nh == 58
    # Checksums are right: scapy recomputes them on a copy without the checksum fields.
    for _, inner in resp.values():
        pkt = Ether(inner)
        for layer in (IP, TCP, ICMP):
            if layer in pkt:
                clone = Ether(inner)
                del clone[layer].chksum
                assert Ether(bytes(clone))[layer].chksum == pkt[layer].chksum
    assert run.stats["reject_sent"] == 4 and run.stats["rejected"] == 5


def test_identity_class_decides_identity_rules(tmp_path: Path) -> None:
    rules = np.concatenate(
        [
            make_rule(
                20, ACT_ALLOW, priority=5, proto=6, dport=(8080, 8080), id_class=4, id_mask=4
            ),
            make_rule(21, ACT_DROP, priority=4, proto=6, dport=(8080, 8080)),
        ]
    )
    ids = np.concatenate(
        [
            make_identity(C4, S4, 41000, 8080, 6, id_class=0x6, user_id=42),
            make_identity(C4, S4, 41002, 8080, 6, id_class=0x1, user_id=43),
        ]
    )
    frames = [
        svc(0, tcp(C4, S4, 41000, 8080, "S")),
        svc(1, tcp(C4, S4, 41001, 8080, "S")),
        svc(2, tcp(C4, S4, 41002, 8080, "S")),
    ]
    run = run_pcap(tmp_path, frames, rules, identities=ids)
    assert run.forwarded() == {0}
    assert records_of(run, 41000, 8080)[0][:3] == (EV_NEW, ACT_ALLOW, 20)
    assert records_of(run, 41001, 8080)[0][:3] == (EV_NEW, ACT_DROP, 21)
    assert records_of(run, 41002, 8080)[0][:3] == (EV_NEW, ACT_DROP, 21)


def test_bad_requests_change_nothing(tmp_path: Path) -> None:
    vdev = "net_null0"
    with FastPath([vdev], options=("--no-port",)) as fp, fp.client() as ctl:
        first = ctl.load_rules(stateful_rules())
        bad = stateful_rules()
        bad["sport_lo"][2], bad["sport_hi"][2] = 9, 8
        with pytest.raises(FastPathError, match=r"rule 2 \(rule_id 12\): sport_lo > sport_hi"):
            ctl.load_rules(bad)
        bad = stateful_rules()
        bad["action"][0] = 9
        with pytest.raises(FastPathError, match="action"):
            ctl.load_rules(bad)
        with pytest.raises(FastPathError, match="not a multiple of 64"):
            ctl.request(fastpath.MSG_LOAD_RULES, b"x" * 65)
        with pytest.raises(FastPathError, match="unknown message type 99"):
            ctl.request(99)
        stats = ctl.stats()
        assert (stats["generation"], stats["rules"], stats["load_errors"]) == (
            first.generation,
            6,
            3,
        )
        assert ctl.flush_flows().records.size == 0
        assert ctl.identity_del(make_identity(C4, S4, 1, 2, 6, 1)) == 0
        gone = ctl.flow_del(make_flow_del(C4, S4, 1, 2, 6))
        assert (gone.checked, gone.records.size) == (1, 0)
        with pytest.raises(FastPathError, match="FLOW_DEL payload length 47 is not a multiple"):
            ctl.request(fastpath.MSG_FLOW_DEL, b"x" * 47)
    assert fp.stop() == 0
    with FastPath([vdev], options=("--no-port",)) as fp:
        # An oversized length cannot be resynchronized: the reply says so and the link closes.
        with fp.client() as ctl:
            ctl._sock.sendall(struct.pack("=II", fastpath.MSG_STATS, 1 << 30))
            head = ctl._sock.recv(16)
            assert struct.unpack_from("=IIi", head)[2] < 0
        with fp.client() as ctl:
            assert ctl.ping()["version"]


def test_bench_fastpath_mode_hits_every_established_flow() -> None:
    """--bench-fastpath (bench/bench_fastpath.py): every timed packet is a conntrack hit."""
    assert BINARY is not None
    cmd = [str(BINARY), *fastpath.eal_args(memory_mb=256), "--", "--bench-fastpath"]
    proc = subprocess.run(
        [*cmd, "--flows", "300", "--packets", "1000", "--repeat", "2", "--min-time", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (out["flows"], out["tracked"], out["packets"]) == (300, 300, 1000)
    assert out["ct_hit"] == out["forwarded"] == out["total"] == 1000 * out["passes"]
    bad = subprocess.run([*cmd, "--burst", "0"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "burst 1..32" in bad.stderr

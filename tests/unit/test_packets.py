"""The numba packet parser: keys of well-formed frames, drop reasons of malformed ones, fuzz."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.all import (
    ICMP,
    IP,
    TCP,
    UDP,
    Dot1Q,
    Ether,
    ICMPv6EchoRequest,
    IPOption_RR,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
    Raw,
    raw,
)

from dpdk_app import packets
from dpdk_app.classifier.tuplemerge import TupleMerge
from dpdk_app.packets import (
    DROP_BAD_IPV4,
    DROP_BAD_IPV6,
    DROP_BAD_L4,
    DROP_BAD_TCP_FLAGS,
    DROP_NON_IP,
    DROP_NOT_SERVICE,
    DROP_TRUNCATED,
    FRAG_FIRST,
    FRAG_LATER,
    PARSE_OK,
    parse_batch,
    parse_frames,
)

try:  # tests/unit as a package, or as a directory on sys.path (pytest's default)
    from .rulegen import one_rule
except ImportError:
    from rulegen import one_rule

NICFW_H = Path(__file__).resolve().parents[2] / "dpdk_app" / "src" / "nicfw.h"
ETH = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")


def svc(frame: bytes, ingress: int = 3, egress: int = 4, rule_id: int = 0x01020304) -> bytes:
    """The service encapsulation: outer Ethernet 0x88B5 + the 12-byte service header."""
    outer = bytes.fromhex("020000000001020000000002") + (0x88B5).to_bytes(2, "big")
    header = (
        ingress.to_bytes(2, "big")
        + egress.to_bytes(2, "big")
        + bytes([2, 1])
        + (77).to_bytes(2, "big")
        + rule_id.to_bytes(4, "big")
    )
    return outer + header + frame


def addr(text: str) -> tuple[int, int]:
    ip = ipaddress.ip_address(text)
    value = (0xFFFF << 32 | int(ip)) if ip.version == 4 else int(ip)
    return value >> 64, value & 0xFFFFFFFFFFFFFFFF


def key(h: np.void) -> tuple[int, ...]:
    return tuple(
        int(h[f]) for f in ("src_hi", "src_lo", "dst_hi", "dst_lo", "sport", "dport", "proto")
    )


V4 = IP(src="10.1.2.3", dst="192.168.9.8")
V6 = IPv6(src="2001:db8::1", dst="2001:db8:ffff::2")

GOOD = [
    # (frame, expected (src, dst, sport, dport, proto), checks on info)
    (
        ETH / V4 / TCP(sport=1234, dport=80, flags="S"),
        ("10.1.2.3", "192.168.9.8", 1234, 80, 6),
        {"tcp_flags": 2},
    ),
    (
        ETH / Dot1Q(vlan=7) / V4 / UDP(sport=5, dport=53),
        ("10.1.2.3", "192.168.9.8", 5, 53, 17),
        {"has_vlan": 1},
    ),
    (
        ETH / V4 / ICMP(type=8, code=0, id=0x4242),
        ("10.1.2.3", "192.168.9.8", 0x4242, 0x0800, 1),
        {"icmp_type": 8},
    ),
    (
        ETH
        / IP(src="10.1.2.3", dst="192.168.9.8", options=[IPOption_RR()])
        / TCP(sport=9, dport=10, flags="A"),
        ("10.1.2.3", "192.168.9.8", 9, 10, 6),
        {},
    ),
    (
        ETH / V6 / TCP(sport=40000, dport=443, flags="PA"),
        ("2001:db8::1", "2001:db8:ffff::2", 40000, 443, 6),
        {"is_v6": 1},
    ),
    (
        ETH / V6 / ICMPv6EchoRequest(id=9),
        ("2001:db8::1", "2001:db8:ffff::2", 9, 128 << 8, 58),
        {"icmp_type": 128},
    ),
    (
        ETH / V6 / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt() / UDP(sport=1, dport=2),
        ("2001:db8::1", "2001:db8:ffff::2", 1, 2, 17),
        {},
    ),
    (
        ETH / V6 / IPv6ExtHdrRouting(type=2, addresses=[]) / UDP(sport=1, dport=2),
        ("2001:db8::1", "2001:db8:ffff::2", 1, 2, 17),
        {},
    ),
    (
        ETH
        / V6
        / IPv6ExtHdrFragment(offset=0, m=1)
        / UDP(sport=7, dport=8, len=500)
        / Raw(b"x" * 8),
        ("2001:db8::1", "2001:db8:ffff::2", 7, 8, 17),
        {"frag": FRAG_FIRST},
    ),
    (
        ETH / V6 / IPv6ExtHdrFragment(offset=100, m=0, nh=6) / Raw(b"y" * 16),
        ("2001:db8::1", "2001:db8:ffff::2", 0, 0, 6),
        {"frag": FRAG_LATER, "l4_off": 0},
    ),
    (
        ETH / IP(src="10.1.2.3", dst="192.168.9.8", frag=3, proto=17) / Raw(b"z" * 16),
        ("10.1.2.3", "192.168.9.8", 0, 0, 17),
        {"frag": FRAG_LATER},
    ),
    (
        ETH / IP(src="10.1.2.3", dst="192.168.9.8", proto=47) / Raw(b"gre!"),
        ("10.1.2.3", "192.168.9.8", 0, 0, 47),
        {"l4_off": 0},
    ),
    (
        ETH / IPv6(src="2001:db8::1", dst="2001:db8:ffff::2", nh=1) / ICMP(type=8, id=5),
        ("2001:db8::1", "2001:db8:ffff::2", 0, 0, 1),
        {"l4_off": 0},
    ),  # ICMPv4 in IPv6: unknown
]


@pytest.mark.parametrize(("pkt", "want", "extra"), GOOD, ids=[str(i) for i in range(len(GOOD))])
def test_well_formed_frames_give_the_pipeline_key(pkt: Ether, want: tuple, extra: dict) -> None:
    frame = raw(pkt)
    hdrs, info = parse_frames([svc(frame)])
    assert info[0]["drop"] == PARSE_OK and hdrs[0]["valid"] == 1
    src, dst, sport, dport, proto = want
    assert key(hdrs[0]) == (*addr(src), *addr(dst), sport, dport, proto)
    for field, value in extra.items():
        assert info[0][field] == value, field
    assert (info[0]["ingress_port"], info[0]["egress_port"]) == (3, 4)
    assert (info[0]["reason"], info[0]["direction"], info[0]["workload_id"]) == (2, 1, 77)
    assert info[0]["rule_id"] == 0x01020304 and info[0]["l2_off"] == 26
    # Without the encapsulation (raw socket, pcap) the same frame gives the same key.
    plain, pinfo = parse_frames([frame], encapsulated=False)
    assert key(plain[0]) == key(hdrs[0]) and pinfo[0]["l2_off"] == 0


def ipv4_bad_checksum() -> bytes:
    frame = bytearray(raw(ETH / V4 / UDP(sport=1, dport=2)))
    frame[14 + 10] ^= 0xFF
    return bytes(frame)


BAD = [
    (b"\x00" * 10, DROP_TRUNCATED),
    (raw(ETH / V4 / TCP()), DROP_NOT_SERVICE),  # parsed as encapsulated: no 0x88B5
    ("svc", raw(Ether(type=0x0806) / Raw(b"arp" * 10)), DROP_NON_IP),
    ("svc", ipv4_bad_checksum(), DROP_BAD_IPV4),
    ("svc", raw(ETH / IP(ihl=4, src="1.1.1.1", dst="2.2.2.2") / UDP()), DROP_BAD_IPV4),
    ("svc", raw(ETH / IP(version=5) / UDP()), DROP_BAD_IPV4),
    ("svc", raw(ETH / IP(flags=4) / UDP(dport=1)), DROP_BAD_IPV4),  # reserved flag
    ("svc", raw(ETH / V4 / TCP(flags="SF", dport=1)), DROP_BAD_TCP_FLAGS),
    ("svc", raw(ETH / V4 / TCP(flags="", dport=1)), DROP_BAD_TCP_FLAGS),
    ("svc", raw(ETH / V4 / TCP(flags="F", dport=1)), DROP_BAD_TCP_FLAGS),
    ("svc", raw(ETH / V4 / TCP(sport=0, dport=1)), DROP_BAD_L4),
    ("svc", raw(ETH / V4 / TCP(dataofs=4, dport=1)), DROP_BAD_L4),
    ("svc", raw(ETH / V4 / UDP(sport=1, dport=0)), DROP_BAD_L4),
    ("svc", raw(ETH / V4 / UDP(sport=1, dport=2, len=200)), DROP_BAD_L4),
    ("svc", raw(ETH / IP(frag=1, proto=6) / Raw(b"x" * 20)), DROP_BAD_L4),  # RFC 1858
    ("svc", raw(ETH / IP(proto=6) / Raw(b"x" * 10)), DROP_BAD_L4),  # tiny TCP
    ("svc", raw(ETH / IPv6(src="::ffff:1.2.3.4", dst="2001:db8::1") / UDP(dport=1)), DROP_BAD_IPV6),
    (
        "svc",
        raw(ETH / V6 / IPv6ExtHdrDestOpt() / IPv6ExtHdrHopByHop() / UDP(dport=1)),
        DROP_BAD_IPV6,
    ),
    ("svc", raw(ETH / V6 / IPv6ExtHdrRouting(type=0) / UDP(dport=1)), DROP_BAD_IPV6),
    (
        "svc",
        raw(
            ETH
            / V6
            / (IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt())
            / IPv6ExtHdrDestOpt()
            / IPv6ExtHdrDestOpt()
            / IPv6ExtHdrDestOpt()
            / IPv6ExtHdrDestOpt()
            / IPv6ExtHdrDestOpt()
            / IPv6ExtHdrDestOpt()
            / IPv6ExtHdrDestOpt()
            / UDP(dport=1)
        ),
        DROP_BAD_IPV6,
    ),
    ("svc", raw(ETH / IPv6(version=4) / UDP(dport=1)), DROP_BAD_IPV6),
]


@pytest.mark.parametrize("case", BAD, ids=[str(i) for i in range(len(BAD))])
def test_malformed_frames_are_dropped_with_the_c_parsers_reason(case: tuple) -> None:
    frame = svc(case[1]) if case[0] == "svc" else case[0]
    hdrs, info = parse_frames([frame])
    assert info[0]["drop"] == case[-1]
    assert hdrs[0]["valid"] == 0


def test_jumbogram_and_every_truncation_are_refused() -> None:
    jumbo = bytearray(raw(ETH / V6 / UDP(sport=1, dport=2)))
    jumbo[14 + 4 : 14 + 6] = b"\x00\x00"
    assert parse_frames([svc(bytes(jumbo))])[1][0]["drop"] == DROP_BAD_IPV6
    for pkt in (ETH / V4 / TCP(dport=22, flags="S"), ETH / Dot1Q() / V6 / UDP(dport=53)):
        frame = svc(raw(pkt))
        prefixes = [frame[:n] for n in range(len(frame))]
        hdrs, _ = parse_frames([*prefixes, frame])
        assert not hdrs["valid"][:-1].any(), "a truncated frame parsed as valid"
        assert hdrs["valid"][-1] == 1


def test_broken_offsets_are_truncated_not_read() -> None:
    data, _ = packets.pack_frames([svc(raw(ETH / V4 / UDP(dport=1)))])
    hdrs, info = parse_batch(data, np.array([0, len(data) + 100, 5, -3], dtype=np.int64))
    assert list(info["drop"]) == [DROP_TRUNCATED] * 3 and not hdrs["valid"].any()
    assert len(parse_batch(data[:0], np.zeros(1, np.int64))[0]) == 0


def test_reused_output_buffers_are_cleared() -> None:
    good = svc(raw(ETH / V4 / TCP(sport=5, dport=6, flags="S")))
    out = (np.zeros(4, dtype=packets.HEADER_DTYPE), np.zeros(4, dtype=packets.PACKET_INFO_DTYPE))
    parse_batch(*packets.pack_frames([good, good]), out=out)
    hdrs, info = parse_batch(*packets.pack_frames([good[:40]]), out=out)
    assert len(hdrs) == 1 and hdrs[0]["valid"] == 0 and hdrs[0]["sport"] == 0
    assert info[0]["drop"] == DROP_TRUNCATED and info[0]["tcp_flags"] == 0
    with pytest.raises(ValueError, match="fewer"):
        parse_batch(*packets.pack_frames([good] * 5), out=out)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_fuzzed_frames_never_crash_and_invalid_never_matches(data: st.DataObject) -> None:
    base = svc(raw(data.draw(st.sampled_from([g[0] for g in GOOD]))))
    frame = bytearray(base)
    for _ in range(data.draw(st.integers(0, 6))):
        frame[data.draw(st.integers(0, len(frame) - 1))] = data.draw(st.integers(0, 255))
    frame = frame[: data.draw(st.integers(0, len(frame)))]
    junk = data.draw(st.binary(max_size=80))
    hdrs, info = parse_frames([bytes(frame), junk])
    assert np.array_equal(hdrs["valid"] == 1, info["drop"] == PARSE_OK)
    # A rule that matches every IPv4 and IPv6 header still matches no invalid one.
    any_v4 = one_rule(proto_mask=0)
    any_v6 = one_rule(proto_mask=0, src_plen=0, dst_plen=0)
    got = TupleMerge(np.concatenate([any_v4, any_v6])).classify(hdrs)
    assert np.all((got >= 0) == (hdrs["valid"] == 1))


@pytest.mark.skipif(not NICFW_H.exists(), reason=f"{NICFW_H} absent: the C parser is not here")
def test_drop_codes_follow_the_c_enum() -> None:
    body = re.search(r"enum nicfw_drop \{(.*?)\};", NICFW_H.read_text(), re.S)
    assert body is not None
    names = re.findall(r"DROP_([A-Z0-9_]+)\s*,", body.group(1))
    assert [n.lower() for n in names[: len(packets.DROP_NAMES)]] == list(packets.DROP_NAMES)

"""The numba parser of an ICMP error's quoted packet (packets.quote_key), against scapy.

Expected keys come from scapy's own view of the quoted packet (addresses, ports, identifier and
type/code); the service datapaths that use the parser are tested in
tests/integration/test_icmp_related.py.
"""

from __future__ import annotations

import ipaddress

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption
from scapy.layers.inet6 import (
    ICMPv6EchoRequest,
    ICMPv6PacketTooBig,
    ICMPv6TimeExceeded,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
)
from scapy.layers.l2 import Ether
from scapy.packet import Packet, Raw

from dpdk_app import packets
from dpdk_app.classifier.headers import HEADER_DTYPE
from dpdk_app.fastpath import ServiceHeader, encapsulate

ETH = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
C4, S4, C6, S6 = "10.1.0.1", "10.2.0.1", "2001:db8:1::1", "2001:db8:2::1"


def quote_of(frame: Packet) -> tuple[int, ...] | None:
    """The key packets.quote_key gives the encapsulated frame, or None."""
    raw = encapsulate(bytes(frame), ServiceHeader(1, 2))
    _, info = packets.parse_frames([raw])
    assert info[0]["drop"] == packets.PARSE_OK
    q = np.zeros(1, dtype=HEADER_DTYPE)
    if not packets.quote_key(np.frombuffer(raw, dtype=np.uint8), info, 0, q, 0):
        return None
    h = q[0]
    return tuple(
        int(h[f]) for f in ("src_hi", "src_lo", "dst_hi", "dst_lo", "sport", "dport", "proto")
    )


def want(quoted: Packet) -> tuple[int, ...]:
    """The pipeline key of a quoted packet, from scapy's fields."""
    ip = quoted[IPv6] if IPv6 in quoted else quoted[IP]
    words = []
    for text in (ip.src, ip.dst):
        a = ipaddress.ip_address(text)
        v = (0xFFFF << 32 | int(a)) if a.version == 4 else int(a)
        words += [v >> 64, v & (2**64 - 1)]
    if TCP in quoted or UDP in quoted:
        l4 = quoted[TCP] if TCP in quoted else quoted[UDP]
        return (*words, int(l4.sport), int(l4.dport), 6 if TCP in quoted else 17)
    if ICMP in quoted:
        return (*words, int(quoted[ICMP].id), int(quoted[ICMP].type) << 8, 1)
    echo = quoted[ICMPv6EchoRequest]
    return (*words, int(echo.id), int(echo.type) << 8, 58)


def err4(quote: bytes, kind: int = 3) -> Packet:
    return ETH / IP(src="10.9.9.9", dst=C4) / ICMP(type=kind, code=0) / Raw(quote)


def err6(quote: bytes, msg: Packet | None = None) -> Packet:
    inner = ICMPv6PacketTooBig(mtu=1280) if msg is None else msg
    return ETH / IPv6(src="2001:db8:9::1", dst=C6) / inner / Raw(quote)


QUOTED_V4: list[Packet] = [
    IP(src=C4, dst=S4) / TCP(sport=40000, dport=80, flags="S"),
    IP(src=C4, dst=S4, options=[IPOption(b"\x01" * 8)]) / UDP(sport=5, dport=53),
    IP(src=C4, dst=S4) / ICMP(type=8, id=77),
    IP(src=S4, dst=C4) / ICMP(type=0, id=78),
]
QUOTED_V6: list[Packet] = [
    IPv6(src=C6, dst=S6) / TCP(sport=40000, dport=443, flags="S"),
    IPv6(src=C6, dst=S6) / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt() / UDP(sport=6, dport=53),
    IPv6(src=C6, dst=S6) / IPv6ExtHdrFragment(offset=0, m=1) / TCP(sport=1, dport=2),
    IPv6(src=C6, dst=S6) / ICMPv6EchoRequest(id=79),
]


def test_quoted_packets_are_keyed_as_scapy_reads_them() -> None:
    for quoted in QUOTED_V4:
        for kind in (3, 11, 12):
            assert quote_of(err4(bytes(quoted), kind)) == want(quoted), quoted.summary()
    for quoted6 in QUOTED_V6:
        for msg in (None, ICMPv6TimeExceeded()):
            assert quote_of(err6(bytes(quoted6), msg)) == want(quoted6), quoted6.summary()


def test_other_protocols_are_keyed_with_ports_0() -> None:
    key = quote_of(err4(bytes(IP(src=C4, dst=S4, proto=47) / Raw(b"gre"))))
    assert key is not None and key[4:] == (0, 0, 47)


def test_a_quote_needs_its_ip_header_and_8_bytes_of_l4() -> None:
    for quoted, need in ((QUOTED_V4[0], 28), (QUOTED_V6[0], 48), (QUOTED_V6[1], 64)):
        q = bytes(quoted)
        for n in range(len(q) + 1):
            frame = err4(q[:n]) if IP in quoted else err6(q[:n])
            assert (quote_of(frame) is not None) == (n >= need), (quoted.summary(), n)


def test_not_errors_and_bad_quotes_give_no_key() -> None:
    tcp4, tcp6 = bytes(QUOTED_V4[0]), bytes(QUOTED_V6[0])
    nested = bytes(IP(src=C4, dst=S4) / ICMP(type=3, code=3) / Raw(tcp4[:28]))
    for frame in (
        err4(tcp4, kind=5),  # redirect
        err4(tcp4, kind=4),  # source quench
        err4(tcp4, kind=0),  # echo reply
        err4(nested),  # an error quoting an error
        err4(tcp6),  # other IP version
        err6(tcp4),
        err4(b"\x44" + tcp4[1:]),  # IHL 4
        err4(tcp4[:6] + b"\x00\x01" + tcp4[8:]),  # a later fragment
        err6(tcp6, ICMPv6EchoRequest()),
        err6(bytes(IPv6(src=C6, dst=S6) / IPv6ExtHdrFragment(offset=3) / Raw(tcp6[40:]))),
        err6(bytes(IPv6(src=C6, dst=S6) / (IPv6ExtHdrDestOpt() / IPv6ExtHdrHopByHop()) / TCP())),
        err6(bytes(IPv6(src=C6, dst="::ffff:10.2.0.1") / TCP())),
        ETH / IP(src="10.9.9.9", dst=C4) / ICMP(type=3, chksum=1) / Raw(tcp4),
        ETH / IP(src="10.9.9.9", dst=C4, flags="MF") / ICMP(type=3) / Raw(tcp4),
    ):
        assert quote_of(frame) is None, frame.summary()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80), st.sampled_from([3, 11, 12]))
def test_any_quote_is_parsed_within_its_message(quote: bytes, kind: int) -> None:
    key = quote_of(err4(quote, kind))
    if key is not None:  # a key is only ever what the quote's own bytes say
        assert quote[0] >> 4 == 4 and len(quote) >= (quote[0] & 15) * 4 >= 20
        src = int.from_bytes(quote[12:16], "big")
        assert key[:2] == (0, 0xFFFF << 32 | src) and key[6] == quote[9]

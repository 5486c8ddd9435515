"""The parser and deparser of firewall.p4, on byte strings.

`parse` does what FirewallParser (p4/include/parser.p4) does: from the CPU port it extracts
packet_out and nothing else; a frame whose outer ether type is the service's has its outer
Ethernet and service headers extracted and the inner frame left as payload; any other frame is
parsed as Ethernet, one 802.1Q tag, IPv4 (IHL respected, options kept) or IPv6, then TCP, UDP or
ICMP, and the lookup key of docs/pipeline.md ("The lookup key") is filled in. A frame too short
for a header the parser must extract, or IPv4 with IHL < 5, is a parser error: `parse` returns
None and the pipeline drops it. Only `struct` and slicing are used here, never scapy: this is
the hot path.
"""

from __future__ import annotations

import struct
import sys
from typing import Final

from offload.names import SERVICE_ETHERTYPE, SERVICE_HEADER_LEN

ETHERNET_LEN: Final = 14
VLAN_LEN: Final = 4
IPV4_MIN_LEN: Final = 20
IPV6_LEN: Final = 40
TCP_LEN: Final = 20
UDP_LEN: Final = 8
ICMP_LEN: Final = 8
PACKET_OUT_LEN: Final = 4  # egress_port 16, flags 16
PACKET_IN_LEN: Final = 12  # the service header's fields, in the same order

ETHERTYPE_IPV4: Final = 0x0800
ETHERTYPE_IPV6: Final = 0x86DD
ETHERTYPE_VLAN: Final = 0x8100
PROTO_ICMP: Final = 1
PROTO_TCP: Final = 6
PROTO_UDP: Final = 17
PROTO_ICMPV6: Final = 58

# IPv4 addresses are keyed IPv4-mapped (::ffff:a.b.c.d), as offload.p4values does.
V4_MAPPED: Final = 0xFFFF << 32

_U16 = struct.Struct("!H")
_U16X2 = struct.Struct("!HH")
# ingress_port 16, egress_port 16, reason 8, direction 8, workload_id 16, rule_id 32
_SERVICE = struct.Struct("!HHBBHI")
_ICMP_KEY = struct.Struct("!BBxxH")  # type, code, (checksum), identifier


class Headers:
    """What the parser extracted from one frame: the headers the stages read and the key."""

    __slots__ = (
        "eth_dst",
        "frame_start",
        "ip_dst",
        "ip_proto",
        "ip_src",
        "is_ip",
        "l4_dst",
        "l4_src",
        "packet_out",
        "service",
    )

    def __init__(self) -> None:
        self.packet_out: tuple[int, int] | None = None  # (egress_port, flags)
        self.service: tuple[int, int, int, int, int, int] | None = None
        self.frame_start = 0  # offset of the (inner) Ethernet frame
        self.eth_dst = 0
        self.is_ip = False
        self.ip_src = 0
        self.ip_dst = 0
        self.ip_proto = 0
        self.l4_src = 0
        self.l4_dst = 0


def parse(data: bytes, from_cpu: bool) -> Headers | None:
    """Parse a frame as firewall.p4's parser does; None on a parser error (drop)."""
    h = Headers()
    n = len(data)
    if from_cpu:
        # From the controller: only packet_out is extracted; the frame leaves as it is.
        if n < PACKET_OUT_LEN:
            return None
        h.packet_out = _U16X2.unpack_from(data, 0)
        h.frame_start = PACKET_OUT_LEN
        return h
    if n < ETHERNET_LEN:
        return None
    ether_type = _U16.unpack_from(data, 12)[0]
    if ether_type == SERVICE_ETHERTYPE:
        # Re-injected by the service: the inner frame is not parsed (nor classified again).
        if n < ETHERNET_LEN + SERVICE_HEADER_LEN:
            return None
        h.service = _SERVICE.unpack_from(data, ETHERNET_LEN)
        h.frame_start = ETHERNET_LEN + SERVICE_HEADER_LEN
        return h
    pos = 0
    h.frame_start = pos
    h.eth_dst = int.from_bytes(data[pos : pos + 6], "big")
    pos += ETHERNET_LEN
    if ether_type == ETHERTYPE_VLAN:
        if n < pos + VLAN_LEN:
            return None
        ether_type = _U16.unpack_from(data, pos + 2)[0]
        pos += VLAN_LEN
    if ether_type == ETHERTYPE_IPV4:
        return h if _parse_ipv4(data, pos, h) else None
    if ether_type == ETHERTYPE_IPV6:
        return h if _parse_ipv6(data, pos, h) else None
    return h


def _parse_ipv4(data: bytes, pos: int, h: Headers) -> bool:
    if len(data) < pos + IPV4_MIN_LEN:
        return False
    ihl = data[pos] & 0x0F  # the version is not checked, as in firewall.p4
    if ihl < 5:
        return False
    header_len = ihl * 4
    if len(data) < pos + header_len:
        return False
    h.is_ip = True
    proto = data[pos + 9]
    h.ip_proto = proto
    h.ip_src = V4_MAPPED | int.from_bytes(data[pos + 12 : pos + 16], "big")
    h.ip_dst = V4_MAPPED | int.from_bytes(data[pos + 16 : pos + 20], "big")
    if _U16.unpack_from(data, pos + 6)[0] & 0x1FFF:
        return True  # a later fragment carries no L4 header: ports stay 0
    pos += header_len
    if proto == PROTO_ICMP:
        return _parse_icmp(data, pos, h)
    return _parse_ports(data, pos, proto, h)


def _parse_ipv6(data: bytes, pos: int, h: Headers) -> bool:
    if len(data) < pos + IPV6_LEN:
        return False
    h.is_ip = True
    proto = data[pos + 6]
    h.ip_proto = proto
    h.ip_src = int.from_bytes(data[pos + 8 : pos + 24], "big")
    h.ip_dst = int.from_bytes(data[pos + 24 : pos + 40], "big")
    pos += IPV6_LEN
    if proto == PROTO_ICMPV6:
        return _parse_icmp(data, pos, h)
    return _parse_ports(data, pos, proto, h)


def _parse_ports(data: bytes, pos: int, proto: int, h: Headers) -> bool:
    if proto == PROTO_TCP:
        if len(data) < pos + TCP_LEN:
            return False
    elif proto == PROTO_UDP:
        if len(data) < pos + UDP_LEN:
            return False
    else:
        return True  # other protocols: no L4 header, ports 0
    h.l4_src, h.l4_dst = _U16X2.unpack_from(data, pos)
    return True


def _parse_icmp(data: bytes, pos: int, h: Headers) -> bool:
    if len(data) < pos + ICMP_LEN:
        return False
    icmp_type, code, ident = _ICMP_KEY.unpack_from(data, pos)
    h.l4_src = ident
    h.l4_dst = icmp_type << 8 | code
    return True


def service_header(
    ingress_port: int, egress_port: int, reason: int, direction: int, workload_id: int, rule: int
) -> bytes:
    """The 12-byte service header (also the layout of the packet_in controller header)."""
    return _SERVICE.pack(ingress_port, egress_port, reason, direction, workload_id, rule)


def encapsulate(frame: bytes, header: bytes) -> bytes:
    """Service encapsulation: outer Ethernet (the frame's own addresses, 0x88B5) + header."""
    return frame[:12] + b"\x88\xb5" + header + frame


def packet_out_header(egress_port: int, flags: int = 0) -> bytes:
    """The packet_out controller header as the CPU port delivers it to the parser."""
    return _U16X2.pack(egress_port, flags)


def l4_checksum_fixed(frame: bytes) -> bytes:
    """Complete the TCP/UDP checksum of a frame captured before checksum offload filled it in.

    The kernel hands AF_PACKET sockets locally generated frames whose L4 checksum is still
    partial (TP_STATUS_CSUMNOTREADY); forwarded as they are, the receiver would drop them.
    """
    pos = ETHERNET_LEN
    ether_type = _U16.unpack_from(frame, 12)[0] if len(frame) >= ETHERNET_LEN else 0
    if ether_type == ETHERTYPE_VLAN and len(frame) >= pos + VLAN_LEN:
        ether_type = _U16.unpack_from(frame, pos + 2)[0]
        pos += VLAN_LEN
    if ether_type == ETHERTYPE_IPV4 and len(frame) >= pos + IPV4_MIN_LEN:
        ihl = (frame[pos] & 0x0F) * 4
        total = _U16.unpack_from(frame, pos + 2)[0]
        proto = frame[pos + 9]
        l4 = pos + ihl
        end = pos + total
        pseudo = frame[pos + 12 : pos + 20] + bytes((0, proto)) + _U16.pack(end - l4)
    elif ether_type == ETHERTYPE_IPV6 and len(frame) >= pos + IPV6_LEN:
        proto = frame[pos + 6]
        l4 = pos + IPV6_LEN
        end = l4 + _U16.unpack_from(frame, pos + 4)[0]
        pseudo = frame[pos + 8 : pos + 40] + struct.pack("!IxxxB", end - l4, proto)
    else:
        return frame
    offset = {PROTO_TCP: 16, PROTO_UDP: 6}.get(proto)
    if offset is None or end > len(frame) or end - l4 < offset + 2:
        return frame
    segment = bytearray(frame[l4:end])
    segment[offset : offset + 2] = b"\x00\x00"
    csum = internet_checksum(pseudo + bytes(segment))
    if proto == PROTO_UDP and csum == 0:
        csum = 0xFFFF
    segment[offset : offset + 2] = _U16.pack(csum)
    return frame[:l4] + bytes(segment) + frame[end:]


def internet_checksum(data: bytes) -> int:
    """RFC 1071 checksum of `data`."""
    if len(data) % 2:
        data += b"\x00"
    # The ones' complement sum does not depend on byte order: add native-order words in C,
    # fold, and swap the result on little-endian hosts.
    total = sum(memoryview(data).cast("H"))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    if sys.byteorder == "little":
        total = (total & 0xFF) << 8 | total >> 8
    return ~total & 0xFFFF

"""One table of pipeline test vectors: entries + a packet -> what must come out.

Every vector installs its entries (and multicast groups, and default-action changes) on a
clean target, sends one frame into one port (or one PacketOut), and says what must happen:
frames out of data ports (`out`), a PacketIn with its metadata (`packet_in`), or nothing at
all (a drop). `counters` names entries whose direct counter must then read (packets, bytes).
The expectations are written from docs/pipeline.md, by hand; the same table runs against the
software target and, when it is available, BMv2 (tests/integration/test_target_vectors.py).

Ports: hosts H1, H2, H3 on ports 1, 2, 3; the service port, when a vector configures one, is 7.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass, field

from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_RR
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6, IPv6ExtHdrHopByHop
from scapy.layers.l2 import ARP, Dot1Q, Ether
from scapy.packet import Raw

from offload import names as n
from offload.entries import Entry, Exact, Lpm, Optional, Range, Ternary
from offload.names import Direction, Reason
from offload.p4values import ip_to_int128, network_to_lpm128

H1, H2, H3 = "00:00:00:00:00:01", "00:00:00:00:00:02", "00:00:00:00:00:03"
BROADCAST = "ff:ff:ff:ff:ff:ff"
SERVICE_PORT = 7
DROP_PORT = 511  # the service header's egress_port when forwarding chose drop or multicast
IP1, IP2 = "10.0.0.1", "10.0.0.2"
V6A, V6B = "2001:db8:1::5", "2001:db8:2::6"


@dataclass(frozen=True)
class PacketIn:
    """An expected PacketIn: the frame and its packet_in metadata."""

    payload: bytes
    ingress_port: int
    egress_port: int
    reason: int
    direction: int
    workload_id: int
    rule_id: int

    def metadata(self) -> dict[str, int]:
        """The metadata by name, as P4Info names the packet_in fields."""
        return {
            "ingress_port": self.ingress_port,
            "egress_port": self.egress_port,
            "reason": self.reason,
            "direction": self.direction,
            "workload_id": self.workload_id,
            "rule_id": self.rule_id,
        }


@dataclass(frozen=True)
class Vector:
    """Entries + one frame -> the frames out of each port, a PacketIn, or a drop."""

    name: str
    packet: bytes
    ingress: int = 1
    entries: tuple[Entry, ...] = ()
    groups: Mapping[int, tuple[int, ...]] = field(default_factory=dict)
    out: Mapping[int, tuple[bytes, ...]] = field(default_factory=dict)
    packet_in: PacketIn | None = None
    counters: tuple[tuple[int, int, int], ...] = ()  # (index in entries, packets, bytes)
    packet_out_port: int | None = None  # send as a PacketOut to this egress port instead

    @property
    def drops(self) -> bool:
        """Whether nothing at all must come out."""
        return not self.out and self.packet_in is None


# ------------------------------------------------------------------ entry helpers
def mac(text: str) -> int:
    """A MAC address as an integer."""
    return int(text.replace(":", ""), 16)


def l2(dst: str, port: int) -> Entry:
    """l2_forward: dst -> port."""
    return Entry.make(n.L2_FORWARD, {"eth_dst": Exact(mac(dst))}, n.SET_EGRESS_PORT, {"port": port})


def l2_group(dst: str, group: int) -> Entry:
    """l2_forward: dst -> multicast group."""
    return Entry.make(
        n.L2_FORWARD, {"eth_dst": Exact(mac(dst))}, n.SET_MCAST_GROUP, {"group": group}
    )


def l2_drop(dst: str) -> Entry:
    """l2_forward: dst -> drop."""
    return Entry.make(n.L2_FORWARD, {"eth_dst": Exact(mac(dst))}, n.FWD_DROP)


def src_class(net: str, class_id: int, workload: int = 0) -> Entry:
    """classify.src_class: prefix -> class (and local workload)."""
    value, plen = network_to_lpm128(net)
    return Entry.make(
        n.SRC_CLASS,
        {"ip_src": Lpm(value, plen)},
        n.SET_SRC_CLASS,
        {"class_id": class_id, "workload_id": workload},
    )


def dst_class(net: str, class_id: int, workload: int = 0) -> Entry:
    """classify.dst_class: prefix -> class (and local workload)."""
    value, plen = network_to_lpm128(net)
    return Entry.make(
        n.DST_CLASS,
        {"ip_dst": Lpm(value, plen)},
        n.SET_DST_CLASS,
        {"class_id": class_id, "workload_id": workload},
    )


def five_tuple(src: str, dst: str, proto: int, sport: int, dport: int) -> dict[str, Exact]:
    """An exact 5-tuple key."""
    return {
        "ip_src": Exact(ip_to_int128(src)),
        "ip_dst": Exact(ip_to_int128(dst)),
        "ip_proto": Exact(proto),
        "l4_src": Exact(sport),
        "l4_dst": Exact(dport),
    }


def flow(src: str, dst: str, proto: int, sport: int, dport: int, allow: bool, rule: int) -> Entry:
    """flows.flow_cache: 5-tuple -> allow/drop."""
    action = n.FLOW_ALLOW if allow else n.FLOW_DROP
    return Entry.make(
        n.FLOW_CACHE, five_tuple(src, dst, proto, sport, dport), action, {"rule_id": rule}
    )


def ident(src: str, dst: str, proto: int, sport: int, dport: int, id_class: int) -> Entry:
    """ident.identity: 5-tuple -> identity class."""
    return Entry.make(
        n.IDENTITY,
        five_tuple(src, dst, proto, sport, dport),
        n.SET_IDENTITY,
        {"id_class": id_class},
    )


def acl(
    priority: int,
    action: str,
    rule: int,
    *,
    src: tuple[int, int] | None = None,
    dst: tuple[int, int] | None = None,
    proto: int | None = None,
    sport: tuple[int, int] | None = None,
    dport: tuple[int, int] | None = None,
    id_class: tuple[int, int] | None = None,
    table: str = n.ACL,
) -> Entry:
    """acl.acl (or acl.acl_audit, same keys): an entry; keys left out are wildcards."""
    match: dict[str, Ternary | Optional | Range] = {}
    if src is not None:
        match["src_class"] = Ternary(*src)
    if dst is not None:
        match["dst_class"] = Ternary(*dst)
    if proto is not None:
        match["ip_proto"] = Optional(proto)
    if sport is not None:
        match["l4_src"] = Range(*sport)
    if dport is not None:
        match["l4_dst"] = Range(*dport)
    if id_class is not None:
        match["id_class"] = Ternary(*id_class)
    return Entry.make(table, match, action, {"rule_id": rule}, priority=priority)


def acl_audit(
    priority: int, rule: int, proto: int | None = None, dport: tuple[int, int] | None = None
) -> Entry:
    """acl.acl_audit: audit_hit(rule), matched like acl.acl."""
    return acl(priority, n.AUDIT_HIT, rule, proto=proto, dport=dport, table=n.ACL_AUDIT)


def log_rule(rule: int) -> Entry:
    """acl.log_rules: the rule is logged (a digest to the controller; never the verdict)."""
    return Entry.make(n.LOG_RULES, {"rule_id": Exact(rule)}, n.LOG_HIT)


def acl_default(action: str, rule: int) -> Entry:
    """acl.acl's default action."""
    return Entry.make(n.ACL, None, action, {"rule_id": rule}, is_default=True)


def service_port(port: int) -> Entry:
    """svc.service_config's default action: the service port."""
    return Entry.make(n.SERVICE_CONFIG, None, n.SET_SERVICE_PORT, {"port": port}, is_default=True)


# ------------------------------------------------------------------ frame helpers
def tcp4(dport: int = 80, sport: int = 1234, src: str = IP1, dst: str = IP2) -> bytes:
    """H1 -> H2 TCP over IPv4."""
    return bytes(Ether(src=H1, dst=H2) / IP(src=src, dst=dst) / TCP(sport=sport, dport=dport))


def udp4(dport: int = 53, sport: int = 1500) -> bytes:
    """H1 -> H2 UDP over IPv4."""
    return bytes(Ether(src=H1, dst=H2) / IP(src=IP1, dst=IP2) / UDP(sport=sport, dport=dport))


def tcp6(dport: int = 443, sport: int = 40000, src: str = V6A, dst: str = V6B) -> bytes:
    """H1 -> H2 TCP over IPv6."""
    return bytes(Ether(src=H1, dst=H2) / IPv6(src=src, dst=dst) / TCP(sport=sport, dport=dport))


def encapsulated(frame: bytes, ingress: int, egress: int, reason: int, direction: int,
                 workload: int, rule: int) -> bytes:  # fmt: skip
    """The service encapsulation docs/pipeline.md describes, written out by hand."""
    header = struct.pack("!HHBBHI", ingress, egress, reason, direction, workload, rule)
    return frame[:12] + b"\x88\xb5" + header + frame


ALLOW_ALL = acl(1, n.ACL_ALLOW, 1)
ARP_H1_H2 = bytes(Ether(src=H1, dst=H2) / ARP(psrc=IP1, pdst=IP2))
ARP_BCAST = bytes(Ether(src=H1, dst=BROADCAST) / ARP(psrc=IP1, pdst=IP2))
TCP80 = tcp4(80)
UDP53 = udp4()
ICMP_ECHO = bytes(Ether(src=H1, dst=H2) / IP(src=IP1, dst=IP2) / ICMP(type=8, id=0x1234, seq=1))
ICMP_REPLY = bytes(Ether(src=H1, dst=H2) / IP(src=IP1, dst=IP2) / ICMP(type=0, id=0x1234, seq=1))
TCP6 = tcp6()
ICMP6_ECHO = bytes(Ether(src=H1, dst=H2) / IPv6(src=V6A, dst=V6B) / ICMPv6EchoRequest(id=7))
VLAN_TCP80 = bytes(Ether(src=H1, dst=H2) / Dot1Q(vlan=10) / IP(src=IP1, dst=IP2) / TCP(dport=80))
IPV4_OPTIONS_TCP80 = bytes(
    Ether(src=H1, dst=H2) / IP(src=IP1, dst=IP2, options=[IPOption_RR()]) / TCP(dport=80)
)
FRAGMENT = bytes(Ether(src=H1, dst=H2) / IP(src=IP1, dst=IP2, proto=6, frag=100) / Raw(b"x" * 40))
IHL4 = TCP80[:14] + bytes([0x44]) + TCP80[15:]
HOP_BY_HOP_TCP80 = bytes(
    Ether(src=H1, dst=H2) / IPv6(src=V6A, dst=V6B) / IPv6ExtHdrHopByHop() / TCP(dport=80)
)
SERVICE_TO_H2 = encapsulated(TCP80, 1, 2, Reason.PUNT, Direction.UNKNOWN, 0, 12)


VECTORS: tuple[Vector, ...] = (
    # ---- fwd.l2_forward, and non-IP frames
    Vector(
        "l2 unicast: ARP to a known MAC", ARP_H1_H2, entries=(l2(H2, 2),), out={2: (ARP_H1_H2,)}
    ),
    Vector("l2 default drop: unknown MAC", ARP_H1_H2),
    Vector("l2 drop action beats an ACL allow", TCP80, entries=(l2_drop(H2), ALLOW_ALL)),
    Vector(
        "unknown ether type is forwarded as l2 decided",
        bytes(Ether(src=H1, dst=H2, type=0x1234) / Raw(b"payload")),
        entries=(l2(H2, 2),),
        out={2: (bytes(Ether(src=H1, dst=H2, type=0x1234) / Raw(b"payload")),)},
    ),
    Vector(
        "broadcast to a multicast group, never back to the ingress port",
        ARP_BCAST,
        entries=(l2_group(BROADCAST, 1),),
        groups={1: (1, 2, 3)},
        out={2: (ARP_BCAST,), 3: (ARP_BCAST,)},
    ),
    Vector(
        "multicast to a group that does not exist: drop",
        ARP_BCAST,
        entries=(l2_group(BROADCAST, 9),),
    ),
    # ---- acl.acl: match kinds, priorities, counters
    Vector(
        "ipv4 tcp allowed: optional proto + range dport; counter moves",
        TCP80,
        entries=(l2(H2, 2), acl(10, n.ACL_ALLOW, 100, proto=6, dport=(80, 80))),
        out={2: (TCP80,)},
        counters=((1, 1, len(TCP80)),),
    ),
    Vector(
        "ipv4 tcp to another port: default acl_drop(0); counter stays",
        tcp4(81),
        entries=(l2(H2, 2), acl(10, n.ACL_ALLOW, 100, proto=6, dport=(80, 80))),
        counters=((1, 0, 0),),
    ),
    Vector(
        "priority: a higher drop beats a lower allow",
        tcp4(22),
        entries=(
            l2(H2, 2),
            acl(10, n.ACL_ALLOW, 1, proto=6),
            acl(20, n.ACL_DROP, 2, dport=(22, 22)),
        ),
        counters=((1, 0, 0), (2, 1, len(tcp4(22)))),
    ),
    Vector(
        "priority: the lower allow applies where the higher drop does not match",
        TCP80,
        entries=(
            l2(H2, 2),
            acl(10, n.ACL_ALLOW, 1, proto=6),
            acl(20, n.ACL_DROP, 2, dport=(22, 22)),
        ),
        out={2: (TCP80,)},
        counters=((1, 1, len(TCP80)), (2, 0, 0)),
    ),
    Vector(
        "udp source port range: inside",
        UDP53,
        entries=(l2(H2, 2), acl(10, n.ACL_ALLOW, 3, proto=17, sport=(1000, 2000))),
        out={2: (UDP53,)},
    ),
    Vector(
        "udp source port range: outside",
        udp4(sport=999),
        entries=(l2(H2, 2), acl(10, n.ACL_ALLOW, 3, proto=17, sport=(1000, 2000))),
    ),
    Vector(
        "class bits: src group bit and dst group bit (ternary)",
        tcp4(dst="10.0.1.5"),
        entries=(
            l2(H2, 2),
            src_class("10.0.0.0/24", 0b01),
            dst_class("10.0.1.0/24", 0b10),
            acl(10, n.ACL_ALLOW, 4, src=(0b01, 0b01), dst=(0b10, 0b10)),
        ),
        out={2: (tcp4(dst="10.0.1.5"),)},
    ),
    Vector(
        "class bits: destination outside the group",
        tcp4(dst="10.0.2.5"),
        entries=(
            l2(H2, 2),
            src_class("10.0.0.0/24", 0b01),
            dst_class("10.0.1.0/24", 0b10),
            acl(10, n.ACL_ALLOW, 4, src=(0b01, 0b01), dst=(0b10, 0b10)),
        ),
    ),
    Vector(
        "lpm: the longest prefix wins (/16 over /8)",
        tcp4(src="10.1.2.3"),
        entries=(
            l2(H2, 2),
            src_class("10.0.0.0/8", 1),
            src_class("10.1.0.0/16", 2),
            acl(10, n.ACL_ALLOW, 5, src=(2, 0xFF)),
        ),
        out={2: (tcp4(src="10.1.2.3"),)},
    ),
    Vector(
        "lpm: outside the /16 the /8 applies",
        tcp4(src="10.2.0.1"),
        entries=(
            l2(H2, 2),
            src_class("10.0.0.0/8", 1),
            src_class("10.1.0.0/16", 2),
            acl(10, n.ACL_ALLOW, 5, src=(2, 0xFF)),
        ),
    ),
    Vector(
        "icmp echo: type/code is l4_dst, identifier is l4_src",
        ICMP_ECHO,
        entries=(
            l2(H2, 2),
            acl(10, n.ACL_ALLOW, 6, proto=1, sport=(0x1234, 0x1234), dport=(0x0800, 0x0800)),
        ),
        out={2: (ICMP_ECHO,)},
    ),
    Vector(
        "icmp echo reply does not match an echo-request rule",
        ICMP_REPLY,
        entries=(
            l2(H2, 2),
            acl(10, n.ACL_ALLOW, 6, proto=1, sport=(0x1234, 0x1234), dport=(0x0800, 0x0800)),
        ),
    ),
    # ---- flows.flow_cache and ident.identity
    Vector(
        "flow cache allow: forwarded though the ACL would drop; flow counter moves",
        tcp4(443),
        entries=(l2(H2, 2), flow(IP1, IP2, 6, 1234, 443, True, 7)),
        out={2: (tcp4(443),)},
        counters=((1, 1, len(tcp4(443))),),
    ),
    Vector(
        "flow cache drop: dropped though the ACL would allow",
        tcp4(443),
        entries=(l2(H2, 2), flow(IP1, IP2, 6, 1234, 443, False, 8), ALLOW_ALL),
        counters=((1, 1, len(tcp4(443))), (2, 0, 0)),
    ),
    Vector(
        "identity class reaches the ACL",
        TCP80,
        entries=(
            l2(H2, 2),
            ident(IP1, IP2, 6, 1234, 80, 0x4),
            acl(10, n.ACL_ALLOW, 9, id_class=(0x4, 0x4)),
        ),
        out={2: (TCP80,)},
    ),
    Vector(
        "no identity entry: identity class 0",
        TCP80,
        entries=(
            l2(H2, 2),
            ident(IP1, IP2, 6, 1234, 8080, 0x4),
            acl(10, n.ACL_ALLOW, 9, id_class=(0x4, 0x4)),
        ),
    ),
    # ---- to the service: packet_in without a service port
    Vector(
        "acl_reject: packet_in REJECT, outbound from a local workload",
        tcp4(23),
        entries=(
            l2(H2, 2),
            src_class("10.0.0.1/32", 1, workload=5),
            acl(10, n.ACL_REJECT, 9, proto=6, dport=(23, 23)),
        ),
        packet_in=PacketIn(tcp4(23), 1, 2, Reason.REJECT, Direction.OUTBOUND, 5, 9),
    ),
    # ---- acl.acl_audit: counted, never the verdict
    Vector(
        "acl_audit hit: counted, and acl's allow still forwards",
        TCP80,
        entries=(
            l2(H2, 2),
            acl_audit(50, 31, proto=6, dport=(80, 80)),
            acl(10, n.ACL_ALLOW, 10, proto=6),
        ),
        out={2: (TCP80,)},
        counters=((1, 1, len(TCP80)), (2, 1, len(TCP80))),
    ),
    Vector(
        "acl_audit hit does not allow: acl's default acl_drop(0) still drops",
        TCP80,
        entries=(l2(H2, 2), acl_audit(50, 31, proto=6)),
        counters=((1, 1, len(TCP80)),),
    ),
    Vector(
        "acl_audit miss: its counter stays",
        UDP53,
        entries=(l2(H2, 2), acl_audit(50, 31, proto=6), acl(10, n.ACL_ALLOW, 10)),
        out={2: (UDP53,)},
        counters=((1, 0, 0), (2, 1, len(UDP53))),
    ),
    Vector(
        "acl_audit hit, then acl_service: packet_in names acl's rule, not the audit rule",
        TCP80,
        entries=(l2(H2, 2), acl_audit(50, 31), acl(10, n.ACL_SERVICE, 11, proto=6)),
        packet_in=PacketIn(TCP80, 1, 2, Reason.PUNT, Direction.UNKNOWN, 0, 11),
        counters=((1, 1, len(TCP80)),),
    ),
    # ---- acl.log_rules: a logged rule keeps its verdict (the digest is tested on its own)
    Vector(
        "log_rules hit on an allow: still forwarded",
        TCP80,
        entries=(l2(H2, 2), acl(10, n.ACL_ALLOW, 12, proto=6), log_rule(12)),
        out={2: (TCP80,)},
        counters=((1, 1, len(TCP80)),),
    ),
    Vector(
        "log_rules hit on a drop, with an audit hit: still dropped",
        TCP80,
        entries=(l2(H2, 2), acl_audit(50, 31), acl(10, n.ACL_DROP, 13), log_rule(13)),
        counters=((1, 1, len(TCP80)), (2, 1, len(TCP80))),
    ),
    Vector(
        "acl_service: packet_in PUNT, inbound to a local workload, egress unknown (511)",
        TCP80,
        entries=(dst_class("10.0.0.2/32", 2, workload=6), acl(10, n.ACL_SERVICE, 11)),
        packet_in=PacketIn(TCP80, 1, DROP_PORT, Reason.PUNT, Direction.INBOUND, 6, 11),
    ),
    Vector(
        "miss with default acl_service(0): packet_in",
        UDP53,
        entries=(l2(H2, 2), acl_default(n.ACL_SERVICE, 0)),
        packet_in=PacketIn(UDP53, 1, 2, Reason.PUNT, Direction.UNKNOWN, 0, 0),
    ),
    # ---- to the service through the service port, and back
    Vector(
        "service port: encapsulated out of the service port",
        UDP53,
        entries=(service_port(SERVICE_PORT), l2(H2, 2), acl(10, n.ACL_SERVICE, 12, proto=17)),
        out={SERVICE_PORT: (encapsulated(UDP53, 1, 2, Reason.PUNT, Direction.UNKNOWN, 0, 12),)},
    ),
    Vector(
        "service port: re-injected frame goes to its egress port, not re-classified",
        SERVICE_TO_H2,
        ingress=SERVICE_PORT,
        entries=(service_port(SERVICE_PORT),),
        out={2: (TCP80,)},
    ),
    Vector(
        "service header from a non-service port: spoofed, dropped",
        SERVICE_TO_H2,
        ingress=1,
        entries=(service_port(SERVICE_PORT), l2(H2, 2), ALLOW_ALL),
    ),
    Vector(
        "service header with no service port configured: dropped",
        SERVICE_TO_H2,
        ingress=SERVICE_PORT,
        entries=(l2(H2, 2), ALLOW_ALL),
    ),
    Vector(
        "service header truncated: parser error, dropped",
        SERVICE_TO_H2[:20],
        ingress=SERVICE_PORT,
        entries=(service_port(SERVICE_PORT),),
    ),
    # ---- packet_out
    Vector(
        "packet_out: to its egress port, no table consulted",
        TCP80,
        packet_out_port=2,
        out={2: (TCP80,)},
    ),
    # ---- IPv6
    Vector(
        "ipv6 tcp allowed by classes",
        TCP6,
        entries=(
            l2(H2, 2),
            src_class("2001:db8:1::/48", 4),
            dst_class("2001:db8:2::/64", 8),
            acl(10, n.ACL_ALLOW, 20, src=(4, 4), dst=(8, 8), proto=6, dport=(443, 443)),
        ),
        out={2: (TCP6,)},
        counters=((3, 1, len(TCP6)),),
    ),
    Vector(
        "ipv6 lpm: the longest prefix wins (/48 over /32)",
        TCP6,
        entries=(
            l2(H2, 2),
            src_class("2001:db8::/32", 1),
            src_class("2001:db8:1::/48", 2),
            acl(10, n.ACL_ALLOW, 21, src=(2, 0xFF)),
        ),
        out={2: (TCP6,)},
    ),
    Vector(
        "ipv6 lpm: outside the /48 the /32 applies",
        tcp6(src="2001:db8:9::5"),
        entries=(
            l2(H2, 2),
            src_class("2001:db8::/32", 1),
            src_class("2001:db8:1::/48", 2),
            acl(10, n.ACL_ALLOW, 21, src=(2, 0xFF)),
        ),
    ),
    Vector(
        "icmpv6 echo punted: packet_in",
        ICMP6_ECHO,
        entries=(l2(H2, 2), acl(10, n.ACL_SERVICE, 13, proto=58, dport=(0x8000, 0x8000))),
        packet_in=PacketIn(ICMP6_ECHO, 1, 2, Reason.PUNT, Direction.UNKNOWN, 0, 13),
    ),
    Vector(
        "ipv6 flow cache allow",
        TCP6,
        entries=(l2(H2, 2), flow(V6A, V6B, 6, 40000, 443, True, 22)),
        out={2: (TCP6,)},
        counters=((1, 1, len(TCP6)),),
    ),
    Vector(
        "ipv6 extension header: next header is the protocol, ports 0",
        HOP_BY_HOP_TCP80,
        entries=(l2(H2, 2), acl(10, n.ACL_ALLOW, 23, proto=6, dport=(80, 80))),
    ),
    # ---- VLAN
    Vector(
        "vlan-tagged ipv4 allowed, tag kept",
        VLAN_TCP80,
        entries=(l2(H2, 2), acl(10, n.ACL_ALLOW, 30, proto=6, dport=(80, 80))),
        out={2: (VLAN_TCP80,)},
    ),
    Vector(
        "vlan-tagged ipv4 denied",
        bytes(Ether(src=H1, dst=H2) / Dot1Q(vlan=10) / IP(src=IP1, dst=IP2) / TCP(dport=81)),
        entries=(l2(H2, 2), acl(10, n.ACL_ALLOW, 30, proto=6, dport=(80, 80))),
    ),
    # ---- IPv4 details
    Vector(
        "ipv4 options: ports read after the options",
        IPV4_OPTIONS_TCP80,
        entries=(l2(H2, 2), acl(10, n.ACL_ALLOW, 31, proto=6, dport=(80, 80))),
        out={2: (IPV4_OPTIONS_TCP80,)},
    ),
    Vector(
        "ipv4 later fragment: no L4 header, ports 0",
        FRAGMENT,
        entries=(l2(H2, 2), acl(10, n.ACL_ALLOW, 32, proto=6, dport=(0, 0))),
        out={2: (FRAGMENT,)},
    ),
    # ---- malformed and truncated: dropped, never forwarded, never a crash
    Vector("empty frame", b"", entries=(l2(H2, 2), ALLOW_ALL)),
    Vector("runt: shorter than Ethernet", TCP80[:10], entries=(l2(H2, 2), ALLOW_ALL)),
    Vector("ipv4 header truncated", TCP80[:24], entries=(l2(H2, 2), ALLOW_ALL)),
    Vector("ipv4 IHL below 5", IHL4, entries=(l2(H2, 2), ALLOW_ALL)),
    Vector("ipv4 options truncated", IPV4_OPTIONS_TCP80[:36], entries=(l2(H2, 2), ALLOW_ALL)),
    Vector("tcp header truncated", TCP80[:38], entries=(l2(H2, 2), ALLOW_ALL)),
    Vector("udp header truncated", UDP53[:38], entries=(l2(H2, 2), ALLOW_ALL)),
    Vector("icmp header truncated", ICMP_ECHO[:38], entries=(l2(H2, 2), ALLOW_ALL)),
    Vector("ipv6 header truncated", TCP6[:50], entries=(l2(H2, 2), ALLOW_ALL)),
    Vector("vlan tag truncated", VLAN_TCP80[:16], entries=(l2(H2, 2), ALLOW_ALL)),
)

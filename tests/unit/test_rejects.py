"""Reject answers for packet-ins: RST for TCP, nothing for what must not be answered."""

from __future__ import annotations

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether

from controlplane.rejects import RejectResponder
from offload.names import Reason
from offload.packetio import PacketIn, ServiceHeader


def packet_in(frame: bytes, reason: int = Reason.REJECT, port: int = 3) -> PacketIn:
    header = ServiceHeader(ingress_port=port, egress_port=1, reason=reason, rule_id=9)
    return PacketIn(frame, header.to_metadata())


SYN = bytes(
    Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    / IP(src="10.0.0.1", dst="10.0.0.2")
    / TCP(sport=40000, dport=5432, flags="S", seq=1000)
)


def test_tcp_is_answered_with_a_rst_to_the_sender() -> None:
    answer = RejectResponder().response(packet_in(SYN))
    assert answer is not None
    frame, port = answer
    assert port == 3
    rst = Ether(frame)
    assert rst[IP].src == "10.0.0.2" and rst[IP].dst == "10.0.0.1"
    assert rst[TCP].sport == 5432 and rst[TCP].dport == 40000
    assert rst[TCP].flags.R and rst[TCP].ack == 1001  # SYN counts for one


def test_only_reject_packet_ins_and_never_a_rst() -> None:
    responder = RejectResponder()
    assert responder.response(packet_in(SYN, reason=Reason.PUNT)) is None
    rst = bytes(Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(flags="R"))
    assert responder.response(packet_in(rst)) is None
    assert responder.response(packet_in(SYN[:30])) is None  # truncated: not answered
    assert responder.sent == 0


def test_rate_limited() -> None:
    responder = RejectResponder(per_second=3)
    answers = [responder.response(packet_in(SYN)) for _ in range(10)]
    assert sum(a is not None for a in answers) == 3
    assert responder.suppressed == 7


def test_udp_gets_icmp_unreachable() -> None:
    frame = bytes(Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=5, dport=53))
    answer = RejectResponder().response(packet_in(frame))
    assert answer is not None
    reply = Ether(answer[0])
    assert reply[IP].dst == "10.0.0.1" and reply[IP].proto == 1

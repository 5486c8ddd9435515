"""The `make run` demo: its verdicts and the rules it names agree with the reference evaluator."""

from __future__ import annotations

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6
from scapy.layers.l2 import Ether

from controlplane.demo import demo_traffic, run_demo
from controlplane.policy import demo_policy_text, load_policy, resolve
from offload.compiler import Packet, evaluate


def lookup_key(frame: bytes) -> Packet | None:
    """The pipeline's lookup key of a demo frame (None when it does not parse)."""
    pkt = Ether(frame)
    l3 = pkt.getlayer(IP) or pkt.getlayer(IPv6)
    if l3 is None or (not pkt.haslayer(IP) and not pkt.haslayer(IPv6)):
        return None
    if pkt.haslayer(TCP) and len(frame) >= 14 + 20 + 20:
        return Packet(l3.src, l3.dst, 6, pkt[TCP].sport, pkt[TCP].dport)
    if pkt.haslayer(UDP):
        return Packet(l3.src, l3.dst, 17, pkt[UDP].sport, pkt[UDP].dport)
    if pkt.haslayer(ICMP):
        return Packet(l3.src, l3.dst, 1, pkt[ICMP].id, pkt[ICMP].type << 8 | pkt[ICMP].code)
    if pkt.haslayer(ICMPv6EchoRequest):
        echo = pkt[ICMPv6EchoRequest]
        return Packet(l3.src, l3.dst, 58, echo.id, echo.type << 8 | echo.code)
    return None


@pytest.fixture(scope="module")
def demo() -> dict:
    return run_demo()


def test_every_verdict_matches_the_reference(demo: dict) -> None:
    policy = load_policy(demo_policy_text(), "demo")
    resolved = resolve(policy)
    names = {r.rule_id: r.name for r in resolved.rules}
    traffic = demo_traffic(policy)
    assert len(demo["traffic"]) == len(traffic)
    seen = set()
    for pkt, row in zip(traffic, demo["traffic"], strict=True):
        key = lookup_key(pkt.frame)
        if key is None:
            assert row["verdict"] == "dropped", row
            continue
        expected = evaluate(resolved, key)
        seen.add(expected.action)
        if expected.action == "allow":
            assert row["verdict"].startswith("forwarded to port"), row
        elif expected.action == "reject":
            # The controller answers the packet-in: a TCP RST back out of the ingress port.
            assert key.proto == 6
            assert row["verdict"] == f"rejected: TCP RST sent back to port {pkt.port}", row
        else:
            assert row["verdict"] == "dropped", row
        want = names.get(expected.rule_id, "(default action)")
        assert row["rule"] == want, row
    assert seen == {"allow", "drop", "reject"}  # the demo shows all three


def test_counters_and_entries_are_read_back(demo: dict) -> None:
    allowed_by = [r["rule"] for r in demo["traffic"] if r["verdict"].startswith("forwarded")]
    for rule in set(allowed_by):
        assert demo["rule_hits"][rule] == allowed_by.count(rule)
    tables = {e.table.rsplit(".", 1)[-1] for e in demo["entries"]}
    assert {"acl", "src_class", "dst_class", "l2_forward"} <= tables
    assert demo["sync"]["failures"] == []

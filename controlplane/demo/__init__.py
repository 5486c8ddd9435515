"""The demo behind `make run`: the software target, the demo policy and demo traffic.

Everything goes through the real interfaces: the policy is compiled and written over
P4Runtime, packets run through the target's pipeline, and "which rule decided" is read back from
the ACL's direct counters over P4Runtime, as an operator would on any target.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6
from scapy.layers.l2 import Ether

from controlplane.agent import ApplyResult, HostAgent
from controlplane.policy import Policy, demo_policy_text, load_policy
from controlplane.rejects import RejectResponder
from offload import names
from offload.counters import counter_delta, hits_by_param
from offload.p4client import P4Client
from offload.p4schema import P4Schema
from offload.packetio import PacketIn
from offload.target import SoftwareTarget

UPLINK_PORT = 4
UPLINK_MAC = "02:00:00:00:00:fe"


@dataclass(frozen=True)
class DemoPacket:
    """One packet of demo traffic: where it enters and what it is."""

    description: str
    port: int
    frame: bytes


def _mac_of(policy: Policy, workload: str) -> str:
    from controlplane.render import mac_text

    found = next((w for w in policy.workloads if w.name == workload), None)
    if found is None or found.mac is None:
        raise ValueError(f"the demo policy needs workload {workload} with a MAC")
    return mac_text(found.mac)


def demo_traffic(policy: Policy) -> list[DemoPacket]:
    """Packets that exercise every rule of the demo policy, IPv4 and IPv6, and a broken one."""
    web, app, db = (_mac_of(policy, w) for w in ("web-1", "app-1", "db-1"))

    def frame(dst_mac: str, l3: Any) -> bytes:
        return bytes(Ether(src=UPLINK_MAC, dst=dst_mac) / l3)

    tcp = lambda sport, dport: TCP(sport=sport, dport=dport, flags="S")  # noqa: E731
    return [
        DemoPacket(
            "admin 192.0.2.5 -> web-1 ssh",
            UPLINK_PORT,
            frame(web, IP(src="192.0.2.5", dst="10.0.1.10") / tcp(40001, 22)),
        ),
        DemoPacket(
            "internet 203.0.113.7 -> web-1 https",
            UPLINK_PORT,
            frame(web, IP(src="203.0.113.7", dst="10.0.1.10") / tcp(40002, 443)),
        ),
        DemoPacket(
            "web-1 -> app-1 8080",
            1,
            frame(app, IP(src="10.0.1.10", dst="10.0.2.10") / tcp(40003, 8080)),
        ),
        DemoPacket(
            "app-1 -> db-1 postgres",
            2,
            frame(db, IP(src="10.0.2.10", dst="10.0.3.10") / tcp(40004, 5432)),
        ),
        DemoPacket(
            "web-1 -> db-1 postgres",
            1,
            frame(db, IP(src="10.0.1.10", dst="10.0.3.10") / tcp(40005, 5432)),
        ),
        DemoPacket(
            "internet 203.0.113.7 -> db-1 postgres",
            UPLINK_PORT,
            frame(db, IP(src="203.0.113.7", dst="10.0.3.10") / tcp(40006, 5432)),
        ),
        DemoPacket(
            "monitoring 198.51.100.3 -> app-1 9100",
            UPLINK_PORT,
            frame(app, IP(src="198.51.100.3", dst="10.0.2.10") / tcp(40007, 9100)),
        ),
        DemoPacket(
            "monitoring 198.51.100.3 -> app-1 9200",
            UPLINK_PORT,
            frame(app, IP(src="198.51.100.3", dst="10.0.2.10") / tcp(40008, 9200)),
        ),
        DemoPacket(
            "admin 2001:db8:ad::5 -> app-1 ping6",
            UPLINK_PORT,
            frame(app, IPv6(src="2001:db8:ad::5", dst="2001:db8:2::10") / ICMPv6EchoRequest(id=7)),
        ),
        DemoPacket(
            "admin 192.0.2.5 -> db-1 ping",
            UPLINK_PORT,
            frame(db, IP(src="192.0.2.5", dst="10.0.3.10") / ICMP(id=8)),
        ),
        DemoPacket(
            "internet -> web-1 udp 53",
            UPLINK_PORT,
            frame(web, IP(src="203.0.113.7", dst="10.0.1.10") / UDP(sport=53, dport=53)),
        ),
        DemoPacket(
            "truncated IPv4 header -> web-1",
            UPLINK_PORT,
            frame(web, IP(src="203.0.113.7", dst="10.0.1.10") / tcp(1, 80))[:24],
        ),
    ]


@contextmanager
def embedded_target() -> Iterator[tuple[SoftwareTarget, P4Client, P4Schema]]:
    """The software target on a free loopback port with a primary controller connected."""
    schema = P4Schema.load()
    target = SoftwareTarget("127.0.0.1:0")
    address = target.start()
    try:
        client = P4Client.connect(address, target.device_id, election_id=1, schema=schema)
        try:
            yield target, client, schema
        finally:
            client.close()
    finally:
        target.stop()


def _verdict(outputs: list[tuple[int, bytes]], packet_in: PacketIn | None) -> str:
    if packet_in is not None:
        header = packet_in.service_header
        reason = {names.Reason.REJECT: "reject", names.Reason.PUNT: "service"}.get(
            header.reason, f"reason {header.reason}"
        )
        return f"to the controller ({reason})"
    ports = sorted({p for p, _ in outputs})
    if not ports:
        return "dropped"
    return "forwarded to port " + ", ".join(str(p) for p in ports)


def _wait_for(target: SoftwareTarget, port: int, timeout: float = 1.0) -> bytes | None:
    """The first frame the target sends out of `port` within `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        frames = target.collect(port)
        if frames:
            return frames[0]
        time.sleep(0.005)
    return None


def _describe(frame: bytes) -> str:
    """`TCP RST`, `ICMP unreachable`... for a reject response."""
    pkt = Ether(frame)
    if pkt.haslayer(TCP):
        return "TCP RST" if pkt[TCP].flags.R else "TCP"
    if pkt.haslayer(ICMP):
        return "ICMP unreachable"
    return "ICMPv6 unreachable" if pkt.haslayer(IPv6) else "a response"


def run_demo(policy_text: str | None = None) -> dict[str, Any]:
    """Apply the demo policy to an embedded target, send the demo traffic; what happened."""
    policy = load_policy(policy_text or demo_policy_text(), "demo/policy.yaml")
    with embedded_target() as (target, client, schema):
        agent = HostAgent(client, schema)
        agent.push_pipeline()
        applied: ApplyResult = agent.apply(policy)
        rule_names = agent.rule_names()
        results = []
        before = client.read_direct_counters(schema)
        drops_before = dict(target.stats()["drops"])
        rejects = RejectResponder()
        for pkt in demo_traffic(policy):
            verdict_text = ""
            outputs = target.inject(pkt.port, pkt.frame)
            packet_in = (
                client.packet_in(timeout=0.5)
                if any(p == target.cpu_port for p, _ in outputs)
                else None
            )
            answer = rejects.response(packet_in) if packet_in is not None else None
            if answer is not None:  # the controller answers the reject, as the daemon does
                frame, port = answer
                target.collect(port)
                client.packet_out(frame, {"egress_port": port, "flags": 0})
                answered = _wait_for(target, port)
                if answered is not None:
                    verdict_text = f"rejected: {_describe(answered)} sent back to port {port}"
            after = client.read_direct_counters(schema)
            hit = [e for e, c in counter_delta(before, after).items() if c.packets]
            before = after
            rule_ids = sorted({e.params_dict.get("rule_id", 0) for e in hit})
            drops_after = dict(target.stats()["drops"])
            dropped_by = [k for k, v in drops_after.items() if v > drops_before.get(k, 0)]
            drops_before = drops_after
            if hit:
                rule = ", ".join(rule_names.get(r, str(r)) for r in rule_ids)
            elif "parser_error" in dropped_by:
                rule = "(malformed: parser error)"
            else:
                rule = "(default action)"
            results.append(
                {
                    "packet": pkt.description,
                    "ingress_port": pkt.port,
                    "verdict": verdict_text or _verdict(outputs, packet_in),
                    "rule": rule,
                }
            )
        counters = client.read_direct_counters(schema)
        entries = client.read_table_entries(schema)
        drops = dict(target.stats().get("drops", {}))
    hits = hits_by_param(counters)
    return {
        "sync": applied.report.as_dict(),
        "compile": {
            "entries": dict(applied.compiled.stats.entries) if applied.compiled else {},
            "acl_entries_per_rule": applied.compiled.stats.expansion if applied.compiled else 0,
        },
        "warnings": [str(w) for w in applied.warnings],
        "traffic": results,
        "entries": entries,
        "counters": counters,
        "rule_hits": {rule_names.get(r, str(r)): c.packets for r, c in sorted(hits.items())},
        "rule_names": rule_names,
        "compiled": applied.compiled,
        "target_drops": drops,
    }

"""Benchmark: the nicfw software target's P4Runtime Write rate, Read time and packet rate.

Write: entries/s for ACL and flow-cache INSERTs in batches of 1, 100 and 1000, through gRPC
from a client in this process (raw stubs, the requests serialized before the clock starts).
Read: seconds for a wildcard Read of `--read-entries` entries (half ACL, half flow cache), on
the target side (the service's responses, serialized) and over gRPC (responses left as bytes):
the first read after the Write (nothing cached), best of three fresh writes, and a second read;
each with responses serialized from the stored entries (`offload.target.readwire`, the default)
and with the message path (NICFW_WIRE_READ=0).
Packets: frames/s through the pipeline by in-process injection (flow-cache hit, ACL hit behind
N entries, a parser drop) and by pcap replay (`port1_in.pcap` -> `port2_out.pcap`).

    .venv/bin/python bench/bench_target.py [--entries 20000] [--read-entries 50000]
        [--packets 20000] [--json]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from google.protobuf import text_format

from offload import names
from offload.entries import Entry, Exact, Optional, Range, Ternary
from offload.p4entity import TableEntryEncoder
from offload.p4schema import DEFAULT_P4INFO, P4Schema
from offload.proto import p4i, p4r, p4r_grpc
from offload.target import SoftwareTarget
from offload.target.pcap import PcapWriter

try:
    from bench import common
except ImportError:  # run as a script: bench/ itself is on sys.path
    import common  # type: ignore[no-redef]

V4 = 0xFFFF << 32
ELECTION = p4r.Uint128(high=0, low=1)
H1, H2 = bytes.fromhex("000000000001"), bytes.fromhex("000000000002")
L2_TO_PORT2 = Entry.make(
    names.L2_FORWARD, {"eth_dst": Exact(2)}, names.SET_EGRESS_PORT, {"port": 2}
)


def acl_entries(count: int) -> list[Entry]:
    """ACL entries over class bits, protocol and port ranges, distinct priorities."""
    return [
        Entry.make(
            names.ACL,
            {
                "src_class": Ternary(1 << (i % 64), 1 << (i % 64)),
                "ip_proto": Optional(6),
                "l4_dst": Range(1000 + i % 5000, 1000 + i % 5000 + i % 7),
            },
            names.ACL_ALLOW,
            {"rule_id": i},
            priority=i + 1,
        )
        for i in range(count)
    ]


def flow_entries(count: int) -> list[Entry]:
    """Flow-cache 5-tuples."""
    return [
        Entry.make(
            names.FLOW_CACHE,
            {
                "ip_src": Exact(V4 | 0x0A000000 | i),
                "ip_dst": Exact(V4 | 0x0A800001),
                "ip_proto": Exact(6),
                "l4_src": Exact(1024 + i % 60000),
                "l4_dst": Exact(443),
            },
            names.FLOW_ALLOW,
            {"rule_id": i % 1000},
        )
        for i in range(count)
    ]


class Session:
    """A primary connection over raw stubs."""

    def __init__(self, address: str, p4info: p4i.P4Info) -> None:
        import grpc

        self.channel = grpc.insecure_channel(address)
        self.stub = p4r_grpc.P4RuntimeStub(self.channel)
        self.p4info = p4info
        arb = p4r.StreamMessageRequest()
        arb.arbitration.device_id = 1
        arb.arbitration.election_id.CopyFrom(ELECTION)
        self._done = threading.Event()

        def requests() -> Iterator[p4r.StreamMessageRequest]:
            yield arb
            self._done.wait()  # keep the stream (and primaryship) open until close()

        self.stream = self.stub.StreamChannel(requests())
        next(self.stream)  # the arbitration answer: we are primary
        self.reset()

    def reset(self) -> None:
        """Commit the pipeline again: empty tables."""
        req = p4r.SetForwardingPipelineConfigRequest(
            device_id=1,
            action=p4r.SetForwardingPipelineConfigRequest.VERIFY_AND_COMMIT,
            election_id=ELECTION,
        )
        req.config.p4info.CopyFrom(self.p4info)
        self.stub.SetForwardingPipelineConfig(req)

    def write_rate(self, entries: list[Entry], batch: int) -> float:
        """INSERT `entries` in batches; entries per second."""
        encoder = TableEntryEncoder(P4Schema(self.p4info))
        requests = []
        for start in range(0, len(entries), batch):
            req = p4r.WriteRequest(device_id=1, election_id=ELECTION)
            encoder.add_updates(req, p4r.Update.INSERT, entries[start : start + batch])
            requests.append(req)
        gc.collect()
        started = time.perf_counter()
        for req in requests:
            self.stub.Write(req)
        return len(entries) / (time.perf_counter() - started)

    def close(self) -> None:
        """Close the channel."""
        self._done.set()
        self.stream.cancel()
        self.channel.close()


def tcp_frame(sport: int, dport: int, src: bytes = bytes([10, 0, 0, 1])) -> bytes:
    """A minimal Ethernet/IPv4/TCP frame H1 -> H2, `src` -> 10.128.0.1."""
    ip = bytes.fromhex("450000280001000040060000") + src + bytes([10, 128, 0, 1])
    tcp = sport.to_bytes(2, "big") + dport.to_bytes(2, "big") + bytes(16)
    return H2 + H1 + b"\x08\x00" + ip + tcp


def packet_rate(target: SoftwareTarget, frames: list[bytes], port: int = 1) -> float:
    """Frames per second through `inject` (the caller's thread, outputs kept in memory)."""
    gc.collect()
    started = time.perf_counter()
    for frame in frames:
        target.inject(port, frame)
    elapsed = time.perf_counter() - started
    target.collect(2)
    return len(frames) / elapsed


def read_figures(target: SoftwareTarget, session: Session, count: int) -> dict[str, float]:
    """Wildcard Read times of `count` entries, both paths, target side and over gRPC."""
    entries = [*acl_entries(count // 2), *flow_entries(count - count // 2)]
    request = p4r.ReadRequest(device_id=1)
    request.entities.add().table_entry.table_id = 0
    service = target.service
    context: Any = None  # (used only to abort, which a wildcard read does not)
    over_grpc = session.channel.unary_stream(
        "/p4.v1.P4Runtime/Read",
        request_serializer=p4r.ReadRequest.SerializeToString,
        response_deserializer=None,  # the bytes as received
    )

    def target_side() -> int:
        return sum(map(len, service.ReadWire(request, context)))

    def grpc_side() -> int:
        return sum(map(len, over_grpc(request, timeout=120)))

    out: dict[str, float] = {}
    for path, setting in (("wire", "1"), ("msg", "0")):
        saved = os.environ.get("NICFW_WIRE_READ")
        os.environ["NICFW_WIRE_READ"] = setting
        try:
            for where, read in (("target", target_side), ("grpc", grpc_side)):
                first = []
                for _ in range(3):
                    session.reset()
                    session.write_rate(entries, 1000)
                    first.append(_timed(read))
                out[f"read_{path}_{where}_first_s"] = min(first)
                out[f"read_{path}_{where}_again_s"] = min(_timed(read) for _ in range(3))
        finally:
            if saved is None:
                del os.environ["NICFW_WIRE_READ"]
            else:
                os.environ["NICFW_WIRE_READ"] = saved
    session.reset()
    return out


def _timed(read: Callable[[], int]) -> float:
    gc.collect()
    started = time.perf_counter()
    read()
    return time.perf_counter() - started


def run(entries: int, packets: int, read_entries: int = 50_000) -> dict[str, Any]:
    """Every figure, by name."""
    p4info = text_format.Parse(DEFAULT_P4INFO.read_text(), p4i.P4Info())
    results: dict[str, Any] = {"machine": common.machine(), "entries": entries, "packets": packets}
    results["read_entries"] = read_entries
    with (
        tempfile.TemporaryDirectory() as tmp,
        SoftwareTarget("127.0.0.1:0", pcap_dir=tmp) as target,
    ):
        session = Session(target.address, p4info)
        try:
            for kind, make in (("acl", acl_entries), ("flow", flow_entries)):
                for batch in (1, 100, 1000):
                    count = min(entries, 2000) if batch == 1 else entries
                    session.reset()
                    rate = session.write_rate(make(count), batch)
                    results[f"write_{kind}_batch{batch}"] = rate
            results.update(read_figures(target, session, read_entries))
            session.reset()
            flows = flow_entries(packets)
            session.write_rate(flows, 1000)
            l2 = Entry.make(
                names.L2_FORWARD, {"eth_dst": Exact(2)}, names.SET_EGRESS_PORT, {"port": 2}
            )
            session.write_rate([l2], 1)
            hits = [tcp_frame(1024 + i % 60000, 443) for i in range(packets)]
            # flow_entries uses source addresses 10.0.x.y; make the frames match them.
            hits = [
                f[:26] + (0x0A000000 | i).to_bytes(4, "big") + f[30:] for i, f in enumerate(hits)
            ]
            results["pps_flow_hit"] = packet_rate(target, hits)
            acl_n = 1000
            session.write_rate([*acl_entries(acl_n), _last_rule(acl_n)], 1000)
            misses = [tcp_frame(40000 + i % 1000, 9) for i in range(packets // 4)]
            results["acl_entries"] = acl_n + 1
            results["pps_acl_last_rule"] = packet_rate(target, misses)
            garbage = [b"\x00" * 10] * packets
            results["pps_parser_drop"] = packet_rate(target, garbage)
            writer = PcapWriter(Path(tmp) / "port1_in.pcap")
            for i, frame in enumerate(hits):
                writer.write(frame, i * 1e-6)
            writer.close()
            started = time.perf_counter()
            replayed = target.replay_pcaps()
            results["pps_pcap_replay"] = replayed / (time.perf_counter() - started)
        finally:
            session.close()
    return results


def _last_rule(n: int) -> Entry:
    """An ACL entry below all the others that matches the ACL test frames (dport 9)."""
    return Entry.make(
        names.ACL, {"l4_dst": Range(9, 9)}, names.ACL_ALLOW, {"rule_id": n}, priority=1
    )


ROWS = [
    ("write_acl_batch1", "Write ACL, batch 1", "entries/s", "{:,.0f}"),
    ("write_acl_batch100", "Write ACL, batch 100", "entries/s", "{:,.0f}"),
    ("write_acl_batch1000", "Write ACL, batch 1000", "entries/s", "{:,.0f}"),
    ("write_flow_batch1", "Write flow_cache, batch 1", "entries/s", "{:,.0f}"),
    ("write_flow_batch100", "Write flow_cache, batch 100", "entries/s", "{:,.0f}"),
    ("write_flow_batch1000", "Write flow_cache, batch 1000", "entries/s", "{:,.0f}"),
    ("read_wire_target_first_s", "Read {read_entries:,} entries, target: first", "s", "{:.3f}"),
    ("read_wire_target_again_s", "  again (TableEntry bytes cached)", "s", "{:.3f}"),
    ("read_msg_target_first_s", "  message path (NICFW_WIRE_READ=0): first", "s", "{:.3f}"),
    ("read_msg_target_again_s", "  message path: again", "s", "{:.3f}"),
    ("read_wire_grpc_first_s", "Read {read_entries:,} entries over gRPC: first", "s", "{:.3f}"),
    ("read_wire_grpc_again_s", "  again", "s", "{:.3f}"),
    ("read_msg_grpc_first_s", "  message path: first", "s", "{:.3f}"),
    ("read_msg_grpc_again_s", "  message path: again", "s", "{:.3f}"),
    ("pps_flow_hit", "packets, flow-cache hit", "pps", "{:,.0f}"),
    ("pps_acl_last_rule", "packets, ACL: last of {acl_entries} entries", "pps", "{:,.0f}"),
    ("pps_parser_drop", "packets, parser drop (runt)", "pps", "{:,.0f}"),
    ("pps_pcap_replay", "packets, pcap replay (flow-cache hits)", "pps", "{:,.0f}"),
]


def render(results: dict[str, Any]) -> str:
    """The figures as a text table."""
    head = (
        f"bench_target: nicfw software target, {results['entries']:,} entries per Write figure "
        f"(2,000 at batch 1), {results['packets']:,} packets\nmachine: {results['machine']}"
    )
    return common.render_rows(head, ROWS, results)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--entries", type=int, default=20_000, help="entries per Write figure")
    parser.add_argument("--read-entries", type=int, default=50_000, help="entries per Read figure")
    parser.add_argument("--packets", type=int, default=20_000, help="frames per packet figure")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    if not 1 <= args.entries <= 65_536 or not 4 <= args.packets <= 65_536:
        parser.error("--entries must be 1..65536 and --packets 4..65536 (table sizes)")
    if not 2 <= args.read_entries <= 131_072:
        parser.error("--read-entries must be 2..131072 (ACL and flow cache: 65,536 each)")
    results = run(args.entries, args.packets, args.read_entries)
    print(json.dumps(results, indent=2) if args.json else render(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())

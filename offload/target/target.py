"""The software target: firewall.p4's pipeline behind a P4Runtime server, with packet I/O.

    target = SoftwareTarget("127.0.0.1:0", interfaces={1: "veth1", 2: "veth2"})
    address = target.start()          # "127.0.0.1:40123": port 0 picks a free one
    ...
    target.stop()

Ports bound to an interface (`interfaces`) send and receive real frames; the CPU port is the
P4Runtime stream (packet_in / packet_out); with `pcap_dir`, the other ports replay
`port<N>_in.pcap` and record `port<N>_out.pcap`; what is sent to any other port is kept for
`collect`. `inject` runs a frame through the pipeline in the caller's thread and returns what
came out, which is how tests drive the target without interfaces.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Mapping
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc

from offload.names import CPU_PORT
from offload.p4schema import DEFAULT_P4INFO, P4Schema
from offload.target.config import PipelineConfig, check_p4info
from offload.target.entities import EntityStore
from offload.target.pipeline import Output, Pipeline
from offload.target.ports import PcapPorts, PortIO
from offload.target.server import P4RuntimeService, add_to_server

log = logging.getLogger(__name__)

MAX_KEPT = 10000  # frames kept per port for `collect`
GRPC_MAX_MESSAGE = 256 << 20


class SoftwareTarget:
    """A P4Runtime device executing firewall.p4, in this process."""

    def __init__(
        self,
        address: str = "127.0.0.1:9559",
        device_id: int = 1,
        cpu_port: int = CPU_PORT,
        interfaces: Mapping[int, str] | None = None,
        pcap_dir: str | Path | None = None,
        p4info: str | Path | None = None,
        max_workers: int = 32,
    ) -> None:
        self.requested_address = address
        self.device_id = device_id
        self.cpu_port = cpu_port
        self.reference = P4Schema.load(DEFAULT_P4INFO)  # firewall.p4: what this target runs
        self.lock = threading.Lock()  # serialises packets and table writes
        self.config: PipelineConfig | None = None
        self.saved: PipelineConfig | None = None  # VERIFY_AND_SAVE, waiting for COMMIT
        self.pipeline: Pipeline | None = None
        self.entities: EntityStore | None = None
        self.service = P4RuntimeService(self)
        self.io = PortIO(self._receive)
        self.pcap = PcapPorts(pcap_dir) if pcap_dir is not None else None
        self._interfaces = dict(interfaces or {})
        self._kept: dict[int, deque[bytes]] = {}
        self._server: grpc.Server | None = None
        self._max_workers = max_workers
        self._stopped = False
        self.address = ""
        if cpu_port in self._interfaces:
            raise ValueError(f"the CPU port {cpu_port} cannot be an interface")
        if p4info is not None:
            schema = P4Schema.load(p4info)
            check_p4info(self.reference, schema)
            self.commit(PipelineConfig(schema, b"", None), keep_state=False)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> str:
        """Open the interfaces and start serving; returns the bound address (host:port)."""
        try:
            for port, ifname in self._interfaces.items():
                self.io.add(port, ifname)
        except OSError:
            self.io.stop()
            raise
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=self._max_workers, thread_name_prefix="p4rt"),
            options=[
                ("grpc.max_receive_message_length", GRPC_MAX_MESSAGE),
                ("grpc.max_send_message_length", GRPC_MAX_MESSAGE),
                ("grpc.so_reuseport", 0),
            ],
        )
        add_to_server(self.service, server)
        host = self.requested_address.rpartition(":")[0]
        bound = server.add_insecure_port(self.requested_address)
        if bound == 0:
            raise OSError(f"cannot listen on {self.requested_address}")
        self.address = f"{host}:{bound}"
        server.start()
        self._server = server
        self.service.start()
        self.io.start()
        log.info(
            "nicfw software target: device %d on %s, ports %s, cpu port %d",
            self.device_id,
            self.address,
            ", ".join(f"{p}@{i}" for p, i in sorted(self._interfaces.items())) or "none",
            self.cpu_port,
        )
        return self.address

    def stop(self) -> None:
        """Stop serving and close every port and file (once; later calls do nothing)."""
        if self._stopped:
            return
        self._stopped = True
        self.service.stop()
        if self._server is not None:
            self._server.stop(grace=0.5).wait(2)
            self._server = None
        self.io.stop()
        if self.pcap is not None:
            self.pcap.close()

    def __enter__(self) -> SoftwareTarget:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ pipeline config
    def commit(self, config: PipelineConfig, keep_state: bool) -> None:
        """Realise a verified config; the forwarding state is cleared unless `keep_state`."""
        with self.lock:
            if keep_state and self.pipeline is not None and self.entities is not None:
                # Entries are kept by name, so a compatible P4Info with other ids keeps them.
                pipeline = self.pipeline
                pipeline.rebind(config.schema)
                entities = EntityStore(pipeline, previous=self.entities)
            else:
                pipeline = Pipeline(config.schema, self.cpu_port)
                pipeline.digests.send = self.service.send_digest
                entities = EntityStore(pipeline)
            self.pipeline, self.entities, self.config = pipeline, entities, config
            self.saved = None

    # ------------------------------------------------------------------ packets
    def inject(self, port: int, frame: bytes) -> Output:
        """Run one frame in from `port`; what the pipeline sent, also delivered to its ports."""
        with self.lock:
            pipeline = self.pipeline
            if pipeline is None:
                return []
            try:
                out = pipeline.process(port, frame)
            except Exception:  # the data plane never dies of one bad packet
                log.exception("port %d: processing failed", port)
                pipeline.drops["internal_error"] += 1
                return []
        self._deliver(out)
        return out

    def _receive(self, port: int, frames: list[bytes]) -> None:
        outputs: Output = []
        with self.lock:
            pipeline = self.pipeline
            if pipeline is None:
                return
            for frame in frames:
                try:
                    outputs.extend(pipeline.process(port, frame))
                except Exception:
                    log.exception("port %d: processing failed", port)
                    pipeline.drops["internal_error"] += 1
        self._deliver(outputs)

    def _deliver(self, out: Output) -> None:
        for port, data in out:
            if port == self.cpu_port:
                self.service.packet_in(data)
            elif self.io.send(port, data):
                pass
            elif self.pcap is not None:
                self.pcap.write(port, data)
            else:
                kept = self._kept.get(port)
                if kept is None:
                    kept = self._kept[port] = deque(maxlen=MAX_KEPT)
                kept.append(data)

    def collect(self, port: int) -> list[bytes]:
        """Take the frames sent to a port that has no interface or pcap file."""
        kept = self._kept.get(port)
        if not kept:
            return []
        out = []
        while kept:
            out.append(kept.popleft())
        return out

    def replay_pcaps(self) -> int:
        """Run every port<N>_in.pcap frame through the pipeline; the number of frames."""
        if self.pcap is None:
            raise RuntimeError("the target has no pcap directory")
        count = 0
        for port, frame in self.pcap.frames():
            self.inject(port, frame)
            count += 1
        self.pcap.flush()
        return count

    def stats(self) -> dict[str, Any]:
        """Packet counts per port, drops by reason and port errors."""
        with self.lock:
            pipeline = self.pipeline
            if pipeline is None:
                return {"rx": {}, "tx": {}, "drops": {}, "port_errors": self.io.errors()}
            return {
                "rx": dict(pipeline.rx),
                "tx": dict(pipeline.tx),
                "drops": dict(pipeline.drops),
                "port_errors": self.io.errors(),
            }

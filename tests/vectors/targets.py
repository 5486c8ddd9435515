"""The targets tests can run against, behind one small interface.

- `SoftwareHandle`: the nicfw software target in this process; packets are injected and
  collected in-process (no interfaces needed).
- `Bmv2Handle`: simple_switch_grpc running the p4c-built firewall.p4, its ports on veth pairs
  whose other ends the tests use through raw sockets (root needed for packets).
- `RemoteHandle`: an already-running target at NICFW_TARGET_ADDR; no packet I/O.

`select_target()` picks one from the environment (NICFW_TARGET=software|bmv2,
NICFW_TARGET_ADDR=host:port) and says why when the wanted one cannot run.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from offload.target import SoftwareTarget

REPO = Path(__file__).resolve().parents[2]
P4INFO = REPO / "p4" / "firewall.p4info.txtpb"
DATA_PORTS = (1, 2, 3, 4, 5, 6, 7, 8)


class Unavailable(Exception):
    """The wanted target cannot run here (the message says why)."""


class TargetHandle:
    """A P4Runtime target and, when possible, a way to send and receive its frames."""

    name = "target"
    address = ""
    device_id = 1
    cpu_port = 255
    device_config = b""  # what SetForwardingPipelineConfig carries as p4_device_config
    p4info_path = P4INFO
    packets_reason = ""  # why packets cannot be sent, if they cannot
    grace = 0.0  # how long to wait for output that must not come (a drop)

    @property
    def has_packets(self) -> bool:
        """Whether `send` and `receive` work."""
        return not self.packets_reason

    def send(self, port: int, frame: bytes) -> None:
        """Send a frame into a pipeline port."""
        raise NotImplementedError

    def receive(self, port: int, timeout: float = 0.0) -> list[bytes]:
        """Frames that came out of a pipeline port since the last call."""
        raise NotImplementedError

    def settle(self) -> None:
        """Wait until a frame just sent has been processed."""

    def close(self) -> None:
        """Stop the target (if this handle started it)."""


class SoftwareHandle(TargetHandle):
    """The software target, in this process, on a free loopback port."""

    name = "software"
    grace = 0.03  # packet-ins travel over the gRPC stream even when injection is synchronous

    def __init__(self, device_id: int = 1) -> None:
        self.target = SoftwareTarget("127.0.0.1:0", device_id=device_id)
        self.address = self.target.start()
        self.device_id = device_id

    def send(self, port: int, frame: bytes) -> None:
        """Run the frame through the pipeline now."""
        self.target.inject(port, frame)

    def receive(self, port: int, timeout: float = 0.0) -> list[bytes]:
        """What the pipeline sent to `port`."""
        return self.target.collect(port)

    def close(self) -> None:
        """Stop the target."""
        self.target.stop()


class RemoteHandle(TargetHandle):
    """A target someone else started (NICFW_TARGET_ADDR)."""

    name = "remote"

    def __init__(self, address: str, device_id: int) -> None:
        self.address = address
        self.device_id = device_id
        self.packets_reason = "a target at NICFW_TARGET_ADDR offers no packet I/O to tests"
        if "NICFW_TARGET_CONFIG" in os.environ:
            self.device_config = Path(os.environ["NICFW_TARGET_CONFIG"]).read_bytes()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Bmv2Handle(TargetHandle):
    """simple_switch_grpc with the p4c-built firewall.p4 (ports on veth pairs when root)."""

    name = "bmv2"
    grace = 0.3

    def __init__(self, device_id: int = 1) -> None:
        missing = [tool for tool in ("p4c", "simple_switch_grpc") if shutil.which(tool) is None]
        if missing:
            raise Unavailable(f"NICFW_TARGET=bmv2 but {' and '.join(missing)} not on PATH")
        self.device_id = device_id
        self.workdir = Path(tempfile.mkdtemp(prefix="nicfw-bmv2-"))
        self._build()
        self._veths: list[str] = []
        self._socks: dict[int, socket.socket] = {}
        args = [f"--device-id={device_id}"]
        if os.geteuid() == 0 and shutil.which("ip"):
            tag = f"{os.getpid() % 10000}"
            for port in DATA_PORTS:
                sw, host = f"nfb{tag}s{port}", f"nfb{tag}h{port}"
                subprocess.run(
                    ["ip", "link", "add", sw, "type", "veth", "peer", "name", host], check=True
                )
                self._veths.append(sw)
                for dev in (sw, host):
                    subprocess.run(["ip", "link", "set", dev, "up"], check=True)
                    subprocess.run(["ip", "link", "set", dev, "mtu", "9000"], check=True)
                args.append(f"-i{port}@{sw}")
                s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
                s.bind((host, 3))
                s.setblocking(False)
                self._socks[port] = s
        else:
            self.packets_reason = "BMv2 packet tests need root and `ip` for veth pairs"
        grpc_port = _free_port()
        self.address = f"127.0.0.1:{grpc_port}"
        self.proc = subprocess.Popen(
            [
                "simple_switch_grpc",
                *args,
                "--no-p4",
                "--",
                f"--grpc-server-addr={self.address}",
                f"--cpu-port={self.cpu_port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", grpc_port)) == 0:
                    return
            time.sleep(0.2)
        self.close()
        raise Unavailable("simple_switch_grpc did not start listening within 20 s")

    def _build(self) -> None:
        out = self.workdir / "p4"
        out.mkdir()
        subprocess.run(
            [
                "p4c",
                "--target",
                "bmv2",
                "--arch",
                "v1model",
                "--std",
                "p4-16",
                "-I",
                str(REPO / "p4" / "include"),
                "-o",
                str(out),
                "--p4runtime-files",
                str(out / "firewall.p4info.txtpb"),
                str(REPO / "p4" / "firewall.p4"),
            ],
            check=True,
        )
        self.device_config = (out / "firewall.json").read_bytes()
        self.p4info_path = out / "firewall.p4info.txtpb"

    def send(self, port: int, frame: bytes) -> None:
        """Send through the host end of the port's veth pair."""
        self._socks[port].send(frame)

    def receive(self, port: int, timeout: float = 0.0) -> list[bytes]:
        """Frames BMv2 sent out of the port (waiting up to `timeout` for more)."""
        out = []
        deadline = time.monotonic() + timeout
        sock = self._socks[port]
        while True:
            try:
                data, addr = sock.recvfrom(65535)
                if addr[2] != 4:  # PACKET_OUTGOING: our own transmission
                    out.append(data)
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    return out
                time.sleep(0.01)

    def settle(self) -> None:
        """BMv2 processes asynchronously."""
        time.sleep(0.3)

    def close(self) -> None:
        """Stop BMv2 and remove the veth pairs."""
        proc = getattr(self, "proc", None)
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=10)
        for s in self._socks.values():
            s.close()
        for dev in self._veths:
            subprocess.run(["ip", "link", "del", dev], check=False)
        shutil.rmtree(self.workdir, ignore_errors=True)


def select_target() -> TargetHandle:
    """The target the environment asks for (software by default)."""
    address = os.environ.get("NICFW_TARGET_ADDR")
    device_id = int(os.environ.get("NICFW_DEVICE_ID", "1"))
    if address:
        return RemoteHandle(address, device_id)
    kind = os.environ.get("NICFW_TARGET", "software")
    if kind == "bmv2":
        return Bmv2Handle(device_id)
    if kind != "software":
        raise Unavailable(f"unknown NICFW_TARGET={kind!r} (software or bmv2)")
    return SoftwareHandle(device_id)

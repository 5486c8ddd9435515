"""The DPDK fast path from Python: find the binary, run it, talk to its control channel.

The control channel protocol (dpdk_app/src/ctrl.h, dpdk_app/README.md): every message is a
header `{u32 type, u32 length}` (host byte order) and `length` bytes of payload. A request gets
one reply of type `type | REPLY` whose payload starts with `{i32 status, u32 count}`; a negative
status is -errno and the rest of the payload is the error message. FLOW_RECORDS turns its
connection into a stream of FLOW_EVENT messages, each an array of FLOW_RECORD_DTYPE records.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any

import numpy as np

from dpdk_app.layout import (
    ACT_ALLOW,
    FLOW_DEL_DTYPE,
    FLOW_RECORD_DTYPE,
    IDENTITY_DTYPE,
    RULE_DTYPE,
)

BINARY_NAME = "nicfw-fastpath"
ENV_BINARY = "NICFW_FASTPATH_BIN"
REPO_ROOT = Path(__file__).resolve().parent.parent
BUILD_DIR = REPO_ROOT / "build" / "dpdk_app"
BACKENDS = ("dpdk", "numba", "auto")
ENV_BACKEND = "NICFW_FASTPATH_BACKEND"  # the default backend when none is given
NUMBA_START_TIMEOUT = 180.0  # a cold numba cache compiles every kernel before the socket opens

MSG_PING = 1
MSG_LOAD_RULES = 2
MSG_IDENTITY_ADD = 3
MSG_IDENTITY_DEL = 4
MSG_FLOW_RECORDS = 5
MSG_STATS = 6
MSG_FLUSH_FLOWS = 7
MSG_RESIMULATE = 8
MSG_FLOW_DUMP = 9
MSG_SHUTDOWN = 10
MSG_FLOW_DEL = 11
MSG_REPLY = 0x80000000
MSG_FLOW_EVENT = 0x40000000 | MSG_FLOW_RECORDS

_HDR = struct.Struct("=II")
_REPLY = struct.Struct("=iI")
_LOAD_REPLY = struct.Struct("=QQQ")
_FLOWS_REPLY = struct.Struct("=IIQ")

SERVICE_ETHERTYPE = 0x88B5
SERVICE_HEADER = struct.Struct("!HHBBHI")
_ETH = struct.Struct("!6s6sH")


class CtState(IntEnum):
    """Connection states reported in a flow record's `tcp_state` (src/conntrack.h)."""

    NONE = 0
    TCP_SYN_SENT = 1
    TCP_SYN_RECV = 2
    TCP_ESTABLISHED = 3
    TCP_FIN_WAIT = 4
    TCP_TIME_WAIT = 5
    TCP_CLOSED = 6
    UNREPLIED = 7
    REPLIED = 8


class FastPathError(RuntimeError):
    """The fast path failed to start, or refused a request (status is -errno, 0 if unknown)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


# --- the binary -------------------------------------------------------------------------


def find_binary(asan: bool = False) -> Path | None:
    """The built nicfw-fastpath ($NICFW_FASTPATH_BIN, else build/dpdk_app/), or None."""
    env = os.environ.get(ENV_BINARY)
    if env and not asan:
        return Path(env) if os.access(env, os.X_OK) else None
    path = BUILD_DIR / "asan" / BINARY_NAME if asan else BUILD_DIR / BINARY_NAME
    return path if os.access(path, os.X_OK) else None


def build(asan: bool = False, timeout: float = 600.0) -> Path:
    """Run `make -C dpdk_app [asan]` and return the binary; FastPathError when it fails."""
    jobs = f"-j{os.cpu_count() or 1}"
    cmd = ["make", "-s", jobs, "-C", str(REPO_ROOT / "dpdk_app")] + (["asan"] if asan else [])
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise FastPathError(f"{' '.join(cmd)}: {exc}") from exc
    path = find_binary(asan)
    if proc.returncode != 0 or path is None:
        raise FastPathError(f"{' '.join(cmd)} failed:\n{proc.stdout}{proc.stderr}")
    return path


def eal_args(
    vdevs: Sequence[str] = (),
    lcores: str = "0",
    memory_mb: int = 256,
    extra: Sequence[str] = (),
) -> list[str]:
    """EAL arguments for a hugepage-free, PCI-free run that leaves no files behind."""
    args = ["--no-huge", "--no-pci", "--no-shconf", "-l", lcores, "-m", str(memory_mb)]
    args += [f"--vdev={v}" for v in vdevs]
    args += ["--log-level=lib.eal:error", "--log-level=lib.telemetry:error"]
    return args + list(extra)


# --- the service encapsulation --------------------------------------------------------------


@dataclass(frozen=True)
class ServiceHeader:
    """The 12-byte service header (docs/pipeline.md), host values."""

    ingress_port: int
    egress_port: int
    reason: int = 1
    direction: int = 0
    workload_id: int = 0
    rule_id: int = 0

    def pack(self) -> bytes:
        """Encode the header big-endian, as on the wire."""
        return SERVICE_HEADER.pack(
            self.ingress_port,
            self.egress_port,
            self.reason,
            self.direction,
            self.workload_id,
            self.rule_id,
        )


OUTER_DST = bytes.fromhex("020000000001")
OUTER_SRC = bytes.fromhex("020000000002")


def encapsulate(
    frame: bytes, header: ServiceHeader, dst: bytes = OUTER_DST, src: bytes = OUTER_SRC
) -> bytes:
    """Wrap an Ethernet frame in the service encapsulation (outer Ethernet + header)."""
    return _ETH.pack(dst, src, SERVICE_ETHERTYPE) + header.pack() + frame


def decapsulate(frame: bytes) -> tuple[ServiceHeader, bytes] | None:
    """Split a service-encapsulated frame into (header, inner frame); None if it is not one."""
    if len(frame) < _ETH.size + SERVICE_HEADER.size:
        return None
    if _ETH.unpack_from(frame)[2] != SERVICE_ETHERTYPE:
        return None
    fields = SERVICE_HEADER.unpack_from(frame, _ETH.size)
    return ServiceHeader(*fields), frame[_ETH.size + SERVICE_HEADER.size :]


# --- records ------------------------------------------------------------------------------


def addr_bytes(text: str) -> tuple[bytes, int]:
    """'10.0.0.0/24' or '2001:db8::/32' -> (16 bytes, 128-bit prefix length); IPv4 mapped."""
    net = ipaddress.ip_network(text, strict=False)
    if net.version == 4:
        mapped = ipaddress.IPv6Address("::ffff:" + str(net.network_address))
        return mapped.packed, 96 + net.prefixlen
    return net.network_address.packed, net.prefixlen


def make_rule(
    rule_id: int,
    action: int = ACT_ALLOW,
    *,
    priority: int = 1,
    src: str = "::/0",
    dst: str = "::/0",
    proto: int | None = None,
    sport: tuple[int, int] = (0, 0xFFFF),
    dport: tuple[int, int] = (0, 0xFFFF),
    id_class: int = 0,
    id_mask: int = 0,
) -> np.ndarray:
    """One RULE_DTYPE record from readable values (proto None = any protocol)."""
    rec = np.zeros(1, dtype=RULE_DTYPE)
    rec["rule_id"], rec["priority"], rec["action"] = rule_id, priority, action
    for field, text in (("src", src), ("dst", dst)):
        packed, plen = addr_bytes(text)
        rec[field + "_addr"] = np.frombuffer(packed, dtype=np.uint8)
        rec[field + "_plen"] = plen
    rec["proto"], rec["proto_mask"] = (0, 0) if proto is None else (proto, 0xFF)
    rec["sport_lo"], rec["sport_hi"] = sport
    rec["dport_lo"], rec["dport_hi"] = dport
    rec["id_class"], rec["id_mask"] = id_class, id_mask
    return rec


def make_identity(
    src: str, dst: str, sport: int, dport: int, proto: int, id_class: int, user_id: int = 0
) -> np.ndarray:
    """One IDENTITY_DTYPE record for a connection's 5-tuple."""
    rec = np.zeros(1, dtype=IDENTITY_DTYPE)
    rec["src_addr"] = np.frombuffer(addr_bytes(src)[0], dtype=np.uint8)
    rec["dst_addr"] = np.frombuffer(addr_bytes(dst)[0], dtype=np.uint8)
    rec["sport"], rec["dport"], rec["proto"] = sport, dport, proto
    rec["id_class"], rec["user_id"] = id_class, user_id
    return rec


def make_flow_del(
    src: str, dst: str, sport: int, dport: int, proto: int, idle_before_ns: int = 0
) -> np.ndarray:
    """One FLOW_DEL_DTYPE entry (either direction of the connection; 0 = remove whatever)."""
    rec = np.zeros(1, dtype=FLOW_DEL_DTYPE)
    rec["src_addr"] = np.frombuffer(addr_bytes(src)[0], dtype=np.uint8)
    rec["dst_addr"] = np.frombuffer(addr_bytes(dst)[0], dtype=np.uint8)
    rec["sport"], rec["dport"], rec["proto"] = sport, dport, proto
    rec["idle_before_ns"] = idle_before_ns
    return rec


# --- the control channel ----------------------------------------------------------------


@dataclass(frozen=True)
class LoadResult:
    """What LOAD_RULES reports about the rule set it built and swapped in."""

    rules: int
    build_ns: int
    generation: int
    memory_bytes: int


@dataclass(frozen=True)
class FlowsResult:
    """Reply of RESIMULATE / FLUSH_FLOWS / FLOW_DUMP: flows looked at, time, records."""

    checked: int
    elapsed_ns: int
    records: np.ndarray


def records_from_bytes(data: bytes) -> np.ndarray:
    """Decode an array of struct nicfw_flow_record."""
    if len(data) % FLOW_RECORD_DTYPE.itemsize:
        raise FastPathError(f"record payload of {len(data)} bytes is not a whole number")
    return np.frombuffer(data, dtype=FLOW_RECORD_DTYPE).copy()


def _as_bytes(array: np.ndarray, dtype: np.dtype, what: str) -> bytes:
    arr = np.asarray(array)
    if arr.dtype != dtype:
        raise TypeError(f"{what} must have dtype {dtype}, not {arr.dtype}")
    return np.ascontiguousarray(arr).tobytes()


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            raise FastPathError("control channel closed by the fast path")
        buf += chunk
    return bytes(buf)


def _connect(path: str | Path, timeout: float) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(str(path))
    except OSError as exc:
        sock.close()
        raise FastPathError(f"cannot connect to {path}: {exc}") from exc
    return sock


class ControlClient:
    """One request/response connection to the fast path's control socket."""

    def __init__(self, path: str | Path, timeout: float = 60.0) -> None:
        self.path = str(path)
        self._sock = _connect(path, timeout)

    def close(self) -> None:
        """Close the connection."""
        self._sock.close()

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, msg_type: int, payload: bytes = b"") -> tuple[int, bytes]:
        """Send one request; return (count, body) or raise FastPathError with its message."""
        self._sock.sendall(_HDR.pack(msg_type, len(payload)) + payload)
        rtype, length = _HDR.unpack(_recv_exact(self._sock, _HDR.size))
        body = _recv_exact(self._sock, length)
        if rtype != (msg_type | MSG_REPLY) or length < _REPLY.size:
            raise FastPathError(f"unexpected reply type {rtype:#x} to request {msg_type}")
        status, count = _REPLY.unpack_from(body)
        rest = body[_REPLY.size :]
        if status < 0:
            raise FastPathError(rest.decode("utf-8", "replace"), status)
        return count, rest

    def ping(self) -> dict[str, Any]:
        """Version, pid and port of the running fast path."""
        result: dict[str, Any] = json.loads(self.request(MSG_PING)[1])
        return result

    def stats(self) -> dict[str, Any]:
        """The datapath counters (rx, tx, allowed, dropped, drop reasons, flows, ...)."""
        result: dict[str, Any] = json.loads(self.request(MSG_STATS)[1])
        return result

    def load_rules(self, rules: np.ndarray) -> LoadResult:
        """Build a new rule set from RULE_DTYPE records and swap it in whole."""
        count, body = self.request(MSG_LOAD_RULES, _as_bytes(rules, RULE_DTYPE, "rules"))
        build_ns, generation, memory = _LOAD_REPLY.unpack_from(body)
        return LoadResult(count, build_ns, generation, memory)

    def identity_add(self, identities: np.ndarray) -> int:
        """Add or replace identity entries (IDENTITY_DTYPE); returns how many were written."""
        payload = _as_bytes(identities, IDENTITY_DTYPE, "identities")
        return self.request(MSG_IDENTITY_ADD, payload)[0]

    def identity_del(self, identities: np.ndarray) -> int:
        """Remove identity entries (matched by 5-tuple); returns how many existed."""
        payload = _as_bytes(identities, IDENTITY_DTYPE, "identities")
        return self.request(MSG_IDENTITY_DEL, payload)[0]

    def _flows(self, msg_type: int, payload: bytes = b"") -> FlowsResult:
        count, body = self.request(msg_type, payload)
        checked, _reserved, elapsed = _FLOWS_REPLY.unpack_from(body)
        records = records_from_bytes(body[_FLOWS_REPLY.size :])
        if len(records) != count:
            raise FastPathError(f"reply announced {count} records, carried {len(records)}")
        return FlowsResult(checked, elapsed, records)

    def resimulate(self) -> FlowsResult:
        """Re-check every tracked flow; returns (and removes) the ones no longer allowed."""
        return self._flows(MSG_RESIMULATE)

    def flush_flows(self) -> FlowsResult:
        """Forget every tracked flow; returns their END records."""
        return self._flows(MSG_FLUSH_FLOWS)

    def flow_dump(self) -> FlowsResult:
        """Every tracked flow, as UPDATE records (nothing changes)."""
        return self._flows(MSG_FLOW_DUMP)

    def flow_del(self, flows: np.ndarray) -> FlowsResult:
        """Remove tracked connections (FLOW_DEL_DTYPE); returns the END records of those removed.

        An entry whose `idle_before_ns` is set keeps its connection if the fast path saw a packet
        of it after that time (wall clock); `checked` is the number of entries sent.
        """
        return self._flows(MSG_FLOW_DEL, _as_bytes(flows, FLOW_DEL_DTYPE, "flows"))

    def shutdown(self) -> None:
        """Ask the fast path to exit."""
        self.request(MSG_SHUTDOWN)


class FlowSubscription:
    """A connection that receives the fast path's flow records as they happen."""

    def __init__(self, path: str | Path, timeout: float = 10.0) -> None:
        self._sock = _connect(path, timeout)
        self._sock.sendall(_HDR.pack(MSG_FLOW_RECORDS, 0))
        rtype, length = _HDR.unpack(_recv_exact(self._sock, _HDR.size))
        body = _recv_exact(self._sock, length)
        if rtype != (MSG_FLOW_RECORDS | MSG_REPLY) or _REPLY.unpack_from(body)[0] != 0:
            self._sock.close()
            raise FastPathError("FLOW_RECORDS subscription refused")

    def close(self) -> None:
        """Close the subscription."""
        self._sock.close()

    def __enter__(self) -> FlowSubscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read(self, timeout: float = 1.0) -> np.ndarray:
        """Records of the next event message, or an empty array when none came in time."""
        self._sock.settimeout(timeout)
        try:
            head = self._sock.recv(_HDR.size, socket.MSG_PEEK)
        except TimeoutError:
            return np.zeros(0, dtype=FLOW_RECORD_DTYPE)
        if not head:
            raise FastPathError("flow record stream closed by the fast path")
        self._sock.settimeout(10.0)
        mtype, length = _HDR.unpack(_recv_exact(self._sock, _HDR.size))
        body = _recv_exact(self._sock, length)
        if mtype != MSG_FLOW_EVENT:
            raise FastPathError(f"unexpected message type {mtype:#x} on the record stream")
        return records_from_bytes(body)

    def collect(self, until: float = 1.0, quiet: float = 0.2) -> np.ndarray:
        """All records that arrive within `until` seconds (stops after `quiet` s of silence)."""
        parts: list[np.ndarray] = []
        deadline = time.monotonic() + until
        while (left := deadline - time.monotonic()) > 0:
            recs = self.read(min(quiet, left))
            if len(recs) == 0 and parts:
                break
            parts.append(recs)
        return np.concatenate(parts) if parts else np.zeros(0, dtype=FLOW_RECORD_DTYPE)


# --- the process --------------------------------------------------------------------------


def numba_command() -> list[str]:
    """The command that runs the numba fallback service (same arguments as the binary)."""
    return [sys.executable, "-m", "dpdk_app.pyservice"]


class FastPath:
    """A running fast path in service mode (start/stop, clients, log).

    backend "dpdk" runs nicfw-fastpath, "numba" the fallback (python -m dpdk_app.pyservice,
    same command line and control channel), "auto" the binary when it is built, else numba;
    None: "dpdk" when `binary` is given, else $NICFW_FASTPATH_BACKEND, else "dpdk".
    """

    def __init__(
        self,
        vdevs: Sequence[str],
        ctrl_path: str | Path | None = None,
        *,
        binary: str | Path | None = None,
        options: Sequence[str] = (),
        lcores: str = "0",
        memory_mb: int = 256,
        eal_extra: Sequence[str] = (),
        env: dict[str, str] | None = None,
        backend: str | None = None,
    ) -> None:
        if backend is None:  # an explicit binary means the DPDK app
            backend = "dpdk" if binary else (os.environ.get(ENV_BACKEND) or "dpdk")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, not {backend!r}")
        found = Path(binary) if binary else find_binary()
        if backend == "auto":
            backend = "dpdk" if found is not None else "numba"
        self.backend = backend
        if backend == "numba":
            command = numba_command()
            self.binary = Path(command[0])
        elif found is None:
            raise FastPathError("nicfw-fastpath is not built (make dpdk)")
        else:
            command = [str(found)]
            self.binary = found
        self._tmp = tempfile.TemporaryDirectory(prefix="nicfw-fp-")
        self.ctrl_path = Path(ctrl_path) if ctrl_path else Path(self._tmp.name) / "ctrl.sock"
        self.log_path = Path(self._tmp.name) / "fastpath.log"
        self.argv = [*command, *eal_args(vdevs, lcores, memory_mb, eal_extra)]
        self.argv += ["--", "--ctrl", str(self.ctrl_path), *options]
        self._env = env
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 15.0) -> FastPath:
        """Start the process and wait until its control channel answers."""
        if self.backend == "numba":
            timeout = max(timeout, NUMBA_START_TIMEOUT)
        with self.log_path.open("wb") as log:
            self._proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self._env,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise FastPathError(
                    f"nicfw-fastpath exited with {self._proc.returncode}:\n{self.log()}"
                )
            if self.ctrl_path.exists():
                with contextlib.suppress(FastPathError), self.client(timeout=2.0) as c:
                    c.ping()
                    return self
            time.sleep(0.02)
        self.stop()
        raise FastPathError(f"nicfw-fastpath did not come up in {timeout} s:\n{self.log()}")

    @property
    def pid(self) -> int | None:
        """Process id while running."""
        return self._proc.pid if self._proc else None

    def alive(self) -> bool:
        """Whether the process is still running."""
        return self._proc is not None and self._proc.poll() is None

    def client(self, timeout: float = 60.0) -> ControlClient:
        """A new control connection."""
        return ControlClient(self.ctrl_path, timeout)

    def subscribe(self, timeout: float = 10.0) -> FlowSubscription:
        """A new flow-record subscription."""
        return FlowSubscription(self.ctrl_path, timeout)

    def log(self) -> str:
        """Everything the process printed so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout`; returns the exit status."""
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return proc.returncode

    def close(self) -> None:
        """Stop the process and remove its temporary directory."""
        self.stop()
        self._tmp.cleanup()

    def __enter__(self) -> FastPath:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def iter_records(records: np.ndarray) -> Iterator[dict[str, Any]]:
    """Flow records as dicts with printable addresses (for logs and the CLI)."""
    for rec in records:
        src = ipaddress.IPv6Address(bytes(rec["src_addr"]))
        dst = ipaddress.IPv6Address(bytes(rec["dst_addr"]))
        row = {name: rec[name].tolist() for name in FLOW_RECORD_DTYPE.names or ()}
        row["src_addr"] = str(src.ipv4_mapped or src)
        row["dst_addr"] = str(dst.ipv4_mapped or dst)
        yield row

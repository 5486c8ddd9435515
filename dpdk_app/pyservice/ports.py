"""The service port of the fallback: AF_PACKET on an interface, pcap replay, or none.

Mirrors the vdevs the C app is started with: `net_af_packet0,iface=X` (and `net_tap`/`net_pcap`
with `iface=X`) become a raw AF_PACKET socket on X; `net_pcap0,rx_pcap=IN,tx_pcap=OUT` replays
IN once and writes what is sent to OUT (classic little-endian pcap, as DPDK's net_pcap does).
"""

from __future__ import annotations

import socket
import struct
from pathlib import Path

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_PROMISC = 1
MAX_FRAME = 65535

_PCAP_HDR = struct.Struct("<IHHiIII")
_PCAP_REC = struct.Struct("<IIII")
PCAP_MAGIC = 0xA1B2C3D4
PCAP_MAGIC_NS = 0xA1B23C4D


class PortError(RuntimeError):
    """The port cannot be opened (bad vdev, missing interface or file)."""


class Port:
    """Base: a port that never receives (--no-port, net_null)."""

    def fileno(self) -> int | None:
        """A descriptor to wait on for frames, or None."""
        return None

    def pending(self) -> bool:
        """Whether frames are ready without waiting (replay files)."""
        return False

    def rx(self, burst: int) -> list[bytes]:
        """Up to `burst` frames, without blocking."""
        return []

    def tx(self, frames: list[bytes]) -> int:
        """Send frames; -> how many went out."""
        return len(frames)

    def close(self) -> None:
        """Release the port."""


class PacketPort(Port):
    """A raw AF_PACKET socket on one interface, promiscuous, non-blocking."""

    def __init__(self, iface: str) -> None:
        try:
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        except OSError as exc:
            raise PortError(f"AF_PACKET socket: {exc}") from exc
        try:
            self.sock.bind((iface, 0))
            ifindex = socket.if_nametoindex(iface)
            mreq = struct.pack("iHH8s", ifindex, PACKET_MR_PROMISC, 0, b"")
            self.sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        except OSError as exc:
            self.sock.close()
            raise PortError(f"interface {iface}: {exc}") from exc
        self.sock.setblocking(False)

    def fileno(self) -> int | None:
        return self.sock.fileno()

    def rx(self, burst: int) -> list[bytes]:
        frames: list[bytes] = []
        while len(frames) < burst:
            try:
                data, addr = self.sock.recvfrom(MAX_FRAME)
            except (BlockingIOError, InterruptedError):
                break
            if addr[2] != PACKET_OUTGOING:  # our own and the host's transmissions
                frames.append(data)
        return frames

    def tx(self, frames: list[bytes]) -> int:
        sent = 0
        for f in frames:
            try:
                self.sock.send(f)
                sent += 1
            except OSError:
                pass  # full or too big: counted as tx_fail, like a full TX ring
        return sent

    def close(self) -> None:
        self.sock.close()


class PcapPort(Port):
    """Replays rx_pcap once; appends transmitted frames to tx_pcap."""

    def __init__(self, rx_path: str | None, tx_path: str | None) -> None:
        self._frames = read_pcap(Path(rx_path)) if rx_path else []
        self._next = 0
        self._out = None
        if tx_path:
            try:
                self._out = open(tx_path, "wb")  # noqa: SIM115 - kept open for the run
            except OSError as exc:
                raise PortError(f"tx_pcap {tx_path}: {exc}") from exc
            self._out.write(_PCAP_HDR.pack(PCAP_MAGIC, 2, 4, 0, 0, MAX_FRAME, 1))
            self._out.flush()

    def pending(self) -> bool:
        return self._next < len(self._frames)

    def rx(self, burst: int) -> list[bytes]:
        out = self._frames[self._next : self._next + burst]
        self._next += len(out)
        return out

    def tx(self, frames: list[bytes]) -> int:
        if self._out is None:
            return 0
        for i, f in enumerate(frames):
            self._out.write(_PCAP_REC.pack(0, i, len(f), len(f)) + f)
        self._out.flush()
        return len(frames)

    def close(self) -> None:
        if self._out is not None:
            self._out.close()


def read_pcap(path: Path) -> list[bytes]:
    """Frames of a classic pcap file (either byte order, µs or ns timestamps)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PortError(f"rx_pcap {path}: {exc}") from exc
    if len(data) < _PCAP_HDR.size:
        raise PortError(f"rx_pcap {path}: not a pcap file")
    magic = struct.unpack_from("<I", data)[0]
    if magic in (PCAP_MAGIC, PCAP_MAGIC_NS):
        rec = struct.Struct("<IIII")
    elif magic in (0xD4C3B2A1, 0x4D3CB2A1):
        rec = struct.Struct(">IIII")
    else:
        raise PortError(f"rx_pcap {path}: not a pcap file (magic {magic:#x})")
    frames, off = [], _PCAP_HDR.size
    while off + rec.size <= len(data):
        incl = rec.unpack_from(data, off)[2]
        frames.append(data[off + rec.size : off + rec.size + incl])
        off += rec.size + incl
    return frames


def open_port(vdev: str | None) -> Port:
    """The port a --vdev string describes (None: no port)."""
    if vdev is None:
        return Port()
    name, _, rest = vdev.partition(",")
    kv = dict(p.partition("=")[::2] for p in rest.split(",") if p)
    if "iface" in kv and name.startswith(("net_af_packet", "net_tap", "net_pcap")):
        return PacketPort(kv["iface"])
    if name.startswith("net_pcap"):
        return PcapPort(kv.get("rx_pcap"), kv.get("tx_pcap"))
    if name.startswith("net_null"):
        return Port()
    raise PortError(f"unsupported vdev for the numba service: {vdev}")

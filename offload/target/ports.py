"""Packet I/O of the software target: network interfaces (AF_PACKET) and pcap files.

Each `-i PORT@IFACE` is a `RawPort`: a raw socket bound to the interface, in promiscuous mode,
that ignores the frames the host itself sends out of it (the target's own transmissions among
them). One thread polls all of them with epoll and hands each burst of received frames to the
target. The kernel may hand over a frame whose VLAN tag it stripped (the tag is in the
auxiliary data; it is put back) or whose TCP/UDP checksum is still partial because checksum
offload was going to fill it in (it is completed here, or the receiver would drop it).
`PcapPorts` replays `port<N>_in.pcap` files and records `port<N>_out.pcap`.
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import os
import selectors
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

from offload.target.packet import l4_checksum_fixed
from offload.target.pcap import PcapWriter, read_pcap

log = logging.getLogger(__name__)

# From <linux/if_packet.h> and <linux/if_ether.h>.
ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_PROMISC = 1
PACKET_AUXDATA = 8
PACKET_IGNORE_OUTGOING = 23
PACKET_OUTGOING = 4
TP_STATUS_CSUMNOTREADY = 1 << 3
TP_STATUS_VLAN_VALID = 1 << 4
TP_STATUS_VLAN_TPID_VALID = 1 << 6
_AUXDATA = struct.Struct("=IIIHHHH")  # struct tpacket_auxdata
_ANC_SPACE = socket.CMSG_SPACE(_AUXDATA.size)
BURST = 64
MAX_FRAME = 65535

Receiver = Callable[[int, list[bytes]], None]


class RawPort:
    """One pipeline port on a network interface."""

    def __init__(self, port: int, ifname: str) -> None:
        self.port = port
        self.ifname = ifname
        self.errors: Counter[str] = Counter()
        try:
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        except OSError as exc:
            raise OSError(
                exc.errno, f"port {port}: raw socket: {exc.strerror} (needs root)"
            ) from exc
        try:
            sock.bind((ifname, ETH_P_ALL))
            ifindex = socket.if_nametoindex(ifname)
            mreq = struct.pack("iHH8s", ifindex, PACKET_MR_PROMISC, 0, b"")
            sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
            sock.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
            # Kernels before 4.20 lack it: outgoing frames are filtered in receive() anyway.
            with contextlib.suppress(OSError):
                sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            raise OSError(
                exc.errno, f"port {port}: cannot attach interface {ifname}: {exc.strerror}"
            ) from exc
        self.sock = sock

    def fileno(self) -> int:
        """The socket, for the poller."""
        return self.sock.fileno()

    def receive(self) -> list[bytes]:
        """Up to BURST frames that are waiting, as they were on the wire."""
        frames: list[bytes] = []
        recvmsg = self.sock.recvmsg
        for _ in range(BURST):
            try:
                data, ancdata, _flags, addr = recvmsg(MAX_FRAME, _ANC_SPACE)
            except BlockingIOError:
                break
            except OSError as exc:
                self.errors[f"recv: {exc.strerror}"] += 1
                break
            if addr[2] == PACKET_OUTGOING:
                continue
            for level, kind, aux in ancdata:
                if level == SOL_PACKET and kind == PACKET_AUXDATA and len(aux) >= _AUXDATA.size:
                    status, _len, _snap, _mac, _net, tci, tpid = _AUXDATA.unpack_from(aux)
                    if status & TP_STATUS_VLAN_VALID:
                        if not status & TP_STATUS_VLAN_TPID_VALID:
                            tpid = 0x8100
                        data = data[:12] + struct.pack("!HH", tpid, tci) + data[12:]
                    if status & TP_STATUS_CSUMNOTREADY:
                        data = l4_checksum_fixed(data)
            frames.append(data)
        return frames

    def send(self, data: bytes) -> None:
        """Transmit a frame; a full queue or an oversized frame is a counted drop."""
        try:
            self.sock.send(data)
        except BlockingIOError:
            self.errors["tx queue full"] += 1
        except OSError as exc:
            self.errors[f"send: {exc.strerror}"] += 1
            if self.errors[f"send: {exc.strerror}"] == 1:
                log.warning(
                    "port %d (%s): cannot send a %d-byte frame: %s (if it is larger than the "
                    "MTU, turn off TSO/GSO on the sender: ethtool -K IFACE tso off gso off)",
                    self.port,
                    self.ifname,
                    len(data),
                    exc.strerror,
                )

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()


class PortIO:
    """The epoll loop over every RawPort, in one thread."""

    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver
        self.ports: dict[int, RawPort] = {}
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        self._thread: threading.Thread | None = None
        self._running = False
        self._closed = False

    def add(self, port: int, ifname: str) -> None:
        """Attach pipeline port `port` to interface `ifname`."""
        if port in self.ports:
            raise ValueError(f"port {port} is given twice")
        raw = RawPort(port, ifname)
        self.ports[port] = raw
        self._selector.register(raw, selectors.EVENT_READ, raw)

    def send(self, port: int, data: bytes) -> bool:
        """Send out of a port; False if the port is not an interface."""
        raw = self.ports.get(port)
        if raw is None:
            return False
        raw.send(data)
        return True

    def start(self) -> None:
        """Start polling (a no-op without interfaces)."""
        if not self.ports:
            return
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._running = True
        self._thread = threading.Thread(target=self._loop, name="nicfw-ports", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while self._running:
            for key, _events in self._selector.select(timeout=1.0):
                raw = key.data
                if raw is None:
                    continue
                frames = raw.receive()
                if frames:
                    try:
                        self.receiver(raw.port, frames)
                    except Exception:  # the data plane never dies of one bad packet
                        log.exception("port %d: processing failed", raw.port)

    def stop(self) -> None:
        """Stop polling and close the sockets (once; later calls do nothing)."""
        if self._closed:
            return
        self._closed = True
        self._running = False
        os.write(self._wake_w, b"x")
        if self._thread is not None:
            self._thread.join(timeout=5)
        for raw in self.ports.values():
            raw.close()
        self._selector.close()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def errors(self) -> dict[str, int]:
        """Send/receive problems, by port and kind."""
        return {
            f"port {raw.port} ({raw.ifname}) {what}": count
            for raw in self.ports.values()
            for what, count in raw.errors.items()
        }


class PcapPorts:
    """pcap input and output for the ports that are not interfaces."""

    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._writers: dict[int, PcapWriter] = {}
        self._lock = threading.Lock()

    def inputs(self) -> dict[int, Path]:
        """The port<N>_in.pcap files present, by port."""
        found: dict[int, Path] = {}
        for path in self.dir.glob("port*_in.pcap"):
            digits = path.name[len("port") : -len("_in.pcap")]
            if digits.isdigit():
                found[int(digits)] = path
        return found

    def frames(self) -> Iterator[tuple[int, bytes]]:
        """Every input frame as (port, frame), merged across files in timestamp order."""
        streams = [
            ((ts, port, data) for ts, data in read_pcap(path))
            for port, path in sorted(self.inputs().items())
        ]
        for _ts, port, data in heapq.merge(*streams, key=lambda rec: (rec[0], rec[1])):
            yield port, data

    def write(self, port: int, data: bytes) -> None:
        """Record a frame sent out of `port` in port<N>_out.pcap."""
        with self._lock:
            writer = self._writers.get(port)
            if writer is None:
                writer = self._writers[port] = PcapWriter(self.dir / f"port{port}_out.pcap")
            writer.write(data, time.time())

    def flush(self) -> None:
        """Make the output files complete up to now."""
        with self._lock:
            for writer in self._writers.values():
                writer.flush()

    def close(self) -> None:
        """Close the output files."""
        with self._lock:
            for writer in self._writers.values():
                writer.close()
            self._writers.clear()

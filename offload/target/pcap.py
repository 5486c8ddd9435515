"""pcap files (libpcap format, Ethernet link type) in plain struct code, for offline replay.

The software target reads `port<N>_in.pcap` and writes `port<N>_out.pcap`, as BMv2's
`--pcap`/`--use-files` do; microsecond and nanosecond files, either byte order, are read.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

LINKTYPE_ETHERNET = 1
_MAGIC_US = 0xA1B2C3D4
_MAGIC_NS = 0xA1B23C4D
_SNAPLEN = 262144


class PcapError(ValueError):
    """A file that is not a pcap file this reader understands."""


def read_pcap(path: str | Path) -> Iterator[tuple[float, bytes]]:
    """The (timestamp in seconds, frame) records of a pcap file."""
    with open(path, "rb") as f:
        head = f.read(24)
        if len(head) < 24:
            raise PcapError(f"{path}: too short for a pcap header")
        for order in ("<", ">"):
            magic = struct.unpack(order + "I", head[:4])[0]
            if magic in (_MAGIC_US, _MAGIC_NS):
                break
        else:
            raise PcapError(f"{path}: not a pcap file (pcapng is not supported)")
        scale = 1e-9 if magic == _MAGIC_NS else 1e-6
        linktype = struct.unpack(order + "I", head[20:24])[0] & 0x0FFFFFFF
        if linktype != LINKTYPE_ETHERNET:
            raise PcapError(f"{path}: link type {linktype} is not Ethernet")
        record = struct.Struct(order + "IIII")
        while True:
            rec = f.read(16)
            if len(rec) < 16:
                return
            sec, frac, caplen, _origlen = record.unpack(rec)
            data = f.read(caplen)
            if len(data) < caplen:
                return  # a truncated last record, as a capture cut short leaves it
            yield sec + frac * scale, data


class PcapWriter:
    """Append frames to a pcap file (microsecond timestamps, host byte order)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._file: BinaryIO = open(self.path, "wb")  # noqa: SIM115 - closed by close()
        self._file.write(struct.pack("=IHHiIII", _MAGIC_US, 2, 4, 0, 0, _SNAPLEN, 1))
        self.count = 0

    def write(self, data: bytes, timestamp: float) -> None:
        """Append one frame."""
        sec = int(timestamp)
        usec = int((timestamp - sec) * 1e6)
        self._file.write(struct.pack("=IIII", sec, usec, len(data), len(data)))
        self._file.write(data)
        self.count += 1

    def flush(self) -> None:
        """Make what was written visible to readers."""
        self._file.flush()

    def close(self) -> None:
        """Flush and close the file."""
        self._file.close()

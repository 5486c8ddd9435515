"""Packets between the pipeline and software: controller metadata and the service encapsulation.

Two ways lead out of the pipeline to software (docs/pipeline.md, stage 11): the service port,
where a packet arrives wrapped in an outer Ethernet header (ether_type 0x88B5) and the 12-byte
service header; and the CPU port, where P4Runtime hands it over as a PacketIn whose `packet_in`
metadata has the same fields. `ServiceHeader` is the one definition of those fields that the
fast path and the controller share; metadata is encoded and decoded by name through P4Info.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import ClassVar

from offload.names import SERVICE_ETHERTYPE, SERVICE_HEADER_LEN
from offload.p4schema import ControllerHeaderInfo
from offload.p4values import P4ValueError, decode_int, encode_int
from offload.proto import p4r

ETHERNET_LEN = 14
_ETHERNET = struct.Struct("!6s6sH")
ZERO_MAC = b"\x00" * 6


class PacketError(ValueError):
    """A packet or a metadata set that cannot be encoded or decoded as asked."""


@dataclass(frozen=True, slots=True)
class ServiceHeader:
    """The service header: why a packet left the pipeline for the firewall service, and whence."""

    ingress_port: int = 0
    egress_port: int = 0
    reason: int = 0
    direction: int = 0
    workload_id: int = 0
    rule_id: int = 0

    # field order and widths as in firewall.p4 (and the `packet_in` controller header)
    FORMAT: ClassVar[struct.Struct] = struct.Struct("!HHBBHI")
    FIELDS: ClassVar[tuple[tuple[str, int], ...]] = (
        ("ingress_port", 16),
        ("egress_port", 16),
        ("reason", 8),
        ("direction", 8),
        ("workload_id", 16),
        ("rule_id", 32),
    )

    def pack(self) -> bytes:
        """The 12 header bytes, network order."""
        try:
            return self.FORMAT.pack(
                self.ingress_port,
                self.egress_port,
                self.reason,
                self.direction,
                self.workload_id,
                self.rule_id,
            )
        except struct.error as exc:
            raise PacketError(f"service header field out of range: {self}: {exc}") from None

    @classmethod
    def unpack(cls, data: bytes | bytearray | memoryview) -> ServiceHeader:
        """Parse the first 12 bytes of `data`."""
        if len(data) < SERVICE_HEADER_LEN:
            raise PacketError(
                f"service header truncated: {len(data)} bytes, need {SERVICE_HEADER_LEN}"
            )
        return cls(*cls.FORMAT.unpack_from(data))

    def to_metadata(self) -> dict[str, int]:
        """The header as `packet_in` metadata values by name."""
        return asdict(self)

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, int]) -> ServiceHeader:
        """Build the header from `packet_in` metadata; every field must be there."""
        missing = [name for name, _ in cls.FIELDS if name not in metadata]
        if missing:
            raise PacketError(f"packet_in metadata lacks {', '.join(missing)}")
        return cls(**{name: int(metadata[name]) for name, _ in cls.FIELDS})


@dataclass(frozen=True, slots=True)
class ServiceFrame:
    """A frame as it crosses the service port: outer Ethernet, service header, inner frame."""

    header: ServiceHeader
    inner: bytes
    dst_mac: bytes = ZERO_MAC
    src_mac: bytes = ZERO_MAC


def encapsulate(
    frame: bytes, header: ServiceHeader, *, dst_mac: bytes = ZERO_MAC, src_mac: bytes = ZERO_MAC
) -> bytes:
    """Wrap a frame for the service port: outer Ethernet (0x88B5) + service header + frame."""
    if len(dst_mac) != 6 or len(src_mac) != 6:
        raise PacketError("MAC addresses must be 6 bytes")
    return _ETHERNET.pack(dst_mac, src_mac, SERVICE_ETHERTYPE) + header.pack() + frame


def is_service_frame(packet: bytes | bytearray | memoryview) -> bool:
    """Whether a frame carries the service encapsulation (by its outer ether_type)."""
    return len(packet) >= ETHERNET_LEN and (packet[12] << 8 | packet[13]) == SERVICE_ETHERTYPE


def decapsulate(packet: bytes | bytearray | memoryview) -> ServiceFrame:
    """Split a service-port frame into its service header and the original frame."""
    if len(packet) < ETHERNET_LEN:
        raise PacketError(f"frame truncated: {len(packet)} bytes, no Ethernet header")
    dst, src, ether_type = _ETHERNET.unpack_from(packet)
    if ether_type != SERVICE_ETHERTYPE:
        raise PacketError(
            f"not a service frame: ether_type {ether_type:#06x}, expected {SERVICE_ETHERTYPE:#06x}"
        )
    header = ServiceHeader.unpack(memoryview(packet)[ETHERNET_LEN:])
    inner = bytes(packet[ETHERNET_LEN + SERVICE_HEADER_LEN :])
    return ServiceFrame(header, inner, bytes(dst), bytes(src))


def encode_metadata(
    header: ControllerHeaderInfo, values: Mapping[str, int]
) -> list[p4r.PacketMetadata]:
    """Encode controller metadata by name; every field of the header must be given."""
    unknown = sorted(set(values) - set(header.fields_by_name))
    if unknown:
        raise PacketError(f"{header.name} has no field(s) {', '.join(unknown)}")
    missing = [f.name for f in header.fields if f.name not in values]
    if missing:
        raise PacketError(f"{header.name}: missing field(s) {', '.join(missing)}")
    out = []
    for f in header.fields:
        try:
            value = encode_int(int(values[f.name]), f.bitwidth)
        except P4ValueError as exc:
            raise PacketError(f"{header.name}.{f.name}: {exc}") from None
        out.append(p4r.PacketMetadata(metadata_id=f.id, value=value))
    return out


def decode_metadata(
    header: ControllerHeaderInfo, metadata: Iterable[p4r.PacketMetadata]
) -> dict[str, int]:
    """Decode controller metadata into values by name; ids and widths are checked."""
    values: dict[str, int] = {}
    for m in metadata:
        f = header.fields_by_id.get(m.metadata_id)
        if f is None:
            raise PacketError(f"{header.name}: unknown metadata id {m.metadata_id}")
        if f.name in values:
            raise PacketError(f"{header.name}: metadata {f.name} given twice")
        try:
            values[f.name] = decode_int(m.value, f.bitwidth)
        except P4ValueError as exc:
            raise PacketError(f"{header.name}.{f.name}: {exc}") from None
    missing = [f.name for f in header.fields if f.name not in values]
    if missing:
        raise PacketError(f"{header.name}: missing field(s) {', '.join(missing)}")
    return values


@dataclass(frozen=True, slots=True)
class PacketIn:
    """A packet the target sent to the controller, with its `packet_in` metadata by name."""

    payload: bytes
    metadata: Mapping[str, int]

    @property
    def service_header(self) -> ServiceHeader:
        """The metadata as a service header (`packet_in` has the same fields)."""
        return ServiceHeader.from_metadata(self.metadata)

"""Service encapsulation and controller metadata: round trips, layout and malformed input."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from offload import names
from offload.p4schema import P4Schema
from offload.packetio import (
    PacketError,
    PacketIn,
    ServiceHeader,
    decapsulate,
    decode_metadata,
    encapsulate,
    encode_metadata,
    is_service_frame,
)
from offload.proto import p4r

SCHEMA = P4Schema.load()
PACKET_IN = SCHEMA.header(names.PACKET_IN)
PACKET_OUT = SCHEMA.header(names.PACKET_OUT)

headers = st.builds(
    ServiceHeader,
    ingress_port=st.integers(0, 0xFFFF),
    egress_port=st.integers(0, 0xFFFF),
    reason=st.integers(0, 0xFF),
    direction=st.integers(0, 0xFF),
    workload_id=st.integers(0, 0xFFFF),
    rule_id=st.integers(0, 0xFFFFFFFF),
)


def test_service_header_matches_the_packet_in_header_of_p4info() -> None:
    # packet_in carries the service header's fields in the same order (docs/pipeline.md)
    assert tuple((f.name, f.bitwidth) for f in PACKET_IN.fields) == ServiceHeader.FIELDS
    assert sum(w for _, w in ServiceHeader.FIELDS) == names.SERVICE_HEADER_LEN * 8
    assert ServiceHeader.FORMAT.size == names.SERVICE_HEADER_LEN


def test_service_header_byte_layout() -> None:
    hdr = ServiceHeader(1, 2, names.Reason.PUNT, names.Direction.INBOUND, 0x0304, 0x05060708)
    assert hdr.pack() == bytes([0, 1, 0, 2, 2, 2, 3, 4, 5, 6, 7, 8])


@given(headers, st.binary(max_size=64))
def test_encapsulation_round_trip(hdr: ServiceHeader, inner: bytes) -> None:
    dst, src = b"\x02" * 6, b"\x04" * 6
    frame = encapsulate(inner, hdr, dst_mac=dst, src_mac=src)
    assert frame[12:14] == struct.pack("!H", names.SERVICE_ETHERTYPE)
    assert is_service_frame(frame)
    out = decapsulate(frame)
    assert (out.header, out.inner, out.dst_mac, out.src_mac) == (hdr, inner, dst, src)


@given(headers)
def test_metadata_round_trip(hdr: ServiceHeader) -> None:
    md = encode_metadata(PACKET_IN, hdr.to_metadata())
    assert [m.metadata_id for m in md] == [f.id for f in PACKET_IN.fields]
    values = decode_metadata(PACKET_IN, md)
    assert ServiceHeader.from_metadata(values) == hdr
    assert PacketIn(b"x", values).service_header == hdr


@pytest.mark.parametrize("length", [0, 5, 13, 14, 25])
def test_truncated_service_frames_are_refused(length: int) -> None:
    frame = encapsulate(b"", ServiceHeader(rule_id=9))[:length]
    with pytest.raises(PacketError, match="truncated"):
        decapsulate(frame)


def test_other_ether_types_are_not_service_frames() -> None:
    frame = b"\xff" * 12 + b"\x08\x00" + b"\x00" * 30
    assert not is_service_frame(frame)
    with pytest.raises(PacketError, match="0x0800"):
        decapsulate(frame)
    with pytest.raises(PacketError, match="truncated"):
        ServiceHeader.unpack(b"\x00" * 11)


def test_out_of_range_header_fields_are_refused() -> None:
    with pytest.raises(PacketError):
        ServiceHeader(reason=256).pack()
    with pytest.raises(PacketError):
        encapsulate(b"", ServiceHeader(), dst_mac=b"\x00")


def test_packet_out_metadata_by_name() -> None:
    md = encode_metadata(PACKET_OUT, {"egress_port": 3, "flags": 0})
    assert [(m.metadata_id, m.value) for m in md] == [(1, b"\x03"), (2, b"\x00")]
    with pytest.raises(PacketError, match="missing field"):
        encode_metadata(PACKET_OUT, {"egress_port": 3})
    with pytest.raises(PacketError, match="no field"):
        encode_metadata(PACKET_OUT, {"egress_port": 3, "flags": 0, "port": 1})
    with pytest.raises(PacketError, match="16 bits"):
        encode_metadata(PACKET_OUT, {"egress_port": 1 << 16, "flags": 0})


def test_bad_packet_in_metadata_is_refused() -> None:
    good = encode_metadata(PACKET_IN, ServiceHeader().to_metadata())
    with pytest.raises(PacketError, match="missing"):
        decode_metadata(PACKET_IN, good[:-1])
    with pytest.raises(PacketError, match="unknown metadata id 99"):
        decode_metadata(PACKET_IN, [*good, p4r.PacketMetadata(metadata_id=99, value=b"\x01")])
    with pytest.raises(PacketError, match="twice"):
        decode_metadata(PACKET_IN, [*good, good[0]])
    wide = p4r.PacketMetadata(metadata_id=3, value=b"\x01\x00")  # reason is 8 bits
    with pytest.raises(PacketError, match="reason"):
        decode_metadata(PACKET_IN, [m for m in good if m.metadata_id != 3] + [wide])
    with pytest.raises(PacketError, match="lacks"):
        ServiceHeader.from_metadata({"reason": 1})

"""P4Runtime digests: what P4Info says of them, and their data as P4Data structs.

A digest is how the pipeline tells the controller about an event without sending the packet:
the P4 program calls `digest<T>(receiver, {...})`, p4c names the digest after the struct type
`T` and lists the struct's members in P4Info's `type_info`. The target batches the samples
into a `DigestList` on the primary's stream; each sample is one `P4Data` struct whose members
are bitstrings, in member order. This module is the one codec both sides use.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from offload.p4values import decode_int, encode_int
from offload.proto import p4d, p4i, p4r


class DigestError(ValueError):
    """A digest P4Info or P4Data that does not have the expected shape."""


@dataclass(frozen=True)
class DigestInfo:
    """One digest of a P4Info: id, name and its struct's members as (name, bit width)."""

    id: int
    name: str
    fields: tuple[tuple[str, int], ...]

    @property
    def field_names(self) -> tuple[str, ...]:
        """The member names, in order."""
        return tuple(name for name, _ in self.fields)


def digest_infos(p4info: p4i.P4Info) -> dict[str, DigestInfo]:
    """Every digest of a P4Info by name; DigestError if one is not a struct of bitstrings."""
    out: dict[str, DigestInfo] = {}
    for d in p4info.digests:
        name = d.preamble.name
        if d.type_spec.WhichOneof("type_spec") != "struct":
            raise DigestError(f"digest {name}: only struct digests are supported")
        struct = p4info.type_info.structs.get(d.type_spec.struct.name)
        if struct is None:
            raise DigestError(f"digest {name}: struct {d.type_spec.struct.name!r} not in type_info")
        fields = []
        for m in struct.members:
            bits = m.type_spec.bitstring
            kind = bits.WhichOneof("type_spec") if m.type_spec.HasField("bitstring") else None
            if kind not in ("bit", "int"):
                raise DigestError(f"digest {name}: member {m.name} is not a bit<W>")
            fields.append((m.name, getattr(bits, kind).bitwidth))
        out[name] = DigestInfo(d.preamble.id, name, tuple(fields))
    return out


def encode_sample(info: DigestInfo, values: Sequence[int]) -> p4d.P4Data:
    """One sample (values in member order) as a P4Data struct of canonical bitstrings."""
    if len(values) != len(info.fields):
        raise DigestError(f"digest {info.name}: {len(values)} values for {len(info.fields)} fields")
    data = p4d.P4Data()
    members = data.struct.members
    for (name, width), value in zip(info.fields, values, strict=True):
        if value < 0 or value >> width:
            raise DigestError(f"digest {info.name}: {name}={value} does not fit {width} bits")
        members.add().bitstring = encode_int(value, width)
    return data


def decode_sample(info: DigestInfo, data: p4d.P4Data) -> dict[str, int]:
    """One P4Data struct -> {member name: value}; DigestError if it is not the struct."""
    if data.WhichOneof("data") != "struct":
        raise DigestError(f"digest {info.name}: a sample must be a struct")
    members = data.struct.members
    if len(members) != len(info.fields):
        raise DigestError(
            f"digest {info.name}: {len(members)} members, the struct has {len(info.fields)}"
        )
    out: dict[str, int] = {}
    for (name, width), member in zip(info.fields, members, strict=True):
        if member.WhichOneof("data") != "bitstring":
            raise DigestError(f"digest {info.name}: member {name} is not a bitstring")
        try:
            out[name] = decode_int(member.bitstring, width)
        except ValueError as exc:
            raise DigestError(f"digest {info.name}: member {name}: {exc}") from None
    return out


def sample_values(info: DigestInfo, sample: Mapping[str, int]) -> tuple[int, ...]:
    """A sample given by member name, as values in member order (missing members are 0)."""
    unknown = set(sample) - set(info.field_names)
    if unknown:
        raise DigestError(f"digest {info.name} has no member(s) {', '.join(sorted(unknown))}")
    return tuple(sample.get(name, 0) for name in info.field_names)


@dataclass(frozen=True)
class DigestList:
    """A DigestList as the controller sees it: digest name, list id, decoded samples."""

    digest_id: int
    name: str
    list_id: int
    timestamp_ns: int
    samples: tuple[dict[str, int], ...]


def decode_digest_list(infos: Mapping[int, DigestInfo], msg: p4r.DigestList) -> DigestList:
    """Decode a DigestList by its digest's struct; DigestError for an unknown id or shape."""
    info = infos.get(msg.digest_id)
    if info is None:
        raise DigestError(f"DigestList for unknown digest id {msg.digest_id}")
    samples = tuple(decode_sample(info, d) for d in msg.data)
    return DigestList(msg.digest_id, info.name, msg.list_id, msg.timestamp, samples)

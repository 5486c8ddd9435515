"""Canonical byte strings for P4Runtime values.

P4Runtime (section 8.4) requires the shortest big-endian encoding of an unsigned value: no
leading zero bytes, and zero as a single zero byte. Targets must accept only values that fit the
field's bit width.
"""

from __future__ import annotations

import ipaddress


class P4ValueError(ValueError):
    """A value does not fit the field it is meant for."""


def encode_int(value: int, bitwidth: int) -> bytes:
    """Encode an unsigned integer as a canonical byte string of at most `bitwidth` bits."""
    if value < 0 or value >> bitwidth:
        raise P4ValueError(f"value {value} does not fit in {bitwidth} bits")
    return value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big")


def decode_int(data: bytes, bitwidth: int) -> int:
    """Decode a byte string (canonical or padded) and check that it fits `bitwidth` bits."""
    if not data:
        raise P4ValueError("empty byte string")
    value = int.from_bytes(data, "big")
    if value >> bitwidth:
        raise P4ValueError(f"value 0x{data.hex()} does not fit in {bitwidth} bits")
    return value


def canonical(data: bytes) -> bytes:
    """Strip leading zero bytes, keeping one byte for zero."""
    stripped = data.lstrip(b"\x00")
    return stripped or b"\x00"


def is_canonical(data: bytes) -> bool:
    """Report whether `data` is already in the canonical form."""
    return len(data) > 0 and (len(data) == 1 or data[0] != 0)


def prefix_mask(prefix_len: int, bitwidth: int) -> int:
    """The mask of a prefix of `prefix_len` bits in a field of `bitwidth` bits."""
    if not 0 <= prefix_len <= bitwidth:
        raise P4ValueError(f"prefix length {prefix_len} outside 0..{bitwidth}")
    return ((1 << prefix_len) - 1) << (bitwidth - prefix_len)


# Addresses: the pipeline keys every address as 128 bits; IPv4 is carried IPv4-mapped
# (::ffff:a.b.c.d, RFC 4291 section 2.5.5.2) so that one table serves both families.
V4_MAPPED = 0xFFFF << 32
V4_MAPPED_PREFIX = 96


def ip_to_int128(address: str | ipaddress.IPv4Address | ipaddress.IPv6Address) -> int:
    """An IPv4 or IPv6 address as the pipeline's 128-bit key (IPv4 mapped into IPv6)."""
    addr = ipaddress.ip_address(address) if isinstance(address, str) else address
    if addr.version == 4:
        return V4_MAPPED | int(addr)
    return int(addr)


def network_to_lpm128(
    network: str | ipaddress.IPv4Network | ipaddress.IPv6Network,
) -> tuple[int, int]:
    """A network as (128-bit value, prefix length) in the pipeline's address space."""
    net = ipaddress.ip_network(network, strict=True) if isinstance(network, str) else network
    if net.version == 4:
        return V4_MAPPED | int(net.network_address), V4_MAPPED_PREFIX + net.prefixlen
    return int(net.network_address), net.prefixlen


def int128_to_ip(value: int) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The address a 128-bit pipeline key stands for (IPv4-mapped keys come back as IPv4)."""
    if value >> 32 == 0xFFFF:
        return ipaddress.IPv4Address(value & 0xFFFFFFFF)
    return ipaddress.IPv6Address(value)


def lpm128_to_network(value: int, prefix_len: int) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """The network a (128-bit value, prefix length) key stands for."""
    if prefix_len >= V4_MAPPED_PREFIX and value >> 32 == 0xFFFF:
        return ipaddress.IPv4Network((value & 0xFFFFFFFF, prefix_len - V4_MAPPED_PREFIX))
    return ipaddress.IPv6Network((value, prefix_len))

"""Warm-up traffic: one pass through every kernel so the first real batch pays no JIT."""

from __future__ import annotations

import struct

import numpy as np

from dpdk_app.fastpath import ServiceHeader, encapsulate, make_identity, make_rule
from dpdk_app.layout import ACT_ALLOW, ACT_DROP, ACT_REJECT
from dpdk_app.pyservice.datapath import Datapath


def _ipv4(proto: int, payload: bytes, frag: int = 0) -> bytes:
    hdr = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0, frag, 64, proto,
                                0, bytes([10, 1, 0, 1]), bytes([10, 2, 0, 1])))  # fmt: skip
    total = sum(struct.unpack("!10H", bytes(hdr)))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    struct.pack_into("!H", hdr, 10, ~total & 0xFFFF)
    eth = bytes.fromhex("02000000000b02000000000a0800")
    return encapsulate(eth + bytes(hdr) + payload, ServiceHeader(1, 2))


def _tcp(sport: int, dport: int, flags: int) -> bytes:
    return _ipv4(6, struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, flags, 512, 0, 0))


def run_warm_up(dp: Datapath) -> None:
    """Push a small mixed batch through `dp` and walk its flow table."""
    rules = np.concatenate(
        [
            make_rule(1, ACT_ALLOW, proto=6, dport=(80, 80)),
            make_rule(2, ACT_REJECT, proto=6, dport=(23, 23)),
            make_rule(3, ACT_ALLOW, proto=17),
            make_rule(4, ACT_DROP),
        ]
    )
    dp.rules.load(rules)
    dp.rules.load(rules[1:])  # incremental delete ...
    dp.rules.load(rules)  # ... and insert
    dp.identity_add(make_identity("10.1.0.1", "10.2.0.1", 1000, 80, 6, 1))
    frames = [
        _tcp(1000, 80, 0x02),
        _tcp(80, 1000, 0x12),
        _tcp(1001, 23, 0x02),
        _ipv4(17, struct.pack("!HHHH", 5, 53, 8, 0)),
        _ipv4(1, struct.pack("!BBHHH", 8, 0, 0, 7, 1)),
        _ipv4(17, b"x" * 8, frag=100),
        b"\x00" * 20,
    ]
    dp.process(frames)
    dp.expire()
    dp.flows("dump")
    dp.flows("resimulate")
    dp.flows("flush")
    dp.identity_del(make_identity("10.1.0.1", "10.2.0.1", 1000, 80, 6, 1))
    dp.take_records()

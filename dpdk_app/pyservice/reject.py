"""Reject responses: a TCP RST or ICMP/ICMPv6 "administratively prohibited", as reject.c.

The response goes back through the service port, encapsulated and turned around (egress_port =
the packet's ingress port, reason REJECT). Never to a RST, an ICMP error, a fragment or a
multicast/broadcast address. Runs outside the kernels: rejects are rate limited and rare.
"""

from __future__ import annotations

import struct

import numpy as np

ETH_LEN = 14
SVC_LEN = 12
ICMP6_QUOTE_MAX = 1280 - 40 - 8
REASON_REJECT = 5


def _sum16(data: bytes, total: int = 0) -> int:
    if len(data) % 2:
        data += b"\x00"
    total += sum(struct.unpack(f"!{len(data) // 2}H", data))
    return total


def _fold(total: int) -> int:
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _l4_cksum(src: bytes, dst: bytes, proto: int, seg: bytes) -> int:
    n = len(seg)
    total = _sum16(src + dst) + proto + (n & 0xFFFF) + (n >> 16)
    return _fold(_sum16(seg, total))


def _due(f: bytes, info: np.void, proto: int) -> bool:
    if info["frag"] != 0 or f[info["l2_off"]] & 1:  # fragment, L2 multicast/broadcast
        return False
    ip = int(info["l3_off"])
    if info["is_v6"]:
        src, dst = f[ip + 8 : ip + 24], f[ip + 24 : ip + 40]
        if dst[0] == 0xFF or src[0] == 0xFF or src == bytes(16):
            return False
    else:
        src, dst = f[ip + 12 : ip + 16], f[ip + 16 : ip + 20]
        if dst[0] >= 224 or src[0] >= 224 or src == bytes(4):
            return False
    l4 = int(info["l4_off"])
    if proto == 6:
        return l4 != 0 and not info["tcp_flags"] & 0x04
    if proto == 1 and l4 != 0:
        return int(info["icmp_type"]) in (8, 13)  # queries, never errors
    if proto == 58 and l4 != 0:
        return int(info["icmp_type"]) == 128
    return True


def build_reject(f: bytes, info: np.void, proto: int, rule_id: int) -> bytes | None:
    """The encapsulated response to frame f (parsed into `info`), or None when none is due."""
    if not _due(f, info, proto):
        return None
    v6, tcp = bool(info["is_v6"]), proto == 6
    l2_off, l3_off = int(info["l2_off"]), int(info["l3_off"])
    ip = f[l3_off:]
    l3_len = int(info["l3_len"])
    quote = b""
    if not tcp:
        n = min(l3_len, ICMP6_QUOTE_MAX) if v6 else min(l3_len, (ip[0] & 0x0F) * 4 + 8)
        quote = ip[:n]
    # Outer Ethernet and service header, turned around.
    direction = int(info["direction"])
    out = bytearray(f[6:12] + f[0:6] + b"\x88\xb5")
    out += struct.pack(
        "!HHBBHI",
        int(info["egress_port"]),
        int(info["ingress_port"]),
        REASON_REJECT,
        2 if direction == 1 else (1 if direction == 2 else 0),
        int(info["workload_id"]),
        rule_id,
    )
    l2 = bytearray(f[l2_off:l3_off])
    l2[0:6], l2[6:12] = f[l2_off + 6 : l2_off + 12], f[l2_off : l2_off + 6]
    out += l2
    src, dst = (ip[24:40], ip[8:24]) if v6 else (ip[16:20], ip[12:16])
    rproto = 6 if tcp else (58 if v6 else 1)
    if tcp:
        t = f[int(info["l4_off"]) :]
        doff = (t[12] >> 4) * 4
        flags = t[13]
        seg = int(info["l4_len"]) - doff + bool(flags & 0x02) + bool(flags & 0x01)
        l4 = bytearray(20)
        l4[0:2], l4[2:4] = t[2:4], t[0:2]
        if flags & 0x10:  # ACK set: RST with seq = their ack
            l4[4:8] = t[8:12]
            l4[13] = 0x04
        else:
            struct.pack_into("!I", l4, 8, (struct.unpack_from("!I", t, 4)[0] + seg) & 0xFFFFFFFF)
            l4[13] = 0x14
        l4[12] = 5 << 4
        struct.pack_into("!H", l4, 16, _l4_cksum(src, dst, 6, bytes(l4)))
    else:
        l4 = bytearray(8) + quote
        l4[0], l4[1] = (1, 1) if v6 else (3, 13)
        ck = _l4_cksum(src, dst, 58, bytes(l4)) if v6 else _fold(_sum16(bytes(l4)))
        struct.pack_into("!H", l4, 2, ck)
    if v6:
        hdr = bytearray(40)
        hdr[0] = 0x60
        struct.pack_into("!HBB", hdr, 4, len(l4), rproto, 64)
        hdr[8:24], hdr[24:40] = src, dst
    else:
        hdr = bytearray(20)
        hdr[0] = 0x45
        struct.pack_into("!H", hdr, 2, 20 + len(l4))
        struct.pack_into("!H", hdr, 6, 0x4000)  # DF
        hdr[8], hdr[9] = 64, rproto
        hdr[12:16], hdr[16:20] = src, dst
        struct.pack_into("!H", hdr, 10, _fold(_sum16(bytes(hdr))))
    return bytes(out + hdr + l4)

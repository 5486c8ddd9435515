"""Packet batches -> header arrays for the numba fallback, parsed exactly as the DPDK fast path.

A batch is one byte buffer holding the frames back to back plus an offsets array (frame i is
data[offsets[i]:offsets[i + 1]]); `pack_frames` builds one from a list of frames. The numba
kernel `parse_into` reads each frame with an explicit length (no byte is read before the
length check that covers it) and fills a HEADER_DTYPE record (the classification key) and a
PACKET_INFO_DTYPE record (service header fields, offsets, TCP flags, fragment state, and the
drop reason when the frame is malformed).

The rules are those of the C parser, dpdk_app/src/service.c, so both paths drop the same frames
for the same reasons (drop codes = `enum nicfw_drop` in dpdk_app/src/nicfw.h, in order):
Ethernet, one 802.1Q tag, IPv4 (version, IHL >= 5 with options skipped, total length, header
checksum, reserved flag) and IPv6 (version, payload length, no jumbograms, no IPv4-mapped
addresses on the wire, at most 8 extension headers, hop-by-hop only first, no routing type 0);
TCP (data offset, non-zero ports, flag combinations that no real stack sends), UDP (length,
non-zero destination port), ICMP/ICMPv6 keyed as the pipeline does (source port = identifier,
destination port = type << 8 | code); other protocols and non-first fragments have ports 0.
A frame that fails any check gets `valid = 0` in its header, which no rule ever matches.

`quote_key` reads the packet an ICMP error quotes, keyed the same way (service_parse_quote in
service.c): the verdict loop uses it to find the connection the error is about.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from dpdk_app.classifier.headers import HEADER_DTYPE
from dpdk_app.classifier.jit import kernel

# Drop reasons, in the order of enum nicfw_drop (dpdk_app/src/nicfw.h); PARSE_OK = -1.
DROP_NAMES = (
    "not_service",
    "truncated",
    "non_ip",
    "bad_ipv4",
    "bad_ipv6",
    "bad_l4",
    "bad_tcp_flags",
)
PARSE_OK = -1
DROP_NOT_SERVICE, DROP_TRUNCATED, DROP_NON_IP, DROP_BAD_IPV4 = 0, 1, 2, 3
DROP_BAD_IPV6, DROP_BAD_L4, DROP_BAD_TCP_FLAGS = 4, 5, 6

SERVICE_ETHERTYPE = 0x88B5
SERVICE_HDR_LEN = 12
ETH_LEN = 14
VLAN_LEN = 4
IPV6_MAX_EXT = 8

FRAG_NONE, FRAG_FIRST, FRAG_LATER = 0, 1, 2

PACKET_INFO_DTYPE = np.dtype(
    [
        ("drop", "i1"),  # PARSE_OK or a DROP_* code
        ("is_v6", "u1"),
        ("has_vlan", "u1"),
        ("frag", "u1"),  # FRAG_NONE, FRAG_FIRST (more follow), FRAG_LATER (no L4 header)
        ("tcp_flags", "u1"),
        ("icmp_type", "u1"),
        ("reason", "u1"),  # service header fields, host order
        ("direction", "u1"),
        ("ingress_port", "<u2"),
        ("egress_port", "<u2"),
        ("workload_id", "<u2"),
        ("l2_off", "<u2"),  # inner Ethernet header
        ("l3_off", "<u2"),
        ("l4_off", "<u2"),  # 0 when there is no L4 header
        ("l3_len", "<u2"),
        ("l4_len", "<u2"),
        ("rule_id", "<u4"),
    ]
)

_TCP_FIN, _TCP_SYN, _TCP_RST, _TCP_PSH, _TCP_ACK, _TCP_URG = 1, 2, 4, 8, 16, 32


def pack_frames(frames: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """(data, offsets) of a batch: the frames back to back, frame i at offsets[i]:offsets[i+1]."""
    offsets = np.zeros(len(frames) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(f) for f in frames])
    data = np.frombuffer(b"".join(frames), dtype=np.uint8) if frames else np.zeros(0, np.uint8)
    return data, offsets


@kernel(inline="always")
def _be16(f: np.ndarray, i: int) -> np.int64:
    return (np.int64(f[i]) << 8) | np.int64(f[i + 1])


@kernel(inline="always")
def _be64(f: np.ndarray, i: int) -> np.uint64:
    v = np.uint64(0)
    for k in range(8):
        v = (v << np.uint64(8)) | np.uint64(f[i + k])
    return v


@kernel
def _ipv4_sum_ok(f: np.ndarray, start: int, length: int) -> bool:
    total = 0
    for i in range(start, start + length - 1, 2):
        total += _be16(f, i)
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total == 0xFFFF


@kernel(inline="always")
def _tcp_flags_valid(flags: int) -> bool:
    f = flags & 0x3F
    if f == 0:
        return False  # null scan
    if (f & _TCP_SYN) and (f & (_TCP_FIN | _TCP_RST)):
        return False
    # After the SYN every segment carries ACK; FIN/PSH/URG without it are scans.
    return not (not (f & _TCP_ACK) and (f & (_TCP_FIN | _TCP_PSH | _TCP_URG)))


@kernel
def _parse_l4(f: np.ndarray, hdr: np.ndarray, info: np.ndarray, i: int, first_frag: bool) -> int:
    """The L4 header at f[l4_off : l4_off + l4_len] (absolute offsets into the frame)."""
    l4 = np.int64(info[i].l4_off)
    n = np.int64(info[i].l4_len)
    proto = np.int64(hdr[i].proto)
    if proto == 6:
        if n < 20:
            return DROP_BAD_L4  # also RFC 1858 tiny first fragments
        doff = (np.int64(f[l4 + 12]) >> 4) * 4
        if doff < 20 or doff > n:
            return DROP_BAD_L4
        if _be16(f, l4) == 0 or _be16(f, l4 + 2) == 0:
            return DROP_BAD_L4
        info[i].tcp_flags = f[l4 + 13]
        hdr[i].tcp_flags = f[l4 + 13]
        if not _tcp_flags_valid(np.int64(f[l4 + 13])):
            return DROP_BAD_TCP_FLAGS
        hdr[i].sport = _be16(f, l4)
        hdr[i].dport = _be16(f, l4 + 2)
        return PARSE_OK
    if proto == 17:
        if n < 8:
            return DROP_BAD_L4
        ulen = _be16(f, l4 + 4)
        # A first fragment's UDP length covers the whole datagram, beyond this packet.
        if ulen < 8 or (not first_frag and ulen > n) or _be16(f, l4 + 2) == 0:
            return DROP_BAD_L4
        hdr[i].sport = _be16(f, l4)
        hdr[i].dport = _be16(f, l4 + 2)
        return PARSE_OK
    if proto == 1 or proto == 58:
        if (proto == 1) == (info[i].is_v6 != 0):
            info[i].l4_off = 0  # ICMP in IPv6 or ICMPv6 in IPv4: an unknown protocol, ports 0
            return PARSE_OK
        if n < 8:
            return DROP_BAD_L4
        info[i].icmp_type = f[l4]
        hdr[i].sport = _be16(f, l4 + 4)  # identifier: top 16 bits of "rest"
        hdr[i].dport = _be16(f, l4)  # type << 8 | code
        return PARSE_OK
    info[i].l4_off = 0
    return PARSE_OK


@kernel
def _parse_ipv4(f: np.ndarray, length: int, hdr: np.ndarray, info: np.ndarray, i: int) -> int:
    off = np.int64(info[i].l3_off)
    if off + 20 > length:
        return DROP_TRUNCATED
    ihl = (np.int64(f[off]) & 0x0F) * 4
    if (f[off] >> 4) != 4 or ihl < 20:
        return DROP_BAD_IPV4
    if off + ihl > length:
        return DROP_TRUNCATED
    tot = _be16(f, off + 2)
    if tot < ihl:
        return DROP_BAD_IPV4
    if off + tot > length:
        return DROP_TRUNCATED
    if not _ipv4_sum_ok(f, off, ihl):
        return DROP_BAD_IPV4
    frag = _be16(f, off + 6)
    if frag & 0x8000:
        return DROP_BAD_IPV4  # reserved flag
    frag_off = frag & 0x1FFF
    more = (frag & 0x2000) != 0
    proto = np.int64(f[off + 9])
    hdr[i].proto = proto
    hdr[i].src_hi = np.uint64(0)
    hdr[i].dst_hi = np.uint64(0)
    tag = np.uint64(0xFFFF) << np.uint64(32)
    hdr[i].src_lo = tag | (_be64(f, off + 8) & np.uint64(0xFFFFFFFF))
    hdr[i].dst_lo = tag | (_be64(f, off + 12) & np.uint64(0xFFFFFFFF))
    info[i].l3_len = tot
    info[i].l4_off = off + ihl
    info[i].l4_len = tot - ihl
    info[i].frag = FRAG_LATER if frag_off != 0 else (FRAG_FIRST if more else FRAG_NONE)
    if frag_off != 0:
        # RFC 1858: a TCP fragment at offset 8 can only be rewriting the first one's header.
        if proto == 6 and frag_off == 1:
            return DROP_BAD_L4
        info[i].l4_off = 0
        return PARSE_OK
    return _parse_l4(f, hdr, info, i, more)


@kernel
def _ipv6_walk(f: np.ndarray, end: int, cur: int, nh: int) -> tuple[bool, int, int, int]:
    """Walk the extension headers from f[cur] (next header nh), never past end.

    -> (chain accepted, offset and protocol of the upper layer, FRAG_* state); stops after a
    fragment header whose offset is not 0 (FRAG_LATER: no L4 header follows).
    """
    frag = FRAG_NONE
    k = 0
    while True:
        ext = nh == 0 or nh == 43 or nh == 60 or nh == 51 or nh == 44
        if ext and k == IPV6_MAX_EXT:
            return False, cur, nh, frag  # a longer chain only serves to hide the L4 header
        if nh == 0 or nh == 43 or nh == 60 or nh == 51:
            if cur + 8 > end:
                return False, cur, nh, frag
            hlen = (int(f[cur + 1]) + 2) * 4 if nh == 51 else (int(f[cur + 1]) + 1) * 8
            if cur + hlen > end:
                return False, cur, nh, frag
            if nh == 0 and k != 0:
                return False, cur, nh, frag  # hop-by-hop only directly after the header
            if nh == 43 and f[cur + 2] == 0:
                return False, cur, nh, frag  # routing header type 0 (RFC 5095)
            nh = int(f[cur])
            cur += hlen
        elif nh == 44:
            if cur + 8 > end:
                return False, cur, nh, frag
            fo = _be16(f, cur + 2) >> 3
            more = (f[cur + 3] & 1) != 0
            nh = int(f[cur])
            cur += 8
            frag = FRAG_LATER if fo != 0 else (FRAG_FIRST if more else FRAG_NONE)
            if fo != 0:
                return True, cur, nh, frag
        else:
            return True, cur, nh, frag
        k += 1


@kernel
def _parse_ipv6(f: np.ndarray, length: int, hdr: np.ndarray, info: np.ndarray, i: int) -> int:
    off = np.int64(info[i].l3_off)
    if off + 40 > length:
        return DROP_TRUNCATED
    if (f[off] >> 4) != 6:
        return DROP_BAD_IPV6
    plen = _be16(f, off + 4)
    nh = np.int64(f[off + 6])
    if plen == 0 and nh != 59:
        return DROP_BAD_IPV6  # jumbograms are not supported
    if off + 40 + plen > length:
        return DROP_TRUNCATED
    sh, sl = _be64(f, off + 8), _be64(f, off + 16)
    dh, dl = _be64(f, off + 24), _be64(f, off + 32)
    mapped = np.uint64(0xFFFF)
    # IPv4-mapped addresses must not appear on the wire (RFC 4942): never key them as IPv4.
    if (sh == 0 and (sl >> np.uint64(32)) == mapped) or (
        dh == 0 and (dl >> np.uint64(32)) == mapped
    ):
        return DROP_BAD_IPV6
    hdr[i].src_hi, hdr[i].src_lo, hdr[i].dst_hi, hdr[i].dst_lo = sh, sl, dh, dl
    info[i].is_v6 = 1
    info[i].l3_len = 40 + plen
    end = off + 40 + plen
    ok, cur, nh, frag = _ipv6_walk(f, end, off + 40, nh)
    if not ok:
        return DROP_BAD_IPV6
    info[i].frag = frag
    if frag == FRAG_LATER:
        hdr[i].proto = nh
        info[i].l4_off = 0
        return PARSE_OK
    hdr[i].proto = nh
    info[i].l4_off = cur
    info[i].l4_len = end - cur
    return _parse_l4(f, hdr, info, i, frag == FRAG_FIRST)


@kernel
def _parse_one(f: np.ndarray, encapsulated: bool, hdr: np.ndarray, info: np.ndarray, i: int) -> int:
    length = f.shape[0]
    off = 0
    if encapsulated:
        if length < ETH_LEN:
            return DROP_TRUNCATED
        if _be16(f, 12) != SERVICE_ETHERTYPE:
            return DROP_NOT_SERVICE
        if length < ETH_LEN + SERVICE_HDR_LEN:
            return DROP_TRUNCATED
        s = ETH_LEN
        info[i].ingress_port = _be16(f, s)
        info[i].egress_port = _be16(f, s + 2)
        info[i].reason = f[s + 4]
        info[i].direction = f[s + 5]
        info[i].workload_id = _be16(f, s + 6)
        info[i].rule_id = (_be16(f, s + 8) << 16) | _be16(f, s + 10)
        off = ETH_LEN + SERVICE_HDR_LEN
    info[i].l2_off = off
    if off + ETH_LEN > length:
        return DROP_TRUNCATED
    etype = _be16(f, off + 12)
    off += ETH_LEN
    if etype == 0x8100:
        if off + VLAN_LEN > length:
            return DROP_TRUNCATED
        etype = _be16(f, off + 2)
        off += VLAN_LEN
        info[i].has_vlan = 1
    info[i].l3_off = off
    if etype == 0x0800:
        return _parse_ipv4(f, length, hdr, info, i)
    if etype == 0x86DD:
        return _parse_ipv6(f, length, hdr, info, i)
    return DROP_NON_IP


@kernel
def _sum16(f: np.ndarray, start: int, length: int) -> np.int64:
    """One's-complement sum (unfolded) of f[start : start + length]; an odd last byte is padded."""
    total = np.int64(0)
    for k in range(start, start + length - 1, 2):
        total += _be16(f, k)
    if length & 1:
        total += np.int64(f[start + length - 1]) << 8
    return total


@kernel
def _icmp_error_checks(f: np.ndarray, info: np.ndarray, i: int) -> bool:
    """Is frame i's ICMP(v6) message an error about a packet that may belong to a connection?"""
    l4 = np.int64(info[i].l4_off)
    n = np.int64(info[i].l4_len)
    if l4 == 0 or info[i].frag != FRAG_NONE:
        return False  # errors are never fragmented (576/1280-byte limits): a fragment is not one
    t = np.int64(info[i].icmp_type)
    total = np.int64(0)
    if info[i].is_v6:
        if t < 1 or t > 4:
            return False
        total = _sum16(f, np.int64(info[i].l3_off) + 8, 32) + n + 58  # pseudo-header
    elif t != 3 and t != 11 and t != 12:
        return False  # redirect, source quench (RFC 6633) and the rest are no errors to pass
    total += _sum16(f, l4, n)
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total == 0xFFFF


@kernel
def quote_key(f: np.ndarray, info: np.ndarray, i: int, q: np.ndarray, j: int) -> bool:
    """Key the packet quoted by frame f's ICMP error (info[i]) into q[j] (service_parse_quote).

    Errors are IPv4 types 3, 11, 12 and ICMPv6 types 1-4, not fragmented, with a good ICMP
    checksum. The quote is keyed as the parser keys a packet: its IP header (the outer IP
    version, IHL respected, extension headers walked), then TCP/UDP ports, an echo's identifier
    and type << 8 | code, or ports 0 for other protocols; every read bounded by the ICMP message.
    False when frame i is no such error or the quote does not check out: truncated, another IP
    version, a later fragment, an ICMP message other than an echo (no error quoting an error).
    """
    if not _icmp_error_checks(f, info, i):
        return False
    cur = np.int64(info[i].l4_off) + 8
    end = np.int64(info[i].l4_off) + np.int64(info[i].l4_len)
    v6 = info[i].is_v6 != 0
    h = q[j]
    h.sport = 0
    h.dport = 0
    if not v6:
        if cur + 20 > end:
            return False
        ihl = (np.int64(f[cur]) & 0x0F) * 4
        if (f[cur] >> 4) != 4 or ihl < 20 or cur + ihl > end:
            return False
        if _be16(f, cur + 6) & 0x1FFF:
            return False  # a later fragment: no ports to key it by
        nh = np.int64(f[cur + 9])
        tag = np.uint64(0xFFFF) << np.uint64(32)
        h.src_hi = np.uint64(0)
        h.dst_hi = np.uint64(0)
        h.src_lo = tag | (_be64(f, cur + 8) & np.uint64(0xFFFFFFFF))
        h.dst_lo = tag | (_be64(f, cur + 12) & np.uint64(0xFFFFFFFF))
        cur += ihl
    else:
        if cur + 40 > end or (f[cur] >> 4) != 6:
            return False
        sh, sl = _be64(f, cur + 8), _be64(f, cur + 16)
        dh, dl = _be64(f, cur + 24), _be64(f, cur + 32)
        mapped = np.uint64(0xFFFF)
        if (sh == 0 and (sl >> np.uint64(32)) == mapped) or (
            dh == 0 and (dl >> np.uint64(32)) == mapped
        ):
            return False  # would name an IPv4 connection
        h.src_hi, h.src_lo, h.dst_hi, h.dst_lo = sh, sl, dh, dl
        ok, cur, nh, frag = _ipv6_walk(f, end, cur + 40, np.int64(f[cur + 6]))
        if not ok or frag == FRAG_LATER:
            return False
    h.proto = nh
    if nh == 6 or nh == 17:
        if end - cur < 8:
            return False
        h.sport = _be16(f, cur)
        h.dport = _be16(f, cur + 2)
    elif (nh == 1 and not v6) or (nh == 58 and v6):  # ICMP of the other version: ports 0
        if end - cur < 8:
            return False
        t = f[cur]
        if not ((t == 128 or t == 129) if v6 else (t == 8 or t == 0)):
            return False  # only an echo has a connection
        h.sport = _be16(f, cur + 4)
        h.dport = _be16(f, cur)
    return True


@kernel
def parse_into(
    data: np.ndarray, offsets: np.ndarray, encapsulated: bool, hdrs: np.ndarray, info: np.ndarray
) -> int:
    """Parse every frame of a batch into hdrs/info, which must be zeroed; -> how many are valid."""
    valid = 0
    for i in range(offsets.shape[0] - 1):
        start = offsets[i]
        stop = offsets[i + 1]
        if start < 0 or stop < start or stop > data.shape[0]:
            why = DROP_TRUNCATED  # a broken offsets array: nothing to read
        else:
            why = _parse_one(data[start:stop], encapsulated, hdrs, info, i)
        info[i].drop = why
        if why == PARSE_OK:
            hdrs[i].valid = 1
            valid += 1
        else:
            hdrs[i].valid = 0  # never matches a rule, so never allowed
    return valid


def parse_batch(
    data: np.ndarray,
    offsets: np.ndarray,
    encapsulated: bool = True,
    out: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Parse a batch; returns (HEADER_DTYPE headers, PACKET_INFO_DTYPE info), one per frame.

    `out` = preallocated (headers, info) arrays of at least the batch size, reused across
    batches; the returned arrays are views of them.
    """
    data = np.ascontiguousarray(data, dtype=np.uint8)
    offsets = np.ascontiguousarray(offsets, dtype=np.int64)
    n = max(0, len(offsets) - 1)
    if out is None:
        hdrs = np.zeros(n, dtype=HEADER_DTYPE)
        info = np.zeros(n, dtype=PACKET_INFO_DTYPE)
    else:
        if out[0].dtype != HEADER_DTYPE or out[1].dtype != PACKET_INFO_DTYPE:
            raise TypeError("out must be (HEADER_DTYPE, PACKET_INFO_DTYPE) arrays")
        if min(len(out[0]), len(out[1])) < n:
            raise ValueError(f"out arrays hold fewer than the batch's {n} frames")
        hdrs, info = out[0][:n], out[1][:n]
        hdrs[...] = np.zeros((), dtype=HEADER_DTYPE)
        info[...] = np.zeros((), dtype=PACKET_INFO_DTYPE)
    parse_into(data, offsets, encapsulated, hdrs, info)
    return hdrs, info


def parse_frames(
    frames: Sequence[bytes], encapsulated: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Parse a list of frames (see parse_batch)."""
    return parse_batch(*pack_frames(frames), encapsulated=encapsulated)

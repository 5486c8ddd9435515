"""Packet header batches and packed rule rows: the numba classifiers' input formats.

A header batch is a numpy array of HEADER_DTYPE: each 128-bit address is split into two
native uint64 words (hi = the first 8 bytes in network order, lo = the last 8), so that a
prefix test is two AND-and-compare operations. IPv4 is carried IPv4-mapped (::ffff:a.b.c.d), as
in the pipeline and in RULE_DTYPE.

RULE_DTYPE records (dpdk_app/layout.py) are compiled once into packed rows of RULE_WORDS uint64
words (`pack_rules`), the layout every numba kernel reads; the column indices are the W_*
constants below.
"""

from __future__ import annotations

import numpy as np

from dpdk_app.classifier.jit import kernel
from dpdk_app.layout import RULE_DTYPE

HEADER_DTYPE = np.dtype(
    [
        ("src_hi", "<u8"),
        ("src_lo", "<u8"),
        ("dst_hi", "<u8"),
        ("dst_lo", "<u8"),
        ("id_class", "<u4"),
        ("sport", "<u2"),
        ("dport", "<u2"),
        ("proto", "u1"),
        ("valid", "u1"),  # 0 = malformed/unparsed: never matches a rule (so never allowed)
        ("tcp_flags", "<u2"),
        ("reserved", "<u4"),
    ]
)

V4_MAPPED_HI = 0
V4_MAPPED_LO_TAG = 0xFFFF << 32  # the ::ffff: marker in the low word of an IPv4-mapped address
V4_PLEN_BASE = 96

# Packed rule row: 16 uint64 words (128 bytes) per rule. The first 64 bytes hold what an IPv4
# match and a chain walk read (rank, next, low address words, ports, protocol), the second the
# high address words and the identity class, so most rejected candidates touch one cache line.
W_RANK = 0  # classifier-owned: rank (> 0), see rank_of
W_NEXT = 1  # classifier-owned: next slot in a hash chain + 1 (0 = end)
W_SRC_LO, W_SRC_MLO, W_DST_LO, W_DST_MLO = 2, 3, 4, 5
W_PORTS = 6  # sport_lo | sport_hi << 16 | dport_lo << 32 | dport_hi << 48
W_PROTO = 7  # proto & mask | mask << 8 | action << 16 | flags << 24 | rule_id << 32
W_SRC_HI, W_SRC_MHI, W_DST_HI, W_DST_MHI = 8, 9, 10, 11
W_IDENT = 12  # id_class & id_mask | id_mask << 32
W_PLEN = 13  # src_plen | dst_plen << 8 (for tuple selection; not used when matching)
RULE_WORDS = 16

RANK_SEQ_BITS = 31
RANK_SEQ_MAX = (1 << RANK_SEQ_BITS) - 1


def rank_of(priority: int, seq: int) -> int:
    """The total order the classifiers use: higher priority first, then earlier sequence."""
    return ((int(priority) << RANK_SEQ_BITS) | (RANK_SEQ_MAX - (int(seq) & RANK_SEQ_MAX))) + 1


def prefix_masks(plen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The (hi, lo) uint64 masks of 128-bit prefixes of the given lengths (0..128)."""
    plen = np.asarray(plen, dtype=np.int64)
    if plen.size and (plen.min() < 0 or plen.max() > 128):
        raise ValueError("prefix length outside 0..128")
    ones = np.uint64(0xFFFFFFFFFFFFFFFF)
    hi_bits = np.clip(plen, 0, 64).astype(np.uint64)
    lo_bits = np.clip(plen - 64, 0, 64).astype(np.uint64)
    # A shift by 64 is undefined in numpy as in C, so the 0 case is handled by where().
    hi = np.where(hi_bits == 0, np.uint64(0), ones << (np.uint64(64) - hi_bits))
    lo = np.where(lo_bits == 0, np.uint64(0), ones << (np.uint64(64) - lo_bits))
    return hi.astype(np.uint64), lo.astype(np.uint64)


def addr_bytes_to_words(addr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, 16) network-order address bytes -> (hi, lo) native uint64 words."""
    words = np.ascontiguousarray(addr, dtype=np.uint8).reshape(-1, 16).view(">u8")
    return words[:, 0].astype(np.uint64), words[:, 1].astype(np.uint64)


def words_to_addr_bytes(hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """(hi, lo) uint64 words -> (N, 16) network-order address bytes."""
    out = np.empty((len(hi), 2), dtype=">u8")
    out[:, 0] = hi
    out[:, 1] = lo
    return out.view(np.uint8).reshape(-1, 16)


def int128_to_words(value: int) -> tuple[int, int]:
    """A 128-bit integer address as (hi, lo) 64-bit words."""
    return (value >> 64) & 0xFFFFFFFFFFFFFFFF, value & 0xFFFFFFFFFFFFFFFF


_RULE_ERRORS = (
    "src_plen > 128",
    "dst_plen > 128",
    "sport_lo > sport_hi",
    "dport_lo > dport_hi",
)


@kernel
def _first_bad_rule(rules: np.ndarray) -> tuple[int, int]:
    """(index, error code) of the first inconsistent rule, or (-1, -1)."""
    for i in range(rules.shape[0]):
        r = rules[i]
        if r.src_plen > 128:
            return i, 0
        if r.dst_plen > 128:
            return i, 1
        if r.sport_lo > r.sport_hi:
            return i, 2
        if r.dport_lo > r.dport_hi:
            return i, 3
    return -1, -1


@kernel(inline="always")
def _mask_word(plen: int, word: int) -> np.uint64:
    bits = max(0, min(64, plen - 64 * word))
    if bits == 0:
        return np.uint64(0)
    return np.uint64(0xFFFFFFFFFFFFFFFF) << np.uint64(64 - bits)


@kernel(inline="always")
def _addr_word(addr: np.ndarray, word: int) -> np.uint64:
    v = np.uint64(0)
    for k in range(8 * word, 8 * word + 8):
        v = (v << np.uint64(8)) | np.uint64(addr[k])
    return v


@kernel
def pack_into(rules: np.ndarray, rows: np.ndarray, slots: np.ndarray, seq0: int) -> None:
    """Write rules[i] packed into rows[slots[i]], with W_RANK from rank_of(priority, seq0 + i)."""
    for i in range(rules.shape[0]):
        r = rules[i]
        s = slots[i]
        row = rows[s]
        row[:] = 0
        mshi = _mask_word(r.src_plen, 0)
        mslo = _mask_word(r.src_plen, 1)
        mdhi = _mask_word(r.dst_plen, 0)
        mdlo = _mask_word(r.dst_plen, 1)
        row[W_SRC_HI] = _addr_word(r.src_addr, 0) & mshi
        row[W_SRC_LO] = _addr_word(r.src_addr, 1) & mslo
        row[W_SRC_MHI] = mshi
        row[W_SRC_MLO] = mslo
        row[W_DST_HI] = _addr_word(r.dst_addr, 0) & mdhi
        row[W_DST_LO] = _addr_word(r.dst_addr, 1) & mdlo
        row[W_DST_MHI] = mdhi
        row[W_DST_MLO] = mdlo
        row[W_PORTS] = (
            np.uint64(r.sport_lo)
            | (np.uint64(r.sport_hi) << np.uint64(16))
            | (np.uint64(r.dport_lo) << np.uint64(32))
            | (np.uint64(r.dport_hi) << np.uint64(48))
        )
        pmask = np.uint64(r.proto_mask)
        row[W_PROTO] = (
            (np.uint64(r.proto) & pmask)
            | (pmask << np.uint64(8))
            | (np.uint64(r.action) << np.uint64(16))
            | (np.uint64(r.flags) << np.uint64(24))
            | (np.uint64(r.rule_id) << np.uint64(32))
        )
        imask = np.uint64(r.id_mask)
        row[W_IDENT] = (np.uint64(r.id_class) & imask) | (imask << np.uint64(32))
        row[W_PLEN] = np.uint64(r.src_plen) | (np.uint64(r.dst_plen) << np.uint64(8))
        seq = np.uint64((seq0 + i) & RANK_SEQ_MAX)
        # +1 keeps every rank above 0, which the classifiers use for "no match yet".
        row[W_RANK] = (
            (np.uint64(r.priority) << np.uint64(RANK_SEQ_BITS)) | (np.uint64(RANK_SEQ_MAX) - seq)
        ) + np.uint64(1)


def check_rules(rules: np.ndarray) -> None:
    """Raise TypeError/ValueError if `rules` are not consistent RULE_DTYPE records."""
    if not isinstance(rules, np.ndarray) or rules.dtype != RULE_DTYPE or rules.ndim != 1:
        raise TypeError("expected a 1-d array of RULE_DTYPE records")
    index, code = _first_bad_rule(rules)
    if index >= 0:
        raise ValueError(f"rule {index}: {_RULE_ERRORS[code]}")


def pack_rules(rules: np.ndarray) -> np.ndarray:
    """Compile RULE_DTYPE records into packed uint64 rows (values pre-masked by their masks).

    W_RANK holds rank_of(priority, index) + 1; W_NEXT is left 0 for the owning classifier.
    """
    check_rules(rules)
    out = np.zeros((len(rules), RULE_WORDS), dtype=np.uint64)
    pack_into(rules, out, np.arange(len(rules), dtype=np.int64), 0)
    return out


def headers_from_ints(
    src: list[int] | np.ndarray,
    dst: list[int] | np.ndarray,
    sport: np.ndarray | list[int],
    dport: np.ndarray | list[int],
    proto: np.ndarray | list[int],
    tcp_flags: np.ndarray | list[int] | None = None,
) -> np.ndarray:
    """A header batch from 128-bit integer addresses (IPv4 already mapped) and port/proto lists."""
    n = len(src)
    out = np.zeros(n, dtype=HEADER_DTYPE)
    src_words = [int128_to_words(int(a)) for a in src]
    dst_words = [int128_to_words(int(a)) for a in dst]
    if n:
        out["src_hi"], out["src_lo"] = np.array(src_words, dtype=np.uint64).T
        out["dst_hi"], out["dst_lo"] = np.array(dst_words, dtype=np.uint64).T
    out["sport"] = sport
    out["dport"] = dport
    out["proto"] = proto
    if tcp_flags is not None:
        out["tcp_flags"] = tcp_flags
    out["valid"] = 1
    return out


def is_v4_mapped(hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """Which (hi, lo) addresses are IPv4-mapped."""
    return (hi == 0) & ((lo >> np.uint64(32)) == np.uint64(0xFFFF))

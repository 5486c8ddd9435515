"""numba kernels of the TupleMerge classifier (Daly & Torng, ANCS 2017), online variant.

Rules are grouped into tables. A table has a tuple: how many leading bits of each address it
hashes and whether it hashes the exact source port, destination port and protocol. A rule may
go into any table whose tuple is no more specific than the rule (its prefixes at least as long,
its hashed ports exact); it is stored in the table's hash under its fields masked to the tuple.
Classifying a header probes the tables in descending order of the best rank they hold and stops
as soon as the best match found outranks every remaining table. That order is kept per protocol
class (TCP, UDP, ICMP, other), ranking each table by the best rule it holds that the class can
match, so a TCP header never probes a table of UDP rules and its bound is tighter (a third to
a half fewer probes on the ClassBench sets).

Each table is a cuckoo hash of keys (partial-key cuckoo hashing, as in cuckoo filters): an
entry is `fingerprint << 32 | (head slot + 1)`, 0 = empty, where the fingerprint is the top 32
bits of the key's 64-bit hash with the lowest bit forced to 1. A key lives at one of two
entries: its home (the fingerprint's top bits) or home XOR an odd offset derived from the
fingerprint, so an entry can move between its two places, or to a resized table, without
rehashing its rule. A lookup reads both entries and compares both fingerprints without
branching; only a fingerprint hit (at most a couple per header) leads to rule rows. The rules
sharing a key are chained through their rows in descending rank, so the first full match in a
chain is the table's best. Load is kept <= 2/5, well under the 1/2 where cuckoo insertion with
one entry per bucket starts to fail.

All state lives in flat numpy arrays (see TMState in tuplemerge.py); the kernels never allocate
per header. Ranks are uint64 and > 0 (0 = no match); slots are int64 and -1 = none. A lookup
only trusts a full field-by-field match, never the hash or the fingerprint.
"""

from __future__ import annotations

import numpy as np

from dpdk_app.classifier.headers import (
    W_DST_HI,
    W_DST_LO,
    W_DST_MHI,
    W_DST_MLO,
    W_IDENT,
    W_NEXT,
    W_PLEN,
    W_PORTS,
    W_PROTO,
    W_RANK,
    W_SRC_HI,
    W_SRC_LO,
    W_SRC_MHI,
    W_SRC_MLO,
)
from dpdk_app.classifier.jit import kernel

# tinfo columns (int64 per table)
T_SLEN, T_DLEN, T_SPX, T_DPX, T_PRX = 0, 1, 2, 3, 4
T_BOFF, T_BSIZE, T_SHIFT, T_COUNT, T_USED, T_DIRTY, T_KEYS = 5, 6, 7, 8, 9, 10, 11
T_COLS = 12
# tmask columns (uint64 per table): address masks, then the ports/proto key mask
M_SHI, M_SLO, M_DHI, M_DLO, M_PP = 0, 1, 2, 3, 4
M_COLS = 5
# Protocol classes, each with its own probe order: TCP, UDP, ICMP, every other protocol.
N_CLASSES = 4
CLASS_PROTOS = (6, 17, 1)
# trank columns (uint64 per table): R_ALL = best rank in the table, R_CLASS + c = best rank of
# a rule that protocol class c can match (0 = none)
R_ALL, R_CLASS = 0, 1
R_COLS = 1 + N_CLASSES
# tparams[c, i] (uint64): what a lookup reads for the i-th table of class c's probe order
P_SHI, P_SLO, P_DHI, P_DLO, P_PP, P_BOFF, P_SHIFT, P_RANK, P_MASK = 0, 1, 2, 3, 4, 5, 6, 7, 8
P_COLS = 9
# meta entries (int64); X_CORDER + c = length of class c's probe order
X_NORDER, X_BTOP, X_BLIVE, X_NRULES, X_LIMIT, X_NTAB, X_CORDER = 0, 1, 2, 3, 4, 5, 6
X_COLS = X_CORDER + N_CLASSES

MIN_BUCKETS = 8
# Status codes of the update kernels.
OK = 0
NEED_BUCKETS = 1
NEED_TABLES = 2

_U0 = np.uint64(0)
_U16 = np.uint64(16)
_U32 = np.uint64(32)
_U48 = np.uint64(48)
_P16 = np.uint64(0xFFFF)
_P8 = np.uint64(0xFF)
_ONES = np.uint64(0xFFFFFFFFFFFFFFFF)
_M32 = np.uint64(0xFFFFFFFF)
_K1 = np.uint64(0x9E3779B97F4A7C15)
_K2 = np.uint64(0xC2B2AE3D27D4EB4F)
_K3 = np.uint64(0x165667B19E3779F9)
_K4 = np.uint64(0xD6E8FEB86659FD93)
_K5 = np.uint64(0xFF51AFD7ED558CCD)
_K6 = np.uint64(0xC4CEB9FE1A85EC53)
_K7 = np.uint64(0x94D049BB133111EB)


@kernel(inline="always")
def _mix(sh: np.uint64, sl: np.uint64, dh: np.uint64, dl: np.uint64, pp: np.uint64) -> np.uint64:
    """Hash of a masked key; its top 32 bits are used. Multiplication carries every input bit
    into the top bits. Keys whose high address words are 0 (IPv4) skip two multiplications;
    the branch is the same for every table a header probes, so it is predicted."""
    h = (sl * _K2) ^ (dl * _K4) ^ (pp * _K5)
    if (sh | dh) != _U0:
        h ^= ((sh * _K1) ^ (dh * _K3)) >> np.uint64(7)
    return h


@kernel(inline="always")
def _next(rows: np.ndarray, s: int) -> np.int64:
    return np.int64(rows[s, W_NEXT]) - 1


@kernel(inline="always")
def _set_next(rows: np.ndarray, s: int, nxt: int) -> None:
    rows[s, W_NEXT] = np.uint64(nxt + 1)


@kernel(inline="always")
def _rule_pp(rows: np.ndarray, s: int) -> np.uint64:
    """Rule's low ports and protocol in the header key layout sport | dport<<16 | proto<<32."""
    ports = rows[s, W_PORTS]
    return (ports & _P16) | (((ports >> _U32) & _P16) << _U16) | ((rows[s, W_PROTO] & _P8) << _U32)


@kernel(inline="always")
def _rule_hash(rows: np.ndarray, tmask: np.ndarray, t: int, s: int) -> np.uint64:
    return _mix(
        rows[s, W_SRC_HI] & tmask[t, M_SHI],
        rows[s, W_SRC_LO] & tmask[t, M_SLO],
        rows[s, W_DST_HI] & tmask[t, M_DHI],
        rows[s, W_DST_LO] & tmask[t, M_DLO],
        _rule_pp(rows, s) & tmask[t, M_PP],
    )


@kernel(inline="always")
def _rule_fp(rows: np.ndarray, tmask: np.ndarray, t: int, s: int) -> np.uint64:
    """The fingerprint of rule s's key in table t (top 32 bits of the key's hash, never 0)."""
    return (_rule_hash(rows, tmask, t, s) >> _U32) | np.uint64(1)


@kernel(inline="always")
def _entry_slot(e: np.uint64) -> np.int64:
    return np.int64(e & _M32) - 1


@kernel(inline="always")
def _alt_offset(fp: np.uint64, mask: np.uint64) -> np.uint64:
    """XOR distance between a key's two entries: odd, so never 0, and a function of fp only
    (the home comes from fp's top bits, the distance from its low bits)."""
    return ((fp ^ (fp >> np.uint64(16))) & mask) | np.uint64(1)


@kernel(inline="always")
def _same_key(rows: np.ndarray, tmask: np.ndarray, t: int, a: int, b: int) -> bool:
    return (
        (rows[a, W_SRC_HI] & tmask[t, M_SHI]) == (rows[b, W_SRC_HI] & tmask[t, M_SHI])
        and (rows[a, W_SRC_LO] & tmask[t, M_SLO]) == (rows[b, W_SRC_LO] & tmask[t, M_SLO])
        and (rows[a, W_DST_HI] & tmask[t, M_DHI]) == (rows[b, W_DST_HI] & tmask[t, M_DHI])
        and (rows[a, W_DST_LO] & tmask[t, M_DLO]) == (rows[b, W_DST_LO] & tmask[t, M_DLO])
        and (_rule_pp(rows, a) & tmask[t, M_PP]) == (_rule_pp(rows, b) & tmask[t, M_PP])
    )


@kernel(inline="always")
def _rule_tuple(rows: np.ndarray, s: int) -> tuple[np.int64, np.int64, int, int, int]:
    plen = rows[s, W_PLEN]
    ports = rows[s, W_PORTS]
    spx = 1 if (ports & _P16) == ((ports >> _U16) & _P16) else 0
    dpx = 1 if ((ports >> _U32) & _P16) == ((ports >> _U48) & _P16) else 0
    prx = 1 if ((rows[s, W_PROTO] >> np.uint64(8)) & _P8) == _P8 else 0
    return np.int64(plen & _P8), np.int64((plen >> np.uint64(8)) & _P8), spx, dpx, prx


@kernel(inline="always")
def matches(
    rows: np.ndarray,
    s: int,
    sh: np.uint64,
    sl: np.uint64,
    dh: np.uint64,
    dl: np.uint64,
    sport: np.uint64,
    dport: np.uint64,
    proto: np.uint64,
    idc: np.uint64,
) -> bool:
    """Whether rule slot `s` matches the header fields on every field (first cache line first)."""
    if (sl & rows[s, W_SRC_MLO]) != rows[s, W_SRC_LO]:
        return False
    if (dl & rows[s, W_DST_MLO]) != rows[s, W_DST_LO]:
        return False
    ports = rows[s, W_PORTS]
    if sport < (ports & _P16) or sport > ((ports >> _U16) & _P16):
        return False
    if dport < ((ports >> _U32) & _P16) or dport > (ports >> _U48):
        return False
    pw = rows[s, W_PROTO]
    if (proto & ((pw >> np.uint64(8)) & _P8)) != (pw & _P8):
        return False
    if (sh & rows[s, W_SRC_MHI]) != rows[s, W_SRC_HI]:
        return False
    if (dh & rows[s, W_DST_MHI]) != rows[s, W_DST_HI]:
        return False
    iw = rows[s, W_IDENT]
    return (idc & (iw >> _U32)) == (iw & np.uint64(0xFFFFFFFF))


@kernel(inline="always")
def proto_class(proto: int) -> int:
    """The protocol class of a protocol number (index into the per-class probe orders)."""
    if proto == 6:
        return 0
    if proto == 17:
        return 1
    if proto == 1:
        return 2
    return 3


@kernel(inline="always")
def _probe(
    rows: np.ndarray,
    tp: np.ndarray,
    oi: int,
    buckets: np.ndarray,
    fp: np.uint64,
    best: np.uint64,
    found: int,
    hdr: tuple[
        np.uint64, np.uint64, np.uint64, np.uint64, np.uint64, np.uint64, np.uint64, np.uint64
    ],
) -> tuple[np.uint64, int]:
    """Look key fingerprint fp up in the oi-th table of a probe order. -> (best, slot)."""
    off = tp[oi, P_BOFF]
    i1 = fp >> tp[oi, P_SHIFT]
    i2 = i1 ^ _alt_offset(fp, tp[oi, P_MASK])
    e1 = buckets[np.int64(off + i1)]
    e2 = buckets[np.int64(off + i2)]
    if ((e1 >> _U32) == fp) | ((e2 >> _U32) == fp):
        # Walk the key's chain; a fingerprint alone proves nothing.
        sh, sl, dh, dl, sport, dport, proto, idc = hdr
        for e in (e1, e2):
            if (e >> _U32) != fp:
                continue
            s = _entry_slot(e)
            while s >= 0:
                rk = rows[s, W_RANK]
                if rk <= best:
                    break  # chains are in descending rank
                if matches(rows, s, sh, sl, dh, dl, sport, dport, proto, idc):
                    return rk, s
                s = _next(rows, s)
    return best, found


@kernel
def classify(
    hdrs: np.ndarray,
    rows: np.ndarray,
    tparams: np.ndarray,
    buckets: np.ndarray,
    meta: np.ndarray,
    out: np.ndarray,
) -> None:
    """Write the winning rule slot (or -1) of every header to `out`."""
    for p in range(hdrs.shape[0]):
        out[p] = -1
        h = hdrs[p]
        if h.valid == 0:
            continue  # malformed: matches nothing
        sh = h.src_hi
        sl = h.src_lo
        dh = h.dst_hi
        dl = h.dst_lo
        sport = np.uint64(h.sport)
        dport = np.uint64(h.dport)
        proto = np.uint64(h.proto)
        hdr = (sh, sl, dh, dl, sport, dport, proto, np.uint64(h.id_class))
        pp = sport | (dport << _U16) | (proto << _U32)
        cls = proto_class(h.proto)
        tp = tparams[cls]
        n = meta[X_CORDER + cls]
        best = _U0
        found = -1
        # Tables are in descending max rank: stop at the first that cannot beat `best`. IPv4
        # (high words 0, so 0 under any mask) gets a loop that skips them; _mix agrees.
        if (sh | dh) == _U0:
            for oi in range(n):
                if best >= tp[oi, P_RANK]:
                    break
                fp = (
                    _mix(_U0, sl & tp[oi, P_SLO], _U0, dl & tp[oi, P_DLO], pp & tp[oi, P_PP])
                    >> _U32
                ) | np.uint64(1)
                best, found = _probe(rows, tp, oi, buckets, fp, best, found, hdr)
        else:
            for oi in range(n):
                if best >= tp[oi, P_RANK]:
                    break
                fp = (
                    _mix(
                        sh & tp[oi, P_SHI],
                        sl & tp[oi, P_SLO],
                        dh & tp[oi, P_DHI],
                        dl & tp[oi, P_DLO],
                        pp & tp[oi, P_PP],
                    )
                    >> _U32
                ) | np.uint64(1)
                best, found = _probe(rows, tp, oi, buckets, fp, best, found, hdr)
        out[p] = found


@kernel
def classify_linear(hdrs: np.ndarray, rows: np.ndarray, slots: np.ndarray, out: np.ndarray) -> None:
    """Baseline: scan the rules in rank order (rows/slots pre-sorted), first match wins."""
    for p in range(hdrs.shape[0]):
        out[p] = -1
        h = hdrs[p]
        if h.valid == 0:
            continue
        sport = np.uint64(h.sport)
        dport = np.uint64(h.dport)
        proto = np.uint64(h.proto)
        idc = np.uint64(h.id_class)
        for i in range(rows.shape[0]):
            if matches(rows, i, h.src_hi, h.src_lo, h.dst_hi, h.dst_lo, sport, dport, proto, idc):
                out[p] = slots[i]
                break

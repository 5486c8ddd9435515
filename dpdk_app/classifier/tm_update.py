"""numba kernels that change a TupleMerge classifier: insert, delete, table split and resize.

The arrays are those of tm_kernels.py. A rule's rank and chain link live in its row (W_RANK,
W_NEXT); rtab maps a slot to its table. Every public kernel ends with _finish, which makes each
table's max rank exact and republishes `tparams`, the probe-order copy lookups read; between two
kernels the arrays are always consistent, so a lookup never sees a half-done update.

A table's max ranks (trank: overall and per protocol class) may run high after a delete; they
stay valid upper bounds, and _finish recomputes them (walking the table) once per call.

Each kernel checks its room (bucket space, table entries) before changing anything for a rule
and returns a status when it runs out, so the Python side can grow the arrays and resume.
"""

from __future__ import annotations

import numpy as np

from dpdk_app.classifier.headers import W_PROTO, W_RANK
from dpdk_app.classifier.jit import kernel
from dpdk_app.classifier.tm_kernels import (
    M_DHI,
    M_PP,
    M_SHI,
    MIN_BUCKETS,
    N_CLASSES,
    NEED_BUCKETS,
    NEED_TABLES,
    OK,
    P_BOFF,
    P_MASK,
    P_RANK,
    P_SHIFT,
    R_ALL,
    R_CLASS,
    R_COLS,
    T_BOFF,
    T_BSIZE,
    T_COUNT,
    T_DIRTY,
    T_DLEN,
    T_DPX,
    T_KEYS,
    T_PRX,
    T_SHIFT,
    T_SLEN,
    T_SPX,
    T_USED,
    X_BLIVE,
    X_BTOP,
    X_CORDER,
    X_LIMIT,
    X_NORDER,
    X_NRULES,
    X_NTAB,
    _entry_slot,
    _next,
    _rule_tuple,
    proto_class,
)
from dpdk_app.classifier.tm_table import (
    _alloc_region,
    _chain_insert,
    _chain_remove,
    _find,
    _resize,
)

_U0 = np.uint64(0)
_U32 = np.uint64(32)
_M32 = np.uint64(0xFFFFFFFF)
_ONES = np.uint64(0xFFFFFFFFFFFFFFFF)
_P16 = np.uint64(0xFFFF)
_P8 = np.uint64(0xFF)
# How much a dimension's spread among colliding rules counts when choosing where to split:
# address bits count one each; an exact port is worth 16 bits and the protocol 8, as in the
# reference code's tuple lengths (ports 16 vs 32, protocol 24 vs 32).
_SPLIT_WEIGHT = (1, 1, 16, 16, 8)


@kernel
def _new_table(
    tinfo: np.ndarray,
    tmask: np.ndarray,
    trank: np.ndarray,
    order: np.ndarray,
    buckets: np.ndarray,
    meta: np.ndarray,
    tup: tuple[int, int, int, int, int],
) -> int:
    """A new empty table with tuple `tup`, appended to the probe order; -1 if none is free."""
    t = -1
    for i in range(tinfo.shape[0]):
        if tinfo[i, T_USED] == 0:
            t = i
            break
    if t < 0:
        return -1
    slen, dlen, spx, dpx, prx = tup
    tinfo[t, T_SLEN] = slen
    tinfo[t, T_DLEN] = dlen
    tinfo[t, T_SPX] = spx
    tinfo[t, T_DPX] = dpx
    tinfo[t, T_PRX] = prx
    tinfo[t, T_COUNT] = 0
    tinfo[t, T_KEYS] = 0
    tinfo[t, T_USED] = 1
    tinfo[t, T_DIRTY] = 0
    tinfo[t, T_BSIZE] = 0
    for k in range(2):
        bits = max(0, min(64, slen - 64 * k))
        tmask[t, M_SHI + k] = _U0 if bits == 0 else _ONES << np.uint64(64 - bits)
        bits = max(0, min(64, dlen - 64 * k))
        tmask[t, M_DHI + k] = _U0 if bits == 0 else _ONES << np.uint64(64 - bits)
    pp = _U0
    if spx:
        pp |= _P16
    if dpx:
        pp |= _P16 << np.uint64(16)
    if prx:
        pp |= _P8 << np.uint64(32)
    tmask[t, M_PP] = pp
    _alloc_region(tinfo, buckets, meta, t, MIN_BUCKETS)
    trank[t, :] = _U0
    order[meta[X_NORDER]] = t
    meta[X_NORDER] += 1
    meta[X_NTAB] = max(meta[X_NTAB], t + 1)
    return t


@kernel
def _free_table(
    tinfo: np.ndarray, trank: np.ndarray, order: np.ndarray, meta: np.ndarray, t: int
) -> None:
    tinfo[t, T_USED] = 0
    meta[X_BLIVE] -= tinfo[t, T_BSIZE]
    tinfo[t, T_BSIZE] = 0
    trank[t, :] = _U0
    j = 0
    for i in range(meta[X_NORDER]):
        if order[i] != t:
            order[j] = order[i]
            j += 1
    meta[X_NORDER] = j


@kernel(inline="always")
def _fits(tinfo: np.ndarray, t: int, tup: tuple[int, int, int, int, int]) -> bool:
    return (
        tup[0] >= tinfo[t, T_SLEN]
        and tup[1] >= tinfo[t, T_DLEN]
        and tup[2] >= tinfo[t, T_SPX]
        and tup[3] >= tinfo[t, T_DPX]
        and tup[4] >= tinfo[t, T_PRX]
    )


@kernel
def _relax_len(length: int) -> int:
    """TupleMerge's Relax on one address length: hash slightly fewer bits than the rule has."""
    if length >= 96:  # IPv4-mapped: relax on the IPv4 length, as the reference code does
        v4 = length - 96
        if v4 == 32:
            v4 -= 4
        elif v4 > 24:
            v4 -= 3
        elif v4 > 16:
            v4 -= 2
        elif v4 > 8:
            v4 -= 1
        return 96 + v4
    return length - length // 8


@kernel
def _v4_scale(length: int) -> int:
    """An address length on the IPv4 scale (0..32), to compare source and destination."""
    return length - 96 if length >= 96 else length // 4


@kernel
def _family_len(length: int) -> int:
    """The length that hashes only the address family (IPv4-mapped or not)."""
    return 96 if length >= 96 else 0


@kernel
def _relaxed_tuple(tup: tuple[int, int, int, int, int]) -> tuple[int, int, int, int, int]:
    """The tuple of a new table for a rule that fits no table (TupleMergeOnline's Relax)."""
    slen, dlen, spx, dpx, prx = tup
    ts, td = _relax_len(slen), _relax_len(dlen)
    delta = _v4_scale(slen) - _v4_scale(dlen)
    if -delta > 4:  # destination much more specific: do not hash the source side at all
        ts, spx = _family_len(slen), 0
    elif delta > 4:
        td, dpx = _family_len(dlen), 0
    return ts, td, spx, dpx, prx


@kernel
def _space_ok(tinfo: np.ndarray, buckets: np.ndarray, meta: np.ndarray) -> bool:
    # Worst case of one insertion: its table doubles (twice, if cuckoo insertion fails once),
    # and a split fills a new table with at most all of that table's keys, doubling as it
    # goes; the largest table bounds each of these.
    biggest = MIN_BUCKETS
    for t in range(meta[X_NTAB]):
        if tinfo[t, T_USED] and tinfo[t, T_BSIZE] > biggest:
            biggest = tinfo[t, T_BSIZE]
    return buckets.shape[0] - meta[X_BTOP] >= 16 * biggest + 4 * MIN_BUCKETS


@kernel
def _table_add(
    rows: np.ndarray,
    rtab: np.ndarray,
    tinfo: np.ndarray,
    tmask: np.ndarray,
    trank: np.ndarray,
    buckets: np.ndarray,
    meta: np.ndarray,
    t: int,
    s: int,
) -> None:
    # Keys <= 2/5 of the entries keeps cuckoo insertion from failing (the key may be new).
    if 5 * (tinfo[t, T_KEYS] + 1) > 2 * tinfo[t, T_BSIZE]:
        _resize(tinfo, buckets, meta, t, 2 * tinfo[t, T_BSIZE], _U0)
    _chain_insert(rows, tinfo, tmask, buckets, meta, t, s)
    tinfo[t, T_COUNT] += 1
    rtab[s] = t
    rank = rows[s, W_RANK]
    classes = _rule_classes(rows, s)
    for c in range(R_COLS):
        if (classes >> c) & 1 and rank > trank[t, c]:
            trank[t, c] = rank


@kernel
def _table_del(
    rows: np.ndarray,
    rtab: np.ndarray,
    tinfo: np.ndarray,
    tmask: np.ndarray,
    trank: np.ndarray,
    buckets: np.ndarray,
    t: int,
    s: int,
) -> None:
    _chain_remove(rows, tinfo, tmask, buckets, t, s)
    tinfo[t, T_COUNT] -= 1
    rtab[s] = -1
    rank = rows[s, W_RANK]
    classes = _rule_classes(rows, s)
    for c in range(R_COLS):
        if (classes >> c) & 1 and rank >= trank[t, c]:
            # The stored max stays a valid upper bound until _finish recomputes it.
            tinfo[t, T_DIRTY] = 1


@kernel
def _split(
    rows: np.ndarray,
    rtab: np.ndarray,
    tinfo: np.ndarray,
    tmask: np.ndarray,
    trank: np.ndarray,
    order: np.ndarray,
    buckets: np.ndarray,
    meta: np.ndarray,
    t: int,
    s: int,
) -> bool:
    """Split table t if more than `limit` of its rules share slot s's key. False = no tables."""
    same = 0
    lo0, lo1, lo2, lo3, lo4 = 999, 999, 1, 1, 1
    hi0, hi1, hi2, hi3, hi4 = 0, 0, 0, 0, 0
    pos = _find(rows, tinfo, tmask, buckets, t, s)
    cur = _entry_slot(buckets[pos]) if pos >= 0 else -1
    while cur >= 0:
        same += 1
        a, b, c, d, e = _rule_tuple(rows, cur)
        lo0, lo1, lo2, lo3, lo4 = min(lo0, a), min(lo1, b), min(lo2, c), min(lo3, d), min(lo4, e)
        hi0, hi1, hi2, hi3, hi4 = max(hi0, a), max(hi1, b), max(hi2, c), max(hi3, d), max(hi4, e)
        cur = _next(rows, cur)
    if same <= meta[X_LIMIT]:
        return True
    # Split along the dimension where the colliding rules differ most, half way (rounded up,
    # so that the new tuple is strictly more specific there).
    lo = (lo0, lo1, lo2, lo3, lo4)
    hi = (hi0, hi1, hi2, hi3, hi4)
    best_d = -1
    best_delta = 0
    for d in range(5):
        delta = (hi[d] - lo[d]) * _SPLIT_WEIGHT[d]
        if delta > best_delta:
            best_d = d
            best_delta = delta
    if best_d < 0:
        return True  # the colliding rules have the same tuple: nothing to split on
    mid = (hi[best_d] + lo[best_d] + 1) // 2
    new = (
        mid if best_d == 0 else lo0,
        mid if best_d == 1 else lo1,
        mid if best_d == 2 else lo2,
        mid if best_d == 3 else lo3,
        mid if best_d == 4 else lo4,
    )
    target = -1
    for i in range(meta[X_NTAB]):
        if (
            tinfo[i, T_USED]
            and tinfo[i, T_SLEN] == new[0]
            and tinfo[i, T_DLEN] == new[1]
            and tinfo[i, T_SPX] == new[2]
            and tinfo[i, T_DPX] == new[3]
            and tinfo[i, T_PRX] == new[4]
        ):
            target = i
            break
    if target == t:
        return True
    if target < 0:
        target = _new_table(tinfo, tmask, trank, order, buckets, meta, new)
        if target < 0:
            return False
    members = np.empty(tinfo[t, T_COUNT], dtype=np.int64)
    k = 0
    off = tinfo[t, T_BOFF]
    for bb in range(off, off + tinfo[t, T_BSIZE]):
        cur = _entry_slot(buckets[bb])
        while cur >= 0:
            members[k] = cur
            k += 1
            cur = _next(rows, cur)
    for i in range(k):
        m = members[i]
        if _fits(tinfo, target, _rule_tuple(rows, m)):
            _table_del(rows, rtab, tinfo, tmask, trank, buckets, t, m)
            _table_add(rows, rtab, tinfo, tmask, trank, buckets, meta, target, m)
    if tinfo[t, T_COUNT] == 0:
        _free_table(tinfo, trank, order, meta, t)
    return True


@kernel
def _rule_classes(rows: np.ndarray, s: int) -> int:
    """Bit R_ALL, plus bit R_CLASS + c for every protocol class c that rule s can match."""
    pw = rows[s, W_PROTO]
    pmask = np.int64((pw >> np.uint64(8)) & _P8)
    pval = np.int64(pw & _P8)
    bits = 1 << R_ALL
    if pmask == 0:
        return bits | (((1 << N_CLASSES) - 1) << R_CLASS)
    if pmask == 0xFF:
        return bits | (1 << (R_CLASS + proto_class(pval)))
    for proto in range(256):  # an unusual mask: every protocol it admits
        if proto & pmask == pval:
            bits |= 1 << (R_CLASS + proto_class(proto))
    return bits


@kernel
def _resort(order: np.ndarray, trank: np.ndarray, norder: int, col: int) -> None:
    """Insertion sort of a probe order by descending trank[:, col] (few tables, nearly sorted)."""
    for i in range(1, norder):
        t = order[i]
        j = i - 1
        while j >= 0 and trank[order[j], col] < trank[t, col]:
            order[j + 1] = order[j]
            j -= 1
        order[j + 1] = t


@kernel
def _finish(
    rows: np.ndarray,
    tinfo: np.ndarray,
    tmask: np.ndarray,
    trank: np.ndarray,
    order: np.ndarray,
    tparams: np.ndarray,
    buckets: np.ndarray,
    meta: np.ndarray,
) -> None:
    """Make every table's max ranks exact, re-sort the probe orders and publish tparams."""
    norder = meta[X_NORDER]
    for oi in range(norder):
        t = order[oi]
        if tinfo[t, T_DIRTY]:
            trank[t, :] = _U0
            off = tinfo[t, T_BOFF]
            for b in range(off, off + tinfo[t, T_BSIZE]):
                s = _entry_slot(buckets[b])
                while s >= 0:
                    rank = rows[s, W_RANK]
                    classes = _rule_classes(rows, s)
                    for c in range(R_COLS):
                        if (classes >> c) & 1 and rank > trank[t, c]:
                            trank[t, c] = rank
                    s = _next(rows, s)
            tinfo[t, T_DIRTY] = 0
    _resort(order, trank, norder, R_ALL)
    corder = np.empty(norder, dtype=np.int64)
    for c in range(N_CLASSES):
        n = 0
        for oi in range(norder):
            if trank[order[oi], R_CLASS + c] != _U0:
                corder[n] = order[oi]
                n += 1
        _resort(corder, trank, n, R_CLASS + c)
        meta[X_CORDER + c] = n
        for oi in range(n):
            t = corder[oi]
            for w in range(5):
                tparams[c, oi, w] = tmask[t, w]
            tparams[c, oi, P_BOFF] = np.uint64(tinfo[t, T_BOFF])
            tparams[c, oi, P_SHIFT] = np.uint64(tinfo[t, T_SHIFT])
            tparams[c, oi, P_RANK] = trank[t, R_CLASS + c]
            tparams[c, oi, P_MASK] = np.uint64(tinfo[t, T_BSIZE] - 1)


@kernel
def insert(
    rows: np.ndarray,
    rtab: np.ndarray,
    tinfo: np.ndarray,
    tmask: np.ndarray,
    trank: np.ndarray,
    order: np.ndarray,
    tparams: np.ndarray,
    buckets: np.ndarray,
    meta: np.ndarray,
    slots: np.ndarray,
    start: int,
) -> tuple[int, int]:
    """Insert rule slots[start:] (rows with ranks written). -> (status, index to resume at)."""
    status = OK
    done = slots.shape[0]
    for i in range(start, slots.shape[0]):
        if not _space_ok(tinfo, buckets, meta):
            status, done = NEED_BUCKETS, i
            break
        s = slots[i]
        tup = _rule_tuple(rows, s)
        placed = -1
        # First fit in probe order, as the reference code does.
        for oi in range(meta[X_NORDER]):
            if _fits(tinfo, order[oi], tup):
                placed = order[oi]
                break
        if placed < 0:
            placed = _new_table(tinfo, tmask, trank, order, buckets, meta, _relaxed_tuple(tup))
            if placed < 0:
                status, done = NEED_TABLES, i
                break
        _table_add(rows, rtab, tinfo, tmask, trank, buckets, meta, placed, s)
        meta[X_NRULES] += 1
        if not _split(rows, rtab, tinfo, tmask, trank, order, buckets, meta, placed, s):
            # The rule is in place; only its table's split was skipped for want of a table.
            status, done = NEED_TABLES, i + 1
            break
        _resort(order, trank, meta[X_NORDER], R_ALL)
    _finish(rows, tinfo, tmask, trank, order, tparams, buckets, meta)
    return status, done


@kernel
def delete(
    rows: np.ndarray,
    rtab: np.ndarray,
    tinfo: np.ndarray,
    tmask: np.ndarray,
    trank: np.ndarray,
    order: np.ndarray,
    tparams: np.ndarray,
    buckets: np.ndarray,
    meta: np.ndarray,
    slots: np.ndarray,
    freed: np.ndarray,
) -> int:
    """Remove the given rule slots (absent ones are skipped); returns how many were removed.

    The removed slots are written to freed[:count], for reuse by later inserts.
    """
    removed = 0
    for i in range(slots.shape[0]):
        s = slots[i]
        if s < 0 or s >= rtab.shape[0] or rtab[s] < 0:
            continue
        t = rtab[s]
        _table_del(rows, rtab, tinfo, tmask, trank, buckets, t, s)
        rows[s, W_RANK] = _U0
        meta[X_NRULES] -= 1
        freed[removed] = s
        removed += 1
        if tinfo[t, T_COUNT] == 0:
            _free_table(tinfo, trank, order, meta, t)
    _finish(rows, tinfo, tmask, trank, order, tparams, buckets, meta)
    return removed


@kernel
def repack(
    rows: np.ndarray,
    tinfo: np.ndarray,
    tmask: np.ndarray,
    trank: np.ndarray,
    order: np.ndarray,
    tparams: np.ndarray,
    old: np.ndarray,
    new: np.ndarray,
    meta: np.ndarray,
) -> None:
    """Copy every live table's buckets into `new`, contiguously (drops regions left by resizes)."""
    top = 0
    for t in range(meta[X_NTAB]):
        if tinfo[t, T_USED]:
            size = tinfo[t, T_BSIZE]
            off = tinfo[t, T_BOFF]
            new[top : top + size] = old[off : off + size]
            tinfo[t, T_BOFF] = top
            top += size
    new[top:] = _U0
    meta[X_BTOP] = top
    meta[X_BLIVE] = top
    _finish(rows, tinfo, tmask, trank, order, tparams, new, meta)

"""One TupleMerge table's hash: a cuckoo hash of keys, each heading a chain of rules.

Entries are `fingerprint << 32 | (head slot + 1)` (see tm_kernels.py); a key's two places are
derived from its fingerprint alone, so entries move (cuckoo kicks, resizes) without touching
rule rows. Chains hang off the entries through the rows' W_NEXT words, in descending rank.
These kernels keep tinfo's T_KEYS (keys held) and the bucket-space bookkeeping in meta; the
classifier-level logic (which table, splits, max ranks) is in tm_update.py.
"""

from __future__ import annotations

import numpy as np

from dpdk_app.classifier.headers import W_RANK
from dpdk_app.classifier.jit import kernel
from dpdk_app.classifier.tm_kernels import (
    T_BOFF,
    T_BSIZE,
    T_KEYS,
    T_SHIFT,
    X_BLIVE,
    X_BTOP,
    _alt_offset,
    _entry_slot,
    _next,
    _rule_fp,
    _same_key,
    _set_next,
)

_U0 = np.uint64(0)
_U32 = np.uint64(32)
_M32 = np.uint64(0xFFFFFFFF)
_MAX_KICKS = 64  # cuckoo displacements before the table is doubled instead


@kernel(inline="always")
def _home(fp: np.uint64, tinfo: np.ndarray, t: int) -> tuple[np.int64, np.int64]:
    """The two entry indices (relative to the table's region) a fingerprint may occupy."""
    i1 = fp >> np.uint64(tinfo[t, T_SHIFT])
    i2 = i1 ^ _alt_offset(fp, np.uint64(tinfo[t, T_BSIZE] - 1))
    return np.int64(i1), np.int64(i2)


@kernel
def _find(
    rows: np.ndarray, tinfo: np.ndarray, tmask: np.ndarray, buckets: np.ndarray, t: int, s: int
) -> int:
    """Bucket index of rule s's key in table t, or -1."""
    fp = _rule_fp(rows, tmask, t, s)
    off = tinfo[t, T_BOFF]
    i1, i2 = _home(fp, tinfo, t)
    for i in (i1, i2):
        e = buckets[off + i]
        if (e >> _U32) == fp and _same_key(rows, tmask, t, _entry_slot(e), s):
            return off + i
    return -1


@kernel
def _place(buckets: np.ndarray, tinfo: np.ndarray, t: int, e: np.uint64) -> np.uint64:
    """Cuckoo-insert entry e into table t. Returns 0, or the entry left homeless."""
    off = tinfo[t, T_BOFF]
    fp = e >> _U32
    i1, i2 = _home(fp, tinfo, t)
    if buckets[off + i1] == _U0:
        buckets[off + i1] = e
        return _U0
    if buckets[off + i2] == _U0:
        buckets[off + i2] = e
        return _U0
    i = i2 if (fp >> np.uint64(1)) & np.uint64(1) else i1  # which one to evict: fp-random
    mask = np.uint64(tinfo[t, T_BSIZE] - 1)
    for _kick in range(_MAX_KICKS):
        victim = buckets[off + i]
        buckets[off + i] = e
        e = victim
        i = np.int64(np.uint64(i) ^ _alt_offset(e >> _U32, mask))
        if buckets[off + i] == _U0:
            buckets[off + i] = e
            return _U0
    return e


@kernel
def _log2(x: int) -> int:
    k = 0
    while (1 << k) < x:
        k += 1
    return k


@kernel
def _alloc_region(
    tinfo: np.ndarray, buckets: np.ndarray, meta: np.ndarray, t: int, size: int
) -> None:
    off = meta[X_BTOP]
    meta[X_BTOP] = off + size
    meta[X_BLIVE] += size - tinfo[t, T_BSIZE]
    buckets[off : off + size] = _U0
    tinfo[t, T_BOFF] = off
    tinfo[t, T_BSIZE] = size
    tinfo[t, T_SHIFT] = 32 - _log2(size)


@kernel
def _resize(
    tinfo: np.ndarray, buckets: np.ndarray, meta: np.ndarray, t: int, size: int, extra: np.uint64
) -> None:
    """Move table t's entries (and `extra`, if not 0) into a fresh region of `size` entries.

    A cuckoo failure doubles again; the caller checked there is room for 4x the table.
    """
    old_off = tinfo[t, T_BOFF]
    old_size = tinfo[t, T_BSIZE]
    while True:
        _alloc_region(tinfo, buckets, meta, t, size)
        ok = extra == _U0 or _place(buckets, tinfo, t, extra) == _U0
        for b in range(old_off, old_off + old_size):
            if not ok:
                break
            if buckets[b] != _U0:
                ok = _place(buckets, tinfo, t, buckets[b]) == _U0
        if ok:
            return
        size *= 2


@kernel
def _chain_insert(
    rows: np.ndarray,
    tinfo: np.ndarray,
    tmask: np.ndarray,
    buckets: np.ndarray,
    meta: np.ndarray,
    t: int,
    s: int,
) -> None:
    """Add slot s under its key in table t, keeping the key's chain in descending rank."""
    b = _find(rows, tinfo, tmask, buckets, t, s)
    if b < 0:
        _set_next(rows, s, -1)
        homeless = _place(
            buckets, tinfo, t, (_rule_fp(rows, tmask, t, s) << _U32) | np.uint64(s + 1)
        )
        if homeless != _U0:
            _resize(tinfo, buckets, meta, t, 2 * tinfo[t, T_BSIZE], homeless)
        tinfo[t, T_KEYS] += 1
        return
    e = buckets[b]
    prev = -1
    cur = _entry_slot(e)
    while cur >= 0 and rows[cur, W_RANK] > rows[s, W_RANK]:
        prev = cur
        cur = _next(rows, cur)
    _set_next(rows, s, cur)
    if prev < 0:
        buckets[b] = (e & ~_M32) | np.uint64(s + 1)
    else:
        _set_next(rows, prev, s)


@kernel
def _chain_remove(
    rows: np.ndarray, tinfo: np.ndarray, tmask: np.ndarray, buckets: np.ndarray, t: int, s: int
) -> None:
    b = _find(rows, tinfo, tmask, buckets, t, s)
    if b < 0:
        return
    e = buckets[b]
    prev = -1
    cur = _entry_slot(e)
    while cur >= 0 and cur != s:
        prev = cur
        cur = _next(rows, cur)
    if cur < 0:
        return
    following = _next(rows, s)
    _set_next(rows, s, -1)
    if prev >= 0:
        _set_next(rows, prev, following)
    elif following >= 0:
        buckets[b] = (e & ~_M32) | np.uint64(following + 1)
    else:
        buckets[b] = _U0
        tinfo[t, T_KEYS] -= 1

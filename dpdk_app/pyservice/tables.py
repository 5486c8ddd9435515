"""numba hash tables of the fallback: the connection table's index and the identity table.

A table is a pool of entries (indexed like rte_hash's key positions) plus an open-addressing
index of pool positions (linear probing, backward-shift deletion, so no tombstones pile up).
Keys are five uint64 words: the two 128-bit addresses and (port_a << 24 | port_b << 8 | proto);
the last row of the keys array is the probe a lookup writes its key into.
"""

from __future__ import annotations

import numpy as np

from dpdk_app.pyservice.jit import kernel

# Table meta: live entries, free pool positions, expiry scan cursor.
M_COUNT, M_NFREE, M_CURSOR = 0, 1, 2


# --- the generic table ------------------------------------------------------------------------


@kernel(inline="always")
def _mix(x: np.uint64) -> np.uint64:
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


@kernel(inline="always")
def _hash(keys: np.ndarray, p: int, seed: np.uint64) -> np.uint64:
    h = seed
    for w in range(5):
        h = _mix(h ^ keys[p, w])
    return h


@kernel
def tbl_find(index: np.ndarray, keys: np.ndarray, probe: np.ndarray, seed: np.uint64) -> int:
    """Pool position of the key in keys[probe] (a spare row used as the probe), or -1."""
    mask = np.uint64(index.shape[0] - 1)
    h = np.int64(_hash(keys, probe, seed) & mask)
    while True:
        p = index[h]
        if p < 0:
            return -1
        if (
            keys[p, 0] == keys[probe, 0]
            and keys[p, 1] == keys[probe, 1]
            and keys[p, 2] == keys[probe, 2]
            and keys[p, 3] == keys[probe, 3]
            and keys[p, 4] == keys[probe, 4]
        ):
            return p
        h = (h + 1) & np.int64(mask)


@kernel
def tbl_add(
    index: np.ndarray, keys: np.ndarray, free: np.ndarray, meta: np.ndarray, probe: int, seed: int
) -> int:
    """Insert the probe key (which must be absent); its pool position, or -1 when full."""
    if meta[M_NFREE] == 0:
        return -1
    meta[M_NFREE] -= 1
    p = free[meta[M_NFREE]]
    for w in range(5):
        keys[p, w] = keys[probe, w]
    mask = index.shape[0] - 1
    h = np.int64(_hash(keys, p, np.uint64(seed)) & np.uint64(mask))
    while index[h] >= 0:
        h = (h + 1) & mask
    index[h] = p
    meta[M_COUNT] += 1
    return p


@kernel
def tbl_del(
    index: np.ndarray, keys: np.ndarray, free: np.ndarray, meta: np.ndarray, p: int, seed: int
) -> bool:
    """Remove pool position p from the index (backward-shift deletion) and free it."""
    mask = index.shape[0] - 1
    i = np.int64(_hash(keys, p, np.uint64(seed)) & np.uint64(mask))
    while index[i] != p:
        if index[i] < 0:
            return False
        i = (i + 1) & mask
    j = i
    while True:
        j = (j + 1) & mask
        q = index[j]
        if q < 0:
            break
        home = np.int64(_hash(keys, q, np.uint64(seed)) & np.uint64(mask))
        # q may move back to i only if its home is not cyclically inside (i, j].
        inside = (i < home <= j) if i <= j else (home > i or home <= j)
        if not inside:
            index[i] = q
            i = j
    index[i] = -1
    free[meta[M_NFREE]] = p
    meta[M_NFREE] += 1
    meta[M_COUNT] -= 1
    return True


# --- identities -------------------------------------------------------------------------------


@kernel(inline="always")
def set_probe(
    keys: np.ndarray,
    probe: int,
    ah: np.uint64,
    al: np.uint64,
    bh: np.uint64,
    bl: np.uint64,
    pa: int,
    pb: int,
    proto: int,
) -> None:
    keys[probe, 0] = ah
    keys[probe, 1] = al
    keys[probe, 2] = bh
    keys[probe, 3] = bl
    keys[probe, 4] = (np.uint64(pa) << np.uint64(24)) | (np.uint64(pb) << np.uint64(8))
    keys[probe, 4] |= np.uint64(proto)


@kernel
def identity_fill(
    hdrs: np.ndarray,
    index: np.ndarray,
    keys: np.ndarray,
    meta: np.ndarray,
    classes: np.ndarray,
    seed: int,
) -> None:
    """Set hdrs.id_class from the identity table (exact 5-tuple), 0 where there is none."""
    probe = keys.shape[0] - 1
    for i in range(hdrs.shape[0]):
        h = hdrs[i]
        h.id_class = 0
        if meta[M_COUNT] == 0 or h.valid == 0:
            continue
        set_probe(keys, probe, h.src_hi, h.src_lo, h.dst_hi, h.dst_lo, h.sport, h.dport, h.proto)
        p = tbl_find(index, keys, probe, np.uint64(seed))
        if p >= 0:
            h.id_class = classes[p]

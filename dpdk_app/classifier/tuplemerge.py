"""The TupleMerge classifier: build, incremental insert and delete, batch classification.

A rule is identified by its slot, a handle returned when it is inserted; `build` gives rule i of
the array slot i, so classification answers are rule indices. Slots of deleted rules are reused
by later inserts. Among rules of equal priority the one inserted first wins, as in the reference
evaluator (where it is the one earlier in the array).

Every operation runs in numba kernels (tm_kernels.py); this class only owns the arrays and grows
them when a kernel reports that it ran out of room.
"""

from __future__ import annotations

import numpy as np

from dpdk_app.classifier import tm_kernels as k
from dpdk_app.classifier import tm_update as u
from dpdk_app.classifier.headers import (
    HEADER_DTYPE,
    RULE_WORDS,
    W_PROTO,
    check_rules,
    pack_into,
    pack_rules,
)

DEFAULT_COLLIDE_LIMIT = 20  # the reference code uses 10; 20 probed fewer tables on ClassBench


class TupleMerge:
    """A TupleMerge packet classifier over RULE_DTYPE rules, with incremental updates."""

    name = "tuplemerge"
    initial_tables = 64  # table entries before the first growth

    def __init__(
        self,
        rules: np.ndarray | None = None,
        collide_limit: int = DEFAULT_COLLIDE_LIMIT,
        capacity: int = 1024,
    ) -> None:
        if collide_limit < 1:
            raise ValueError("collide_limit must be >= 1")
        self._limit = collide_limit
        self._reset(capacity)
        if rules is not None:
            self.build(rules)

    def _reset(self, capacity: int) -> None:
        capacity = max(16, capacity)
        self.rows = _aligned_rows(capacity)
        self.rtab = np.full(capacity, -1, dtype=np.int64)
        ntab = self.initial_tables
        self.tinfo = np.zeros((ntab, k.T_COLS), dtype=np.int64)
        self.tmask = np.zeros((ntab, k.M_COLS), dtype=np.uint64)
        self.trank = np.zeros((ntab, k.R_COLS), dtype=np.uint64)
        self.order = np.zeros(ntab, dtype=np.int64)
        self.tparams = np.zeros((k.N_CLASSES, ntab, k.P_COLS), dtype=np.uint64)
        # Bucket groups are cache lines: keep them aligned.
        self.buckets = _aligned_u64(max(4096, 8 * capacity))
        self.meta = np.zeros(k.X_COLS, dtype=np.int64)
        self.meta[k.X_LIMIT] = self._limit
        self._free: list[int] = []
        self._top = 0  # slots below are or were in use
        self._seq = 0

    # -- capacity ---------------------------------------------------------------------------

    def _state(self) -> tuple[np.ndarray, ...]:
        """The arrays every update kernel takes, in its argument order."""
        return (
            self.rows,
            self.rtab,
            self.tinfo,
            self.tmask,
            self.trank,
            self.order,
            self.tparams,
            self.buckets,
            self.meta,
        )

    def _grow_slots(self, need: int) -> None:
        cap = len(self.rtab)
        if need <= cap:
            return
        new = max(need, 2 * cap)
        rows = _aligned_rows(new)
        rows[:cap] = self.rows
        self.rows = rows
        rtab = np.full(new, -1, dtype=np.int64)
        rtab[:cap] = self.rtab
        self.rtab = rtab

    def _grow_tables(self) -> None:
        n = len(self.trank)
        for name in ("tinfo", "tmask", "trank", "order"):
            old = getattr(self, name)
            arr = np.zeros((2 * n, *old.shape[1:]), dtype=old.dtype)
            arr[:n] = old
            setattr(self, name, arr)
        tparams = np.zeros((k.N_CLASSES, 2 * n, k.P_COLS), dtype=np.uint64)
        tparams[:, :n] = self.tparams
        self.tparams = tparams

    def _grow_buckets(self) -> None:
        live = int(self.meta[k.X_BLIVE])
        biggest = int(self.tinfo[:, k.T_BSIZE].max(initial=k.MIN_BUCKETS))
        size = max(len(self.buckets), 2 * live + 16 * biggest + 64 * k.MIN_BUCKETS)
        new = _aligned_u64(size)
        args = (self.rows, self.tinfo, self.tmask, self.trank, self.order, self.tparams)
        u.repack(*args, self.buckets, new, self.meta)
        self.buckets = new

    # -- updates ----------------------------------------------------------------------------

    def _alloc_slots(self, n: int) -> np.ndarray:
        reuse = min(n, len(self._free))
        out = np.empty(n, dtype=np.int64)
        for i in range(reuse):
            out[i] = self._free.pop()
        out[reuse:] = np.arange(self._top, self._top + n - reuse)
        self._top += n - reuse
        self._grow_slots(self._top)
        return out

    def _run_insert(self, slots: np.ndarray) -> None:
        start = 0
        while True:
            status, start = u.insert(*self._state(), slots, start)
            if status == k.OK:
                return
            if status == k.NEED_BUCKETS:
                self._grow_buckets()
            else:
                self._grow_tables()

    def build(self, rules: np.ndarray) -> None:
        """Replace the rule set; rule i of `rules` gets slot i."""
        check_rules(rules)
        self._reset(len(rules))
        slots = self._alloc_slots(len(rules))
        pack_into(rules, self.rows, slots, 0)
        self._seq = len(rules)
        # Best first, as the reference code builds: the best rules land in the first tables.
        self._run_insert(slots[np.argsort(-rules["priority"].astype(np.int64), kind="stable")])

    def insert(self, rules: np.ndarray) -> np.ndarray:
        """Add rules (RULE_DTYPE) to the live classifier; returns their slots."""
        rules = np.atleast_1d(rules)
        check_rules(rules)  # before anything changes
        slots = self._alloc_slots(len(rules))
        pack_into(rules, self.rows, slots, self._seq)
        self._seq += len(rules)
        self._run_insert(slots)
        return slots

    def delete(self, slots: np.ndarray | list[int]) -> int:
        """Remove rules by slot; unknown or already deleted slots are ignored. -> count removed."""
        slots = np.atleast_1d(np.asarray(slots, dtype=np.int64))
        freed = np.empty(len(slots), dtype=np.int64)
        removed = u.delete(*self._state(), slots, freed)
        self._free.extend(freed[:removed].tolist())
        return int(removed)

    # -- classification -----------------------------------------------------------------------

    def classify(self, headers: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """The winning rule slot of each header (HEADER_DTYPE), -1 where none matches."""
        if headers.dtype != HEADER_DTYPE:
            raise TypeError(f"expected HEADER_DTYPE headers, got {headers.dtype}")
        if out is None:
            out = np.empty(len(headers), dtype=np.int64)
        k.classify(headers, self.rows, self.tparams, self.buckets, self.meta, out)
        return out

    def lookup(self, headers: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(slot, rule_id, action) of each header's winning rule; -1, 0, 0 where none."""
        slots = self.classify(headers)
        return slots, self.rule_ids(slots), self.actions(slots)

    def rule_ids(self, slots: np.ndarray) -> np.ndarray:
        """rule_id of each slot (0 where the slot is -1)."""
        ids = (self.rows[slots, W_PROTO] >> np.uint64(32)).astype(np.uint32)
        return np.where(slots >= 0, ids, 0).astype(np.uint32)

    def actions(self, slots: np.ndarray) -> np.ndarray:
        """action of each slot (0 where the slot is -1)."""
        acts = ((self.rows[slots, W_PROTO] >> np.uint64(16)) & np.uint64(0xFF)).astype(np.uint8)
        return np.where(slots >= 0, acts, 0).astype(np.uint8)

    # -- introspection --------------------------------------------------------------------------

    @property
    def n_rules(self) -> int:
        """Number of live rules."""
        return int(self.meta[k.X_NRULES])

    @property
    def n_tables(self) -> int:
        """Number of live tables (tuples)."""
        return int(self.meta[k.X_NORDER])

    def memory_bytes(self) -> int:
        """Bytes of the arrays the classifier keeps (allocated, including spare capacity)."""
        return sum(a.nbytes for a in self._state())

    def tables(self) -> list[dict[str, int]]:
        """The live tables in probe order: tuple, rule count, buckets (for reports and tests)."""
        out = []
        for t in self.order[: self.n_tables]:
            info = self.tinfo[t]
            out.append(
                {
                    "src_len": int(info[k.T_SLEN]),
                    "dst_len": int(info[k.T_DLEN]),
                    "sport_exact": int(info[k.T_SPX]),
                    "dport_exact": int(info[k.T_DPX]),
                    "proto_exact": int(info[k.T_PRX]),
                    "rules": int(info[k.T_COUNT]),
                    "buckets": int(info[k.T_BSIZE]),
                }
            )
        return out


def warm_up() -> None:
    """Compile (or load from the cache) every kernel, so that no timing includes the JIT."""
    from dpdk_app.classifier.headers import HEADER_DTYPE as hdr_dtype
    from dpdk_app.layout import RULE_DTYPE

    rules = np.zeros(40, dtype=RULE_DTYPE)
    rules["src_addr"][:, 10:12] = 0xFF
    rules["dst_addr"][:, 10:12] = 0xFF
    rules["src_plen"] = 96 + np.arange(40) % 33
    rules["dst_plen"] = 128
    rules["sport_hi"] = rules["dport_hi"] = 65535
    rules["priority"] = np.arange(40)
    headers = np.zeros(4, dtype=hdr_dtype)
    headers["valid"] = 1
    saved = TupleMerge.initial_tables
    try:
        TupleMerge.initial_tables = 1  # forces the table-growth path
        tm = TupleMerge(rules[:2], capacity=1)
    finally:
        TupleMerge.initial_tables = saved
    slots = tm.insert(rules)  # grows slots, tables and buckets
    tm._grow_buckets()
    tm.classify(headers)
    tm.delete(slots[:20])
    tm.delete(slots[20])
    LinearScan(rules).classify(headers)


def _aligned_u64(n: int, align: int = 128) -> np.ndarray:
    """A zeroed uint64 array of n entries starting on an `align`-byte boundary."""
    raw = np.zeros(n + align // 8, dtype=np.uint64)
    skip = (-raw.ctypes.data % align) // 8
    return raw[skip : skip + n]


def _aligned_rows(n: int) -> np.ndarray:
    """A zeroed (n, RULE_WORDS) uint64 array whose rows start on 128-byte boundaries."""
    return _aligned_u64(n * RULE_WORDS).reshape(n, RULE_WORDS)


class LinearScan:
    """Baseline: every header scans the rules in priority order (numba), first match wins."""

    name = "linear"

    def __init__(self, rules: np.ndarray) -> None:
        rules = np.asarray(rules)
        order = np.lexsort((np.arange(len(rules)), -rules["priority"].astype(np.int64)))
        self.rows = np.ascontiguousarray(pack_rules(rules)[order])
        self.slots = order.astype(np.int64)

    def classify(self, headers: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """The winning rule index of each header, -1 where none matches."""
        if headers.dtype != HEADER_DTYPE:
            raise TypeError(f"expected HEADER_DTYPE headers, got {headers.dtype}")
        if out is None:
            out = np.empty(len(headers), dtype=np.int64)
        k.classify_linear(headers, self.rows, self.slots, out)
        return out

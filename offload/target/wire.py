"""Table updates decoded from a Write's wire bytes: the software target's bulk write path.

Reading an entry's fields from the parsed protobuf costs about 12 us in Python (each field access
makes a wrapper), most of a full sync's time on the target. `WireDecoder` hands the request's
serialized bytes to a numba kernel (`offload.target.wirekernel`), which reads every ordinary
table entry into flat arrays; the rows are turned into the same `TableOp`s that
`EntityStore.prepare` builds, a column (one key, all entries of a table) at a time. Updates the
kernel does not take (anything unusual, anything invalid) come back as None and the caller
prepares them from the parsed message, so errors keep their one code and message
(tests/unit/test_target_wire.py checks ops and errors against `prepare`).

The kernel compiles (or loads from numba's cache) in a background thread on first use; Writes
take the usual path until it is ready, so no Write ever waits for a compiler. The same kernel
file decodes the client's Read responses (`offload.p4readwire`, `decode_entities`), loaded the
same way. NICFW_WIRE_DECODE=0 turns both paths off.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from itertools import repeat
from typing import Any

import numpy as np

from offload import p4decode
from offload.p4decode import FastTableDecoder
from offload.p4schema import MatchKind
from offload.target.entities import DELETE, TableOp
from offload.target.tables import ExactTable, LpmTable, StoredEntry, Table, TernaryTable

log = logging.getLogger(__name__)

MAX_KEYS = 16
MAX_PARAMS = 16
MAX_WIDTH = 128  # wider keys or params: that table always takes the usual path
MAX_PACKED_BITS = 64 * 8

# The kernel's key kinds (offload.target.wirekernel K_*), by p4decode's.
KERNEL_KIND = {
    p4decode.EXACT: 0,
    p4decode.LPM: 1,
    p4decode.TERNARY: 2,
    p4decode.RANGE: 3,
    p4decode.OPTIONAL: 4,
}
_EXACT, _LPM, _TERNARY, _RANGE, _OPTIONAL = range(5)

Kernel = Callable[..., int]


# ---------------------------------------------------------------------- the kernel
class KernelLoader:
    """Compile or load one kernel once per process, in the background unless asked to wait.

    `name` is the kernel's function in `offload.target.wirekernel`; `warm` calls it once with
    arrays of the real types; `role` names what takes the usual path without it ("Writes").
    """

    def __init__(self, name: str, warm: Callable[[Kernel], None], role: str) -> None:
        self.name = name
        self.warm = warm
        self.role = role
        self.lock = threading.Lock()
        self.kernel: Kernel | None = None
        self.failed = False
        self.thread: threading.Thread | None = None
        self.load_s = 0.0  # how long compiling (or loading from the cache) took

    def load(self) -> Kernel | None:
        with self.lock:
            if self.kernel is None and not self.failed:
                started = time.perf_counter()
                try:
                    from offload.target import wirekernel

                    kernel: Kernel = getattr(wirekernel, self.name)
                    self.warm(kernel)
                except Exception:  # no numba, or it cannot compile here: the usual path
                    log.warning(
                        "wire decoding unavailable; %s decode messages", self.role, exc_info=True
                    )
                    self.failed = True
                    return None
                self.load_s = time.perf_counter() - started
                self.kernel = kernel
                log.info("wire decoder for %s ready in %.2f s", self.role, self.load_s)
            return self.kernel

    def get(self, wait: bool) -> Kernel | None:
        if self.kernel is not None or self.failed:
            return self.kernel
        if wait:
            return self.load()
        with self.lock:
            if self.thread is None:
                self.thread = threading.Thread(
                    target=self.load, name=f"nicfw-wire-{self.name}", daemon=True
                )
                self.thread.start()
        return None


def enabled() -> bool:
    """Whether the wire path is on (NICFW_WIRE_DECODE=0 turns it off)."""
    return os.environ.get("NICFW_WIRE_DECODE", "1") != "0"


def kernel(wait: bool = False) -> Kernel | None:
    """The compiled kernel; None while it compiles (unless `wait`) or if it cannot be used."""
    return _loader.get(wait) if enabled() else None


def kernel_load_s() -> float:
    """Seconds the kernel took to compile or load from numba's cache (0 if not loaded)."""
    return _loader.load_s


def row_arrays(n: int, keys: int, params: int) -> tuple[np.ndarray, ...]:
    """The per-row outputs both kernels fill (`decode_updates` adds the update type after
    `ok` and the packed ternary words at the end)."""
    return (
        np.zeros(n, np.uint8),  # ok
        np.zeros(n, np.int64),  # table slot
        np.zeros(n, np.int64),  # action slot
        np.zeros(n, np.int64),  # priority
        np.zeros(n, np.int64),  # idle timeout
        np.zeros((n, keys), np.uint8),  # key present
        np.zeros((n, keys, 4), np.uint64),  # key value hi/lo, second value hi/lo
        np.zeros((n, params, 2), np.uint64),  # param hi/lo
    )


def _outputs(n: int, keys: int, params: int, words: int) -> tuple[np.ndarray, ...]:
    ok, *rest = row_arrays(n, keys, params)
    utypes = np.zeros(n, np.int64)
    return (ok, utypes, *rest, np.zeros((n, 2, words), np.uint64))  # + ternary value/mask words


def warm_spec() -> tuple[np.ndarray, ...]:
    """A one-table, one-key, one-action spec of the kernels' types, for warming them up."""
    return (
        np.zeros((1, 6), np.int64),
        np.zeros((1, 1, 4), np.int64),
        np.zeros((1, 1), np.int64),
        np.zeros((1, 2), np.int64),
        np.zeros((1, 1, 2), np.int64),
    )


def _warm(kernel: Kernel) -> None:
    """Call the kernel once with arrays of the real types: compiles it, or loads it."""
    kernel(np.frombuffer(b"", np.uint8), *warm_spec(), *_outputs(1, 1, 1, 1))


_loader = KernelLoader("decode_updates", _warm, "Writes")


# ---------------------------------------------------------------------- per-table plans
@dataclass(slots=True)
class _Plan:
    """How one table's rows become ops."""

    table: Table
    build: Callable[..., Any]
    keys: tuple[tuple[int, int], ...]  # (kind, width) per key, P4Info order
    max_params: int
    same_nparams: bool


def _eligible(decoder: FastTableDecoder, table: Table) -> bool:
    if not decoder.usable or type(table) not in (ExactTable, LpmTable, TernaryTable):
        return False
    if decoder.size > MAX_KEYS or any(w > MAX_WIDTH for _i, w, _k, _f in decoder.fields.values()):
        return False
    for _name, params, count in decoder.actions.values():
        if count > MAX_PARAMS or any(w > MAX_WIDTH for _j, w in params.values()):
            return False
    return sum(f.bitwidth for f in decoder.table.match_fields) <= MAX_PACKED_BITS


def _offsets(decoder: FastTableDecoder) -> list[int]:
    """Bit offsets of the keys in a ternary table's packed identity (`TernaryTable`'s)."""
    fields = decoder.table.match_fields
    offsets = [0] * len(fields)
    offset = 0
    for i in reversed(range(len(fields))):
        if fields[i].kind != MatchKind.RANGE:
            offsets[i] = offset
            offset += fields[i].bitwidth
    return offsets


def column_ints(hi: np.ndarray, lo: np.ndarray) -> list[int]:
    """Python ints from 64-bit halves, a column at a time."""
    if hi.any():
        return [h << 64 | v for h, v in zip(hi.tolist(), lo.tolist(), strict=True)]
    return lo.tolist()


def _join(words: np.ndarray) -> list[int]:
    """Python ints from rows of little-endian 64-bit words."""
    cols = words.T
    acc: list[int] = cols[0].tolist()
    for j in range(1, cols.shape[0]):
        if cols[j].any():
            shift = 64 * j
            acc = [a | w << shift for a, w in zip(acc, cols[j].tolist(), strict=True)]
    return acc


class WireDecoder:
    """Ops for the ordinary table updates of a serialized WriteRequest, by update index."""

    def __init__(self, tables: Mapping[int, tuple[FastTableDecoder, Table]]) -> None:
        chosen = [(d, t) for d, t in tables.values() if _eligible(d, t)]
        nkeys = max([d.size for d, _t in chosen], default=1)
        slots: list[tuple[int, dict[int, tuple[int, int]], int]] = []
        self.plans: list[_Plan] = []
        names: list[str] = []
        packed_bits = [0]
        max_acts = max([len(d.actions) for d, _t in chosen], default=1)
        acts = np.full((max(len(chosen), 1), max(max_acts, 1)), -1, np.int64)
        tspec = np.zeros((max(len(chosen), 1), 6), np.int64)
        kspec = np.zeros((max(len(chosen), 1), max(nkeys, 1), 4), np.int64)
        for t, (decoder, table) in enumerate(chosen):
            info = decoder.table
            pack = isinstance(table, TernaryTable)
            offsets = _offsets(decoder) if pack else [0] * decoder.size
            if pack:
                packed_bits.append(sum(f.bitwidth for f in info.match_fields))
            tspec[t] = (info.id, decoder.size, decoder.needs_priority, decoder.supports_idle,
                        pack, len(decoder.actions))  # fmt: skip
            keys = [(0, 0)] * decoder.size
            for fid, (i, width, kind, _full) in decoder.fields.items():
                kspec[t, i] = (fid, KERNEL_KIND[kind], width, offsets[i])
                keys[i] = (KERNEL_KIND[kind], width)
            counts = []
            for j, (aid, (name, params, count)) in enumerate(sorted(decoder.actions.items())):
                acts[t, j] = len(slots)
                slots.append((aid, params, count))
                names.append(name)
                counts.append(count)
            same = len(set(counts)) <= 1
            self.plans.append(
                _Plan(table, decoder.entry, tuple(keys), max(counts, default=0), same)
            )
        names.append("")  # action slot -1: no action (a DELETE)
        self.names = tuple(names)
        self.nparams = tuple(c for _a, _p, c in slots)
        nparams = max([c for _a, _p, c in slots], default=1)
        aspec = np.zeros((max(len(slots), 1), 2), np.int64)
        pspec = np.zeros((max(len(slots), 1), max(nparams, 1), 2), np.int64)
        for s, (aid, params, count) in enumerate(slots):
            aspec[s] = (aid, count)
            for pid, (j, width) in params.items():
                pspec[s, j] = (pid, width)
        if not chosen:
            tspec[0, 0] = -1  # no table id matches
        self.spec = (tspec, kspec, acts, aspec, pspec)
        self.shape = (max(nkeys, 1), max(nparams, 1), (max(packed_bits) + 63) // 64 + 2)

    def decode(self, data: bytes, count: int, wait: bool = False) -> list[TableOp | None] | None:
        """Ops for the updates the kernel decodes (None for the others), or None without it."""
        kern = kernel(wait)
        if kern is None:
            return None
        out = _outputs(count, *self.shape)
        found = kern(np.frombuffer(data, np.uint8), *self.spec, *out)
        ops: list[TableOp | None] = [None] * count
        if found != count:
            return ops  # framing the kernel does not follow: every update the usual way
        ok, utypes, tslots, aslots, prio, idle, present, kv, pv, tw = out
        decoded = ok == 1
        if not decoded.any():
            return ops
        for t, plan in enumerate(self.plans):
            rows = np.flatnonzero(decoded & (tslots == t))
            if rows.size:
                self._build(plan, rows, ops, utypes, aslots, prio, idle, present, kv, pv, tw)
        return ops

    def _build(
        self,
        plan: _Plan,
        rows: np.ndarray,
        ops: list[TableOp | None],
        utypes: np.ndarray,
        aslots: np.ndarray,
        prio: np.ndarray,
        idle: np.ndarray,
        present: np.ndarray,
        kv: np.ndarray,
        pv: np.ndarray,
        tw: np.ndarray,
    ) -> None:
        """The ops of one table's rows, a column at a time."""
        m = rows.size
        cols: list[list[Any]] = []
        kvs = kv[rows]  # one copy per table and array, then views
        pres_all = present[rows]
        for k, (kind, _width) in enumerate(plan.keys):
            sub = kvs[:, k]
            first = column_ints(sub[:, 0], sub[:, 1])
            col: list[Any]
            if kind in (_EXACT, _OPTIONAL):
                col = first
            elif kind == _LPM:
                col = list(zip(first, sub[:, 3].tolist(), strict=True))
            else:
                col = list(zip(first, column_ints(sub[:, 2], sub[:, 3]), strict=True))
            if kind != _EXACT:
                pres = pres_all[:, k]
                if not pres.all():
                    col = [c if p else None for c, p in zip(col, pres.tolist(), strict=True)]
            cols.append(col)
        vals = list(zip(*cols, strict=True))
        prios: list[int] = prio[rows].tolist()
        table = plan.table
        identities: list[Any]
        if isinstance(table, ExactTable):
            identities = vals
        elif isinstance(table, LpmTable):
            identities = [(0, 0) if v is None else v for v in cols[0]]
        else:
            tvalue = _join(tw[rows, 0])
            tmask = _join(tw[rows, 1])
            rcols = [(k, cols[k]) for k, (kind, _w) in enumerate(plan.keys) if kind == _RANGE]
            ranges: list[tuple[tuple[int, int, int], ...]] = [()] * m
            if len(rcols) == 1:
                k, col = rcols[0]
                ranges = [() if p is None else ((k, p[0], p[1]),) for p in col]
            else:
                for k, col in rcols:
                    ranges = [
                        r if p is None else (*r, (k, p[0], p[1]))
                        for r, p in zip(ranges, col, strict=True)
                    ]
            identities = list(zip(tvalue, tmask, ranges, prios, strict=True))
        slots: list[int] = aslots[rows].tolist()
        names = self.names
        anames = [names[a] for a in slots]
        if plan.max_params:
            pvs = pv[rows]
            pcols = [column_ints(pvs[:, j, 0], pvs[:, j, 1]) for j in range(plan.max_params)]
            args: list[tuple[int, ...]] = list(zip(*pcols, strict=True))
            if not plan.same_nparams:
                counts = self.nparams
                args = [a[: counts[s]] if s >= 0 else () for a, s in zip(args, slots, strict=True)]
        else:
            args = [()] * m
        # The constructors run through map(): no Python loop around each call.
        utype_list: list[int] = utypes[rows].tolist()
        recs: list[StoredEntry | None] = list(
            map(
                StoredEntry,
                repeat(None),
                args,
                anames,
                prios,
                idle[rows].tolist(),
                repeat(plan.build),
                vals,
            )
        )
        for rec, ident in zip(recs, identities, strict=True):
            rec.identity = ident  # type: ignore[union-attr]
        if DELETE in utype_list:  # a DELETE carries no entry
            recs = [None if u == DELETE else r for u, r in zip(utype_list, recs, strict=True)]
        new = map(TableOp, utype_list, repeat(table), repeat(False), recs, identities,
                  repeat(None))  # fmt: skip
        for i, op in zip(rows.tolist(), new, strict=True):
            ops[i] = op

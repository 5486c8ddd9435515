"""The classification benchmark behind `nicfw bench classify`: any ClassBench rule file + trace.

`run(rules_path, trace_path, verify)` measures every registered classifier backend on one rule
set and trace and returns the figures as a dict (`format_report` renders it as a table). A
backend is a callable `(rules_path, trace_path) -> dict` with at least `mpps`; the in-process
numba backends are registered here, and other modules add theirs with `register_backend` (the
DPDK fast path's rte_acl runner, dpdk_app/dpdk_backend.py, does: modules named in
BACKEND_MODULES are imported on first use so that their backends register themselves).
Keys a backend may return:

    mpps, mpps_best       classification throughput, single thread (median and best pass)
    build_s               time to build the classifier from the rule set
    memory_bytes          memory the classifier holds
    insert_rate, delete_rate          rules/s, one rule per call into the live classifier
    batch_insert_rate, batch_delete_rate   rules/s, many rules per call (still incremental)
    rebuild_s             cost of one rule change for classifiers without incremental updates
    results               int64 array: first-matching rule index per trace header (-1 none)
    mismatches            count of headers whose answer differs from the trace's rule column
                          (for backends that check themselves and return no `results`)

With verify=True every answer of every classifier is checked against the reference first-match
evaluation (dpdk_app/reference.py), and the trace's own rule column is checked too.
Only classification is timed: the JIT is warmed up first and parsing is outside the clock.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dpdk_app import classbench
from dpdk_app.classifier.tuplemerge import LinearScan, TupleMerge, warm_up
from dpdk_app.reference import first_match

Backend = Callable[[Path, Path], dict[str, Any]]

BACKENDS: dict[str, Backend] = {}
BACKEND_MODULES: tuple[str, ...] = ("dpdk_app.dpdk_backend",)  # registers "rte_acl" if built
NUMBA_NAME = "tuplemerge"
ACL_NAME = "rte_acl"
MIN_TIME_S = 0.3  # classify the trace for at least this long per classifier
MAX_EXAMPLES = 10


class BenchError(ValueError):
    """The benchmark cannot run on the given input; the message says why."""


def register_backend(name: str, backend: Backend) -> None:
    """Add (or replace) a classifier backend under `name`."""
    BACKENDS[name] = backend


def _load_plugins() -> None:
    for module in BACKEND_MODULES:
        with contextlib.suppress(ImportError):
            importlib.import_module(module)


def available_backends() -> list[str]:
    """Names of the registered backends (plugins imported)."""
    _load_plugins()
    return list(BACKENDS)


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    model = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    import numba

    return {
        "cpu": model,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "threads": 1,
    }


def _single_thread() -> None:
    """Per-core figures: numba's parallel layer (unused by these kernels) gets one thread."""
    import numba

    with contextlib.suppress(Exception):
        numba.set_num_threads(1)


def _rates(passes: Sequence[float], n: int) -> dict[str, float]:
    mpps = [n / t / 1e6 for t in passes if t > 0]
    return {"mpps": statistics.median(mpps), "mpps_best": max(mpps), "passes": len(mpps)}


def time_classify(
    classify: Callable[[np.ndarray, np.ndarray], object],
    headers: np.ndarray,
    min_time: float | None = None,
) -> dict[str, float]:
    """Classify the whole batch repeatedly (after one warm-up pass) and report Mpps."""
    min_time = MIN_TIME_S if min_time is None else min_time
    out = np.empty(len(headers), dtype=np.int64)
    classify(headers, out)  # warm-up: JIT compile, caches
    passes: list[float] = []
    spent = 0.0
    while len(passes) < 3 or (spent < min_time and len(passes) < 200):
        t0 = time.perf_counter()
        classify(headers, out)
        dt = time.perf_counter() - t0
        passes.append(dt)
        spent += dt
    return _rates(passes, len(headers))


def _update_sample(n_rules: int, seed: int = 7) -> np.ndarray:
    """The rules removed and put back to time updates: 10% of the set, 100..2000 rules."""
    k = min(n_rules, max(100, min(2000, n_rules // 10)))
    return np.sort(np.random.default_rng(seed).choice(n_rules, size=k, replace=False))


def tuplemerge_backend(rules_path: Path, trace_path: Path) -> dict[str, Any]:
    """The numba TupleMerge classifier: lookups, build, incremental insert/delete rates."""
    _single_thread()
    rules = classbench.load_rules(rules_path)
    headers = classbench.read_trace(trace_path).headers
    warm_up()  # every kernel compiled or loaded before any clock starts
    TupleMerge(rules[:16]).classify(headers[:16])
    t0 = time.perf_counter()
    tm = TupleMerge(rules)
    build_s = time.perf_counter() - t0
    fig: dict[str, Any] = time_classify(tm.classify, headers)
    results = tm.classify(headers)
    fig.update(build_s=build_s, memory_bytes=tm.memory_bytes(), tables=tm.n_tables)
    sample = _update_sample(len(rules))
    if len(sample):
        # One rule per call: the rate a rule change sees through the Python API.
        t0 = time.perf_counter()
        for s in sample:
            tm.delete(s)
        fig["delete_rate"] = len(sample) / (time.perf_counter() - t0)
        slots = np.empty(len(sample), dtype=np.int64)
        t0 = time.perf_counter()
        for i, s in enumerate(sample):
            slots[i] = tm.insert(rules[s : s + 1])[0]
        fig["insert_rate"] = len(sample) / (time.perf_counter() - t0)
        # The same rules in one call each way: the kernels' own rate.
        t0 = time.perf_counter()
        tm.delete(slots)
        fig["batch_delete_rate"] = len(sample) / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        slots = tm.insert(rules[sample])
        fig["batch_insert_rate"] = len(sample) / (time.perf_counter() - t0)
        # Re-inserted rules keep their priorities but get new slots: map slots back to rules.
        slot_to_rule = np.arange(max(len(rules), int(slots.max()) + 1), dtype=np.int64)
        slot_to_rule[slots] = sample
        after = tm.classify(headers)
        after = np.where(after >= 0, slot_to_rule[np.maximum(after, 0)], -1)
        fig["update_consistent"] = bool(np.array_equal(after, results))
    fig["results"] = results
    return fig


def linear_backend(rules_path: Path, trace_path: Path) -> dict[str, Any]:
    """Baseline: the numba linear scan (rules in priority order, first match wins)."""
    _single_thread()
    rules = classbench.load_rules(rules_path)
    headers = classbench.read_trace(trace_path).headers
    warm_up()
    LinearScan(rules[:16]).classify(headers[:16])
    t0 = time.perf_counter()
    lin = LinearScan(rules)
    build_s = time.perf_counter() - t0
    fig: dict[str, Any] = time_classify(lin.classify, headers, min_time=0.0)
    fig.update(build_s=build_s, memory_bytes=int(lin.rows.nbytes), rebuild_s=build_s)
    fig["results"] = lin.classify(headers)
    return fig


register_backend(NUMBA_NAME, tuplemerge_backend)
register_backend("linear", linear_backend)


def cached_trace(
    rules_path: Path,
    cache_dir: Path,
    per_rule: int = 4,
    seed: int = classbench.DEFAULT_SEED,
) -> Path:
    """A generated trace for a rule file, written once into cache_dir and reused after."""
    rules_path = Path(rules_path)
    path = Path(cache_dir) / f"{rules_path.name}.seed{seed}.x{per_rule}.trace"
    if path.exists() and path.stat().st_mtime >= rules_path.stat().st_mtime:
        return path
    ruleset = classbench.load_ruleset(rules_path)
    trace = classbench.generate_trace(ruleset.rules, per_rule, seed, ruleset.flags)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    classbench.write_trace(tmp, trace.headers, trace.expected)
    tmp.replace(path)  # atomic: a concurrent reader never sees half a trace
    return path


def _examples(
    headers: np.ndarray, expected: np.ndarray, got: np.ndarray, bad: np.ndarray
) -> list[dict[str, Any]]:
    out = []
    for i in bad[:MAX_EXAMPLES]:
        h = headers[i]
        out.append(
            {
                "header": int(i),
                "src": f"{int(h['src_hi']):016x}{int(h['src_lo']):016x}",
                "dst": f"{int(h['dst_hi']):016x}{int(h['dst_lo']):016x}",
                "sport": int(h["sport"]),
                "dport": int(h["dport"]),
                "proto": int(h["proto"]),
                "expected": int(expected[i]),
                "got": int(got[i]),
            }
        )
    return out


def run(
    rules_path: str | Path,
    trace_path: str | Path | None = None,
    verify: bool = False,
    classifiers: Iterable[str] | None = None,
    trace_cache_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Benchmark the classifiers on one rule file and trace (generated when None)."""
    rules_path = Path(rules_path)
    ruleset = classbench.load_ruleset(rules_path)  # ClassBenchError on a bad file
    if len(ruleset.rules) == 0:
        raise BenchError(f"{rules_path}: no rules")
    names = list(classifiers) if classifiers is not None else available_backends()
    _load_plugins()
    unknown = [n for n in names if n not in BACKENDS]
    if unknown:
        raise BenchError(f"unknown classifier(s) {unknown}; known: {sorted(BACKENDS)}")
    with tempfile.TemporaryDirectory(prefix="nicfw-bench-") as tmp:
        generated = trace_path is None
        if trace_path is None:
            trace_path = cached_trace(rules_path, Path(trace_cache_dir or tmp))
        trace_path = Path(trace_path)
        trace = classbench.read_trace(trace_path)
        if len(trace.headers) == 0:
            raise BenchError(f"{trace_path}: no headers")
        report: dict[str, Any] = {
            "rules": str(rules_path),
            "n_rules": len(ruleset.rules),
            "trace": str(trace_path) if not generated or trace_cache_dir else "(generated)",
            "n_headers": len(trace.headers),
            "machine": machine(),
            "classifiers": {},
        }
        reference = None
        if verify:
            reference = first_match(ruleset.rules, trace.headers)
            bad = np.nonzero(reference != trace.expected)[0]
            report["trace_mismatches"] = len(bad)
            report["trace_mismatch_examples"] = _examples(
                trace.headers, reference, trace.expected, bad
            )
        for name in names:
            try:
                fig = dict(BACKENDS[name](rules_path, trace_path))
            except Exception as exc:  # one failing backend must not hide the others
                report["classifiers"][name] = {"error": f"{type(exc).__name__}: {exc}"}
                continue
            results = fig.pop("results", None)
            if verify and reference is not None:
                if results is not None:
                    bad = np.nonzero(np.asarray(results) != reference)[0]
                    fig["mismatches"] = len(bad)
                    fig["mismatch_examples"] = _examples(trace.headers, reference, results, bad)
                    fig["verified_against"] = "reference"
                elif "mismatches" in fig:
                    # Checked by the backend against the trace column, itself checked above.
                    fig["verified_against"] = (
                        "reference" if report["trace_mismatches"] == 0 else "trace column"
                    )
                else:
                    fig["verified_against"] = None
            report["classifiers"][name] = fig
    report["ratios"] = ratios(report["classifiers"])
    return report


def ratios(figures: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Mpps ratio of the numba classifier to rte_acl (and to every other backend)."""
    out: dict[str, float] = {}
    ours = figures.get(NUMBA_NAME, {}).get("mpps")
    if not ours:
        return out
    for name, fig in figures.items():
        theirs = fig.get("mpps")
        if name != NUMBA_NAME and theirs:
            out[f"{NUMBA_NAME}/{name}"] = ours / theirs
    return out


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        if unit == "k":
            return f"{value / 1e3:,.0f}k" if value >= 1e4 else f"{value:.3g}"
        return f"{value:.3g}" if value < 100 else f"{value:,.0f}"
    if unit == "MB" and isinstance(value, int):
        return f"{value / 2**20:.2f}"
    return str(value)


COLUMNS = (
    ("classifier", None, ""),
    ("Mpps", "mpps", ""),
    ("best", "mpps_best", ""),
    ("build s", "build_s", ""),
    ("MB", "memory_bytes", "MB"),
    ("ins/s", "insert_rate", "k"),
    ("del/s", "delete_rate", "k"),
    ("batch ins/s", "batch_insert_rate", "k"),
    ("rebuild s", "rebuild_s", ""),
    ("mismatch", "mismatches", ""),
)


def format_report(report: dict[str, Any]) -> str:
    """A fixed-width table of one run() report."""
    head = (
        f"{Path(report['rules']).name}: {report['n_rules']} rules, "
        f"{report['n_headers']} headers ({report['trace']})"
    )
    rows = [[c[0] for c in COLUMNS]]
    for name, fig in report["classifiers"].items():
        if "error" in fig:
            rows.append([name, f"error: {fig['error']}"] + [""] * (len(COLUMNS) - 2))
            continue
        rows.append([name] + [_fmt(fig.get(key), unit) for _, key, unit in COLUMNS[1:]])
    widths = [max(len(r[i]) for r in rows if i < len(r)) for i in range(len(COLUMNS))]
    lines = [head]
    for r in rows:
        lines.append(
            "  ".join(
                cell.rjust(widths[i]) if i else cell.ljust(widths[i]) for i, cell in enumerate(r)
            )
        )
    for key, value in report.get("ratios", {}).items():
        lines.append(f"ratio {key}: {value:.2f}")
    if "trace_mismatches" in report:
        lines.append(f"trace rule column vs reference: {report['trace_mismatches']} mismatches")
    m = report["machine"]
    lines.append(f"machine: {m['cpu']}, {m['cpus']} cpus, single thread, numba {m['numba']}")
    return "\n".join(lines)

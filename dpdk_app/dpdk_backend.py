"""Benchmark backend: rte_acl figures from the fast path's bench mode.

`run_bench(rules_path, trace_path)` runs `nicfw-fastpath ... -- --bench` on one core and
returns its JSON line as a dict: `build_s`, `memory_bytes`, `mpps` (median pass of the best
classify method) and `mpps_best`, `mpps_by_alg`, `mismatches` against the trace's expected
column, and the cost of one rule change: rte_acl has no incremental update, so `rebuild_s`,
`insert_rate` and `delete_rate` are full rebuilds. `backend` is the `(rules, trace) -> dict`
callable of dpdk_app/classify_bench.py (registered as "rte_acl" when that module imports us).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from dpdk_app.fastpath import FastPathError, eal_args, find_binary

NAME = "dpdk"


def available() -> bool:
    """Whether the fast path binary is built."""
    return find_binary() is not None


def cpu_model() -> str:
    """The CPU model name (for the machine line of benchmark tables)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def bench_command(
    rules_path: str | Path,
    trace_path: str | Path,
    *,
    binary: Path,
    repeat: int = 3,
    alg: str = "all",
    burst: int = 64,
    ct: bool = False,
    resim: int = 0,
    verify_linear: bool = False,
    min_time: float = 0.3,
    memory_mb: int = 2048,
) -> list[str]:
    """The command line of one bench-mode run."""
    # AVX-512 classify methods are only offered when the EAL allows 512-bit SIMD.
    eal = eal_args(lcores="0", memory_mb=memory_mb, extra=["--force-max-simd-bitwidth=512"])
    cmd = [str(binary), *eal, "--", "--bench", "--rules", str(rules_path)]
    cmd += ["--trace", str(trace_path), "--repeat", str(repeat), "--alg", alg]
    cmd += ["--burst", str(burst), "--min-time", str(min_time)]
    if ct:
        cmd.append("--ct")
    if resim:
        cmd += ["--resim", str(resim)]
    if verify_linear:
        cmd.append("--verify-linear")
    return cmd


def run_bench(
    rules_path: str | Path,
    trace_path: str | Path,
    *,
    repeat: int = 3,
    alg: str = "all",
    burst: int = 64,
    ct: bool = False,
    resim: int = 0,
    verify_linear: bool = False,
    min_time: float = 0.3,
    binary: str | Path | None = None,
    timeout: float = 900.0,
) -> dict[str, Any]:
    """Classify a ClassBench trace with rte_acl; the figures as a dict (see module doc)."""
    path = Path(binary) if binary else find_binary()
    if path is None:
        raise FastPathError("nicfw-fastpath is not built (make dpdk)")
    for p in (rules_path, trace_path):
        if not os.path.isfile(p):
            raise FastPathError(f"{p}: no such file")
    cmd = bench_command(
        rules_path,
        trace_path,
        binary=path,
        repeat=repeat,
        alg=alg,
        burst=burst,
        ct=ct,
        resim=resim,
        verify_linear=verify_linear,
        min_time=min_time,
    )
    t0 = time.monotonic()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise FastPathError(f"bench run exceeded {timeout} s") from exc
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise FastPathError(
            f"bench run failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}"
        )
    figures: dict[str, Any] = json.loads(lines[-1])
    figures["wall_s"] = round(time.monotonic() - t0, 3)
    figures["machine"] = f"{cpu_model()}, {os.cpu_count()} CPUs"
    figures["rules_path"] = str(rules_path)
    figures["trace_path"] = str(trace_path)
    return figures


def backend(rules_path: str | Path, trace_path: str | Path) -> dict[str, Any]:
    """The benchmark-backend callable: default options of run_bench."""
    return run_bench(rules_path, trace_path)


def _register() -> None:
    """Offer the backend to the classification benchmark when that module has loaded us."""
    bench = sys.modules.get("dpdk_app.classify_bench")
    if bench is not None and available():
        bench.register_backend(getattr(bench, "ACL_NAME", "rte_acl"), backend)


_register()

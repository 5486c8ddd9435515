"""Run every benchmark in turn: `python -m bench [--json]`.

Each bench/bench_*.py module's `main(argv)` gets the same arguments, so pass only options every
benchmark takes (--json). A benchmark that fails is reported and the others still run.
"""

from __future__ import annotations

import importlib
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path


def main(argv: Sequence[str] | None = None) -> int:
    """Run bench_*.py in name order; non-zero if any of them failed."""
    args = list(sys.argv[1:] if argv is None else argv)
    failed = []
    for path in sorted(Path(__file__).resolve().parent.glob("bench_*.py")):
        print(f"== {path.stem}", file=sys.stderr, flush=True)
        started = time.perf_counter()
        try:
            code = importlib.import_module(f"bench.{path.stem}").main(args)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except Exception:
            traceback.print_exc()
            code = 1
        print(f"== {path.stem}: {time.perf_counter() - started:.1f} s", file=sys.stderr)
        if code:
            failed.append(path.stem)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

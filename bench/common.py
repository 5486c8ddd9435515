"""What every benchmark shares: the machine line of its heading and its figure table.

Imported as `bench.common` (python -m bench, tests) or as `common` when a benchmark runs as a
script (bench/ itself is then on sys.path).
"""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping, Sequence
from typing import Any

# (key in the results, label, unit, format of the value): one line of a figure table. A label
# may name other results in braces ("last of {acl_entries} entries").
Row = tuple[str, str, str, str]


def machine(load: bool = True) -> str:
    """CPU model, cores, Python and (with `load`) the load average at the start."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    text = f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}"
    if load:
        # other work on the machine skews every figure of a benchmark
        text += f", load {os.getloadavg()[0]:.2f}"
    return text


def table(
    rows: Sequence[tuple[str, str, str]], value_width: int = 12, header: bool = True
) -> list[str]:
    """(label, value, unit) rows as aligned lines, under a `figure value unit` header."""
    width = max(len(label) for label, _, _ in rows)
    lines = [f"{'figure':<{width}}  {'value':>{value_width}}  unit"] if header else []
    lines += [f"{label:<{width}}  {value:>{value_width}}  {unit}" for label, value, unit in rows]
    return lines


def render_rows(
    head: str,
    rows: Sequence[Row],
    results: Mapping[str, Any],
    value_width: int = 12,
    extra: Sequence[tuple[str, str, str]] = (),
) -> str:
    """`head`, then a table of `rows` formatted from `results`, then the `extra` rows as given."""
    formatted = [
        (label.format(**results), fmt.format(results[key]), unit) for key, label, unit, fmt in rows
    ]
    return "\n".join([head, *table([*formatted, *extra], value_width)])

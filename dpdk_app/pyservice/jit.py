"""`kernel`: numba.njit cached on disk, stamped with the sources of this package too.

dpdk_app/classifier/jit.py stamps its cache with the classifier's sources; kernels here also
embed this package's code, so their stamp adds it: an edit here recompiles them, never loads a
stale kernel. Without numba's (non-public) cache classes kernels run uncached.
"""

from __future__ import annotations

import functools
from pathlib import Path

from dpdk_app.classifier.jit import kernel_decorator, stacked_digest

_PACKAGE = Path(__file__).resolve().parent


@functools.cache
def source_digest() -> str:
    """SHA-256 over the classifier's digest and every module of this package."""
    return stacked_digest(_PACKAGE)


kernel = kernel_decorator(source_digest)

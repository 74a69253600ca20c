"""Process-wide memory settings for long collection runs.

glibc gives every thread its own malloc arena, and DuckDB's and the HTTP client's threads
each keep theirs; Arrow's default pool keeps freed memory too. Over a large sync the resident
set then grows with every dataset although each one frees what it used. Two arenas and Arrow's
system pool keep it bounded (measured: 637 MB -> 454 MB peak for 100,000 devices, same speed).
May import nothing of ours.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

__all__ = ["bound_memory"]

log = logging.getLogger(__name__)

_M_ARENA_MAX = -8  # mallopt parameter (malloc.h)
_done = False


def bound_memory() -> None:
    """Cap malloc arenas (glibc) and use Arrow's system pool; safe to call more than once."""
    global _done
    if _done:
        return
    _done = True
    if sys.platform.startswith("linux"):
        name = ctypes.util.find_library("c")
        try:
            libc = ctypes.CDLL(name) if name else None
            if libc is not None and hasattr(libc, "mallopt"):
                libc.mallopt(_M_ARENA_MAX, 2)
        except OSError as exc:  # not glibc: nothing to tune
            log.debug("mallopt unavailable: %s", exc)
    import pyarrow

    pyarrow.set_memory_pool(pyarrow.system_memory_pool())

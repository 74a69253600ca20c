"""Process-wide memory settings for long collection runs, and pandas kept out of a sync.

glibc gives every thread its own malloc arena, and DuckDB's and the HTTP client's threads
each keep theirs; Arrow's default pool keeps freed memory too. Over a large sync the resident
set then grows with every dataset although each one frees what it used. Two arenas and Arrow's
system pool keep it bounded (measured: 637 MB -> 454 MB peak for 100,000 devices, same speed).

pyarrow imports pandas, when it is installed (the ``notebook`` extra), at its first conversion
of Python values, only to tell whether they are pandas objects: a sync never hands it any, and
the import cost every sync memory and time (``pandas_unseen``).
May import nothing of ours.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib.abc
import logging
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib.machinery import ModuleSpec
from types import ModuleType

__all__ = ["bound_memory", "pandas_unseen"]

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


class _PandasUnseen(importlib.abc.MetaPathFinder):
    """Refuses to import pandas: pyarrow then takes it as not installed."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname == "pandas" or fullname.startswith("pandas."):
            raise ImportError("pandas is kept out of a sync (endpoint_forensics.runtime)")
        return None


_unseen_lock = threading.Lock()
_unseen_depth = 0
_UNSEEN = _PandasUnseen()


@contextmanager
def pandas_unseen() -> Iterator[None]:
    """While a sync runs, pandas cannot be imported (measured, a 2,000-device vulnerability
    sync: peak RSS 396 -> 355-371 MB, the dataset 5.5 -> 2.8-3.0 s). Afterwards it can again:
    pyarrow then imports it when asked for pandas (``to_pandas``). A process that imported
    pandas already keeps it."""
    global _unseen_depth
    with _unseen_lock:
        _unseen_depth += 1
        if _unseen_depth == 1 and "pandas" not in sys.modules:
            sys.meta_path.insert(0, _UNSEEN)
    try:
        yield
    finally:
        with _unseen_lock:
            _unseen_depth -= 1
            if _unseen_depth == 0 and _UNSEEN in sys.meta_path:
                sys.meta_path.remove(_UNSEEN)

"""Several sources collected at once, taking turns at the sinks.

Owns how one run overlaps its sources (a Defender tenant, IoT sensors and consoles, the
threat feeds): each source runs in its own thread, and a source holds ``SinkTurn`` for all it
does with the sinks (a unit is one transaction on the workspace's one connection, and the
checkpoints it commits are read back by the next unit) but lets go of it while it waits on its
remote service for the next unit (an export being written, a hunting query, a sensor's page).
So one source's wait is another's turn at the sinks, and every sink still sees one caller at a
time, in units that never interleave.

Imports only the standard library.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

__all__ = ["SOURCES_AT_ONCE", "RunStopped", "SinkTurn", "run_each"]

#: Sources collected at once. More only adds waiting for the turn: the sinks' work, which the
#: turn serialises, is most of a source's time once its waits overlap.
SOURCES_AT_ONCE = 4

T = TypeVar("T")


class RunStopped(BaseException):
    """The run was interrupted in another thread: this source stops before its next unit.

    A ``BaseException``, as ``KeyboardInterrupt`` is, so that it unwinds every handler that
    records a dataset's failure: the unit it interrupts is rolled back, nothing is recorded.
    """


class SinkTurn:
    """The turn at the sinks, and the run's stop signal.

    Held by a source for everything it does with the sinks; released only around a wait on
    its remote service (``waiting``).
    """

    def __init__(self, stop: threading.Event | None = None) -> None:
        self._lock = threading.Lock()
        # Set by ``stop``, or by whoever gave it: a worker's time budget running out.
        self._stop = stop or threading.Event()
        # Whether this thread holds the turn: a Ctrl-C can interrupt taking it back, and a
        # lock released by a thread that does not hold it would be another source's.
        self._held = threading.local()

    def __enter__(self) -> SinkTurn:
        self._take()
        return self

    def __exit__(self, *exc: object) -> None:
        self._give()

    @contextmanager
    def waiting(self) -> Iterator[None]:
        """Let the other sources have the sinks while this one waits on its service; take the
        turn back afterwards, or stop (``RunStopped``) when the run was interrupted."""
        self._give()
        try:
            yield
        finally:
            self._take()
        self.check()

    def _take(self) -> None:
        self._lock.acquire()
        self._held.value = True

    def _give(self) -> None:
        if getattr(self._held, "value", False):
            self._held.value = False
            self._lock.release()

    def check(self) -> None:
        """Raise ``RunStopped`` once the run was interrupted."""
        if self._stop.is_set():
            raise RunStopped

    def stop(self) -> None:
        self._stop.set()


def run_each(items: Sequence[T], work: Callable[[T], None], turn: SinkTurn) -> None:
    """``work(item)`` for every item, up to ``SOURCES_AT_ONCE`` at a time: the first in this
    thread (a Ctrl-C or SIGTERM interrupts it as before), the others in worker threads.

    When this thread is interrupted, or a worker raises, the others stop before their next
    unit and are waited for; then the first exception is raised again.
    """
    if len(items) <= 1 or SOURCES_AT_ONCE <= 1:
        for item in items:
            work(item)
        return
    with ThreadPoolExecutor(
        max_workers=min(len(items), SOURCES_AT_ONCE) - 1, thread_name_prefix="epf-source"
    ) as pool:
        others: list[Future[None]] = [pool.submit(work, item) for item in items[1:]]
        try:
            work(items[0])
            for future in others:
                future.result()
        except BaseException:
            turn.stop()
            for future in others:
                future.cancel()
            raise

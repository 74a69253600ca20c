"""Every sink's share of one step at once: a batch written, a unit committed, a snapshot
finished.

Owns ``SinkFanout``. The sinks are independent (each stores its own checkpoint with each unit,
and a unit is delivered again only to the sinks that lack it), and most of their work runs in
DuckDB and zlib, which release the GIL: the workspace's history comparison and commit run beside
Sentinel's comparison and encoding, each on its own core. The first sink runs in the calling
thread and the others in worker threads; a step returns only once every sink is done with it, so
no sink is ever used by two threads at once, and the first failure in sink order is raised.
May import nothing of the product.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from typing import TypeVar

__all__ = ["SinkFanout"]

T = TypeVar("T")
W = TypeVar("W")


class SinkFanout:
    """Runs a step for each sink at once; ``close`` ends its worker threads."""

    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None

    def each(self, items: Sequence[T], call: Callable[[T], object]) -> None:
        """``call(item)`` for every item, at once; raises the first failure once all ended."""
        if len(items) < 2:
            for item in items:
                call(item)
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(thread_name_prefix="epf-sink")
        futures = [self._pool.submit(call, item) for item in items[1:]]
        failures: list[BaseException] = []
        try:
            call(items[0])
        except BaseException as exc:
            failures.append(exc)
        for future in futures:
            try:
                future.result()
            except BaseException as exc:
                failures.append(exc)
        if failures:
            raise failures[0]

    @contextmanager
    def open_all(self, managers: Sequence[AbstractContextManager[W]]) -> Iterator[list[W]]:
        """Enter each sink's unit in turn (a cheap begin) and leave them all at once: each
        commits, or rolls back with the failure that ended the block."""
        entered: list[tuple[AbstractContextManager[W], W]] = []
        try:
            for manager in managers:
                entered.append((manager, manager.__enter__()))
            yield [writer for _, writer in entered]
        except BaseException as exc:
            failed = self._leave(entered, exc)
            if failed:  # a rollback that failed too: raised as ExitStack would, from the cause
                raise failed[0] from exc
            raise
        self.each(entered, lambda pair: pair[0].__exit__(None, None, None))

    def _leave(
        self, entered: Sequence[tuple[AbstractContextManager[W], W]], cause: BaseException
    ) -> list[BaseException]:
        """Leave every entered unit with ``cause`` (each rolls back); what else failed."""
        failed: list[BaseException] = []

        def leave(pair: tuple[AbstractContextManager[W], W]) -> None:
            try:
                pair[0].__exit__(type(cause), cause, cause.__traceback__)
            except BaseException as other:
                if other is not cause:
                    failed.append(other)

        self.each(entered, leave)
        return failed

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

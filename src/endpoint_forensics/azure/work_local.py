"""`epf sync --workers N`: the fanned-out collection on this machine's processes, no queue.

The same units, leases, budgets and state layout as on Azure Functions (``work_queue``), with
the state folder as the store (``<state dir>/units/...``, ``leases/...``): each due
(source, dataset) runs in one of N worker processes; a unit that waits for a budget, or that
continues, is run again when it asks to be; one that fails is tried again up to
``MAX_DEQUEUE_COUNT`` times, then recorded as poisoned. Processes rather than threads: a
unit's decoding and encoding hold the interpreter, and N tenants want N cores.
May import ``azure.work_queue``, ``pipeline``, ``state``, ``config`` and ``errors``.
"""

from __future__ import annotations

import heapq
import multiprocessing
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from datetime import UTC, datetime
from typing import Any

from endpoint_forensics.azure.work_queue import (
    MAX_DEQUEUE_COUNT,
    UnitFailed,
    WorkDone,
    fan_out_settings,
    plan_work,
    work_message,
)
from endpoint_forensics.config import Settings
from endpoint_forensics.state import LocalStateStore

__all__ = ["run_locally"]


def run_locally(
    settings: Settings, workers: int, *, now: datetime | None = None
) -> tuple[list[WorkDone], list[str]]:
    """Run every due unit of ``settings`` in ``workers`` processes; returns what each run
    did and the units that failed every try."""
    fan_out_settings(settings)
    now = now or datetime.now(UTC)
    store = LocalStateStore(settings.state.dir)
    ready: list[tuple[float, int, str, int]] = []  # (when, order, message, attempt)
    order = 0

    def send(text: str, visibility_timeout: float = 0, attempt: int = 1) -> None:
        nonlocal order
        order += 1
        heapq.heappush(ready, (time.monotonic() + visibility_timeout, order, text, attempt))

    plan_work(settings, send, store, now=now)
    done: list[WorkDone] = []
    poisoned: list[str] = []
    running: dict[Future[tuple[WorkDone, list[tuple[str, float]]]], tuple[str, int]] = {}
    context = multiprocessing.get_context("spawn")  # no inherited threads or locks
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        while ready or running:
            while ready and len(running) < workers and ready[0][0] <= time.monotonic():
                _, _, text, attempt = heapq.heappop(ready)
                future = pool.submit(_unit, settings, text, attempt, now)
                running[future] = (text, attempt)
            if not running:
                time.sleep(max(0.0, min(ready[0][0] - time.monotonic(), 1.0)))
                continue
            finished, _ = wait(running, timeout=1.0, return_when=FIRST_COMPLETED)
            for future in finished:
                text, attempt = running.pop(future)
                try:
                    result, sent = future.result()
                except UnitFailed:
                    if attempt >= MAX_DEQUEUE_COUNT:
                        poisoned.append(text)
                    else:
                        send(text, attempt=attempt + 1)
                    continue
                done.append(result)
                for again, delay in sent:
                    send(again, delay)
    return done, poisoned


def _unit(
    settings: Settings, text: str, attempt: int, now: datetime
) -> tuple[WorkDone, list[tuple[str, float]]]:
    """One unit in a worker process; what it asked to be sent comes back with its result."""
    sent: list[tuple[str, float]] = []

    def send(message: str, visibility_timeout: Any = 0) -> None:
        sent.append((message, float(visibility_timeout or 0)))

    store = LocalStateStore(settings.state.dir)
    return work_message(text, settings, store, send, dequeue_count=attempt, now=now), sent

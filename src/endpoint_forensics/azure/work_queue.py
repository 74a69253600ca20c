"""Collection fanned out over a Storage queue: a planner enqueues each unit of work that is
due, and any number of workers (queue-triggered functions, on as many instances as the scale
controller gives) run one unit each.

Owns ``plan_work`` (the timer's function) and ``work_message`` (the queue trigger's). A worker
holds the unit's lease and the leases of the endpoint budgets it spends (``state``), pulls the
unit's state, runs it (``pipeline.work.run_item``) within its time budget, pushes the state
back, checkpoints last, and gives the leases up:
- a unit that another worker holds is that worker's: the message is dropped;
- a unit whose endpoint budget another unit of the same source spends waits: the message is
  sent again, visible after ``BUDGET_WAIT_SECONDS``;
- a unit that reaches its time budget stops before its next unit of data and enqueues its
  continuation, which resumes from the checkpoint;
- a unit that fails raises ``UnitFailed`` for the host to retry; at its last attempt (the
  host's ``maxDequeueCount``) it first writes an ``EPF_Runs_CL`` row saying the message goes
  to the poison queue.
Imports no Functions types: the app (deploy/functions/function_app.py) passes plain values.
May import ``pipeline``, ``state``, ``sinks``, ``http``, ``config`` and ``errors``.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from endpoint_forensics.config import Settings
from endpoint_forensics.errors import ConfigError, EpfError
from endpoint_forensics.http.ratelimit import RateBudget
from endpoint_forensics.pipeline.checkpoints import DatasetCheckpoint
from endpoint_forensics.pipeline.runlog import DatasetOutcome, RunSummary, record_runs
from endpoint_forensics.pipeline.turns import RunStopped
from endpoint_forensics.pipeline.work import (
    BadWorkMessage,
    WorkItem,
    budget_limits,
    narrowed,
    source_of,
    work_items,
)
from endpoint_forensics.state import StateStore, held_budgets

__all__ = [
    "BUDGET_WAIT_SECONDS",
    "MAX_DEQUEUE_COUNT",
    "UnitFailed",
    "WorkDone",
    "drain_queue",
    "fan_out_settings",
    "plan_work",
    "run_item",
    "unit_prefix",
    "work_message",
]

log = logging.getLogger(__name__)

#: The Functions host's default: a message that failed this many times goes to the poison
#: queue (host.json ``extensions.queues.maxDequeueCount``).
MAX_DEQUEUE_COUNT = 5
#: How long a unit waits for an endpoint budget another unit of its source holds.
BUDGET_WAIT_SECONDS = 30


class UnitFailed(EpfError):
    """A unit's dataset failed: the host retries the message, then poisons it."""


@dataclass(frozen=True)
class WorkDone:
    """What a worker did with one message."""

    item: WorkItem | None
    outcome: str  # ran, failed, continued, held elsewhere, waiting for a budget, bad message
    summary: RunSummary | None = None


def unit_prefix(item: WorkItem) -> str:
    """Where a unit's state lives in the store."""
    return f"units/{item.key}"


def run_item(
    settings: Settings,
    item: WorkItem,
    state_dir: Path,
    *,
    budgets: Mapping[str, RateBudget] | None = None,
    deadline: threading.Event | None = None,
    now: datetime | None = None,
    **run_options: Any,
) -> RunSummary:
    """Collect ``item`` into the configured sinks with its state in ``state_dir``: the ordinary
    run (resumable, checkpoints after delivery), narrowed to one source and dataset.

    ``budgets``: the source's endpoint budgets (held across workers: ``state.held_budgets``).
    ``deadline``: set when the unit must stop; the run stops before its next unit of data and
    raises ``RunStopped`` (what was delivered is checkpointed, the rest continues later).
    """
    from endpoint_forensics.pipeline.run import run_sync
    from endpoint_forensics.sinks import close_sinks, open_sinks

    narrow = narrowed(settings, item, state_dir)
    sinks = open_sinks(narrow)
    try:
        return run_sync(narrow, sinks, now=now, budgets=budgets, stop=deadline, **run_options)
    finally:
        close_sinks(sinks)


def fan_out_settings(settings: Settings) -> None:
    """Refuse, naming the key, what a fanned-out collection cannot do."""
    if settings.store.enabled:
        raise ConfigError(
            "store.enabled: the fanned-out collection delivers to Sentinel only (workers on"
            " several instances cannot share one workspace file); set it to false"
        )
    if settings.sentinel is not None and settings.sentinel.outbox_dir is not None:
        raise ConfigError(
            "sentinel.outbox_dir: a fanned-out worker keeps each unit's outbox with its state;"
            " leave it unset"
        )


def plan_work(
    settings: Settings, send: Any, store: StateStore, *, now: datetime | None = None
) -> list[WorkItem]:
    """Enqueue every unit of ``settings`` that is due at ``now`` (``send``: a queue's
    ``send_message``); returns them. A unit with a snapshot under way is due (it resumes)."""
    fan_out_settings(settings)
    now = now or datetime.now(UTC)
    items = work_items(settings)
    due = [item for item in items if _due(settings, store, item, now)]
    for item in due:
        send(item.message())
    log.info("epf planner: %d of %d units due", len(due), len(items))
    return due


def _due(settings: Settings, store: StateStore, item: WorkItem, now: datetime) -> bool:
    from endpoint_forensics.sinks import sentinel_checkpoint_folder

    source = source_of(settings, item)
    # The unit's checkpoint file, where the Sentinel sink keeps it in the unit's state.
    folder = sentinel_checkpoint_folder(settings).relative_to(settings.state.dir)
    stored = store.read(
        f"{unit_prefix(item)}/{folder.as_posix()}/{source.kind}s/{source.name}.json"
    )
    if stored is None:
        return True
    try:
        state = orjson.loads(stored)["datasets"].get(item.dataset, {})
        checkpoint = DatasetCheckpoint.load(state, lambda: None)
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
        return True  # the worker says what is wrong with it
    return checkpoint.is_due(now, source.config.interval_hours_for(item.dataset))


def work_message(
    text: str | bytes,
    settings: Settings,
    store: StateStore,
    send: Any,
    *,
    dequeue_count: int = 1,
    max_dequeue_count: int = MAX_DEQUEUE_COUNT,
    time_budget_seconds: float = 540.0,
    now: datetime | None = None,
    **run_options: Any,
) -> WorkDone:
    """Run the unit a queue message names (``send(text, visibility_timeout=...)``: the same
    queue's ``send_message``, for continuations and units waiting for a budget).

    Raises:
        UnitFailed: the unit's dataset failed (the host retries the message).
    """
    fan_out_settings(settings)
    try:
        item = WorkItem.from_message(text, settings)
    except BadWorkMessage as exc:
        log.error("epf worker: message dropped: %s", exc)
        return WorkDone(None, "bad message")
    lease = store.take(unit_prefix(item))
    if lease is None:
        log.info("epf worker: %s is being collected by another worker", item.key)
        return WorkDone(item, "held elsewhere")
    try:
        with held_budgets(store, f"{item.kind}s/{item.source}", budget_limits(item)) as budgets:
            if budgets is None:
                send(item.message(), visibility_timeout=BUDGET_WAIT_SECONDS)
                log.info("epf worker: %s waits for its endpoint budget", item.key)
                return WorkDone(item, "waiting for a budget")
            return _run(item, settings, store, send, lease, budgets, time_budget_seconds, now,
                        dequeue_count, max_dequeue_count, run_options)  # fmt: skip
    finally:
        lease.release()


def _run(
    item: WorkItem,
    settings: Settings,
    store: StateStore,
    send: Any,
    lease: Any,
    budgets: Any,
    time_budget_seconds: float,
    now: datetime | None,
    dequeue_count: int,
    max_dequeue_count: int,
    run_options: dict[str, Any],
) -> WorkDone:
    work = Path(tempfile.mkdtemp(prefix="epf-unit-"))
    deadline = threading.Event()
    timer = threading.Timer(time_budget_seconds, deadline.set)
    timer.daemon = True
    try:
        store.pull(unit_prefix(item), work)
        timer.start()
        try:
            summary = run_item(
                settings, item, work, budgets=budgets, deadline=deadline, now=now, **run_options
            )
        except RunStopped:
            # Out of time: what was delivered is checkpointed; the rest is the continuation's.
            store.push(unit_prefix(item), work, under=lease)
            send(item.continuation().message(), visibility_timeout=0)
            log.info("epf worker: %s reached its time budget; continued", item.key)
            return WorkDone(item, "continued")
        failed = [o for o in summary.outcomes if o.outcome == "Failed"]
        errors = "; ".join(summary.errors()) or "failed"
        if failed and dequeue_count >= max_dequeue_count:
            # With the unit's state, so a row Sentinel cannot take now waits in its outbox.
            _record_poisoned(settings, item, work, errors, dequeue_count)
        store.push(unit_prefix(item), work, under=lease)
    finally:
        timer.cancel()
        shutil.rmtree(work, ignore_errors=True)
    if not failed:
        return WorkDone(item, "ran", summary)
    raise UnitFailed(f"{item.key}: {errors} (attempt {dequeue_count} of {max_dequeue_count})")


def _record_poisoned(
    settings: Settings, item: WorkItem, work: Path, errors: str, attempts: int
) -> None:
    """The unit's ``EPF_Runs_CL`` row saying its message goes to the poison queue."""
    from endpoint_forensics.sinks import close_sinks, open_sinks

    source = source_of(settings, item)
    spec = next(d for d in source.datasets if d.name == item.dataset)
    summary = RunSummary(run_id=str(uuid.uuid4()), time_generated=datetime.now(UTC))
    summary.outcomes.append(
        DatasetOutcome(
            source.name,
            source.defender_tenant_id,
            item.dataset,
            spec.table.name,
            kind=source.kind,
            outcome="Failed",
            end=datetime.now(UTC),
            error=errors,
            reason=(
                f"failed {attempts} times: its message goes to the poison queue; the next"
                " planner tick enqueues the unit again"
            ),
        )
    )
    sinks = open_sinks(narrowed(settings, item, work))
    try:
        record_runs(summary, sinks)
        for sink in sinks:
            sink.flush()
    finally:
        close_sinks(sinks)


def drain_queue(
    queue: Any,
    work: Any,
    *,
    max_dequeue_count: int = MAX_DEQUEUE_COUNT,
    visibility_seconds: int = 600,
    poison: Any = None,
) -> list[WorkDone]:
    """What the Functions host does with a queue, for workers outside it (the benchmark, a
    machine of one's own): each visible message to ``work(text, dequeue_count)``, deleted
    when it returns; one that raises ``UnitFailed`` is visible again at once, and at its
    last attempt goes to ``poison`` (``poison.send_message``: the host's ``<queue>-poison``)
    instead. Returns once the queue holds no message at all: none visible, none another
    worker is running, none waiting to become visible (a unit waiting for its budget)."""
    done: list[WorkDone] = []
    while True:
        messages = list(
            queue.receive_messages(max_messages=1, visibility_timeout=visibility_seconds)
        )
        if not messages:
            if queue.get_queue_properties().approximate_message_count == 0:
                return done
            time.sleep(0.5)
            continue
        for message in messages:
            try:
                done.append(work(message.content, message.dequeue_count))
            except UnitFailed as exc:
                if message.dequeue_count >= max_dequeue_count:
                    if poison is not None:
                        poison.send_message(message.content)
                    queue.delete_message(message)
                    log.warning(
                        "epf worker: poisoned after %d tries: %s", message.dequeue_count, exc
                    )
                else:
                    queue.update_message(message, visibility_timeout=0)
                continue
            queue.delete_message(message)

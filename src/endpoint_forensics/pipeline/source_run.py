"""One source's part of a collection run: its due datasets, each into every sink that does
not hold it yet, resumably.

Owns, per dataset: whether a snapshot is due (baselines have an interval), resuming an unfinished
snapshot where it stopped, the stamps (``SnapshotTime`` and ``TimeGenerated``, one snapshot time
in both; ``RunId``, ``DefenderTenantId``), the delivery of each unit to every sink that does not
have it yet with its checkpoint (a cursor moves only once its rows are delivered), the removal of
a partial snapshot that cannot resume, and the dataset's outcome (its ``EPF_Runs_CL`` row).
The first dataset of a source runs alone; the others at once (``turns.run_each``).
May import the other ``pipeline`` modules, ``sources``, ``transforms``, ``contracts``,
``http``, ``config``, ``tables`` and ``errors``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from endpoint_forensics.config import Settings
from endpoint_forensics.contracts import (
    HistoryPlan,
    SavedCheckpoint,
    Sink,
    SnapshotChanged,
    Unit,
)
from endpoint_forensics.errors import EpfError, OutboxFull, local_failure, out_of_disk
from endpoint_forensics.http.client import ApiClient
from endpoint_forensics.http.ratelimit import DOCUMENTED_LIMITS, IOT_APPLIANCE_LIMIT, RateBudget
from endpoint_forensics.pipeline.checkpoints import (
    CheckpointGroup,
    DatasetCheckpoint,
    Quarantine,
    Snapshot,
    load_checkpoints,
)
from endpoint_forensics.pipeline.plan import Source, fetch_function
from endpoint_forensics.pipeline.runlog import DatasetOutcome, Progress, RunSummary
from endpoint_forensics.pipeline.turns import SinkTurn, run_each
from endpoint_forensics.pipeline.units import UnitWriter
from endpoint_forensics.sources import ConsoleContext, FeedContext, FetchContext, SensorContext
from endpoint_forensics.tables.datasets import DatasetSpec
from endpoint_forensics.transforms import TransformStage
from endpoint_forensics.transforms.compat import COMPAT

__all__ = ["SourceRun"]

log = logging.getLogger(__name__)


class SourceRun:
    """One source's due datasets, each into every sink that does not hold it yet."""

    def __init__(
        self,
        source: Source,
        client: ApiClient,
        settings: Settings,
        sinks: list[Sink],
        summary: RunSummary,
        *,
        quarantine: Quarantine,
        turn: SinkTurn,  # the run's, shared by its sources
        progress: Progress | None,
        outcomes: list[DatasetOutcome],  # this source's, in the order of its datasets
        budgets: Mapping[str, RateBudget] | None = None,  # held across workers, by name
    ) -> None:
        self.source = source
        self.client = client
        self.sinks = sinks
        self.summary = summary
        self.quarantine, self.turn, self.progress = quarantine, turn, progress
        self.history = settings.history
        # Each sink's own checkpoints for this source (what that sink holds).
        self.scope = f"{source.kind}s/{source.name}"
        legacy = settings.state.dir / f"{source.kind}s" / f"{source.name}.json"
        self.checkpoints = {
            sink: load_checkpoints(
                sink, scope=self.scope, unit_scope=source.unit_scope, legacy_file=legacy
            )
            for sink in sinks
        }
        # One budget per endpoint (per appliance for IoT), shared by everything in the run.
        given = budgets or {}
        self.budgets = {
            name: given.get(name) or RateBudget(limit) for name, limit in DOCUMENTED_LIMITS.items()
        }
        self.appliance_budget = given.get(IOT_APPLIANCE_LIMIT.name) or RateBudget(
            IOT_APPLIANCE_LIMIT
        )
        self.transforms = TransformStage([COMPAT] if settings.output.compat else [])
        self.writer = UnitWriter(
            source,
            transforms=self.transforms,
            quarantine=self.quarantine,
            turn=self.turn,
            progress=progress,
        )
        self.outcomes = outcomes
        self.stopped: str | None = None  # why the datasets not yet started fail unasked

    def collect_all(self, work_dir: Path) -> None:
        specs = self.source.datasets
        found: dict[int, DatasetOutcome] = {}

        def collect(index: int) -> None:
            found[index] = self._collect_dataset(specs[index], work_dir, index == 0)

        if specs:
            # The first alone: it proves the credentials and the trust (a refusal fails the
            # rest with its line, unasked), and the devices it counts size the hunting.
            collect(0)
            self.outcomes.append(found[0])
        # The rest at once, each waiting on the service in another's turn at the sinks.
        run_each(range(1, len(specs)), collect, self.turn)
        self.outcomes.extend(found[i] for i in sorted(found) if i)

    def _collect_dataset(self, spec: DatasetSpec, work_dir: Path, first: bool) -> DatasetOutcome:
        if self.summary.disk_full and self.stopped is None:
            # The disk this run writes to is full or read-only: every dataset after would
            # fail the same way (one line says so), and nothing more is read.
            self.stopped = f"not collected: {self.summary.disk_full}"
        if self.stopped is not None:
            # Refused credentials or an untrusted certificate fail every dataset alike: the
            # source is asked once, and the rest fail with the same line.
            outcome = self._outcome(spec)
            outcome.outcome, outcome.error, outcome.end = "Failed", self.stopped, outcome.start
        else:
            # Beside the others, with a client of its own: the same connections and tokens,
            # its own count of requests for its EPF_Runs_CL row.
            client = self.client if first else self.client.sibling()
            with self.turn:
                self.turn.check()
                outcome = self._collect(spec, work_dir / spec.name, client)
            if outcome.stops_source and self.stopped is None:
                self.stopped = outcome.error
        log.info(
            "%s %s dataset %s: %s, %d rows, %d quarantined, %.1f s",
            self.source.kind,
            self.source.name,
            spec.name,
            outcome.outcome,
            outcome.rows,
            outcome.quarantined,
            outcome.duration_seconds,
        )
        return outcome

    def _outcome(self, spec: DatasetSpec) -> DatasetOutcome:
        return DatasetOutcome(
            self.source.name,
            self.source.defender_tenant_id,
            spec.name,
            spec.table.name,
            kind=self.source.kind,
        )

    def _collect(self, spec: DatasetSpec, work_dir: Path, client: ApiClient) -> DatasetOutcome:
        outcome = self._outcome(spec)
        before = _request_counts(client)
        try:
            interval = self.source.config.interval_hours_for(spec.name)
            now = self.summary.time_generated
            checkpoints = {sink: load(spec.name) for sink, load in self.checkpoints.items()}
            due = [s for s in self.sinks if checkpoints[s].is_due(now, interval)]
            if not due:
                outcome.outcome = "Skipped"
                outcome.reason = _not_due(checkpoints.values(), interval)
                return outcome
            # One collection per place the sinks stand: usually one, for all of them.
            for group in CheckpointGroup.of(due, checkpoints):
                self._collect_group(spec, group, outcome, (work_dir, client))
        except (EpfError, MemoryError, OSError) as exc:
            # Reported by the run summary (and EPF_Runs_CL), so not logged again here. Memory,
            # this machine's disk (full, read-only) or a sink's failure ends this dataset only:
            # the next datasets still run, and the next run collects this one again.
            outcome.outcome = "Failed"
            if isinstance(exc, EpfError) and exc.stops_source:  # the same line for each dataset
                outcome.error, outcome.stops_source = str(exc), True
            else:
                what = "out of memory" if isinstance(exc, MemoryError) else local_failure(exc)
                if isinstance(exc, OSError):  # where it happened, for --debug
                    log.debug("dataset %s: %s", spec.name, what, exc_info=True)
                outcome.error = (
                    f"{self.source.kind} {self.source.name!r} dataset {spec.name}: {what}"
                )
                if out_of_disk(exc):  # the first one says it; those under way, not again
                    if self.summary.disk_full:
                        outcome.error = f"not collected: {self.summary.disk_full}"
                    else:
                        self.summary.disk_full = what
        finally:
            outcome.end = datetime.now(UTC)
            after = _request_counts(client)
            outcome.requests = after[0] - before[0]
            outcome.throttled = after[1] - before[1]
            if self.progress:
                self.progress(self.source.name, spec.name, outcome.rows, True)
        return outcome

    def _collect_group(
        self,
        spec: DatasetSpec,
        group: CheckpointGroup,
        outcome: DatasetOutcome,
        where: tuple[Path, ApiClient],
    ) -> None:
        rows_before, quarantined_before = outcome.rows, outcome.quarantined
        try:
            if group.snapshot is not None and not spec.resumable:
                self._discard(spec, group.snapshot.run_id, group.sinks)
                group.abandon()
            try:
                self._deliver(spec, group, outcome, where)
            except SnapshotChanged as exc:
                log.info(
                    "%s %s dataset %s: %s; starting over",
                    self.source.kind,
                    self.source.name,
                    spec.name,
                    exc,
                )
                if group.snapshot is not None:
                    self._discard(spec, group.snapshot.run_id, group.sinks)
                group.abandon()
                outcome.rows, outcome.quarantined = rows_before, quarantined_before
                self._deliver(spec, group, outcome, where)
        except (EpfError, MemoryError, OSError):
            if not spec.resumable and self._drop_partial(spec, group):
                outcome.rows = rows_before
            raise

    def _context(
        self, snapshot: Snapshot, group: CheckpointGroup, where: tuple[Path, ApiClient]
    ) -> FetchContext | SensorContext | ConsoleContext | FeedContext:
        config = self.source.config
        work_dir, client = where
        if self.source.kind == "feed":
            return FeedContext(client, config, snapshot.time, work_dir, group.cursor)
        if self.source.kind == "tenant":
            return FetchContext(
                client=client,
                tenant=config,
                budgets=self.budgets,
                now=snapshot.time,
                work_dir=work_dir,
                resume=snapshot.resume,
                cursor=group.cursor,
                device_count=self._device_count(),
            )
        kind = SensorContext if self.source.kind == "sensor" else ConsoleContext
        return kind(
            client,
            self.appliance_budget,
            snapshot.time,
            group.cursor,
            appliance=config,
        )

    def _deliver(
        self,
        spec: DatasetSpec,
        group: CheckpointGroup,
        outcome: DatasetOutcome,
        where: tuple[Path, ApiClient],
    ) -> None:
        snapshot = group.begin(self.summary.run_id, self.summary.time_generated)
        outcome.snapshot_run_id = snapshot.run_id
        rows_before = outcome.rows
        stamp = {
            "TimeGenerated": snapshot.time,
            "SnapshotTime": snapshot.time,  # Azure may replace the former, never this
            "RunId": snapshot.run_id,
            "DefenderTenantId": self.source.defender_tenant_id,
        }
        history = self._history_plan(spec, snapshot.time)
        held = f"{self.source.unit_scope}/{snapshot.run_id}/{spec.name}/"
        if not spec.resumable:
            # Cut short, this snapshot is collected again from its start: a sink that cannot
            # take rows back keeps its units until it is complete.
            for sink in group.sinks:
                sink.hold_snapshot(
                    held, scope=self.scope, dataset=spec.name, run_id=snapshot.run_id
                )
        where[0].mkdir(parents=True, exist_ok=True)
        ctx = self._context(snapshot, group, where)
        units = fetch_function(spec)(ctx)
        while True:
            _wait_for_room(group.sinks)  # back-pressure: a full outbox stops the reading
            with self.turn.waiting():  # the other sources' turn at the sinks meanwhile
                unit, cursor = _next_unit(units)
            if self.summary.disk_full:  # another dataset found the disk full meanwhile
                raise _NotCollected(f"not collected: {self.summary.disk_full}")
            if unit is None:  # done: the source's final cursor, stored only now
                break
            _wait_for_room(group.sinks)  # the others may have filled the outbox meanwhile
            unit_id = f"{self.source.unit_scope}/{snapshot.run_id}/{spec.name}/{unit.key}"
            pending = [s for s in group.sinks if not s.delivered(unit_id)]
            # Each sink stores where the dataset stands with the unit itself.
            saved = SavedCheckpoint(self.scope, spec.name, group.state_after(unit.resume))
            self.writer.write(spec, unit, unit_id, pending, (saved, history), stamp, outcome)
            group.advance(unit.resume, saved_by=pending)
        if history is not None and history.mode == "changes":
            # Complete: what each sink held and this snapshot did not show is gone.
            removed = f"{self.source.unit_scope}/{snapshot.run_id}/{spec.name}/removed"
            self.writer.fanout.each(
                group.sinks,
                lambda sink: sink.finish_snapshot(spec.table, history, unit=removed, stamp=stamp),
            )
        sinks = [s.name for s in group.sinks]
        outcome.gaps.extend({**gap, "sinks": sinks} for gap in ctx.gaps)
        group.finish(outcome.rows - rows_before, cursor)
        if not spec.resumable:  # complete, and its checkpoints say so: deliver it
            for sink in group.sinks:
                sink.release_snapshot(held)

    def _history_plan(self, spec: DatasetSpec, snapshot_time: datetime) -> HistoryPlan | None:
        """How a change-tracked table's snapshot is written (docs/history.md)."""
        if spec.kind != "tenant" or spec.table.changes is None:
            return None
        mode = self.history.mode_for(spec.name)
        assert mode is not None
        return HistoryPlan(mode, snapshot_time, baseline_days=self.history.baseline_days)

    def _drop_partial(self, spec: DatasetSpec, group: CheckpointGroup) -> bool:
        """A dataset that cannot resume leaves no partial snapshot for queries to mistake;
        whether its rows are gone."""
        snapshot = group.snapshot
        if snapshot is None:
            return False
        try:
            # Removed first, forgotten after: a checkpoint that forgot the snapshot while its
            # rows stayed (the disk full between the two) would leave them for good.
            self._discard(spec, snapshot.run_id, group.sinks)
            group.abandon()
        except Exception as exc:  # the next run discards it instead
            log.warning("could not remove the partial %s snapshot: %s", spec.table.name, exc)
            return False
        return True

    def _discard(self, spec: DatasetSpec, run_id: str, sinks: list[Sink]) -> None:
        for target in (spec.table, *self.transforms.derived_from(spec.table)):
            for sink in sinks:
                sink.discard(
                    target,
                    run_id=run_id,
                    unit_scope=self.source.unit_scope,
                    where=self.source.where,
                    dataset=spec.name,
                )

    def _device_count(self) -> int | None:
        for o in self.outcomes:
            if (
                o.kind == "tenant"
                and o.tenant == self.source.name
                and o.dataset == "machines"
                and o.outcome == "Succeeded"
            ):
                return o.rows
        known = [c for load in self.checkpoints.values() if (c := load("machines").last_rows)]
        return max(known) if known else None


class _NotCollected(EpfError):
    """The disk this run writes to is full: a dataset under way stops with the line of those
    not started (one line in the run's errors, not one per dataset)."""

    stops_source = True


def _request_counts(client: ApiClient) -> tuple[int, int]:
    stats = client.stats.values()
    return sum(c["requests"] for c in stats), sum(c["throttled"] for c in stats)


def _next_unit(units: Iterator[Unit]) -> tuple[Unit | None, Any]:
    """(the next unit, None), or (None, the source's final cursor) when there is none."""
    try:
        return next(units), None
    except StopIteration as done:
        return None, done.value


def _wait_for_room(sinks: list[Sink]) -> None:
    """Return once every sink can take another unit; raise ``OutboxFull`` when one cannot."""
    for sink in sinks:
        why = sink.room()
        if why is not None:
            raise OutboxFull(why)


def _not_due(checkpoints: Iterable[DatasetCheckpoint], interval_hours: float) -> str:
    """Why a dataset was skipped, and when it is next due."""
    due = [d for c in checkpoints if (d := c.next_due(interval_hours)) is not None]
    when = min(due).strftime("%Y-%m-%dT%H:%MZ") if due else "now"
    return f"not due: next snapshot {when}, every {interval_hours:g} h"

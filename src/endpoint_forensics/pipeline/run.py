"""One collection run: every due dataset of every source (Defender tenants, IoT sensors and
consoles), into every sink, resumably.

Owns the run. Per dataset it decides whether a snapshot is due (baselines have an interval),
resumes an unfinished snapshot where it stopped, stamps ``SnapshotTime`` and ``TimeGenerated``
(one snapshot time, the same in both), ``RunId`` and ``DefenderTenantId``, delivers each unit
to every sink that does not have it yet, checkpoints after each unit (a cursor moves only
once its rows are delivered), runs the transforms on what was delivered, quarantines rejected
records, and records one ``EPF_Runs_CL`` row per dataset and source.
May import the other ``pipeline`` modules, ``sources``, ``transforms``, ``contracts``,
``identity``, ``http``, ``config``, ``tables``, ``errors`` and ``runtime``.
"""

from __future__ import annotations

import logging
import shutil
import ssl
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from endpoint_forensics.config import ConsoleConfig, SensorConfig, Settings, TenantConfig
from endpoint_forensics.contracts import Batch, RedoUnit, Sink, SnapshotChanged, Unit
from endpoint_forensics.errors import EpfError
from endpoint_forensics.http.client import RAW_TOKEN, ApiClient
from endpoint_forensics.http.ratelimit import DOCUMENTED_LIMITS, IOT_APPLIANCE_LIMIT, RateBudget
from endpoint_forensics.http.tls import client_ssl_context
from endpoint_forensics.identity.credentials import CredentialTokenProvider, StaticToken
from endpoint_forensics.pipeline.checkpoints import (
    CheckpointFile,
    DatasetCheckpoint,
    Quarantine,
    Snapshot,
)
from endpoint_forensics.pipeline.plan import Source, fetch_function, sources_of
from endpoint_forensics.pipeline.runlog import DatasetOutcome, Progress, RunSummary, record_runs
from endpoint_forensics.runtime import bound_memory
from endpoint_forensics.sources import ConsoleContext, FetchContext, SensorContext
from endpoint_forensics.tables import Table
from endpoint_forensics.tables.datasets import DatasetSpec
from endpoint_forensics.transforms import TransformStage
from endpoint_forensics.transforms.compat import COMPAT

__all__ = ["DatasetOutcome", "Progress", "RunSummary", "run_sync"]

log = logging.getLogger(__name__)


def run_sync(
    settings: Settings,
    sinks: list[Sink],
    *,
    progress: Progress | None = None,
    client_factory: Callable[[TenantConfig], ApiClient] | None = None,
    now: datetime | None = None,
) -> RunSummary:
    """Collect every due dataset once and deliver it to ``sinks``."""
    bound_memory()
    started = time.monotonic()
    summary = RunSummary(run_id=str(uuid.uuid4()), time_generated=now or datetime.now(UTC))
    quarantine = Quarantine(settings.state.dir, summary.run_id)
    work_root = settings.state.dir / "work" / summary.run_id
    try:
        for source in sources_of(settings):
            if source.kind == "tenant":
                client = (client_factory or _default_client)(source.config)
            else:
                client = _appliance_client(source.config)
            with client:
                run = _SourceRun(source, client, settings, sinks, summary, quarantine, progress)
                run.collect_all(work_root / source.name)
    finally:
        shutil.rmtree(work_root, ignore_errors=True)
    record_runs(summary, sinks)
    for sink in sinks:
        report = sink.flush()
        if report is not None:
            summary.deliveries[sink.name] = report
    if quarantine.count:
        summary.quarantine_folder = str(quarantine.folder)
    summary.wall_seconds = time.monotonic() - started
    return summary


def _default_client(tenant: TenantConfig) -> ApiClient:
    # A configured bundle replaces the default trust store, as `curl --cacert` and the Azure
    # SDK's connection_verify do, so the token endpoint and the APIs trust the same CAs.
    verify = ssl.create_default_context(cafile=str(tenant.ca_bundle)) if tenant.ca_bundle else True
    return ApiClient(
        CredentialTokenProvider(tenant),
        verify=verify,
        timeout_seconds=tenant.timeout_seconds,
        max_retries=tenant.max_retries,
    )


def _appliance_client(appliance: SensorConfig | ConsoleConfig) -> ApiClient:
    verify = client_ssl_context(
        ca_bundle=appliance.ca_bundle, fingerprint=appliance.certificate_fingerprint
    )
    return ApiClient(
        StaticToken(appliance.token),
        verify=verify,
        timeout_seconds=appliance.timeout_seconds,
        max_retries=appliance.max_retries,
        auth_style=RAW_TOKEN,
    )


class _SourceRun:
    def __init__(
        self,
        source: Source,
        client: ApiClient,
        settings: Settings,
        sinks: list[Sink],
        summary: RunSummary,
        quarantine: Quarantine,
        progress: Progress | None,
    ) -> None:
        self.source = source
        self.client = client
        self.sinks = sinks
        self.summary = summary
        self.quarantine = quarantine
        self.progress = progress
        self.checkpoints = CheckpointFile(settings.state.dir, source.name, folder=f"{source.kind}s")
        # One budget per endpoint (per appliance for IoT), shared by everything in the run.
        self.budgets = {name: RateBudget(limit) for name, limit in DOCUMENTED_LIMITS.items()}
        self.appliance_budget = RateBudget(IOT_APPLIANCE_LIMIT)
        self.transforms = TransformStage([COMPAT] if settings.output.compat else [])

    def collect_all(self, work_dir: Path) -> None:
        stopped: str | None = None
        for spec in self.source.datasets:
            if stopped is not None:
                # Refused credentials or an untrusted certificate fail every dataset alike:
                # the source is asked once, and the rest fail with the same line.
                outcome = self._outcome(spec)
                outcome.outcome, outcome.error, outcome.end = "Failed", stopped, outcome.start
            else:
                outcome = self._collect(spec, work_dir / spec.name)
                if outcome.stops_source:
                    stopped = outcome.error
            self.summary.outcomes.append(outcome)
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

    def _outcome(self, spec: DatasetSpec) -> DatasetOutcome:
        return DatasetOutcome(
            self.source.name,
            self.source.defender_tenant_id,
            spec.name,
            spec.table.name,
            kind=self.source.kind,
        )

    def _collect(self, spec: DatasetSpec, work_dir: Path) -> DatasetOutcome:
        outcome = self._outcome(spec)
        checkpoint = self.checkpoints.dataset(spec.name)
        before = self._request_counts()
        try:
            interval = self.source.config.interval_hours_for(spec.name)
            if not checkpoint.is_due(self.summary.time_generated, interval):
                outcome.outcome = "Skipped"
                return outcome
            if checkpoint.snapshot is not None and not spec.resumable:
                self._discard(spec.table, checkpoint.snapshot.run_id)
                checkpoint.abandon()
            try:
                self._deliver(spec, checkpoint, outcome, work_dir)
            except SnapshotChanged as exc:
                log.info(
                    "%s %s dataset %s: %s; starting over",
                    self.source.kind,
                    self.source.name,
                    spec.name,
                    exc,
                )
                abandoned = checkpoint.abandon()
                if abandoned is not None:
                    self._discard(spec.table, abandoned.run_id)
                outcome.rows = outcome.quarantined = 0
                self._deliver(spec, checkpoint, outcome, work_dir)
        except (EpfError, MemoryError) as exc:
            # Reported by the run summary (and EPF_Runs_CL), so not logged again here. Memory
            # or a sink's failure ends this dataset only: the next datasets still run.
            outcome.outcome = "Failed"
            if isinstance(exc, EpfError) and exc.stops_source:  # the same line for each dataset
                outcome.error, outcome.stops_source = str(exc), True
            else:
                what = str(exc) if isinstance(exc, EpfError) else "out of memory"
                outcome.error = (
                    f"{self.source.kind} {self.source.name!r} dataset {spec.name}: {what}"
                )
            if not spec.resumable:
                self._drop_partial(spec, checkpoint, outcome)
        finally:
            outcome.end = datetime.now(UTC)
            after = self._request_counts()
            outcome.requests = after[0] - before[0]
            outcome.throttled = after[1] - before[1]
            if self.progress:
                self.progress(self.source.name, spec.name, outcome.rows, True)
        return outcome

    def _context(
        self, snapshot: Snapshot, checkpoint: DatasetCheckpoint, work_dir: Path
    ) -> FetchContext | SensorContext | ConsoleContext:
        config = self.source.config
        if self.source.kind == "tenant":
            return FetchContext(
                client=self.client,
                tenant=config,
                budgets=self.budgets,
                now=snapshot.time,
                work_dir=work_dir,
                resume=snapshot.resume,
                cursor=checkpoint.cursor,
                device_count=self._device_count(),
            )
        kind = SensorContext if self.source.kind == "sensor" else ConsoleContext
        return kind(
            self.client,
            self.appliance_budget,
            snapshot.time,
            checkpoint.cursor,
            appliance=config,
        )

    def _deliver(
        self,
        spec: DatasetSpec,
        checkpoint: DatasetCheckpoint,
        outcome: DatasetOutcome,
        work_dir: Path,
    ) -> None:
        snapshot = checkpoint.begin(self.summary.run_id, self.summary.time_generated)
        outcome.snapshot_run_id = snapshot.run_id
        stamp = {
            "TimeGenerated": snapshot.time,
            "SnapshotTime": snapshot.time,  # Azure may replace the former, never this
            "RunId": snapshot.run_id,
            "DefenderTenantId": self.source.defender_tenant_id,
        }
        work_dir.mkdir(parents=True, exist_ok=True)
        ctx = self._context(snapshot, checkpoint, work_dir)
        units = fetch_function(spec)(ctx)
        while True:
            try:
                unit = next(units)
            except StopIteration as done:
                cursor = done.value  # the source's final cursor: stored only now
                break
            unit_id = f"{self.source.unit_scope}/{snapshot.run_id}/{spec.name}/{unit.key}"
            self._deliver_unit(spec, unit, unit_id, stamp, outcome)
            checkpoint.advance(unit.resume)
        outcome.gaps.extend(ctx.gaps)
        checkpoint.finish(outcome.rows, cursor)

    def _deliver_unit(
        self,
        spec: DatasetSpec,
        unit: Unit,
        unit_id: str,
        stamp: Mapping[str, Any],
        outcome: DatasetOutcome,
    ) -> None:
        pending = [s for s in self.sinks if not s.delivered(unit_id)]
        try:
            self._write_unit(spec, unit_id, unit.batches, pending, stamp, outcome)
        except RedoUnit as exc:
            if unit.fallback is None:
                raise
            log.info(
                "%s %s dataset %s %s: %s; reading it line by line",
                self.source.kind,
                self.source.name,
                spec.name,
                unit.key,
                exc,
            )
            self._write_unit(spec, unit_id, unit.fallback(), pending, stamp, outcome)

    def _write_unit(
        self,
        spec: DatasetSpec,
        unit_id: str,
        batches: Iterator[Batch],
        sinks: list[Sink],
        stamp: Mapping[str, Any],
        outcome: DatasetOutcome,
    ) -> None:
        rows = quarantined = 0
        kept = self.transforms.collect(spec.table)
        with ExitStack() as stack:
            writers = [stack.enter_context(s.open(spec.table, unit=unit_id)) for s in sinks]
            for batch in batches:
                for writer in writers:
                    writer.write(batch, stamp)
                if kept is not None:
                    kept.add(batch)
                self.quarantine.add(self.source.name, spec.name, batch.rejects)
                quarantined += len(batch.rejects)
                rows += len(batch)
                if self.progress:
                    self.progress(self.source.name, spec.name, outcome.rows + rows, False)
        # Counted once the unit is committed: a unit redone is not counted twice.
        outcome.rows += rows
        outcome.quarantined += quarantined
        if kept is not None:
            self.transforms.deliver(spec.table, kept, sinks, unit=unit_id, stamp=stamp)

    def _drop_partial(
        self, spec: DatasetSpec, checkpoint: DatasetCheckpoint, outcome: DatasetOutcome
    ) -> None:
        """A dataset that cannot resume leaves no partial snapshot for queries to mistake."""
        snapshot = checkpoint.abandon()
        if snapshot is None:
            return
        try:
            self._discard(spec.table, snapshot.run_id)
        except Exception as exc:  # the next run discards it instead
            checkpoint.restore(snapshot)
            log.warning("could not remove the partial %s snapshot: %s", spec.table.name, exc)
        else:
            outcome.rows = 0

    def _discard(self, table: Table, run_id: str) -> None:
        for target in (table, *self.transforms.derived_from(table)):
            for sink in self.sinks:
                sink.discard(
                    target,
                    run_id=run_id,
                    unit_scope=self.source.unit_scope,
                    where=self.source.where,
                )

    def _device_count(self) -> int | None:
        for o in self.summary.outcomes:
            if (
                o.kind == "tenant"
                and o.tenant == self.source.name
                and o.dataset == "machines"
                and o.outcome == "Succeeded"
            ):
                return o.rows
        return self.checkpoints.dataset("machines").last_rows

    def _request_counts(self) -> tuple[int, int]:
        stats = self.client.stats.values()
        return sum(c["requests"] for c in stats), sum(c["throttled"] for c in stats)

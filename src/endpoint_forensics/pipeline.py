"""One collection run: every due dataset of every source (Defender tenants, IoT sensors and
consoles), into every sink, resumably.

Owns the run. Per dataset it decides whether a snapshot is due (baselines have an interval),
resumes an unfinished snapshot where it stopped, stamps ``SnapshotTime`` and ``TimeGenerated``
(one snapshot time, the same in both), ``RunId`` and ``DefenderTenantId``, delivers each unit
to every sink that does not have it yet, checkpoints after each unit (a cursor moves only
once its rows are delivered), quarantines rejected records, and records one ``EPF_Runs_CL``
row per dataset and source.
May import ``datasets``, ``sources``, ``contracts``, ``state``, ``auth`` and ``http``.
"""

from __future__ import annotations

import logging
import shutil
import ssl
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from endpoint_forensics.auth import CredentialTokenProvider, StaticToken
from endpoint_forensics.compat import DERIVED, deliver_legacy
from endpoint_forensics.config import ConsoleConfig, SensorConfig, Settings, TenantConfig
from endpoint_forensics.contracts import Batch, RedoUnit, Row, Sink, SnapshotChanged
from endpoint_forensics.datasets import CONSOLE_SPECS, DATASET_SPECS, SENSOR_SPECS, DatasetSpec
from endpoint_forensics.errors import EpfError
from endpoint_forensics.http import RAW_TOKEN, ApiClient
from endpoint_forensics.ratelimit import DOCUMENTED_LIMITS, IOT_APPLIANCE_LIMIT, RateBudget
from endpoint_forensics.runlog import DatasetOutcome, Progress, RunSummary, record_runs
from endpoint_forensics.runtime import bound_memory
from endpoint_forensics.sources import ApplianceContext, FetchContext
from endpoint_forensics.state import Quarantine, TenantState
from endpoint_forensics.tables import Table
from endpoint_forensics.tls import client_ssl_context

__all__ = ["DATASET_SPECS", "DatasetOutcome", "Progress", "RunSummary", "run_sync"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Source:
    """One thing to collect from, as the run sees it."""

    kind: str  # tenant, sensor or console
    name: str
    config: Any
    specs: dict[str, DatasetSpec]
    defender_tenant_id: str
    unit_scope: str  # the first part of its delivery unit ids
    where: dict[str, str]  # the columns that pick its rows out of a table

    @property
    def datasets(self) -> tuple[str, ...]:
        return tuple(self.config.datasets)


def _sources(settings: Settings) -> list[_Source]:
    sources = [
        _Source(
            "tenant",
            t.name,
            t,
            DATASET_SPECS,
            t.tenant_id,
            t.tenant_id,
            {"DefenderTenantId": t.tenant_id},
        )
        for t in settings.tenants
    ]
    for kind, appliances, specs in (
        ("sensor", settings.sensors, SENSOR_SPECS),
        ("console", settings.consoles, CONSOLE_SPECS),
    ):
        sources.extend(
            _Source(
                kind,
                a.name,
                a,
                specs,
                a.defender_tenant_id,
                f"{kind}:{a.name}",
                {"Appliance": a.name},
            )
            for a in appliances
        )
    return sources


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
        for source in _sources(settings):
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
        source: _Source,
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
        self.state = TenantState(settings.state.dir, source.name, folder=f"{source.kind}s")
        # One budget per endpoint (per appliance for IoT), shared by everything in the run.
        self.budgets = {name: RateBudget(limit) for name, limit in DOCUMENTED_LIMITS.items()}
        self.appliance_budget = RateBudget(IOT_APPLIANCE_LIMIT)
        self._compat = settings.output.compat

    def collect_all(self, work_dir: Any) -> None:
        stopped: str | None = None
        for dataset in self.source.datasets:
            spec = self.source.specs[dataset]
            if stopped is not None:
                # Refused credentials or an untrusted certificate fail every dataset alike:
                # the source is asked once, and the rest fail with the same line.
                outcome = self._outcome(dataset)
                outcome.outcome, outcome.error, outcome.end = "Failed", stopped, outcome.start
            else:
                outcome = self._collect(dataset, spec, work_dir / dataset)
                if outcome.stops_source:
                    stopped = outcome.error
            self.summary.outcomes.append(outcome)
            log.info(
                "%s %s dataset %s: %s, %d rows, %d quarantined, %.1f s",
                self.source.kind,
                self.source.name,
                dataset,
                outcome.outcome,
                outcome.rows,
                outcome.quarantined,
                outcome.duration_seconds,
            )

    def _outcome(self, dataset: str) -> DatasetOutcome:
        table = self.source.specs[dataset].table.name
        return DatasetOutcome(
            self.source.name,
            self.source.defender_tenant_id,
            dataset,
            table,
            kind=self.source.kind,
        )

    def _collect(self, dataset: str, spec: DatasetSpec, work_dir: Any) -> DatasetOutcome:
        outcome = self._outcome(dataset)
        dstate = self.state.dataset(dataset)
        before = self._request_counts()
        try:
            if self._not_due(dataset, dstate):
                outcome.outcome = "Skipped"
                return outcome
            snapshot = dstate.get("snapshot")
            if snapshot is not None and not spec.resumable:
                self._discard(spec.table, snapshot["run_id"])
                snapshot = None
            try:
                self._deliver(dataset, spec, dstate, snapshot, outcome, work_dir)
            except SnapshotChanged as exc:
                log.info(
                    "%s %s dataset %s: %s; starting over",
                    self.source.kind,
                    self.source.name,
                    dataset,
                    exc,
                )
                self._discard(spec.table, dstate["snapshot"]["run_id"])
                outcome.rows = outcome.quarantined = 0
                self._deliver(dataset, spec, dstate, None, outcome, work_dir)
        except (EpfError, MemoryError) as exc:
            # Reported by the run summary (and EPF_Runs_CL), so not logged again here. Memory
            # or a sink's failure ends this dataset only: the next datasets still run.
            outcome.outcome = "Failed"
            if isinstance(exc, EpfError) and exc.stops_source:  # the same line for each dataset
                outcome.error, outcome.stops_source = str(exc), True
            else:
                what = str(exc) if isinstance(exc, EpfError) else "out of memory"
                outcome.error = f"{self.source.kind} {self.source.name!r} dataset {dataset}: {what}"
            if not spec.resumable:
                self._drop_partial(spec, dstate, outcome)
        finally:
            outcome.end = datetime.now(UTC)
            after = self._request_counts()
            outcome.requests = after[0] - before[0]
            outcome.throttled = after[1] - before[1]
            if self.progress:
                self.progress(self.source.name, dataset, outcome.rows, True)
        return outcome

    def _context(
        self, snapshot: dict[str, Any], dstate: dict[str, Any], when: datetime, work_dir: Any
    ) -> FetchContext | ApplianceContext:
        if self.source.kind == "tenant":
            return FetchContext(
                client=self.client,
                tenant=self.source.config,
                budgets=self.budgets,
                now=when,
                work_dir=work_dir,
                resume=snapshot.get("resume"),
                cursor=dstate.get("cursor"),
                device_count=self._device_count(),
            )
        return ApplianceContext(
            client=self.client,
            appliance=self.source.config,
            budget=self.appliance_budget,
            now=when,
            cursor=dstate.get("cursor"),
        )

    def _deliver(
        self,
        dataset: str,
        spec: DatasetSpec,
        dstate: dict[str, Any],
        snapshot: dict[str, Any] | None,
        outcome: DatasetOutcome,
        work_dir: Any,
    ) -> None:
        if snapshot is None:
            snapshot = {
                "run_id": self.summary.run_id,
                "time_generated": self.summary.time_generated.isoformat(),
                "units": 0,
                "resume": None,
            }
            dstate["snapshot"] = snapshot
            self.state.save()
        outcome.snapshot_run_id = snapshot["run_id"]
        time_generated = datetime.fromisoformat(snapshot["time_generated"])
        stamp = {
            "TimeGenerated": time_generated,
            "SnapshotTime": time_generated,  # Azure may replace the former, never this
            "RunId": snapshot["run_id"],
            "DefenderTenantId": self.source.defender_tenant_id,
        }
        work_dir.mkdir(parents=True, exist_ok=True)
        ctx = self._context(snapshot, dstate, time_generated, work_dir)
        for unit in spec.fetch(ctx):
            unit_id = f"{self.source.unit_scope}/{snapshot['run_id']}/{dataset}/{unit.key}"
            pending = [s for s in self.sinks if not s.delivered(unit_id)]
            try:
                self._deliver_unit(
                    dataset, spec.table, unit_id, unit.batches, pending, stamp, outcome
                )
            except RedoUnit as exc:
                if unit.fallback is None:
                    raise
                log.info(
                    "%s %s dataset %s %s: %s; reading it line by line",
                    self.source.kind,
                    self.source.name,
                    dataset,
                    unit.key,
                    exc,
                )
                self._deliver_unit(
                    dataset, spec.table, unit_id, unit.fallback(), pending, stamp, outcome
                )
            # Every sink has the unit: only now may the checkpoint move past it.
            snapshot["resume"] = unit.resume
            snapshot["units"] += 1
            self.state.save()
        dstate.pop("snapshot", None)
        dstate["last_success"] = time_generated.isoformat()
        dstate["last_rows"] = outcome.rows
        if ctx.new_cursor is not None:
            dstate["cursor"] = ctx.new_cursor
        outcome.gaps.extend(ctx.gaps)
        self.state.save()

    def _deliver_unit(
        self,
        dataset: str,
        table: Table,
        unit_id: str,
        batches: Iterator[Batch],
        sinks: list[Sink],
        stamp: Mapping[str, Any],
        outcome: DatasetOutcome,
    ) -> None:
        rows = quarantined = 0
        # The compat profile derives the original connector's rows from these (small tables).
        derive_from: list[Row] | None = [] if self._compat and table.name in DERIVED else None
        with ExitStack() as stack:
            writers = [stack.enter_context(s.open(table, unit=unit_id)) for s in sinks]
            for batch in batches:
                for writer in writers:
                    writer.write(batch, stamp)
                if derive_from is not None:
                    derive_from.extend(batch.rows)
                    if batch.arrow is not None:
                        derive_from.extend(batch.arrow.to_pylist())
                self.quarantine.add(self.source.name, dataset, batch.rejects)
                quarantined += len(batch.rejects)
                rows += len(batch)
                if self.progress:
                    self.progress(self.source.name, dataset, outcome.rows + rows, False)
        # Counted once the unit is committed: a unit redone is not counted twice.
        outcome.rows += rows
        outcome.quarantined += quarantined
        if derive_from is not None:
            deliver_legacy(sinks, table.name, derive_from, unit=unit_id, stamp=stamp)

    def _drop_partial(
        self, spec: DatasetSpec, dstate: dict[str, Any], outcome: DatasetOutcome
    ) -> None:
        """A dataset that cannot resume leaves no partial snapshot for queries to mistake."""
        snapshot = dstate.pop("snapshot", None)
        if snapshot is None:
            return
        try:
            self._discard(spec.table, snapshot["run_id"])
        except Exception as exc:  # the next run discards it instead
            dstate["snapshot"] = snapshot
            log.warning("could not remove the partial %s snapshot: %s", spec.table.name, exc)
        else:
            outcome.rows = 0
        self.state.save()

    def _not_due(self, dataset: str, dstate: Mapping[str, Any]) -> bool:
        interval = self.source.config.interval_hours_for(dataset)
        last = dstate.get("last_success")
        if not interval or last is None or "snapshot" in dstate:
            return False
        elapsed = self.summary.time_generated - datetime.fromisoformat(last)
        return elapsed < timedelta(hours=interval)

    def _discard(self, table: Table, run_id: str) -> None:
        legacy = [d.table for d in DERIVED.get(table.name, ())] if self._compat else []
        for target in (table, *legacy):
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
        last = self.state.dataset("machines").get("last_rows")
        return int(last) if last is not None else None

    def _request_counts(self) -> tuple[int, int]:
        stats = self.client.stats.values()
        return sum(c["requests"] for c in stats), sum(c["throttled"] for c in stats)

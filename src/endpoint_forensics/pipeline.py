"""One collection run: every configured dataset of every tenant, into every sink.

Owns the run: it stamps ``TimeGenerated`` (one snapshot time per run), ``RunId`` and
``DefenderTenantId`` on each row, quarantines rejected records, writes each dataset to every
sink in one all-or-nothing unit, and records one ``EPF_Runs_CL`` row per dataset.
May import ``sources``, ``sinks`` (through ``contracts``), ``state``, ``auth``, ``http``.
"""

from __future__ import annotations

import logging
import ssl
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from endpoint_forensics.auth import CredentialTokenProvider
from endpoint_forensics.config import Settings, TenantConfig
from endpoint_forensics.contracts import Batch, Sink
from endpoint_forensics.errors import CredentialRefused, EpfError
from endpoint_forensics.http import ApiClient
from endpoint_forensics.ratelimit import DOCUMENTED_LIMITS, RateBudget
from endpoint_forensics.sources import hunting, mde
from endpoint_forensics.state import Quarantine
from endpoint_forensics.tables import AGENT_HEALTH, DEVICES, RUNS, Table

__all__ = ["DATASET_SPECS", "DatasetOutcome", "RunSummary", "run_sync"]

log = logging.getLogger(__name__)

Fetch = Callable[[ApiClient, TenantConfig, RateBudget], Iterator[Batch]]


@dataclass(frozen=True)
class DatasetSpec:
    table: Table
    budget: str  # the rate limit the dataset's calls count against
    fetch: Fetch


DATASET_SPECS: dict[str, DatasetSpec] = {
    "machines": DatasetSpec(DEVICES, "machines", mde.fetch_machines),
    "agent_health": DatasetSpec(AGENT_HEALTH, "advanced_hunting", hunting.fetch_agent_health),
}

# Progress: (tenant, dataset, rows so far, finished)
Progress = Callable[[str, str, int, bool], None]


@dataclass
class DatasetOutcome:
    tenant: str
    defender_tenant_id: str
    dataset: str
    table: str
    outcome: str = "Succeeded"
    rows: int = 0
    quarantined: int = 0
    requests: int = 0
    throttled: int = 0
    start: datetime = field(default_factory=lambda: datetime.now(UTC))
    end: datetime | None = None
    error: str = ""
    credential_refused: bool = False

    @property
    def duration_seconds(self) -> float:
        return ((self.end or datetime.now(UTC)) - self.start).total_seconds()


@dataclass
class RunSummary:
    run_id: str
    time_generated: datetime
    outcomes: list[DatasetOutcome] = field(default_factory=list)
    quarantine_folder: str | None = None
    wall_seconds: float = 0.0

    @property
    def exit_code(self) -> int:
        """0 all succeeded, 1 all failed, 3 some failed (a partial sync)."""
        failed = sum(1 for o in self.outcomes if o.outcome == "Failed")
        if failed == 0:
            return 0
        return 1 if failed == len(self.outcomes) else 3

    def errors(self) -> list[str]:
        """Distinct error lines, each once (an auth failure fails every dataset of a tenant)."""
        seen: dict[str, None] = {}
        for o in self.outcomes:
            if o.error:
                seen.setdefault(o.error, None)
        return list(seen)


def run_sync(
    settings: Settings,
    sinks: list[Sink],
    *,
    progress: Progress | None = None,
    client_factory: Callable[[TenantConfig], ApiClient] | None = None,
) -> RunSummary:
    """Collect every configured dataset once and deliver it to ``sinks``."""
    started = time.monotonic()
    summary = RunSummary(run_id=str(uuid.uuid4()), time_generated=datetime.now(UTC))
    quarantine = Quarantine(settings.state.dir, summary.run_id)
    for tenant in settings.tenants:
        factory = client_factory or _default_client
        with factory(tenant) as client:
            budgets = {name: RateBudget(limit) for name, limit in DOCUMENTED_LIMITS.items()}
            refused: str | None = None
            for dataset in tenant.datasets:
                if refused is not None:
                    # Refused credentials fail every dataset alike: ask the authority once.
                    outcome = DatasetOutcome(
                        tenant.name, tenant.tenant_id, dataset, DATASET_SPECS[dataset].table.name
                    )
                    outcome.outcome, outcome.error, outcome.end = "Failed", refused, outcome.start
                else:
                    outcome = _collect(
                        tenant, dataset, client, budgets, sinks, summary, quarantine, progress
                    )
                    if outcome.credential_refused:
                        refused = outcome.error
                summary.outcomes.append(outcome)
                log.info(
                    "tenant %s dataset %s: %s, %d rows, %d quarantined, %.1f s",
                    tenant.name,
                    dataset,
                    outcome.outcome,
                    outcome.rows,
                    outcome.quarantined,
                    outcome.duration_seconds,
                )
    _record_runs(summary, sinks)
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


def _collect(
    tenant: TenantConfig,
    dataset: str,
    client: ApiClient,
    budgets: dict[str, RateBudget],
    sinks: list[Sink],
    summary: RunSummary,
    quarantine: Quarantine,
    progress: Progress | None,
) -> DatasetOutcome:
    spec = DATASET_SPECS[dataset]
    outcome = DatasetOutcome(tenant.name, tenant.tenant_id, dataset, spec.table.name)
    budget = budgets[spec.budget]
    before: Mapping[str, int] = dict(client.stats.get(spec.budget, {}))
    stamp = {
        "TimeGenerated": summary.time_generated,
        "RunId": summary.run_id,
        "DefenderTenantId": tenant.tenant_id,
    }
    rows = 0
    try:
        with ExitStack() as stack:
            writers = [stack.enter_context(sink.open(spec.table)) for sink in sinks]
            for batch in spec.fetch(client, tenant, budget):
                for row in batch.rows:
                    row.update(stamp)
                for writer in writers:
                    writer.write(batch.rows)
                quarantine.add(tenant.name, dataset, batch.rejects)
                outcome.quarantined += len(batch.rejects)
                rows += len(batch.rows)
                if progress:
                    progress(tenant.name, dataset, rows, False)
        outcome.rows = rows  # only once every sink has committed
    except CredentialRefused as exc:
        outcome.outcome, outcome.error, outcome.credential_refused = "Failed", str(exc), True
    except EpfError as exc:
        # Reported by the run summary (and EPF_Runs_CL), so logged once, with the others.
        outcome.outcome = "Failed"
        outcome.error = f"tenant {tenant.name!r} dataset {dataset}: {exc}"
    finally:
        outcome.end = datetime.now(UTC)
        after: Mapping[str, int] = client.stats.get(spec.budget, {})
        outcome.requests = after.get("requests", 0) - before.get("requests", 0)
        outcome.throttled = after.get("throttled", 0) - before.get("throttled", 0)
        if progress:
            progress(tenant.name, dataset, outcome.rows, True)
    return outcome


def _record_runs(summary: RunSummary, sinks: list[Sink]) -> None:
    rows: list[dict[str, Any]] = [
        {
            "TimeGenerated": summary.time_generated,
            "RunId": summary.run_id,
            "DefenderTenantId": o.defender_tenant_id,
            "Dataset": o.dataset,
            "TableName": o.table,
            "Outcome": o.outcome,
            "Rows": o.rows,
            "Quarantined": o.quarantined,
            "Requests": o.requests,
            "Throttled": o.throttled,
            "StartTime": o.start,
            "EndTime": o.end,
            "DurationSeconds": round(o.duration_seconds, 3),
            "Error": o.error,
        }
        for o in summary.outcomes
    ]
    for sink in sinks:
        with sink.open(RUNS) as writer:
            writer.write(rows)

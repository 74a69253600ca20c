"""What a run did: one outcome per dataset and source, the run summary, and the
``EPF_Runs_CL`` rows written from them.

Imports ``contracts``, ``tables`` and the outbox's atomic write.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from endpoint_forensics.contracts import Batch, DeliveryReport, Sink
from endpoint_forensics.errors import EpfError, local_failure
from endpoint_forensics.sinks.outbox import write_atomically
from endpoint_forensics.tables import RUNS

__all__ = ["DatasetOutcome", "Progress", "RunSummary", "record_runs"]

# Progress: (source name, dataset, rows so far, finished)
Progress = Callable[[str, str, int, bool], None]


@dataclass
class DatasetOutcome:
    tenant: str  # the source's name in the config: a tenant, a sensor or a console
    defender_tenant_id: str
    dataset: str
    table: str
    kind: str = "tenant"  # tenant, sensor, console, feed, or triage (the run's own stage)
    outcome: str = "Succeeded"  # Succeeded, Failed or Skipped
    rows: int = 0
    quarantined: int = 0
    requests: int = 0
    throttled: int = 0
    snapshot_run_id: str = ""  # the run whose snapshot these rows belong to (resumes keep it)
    start: datetime = field(default_factory=lambda: datetime.now(UTC))
    end: datetime | None = None
    error: str = ""
    reason: str = ""  # why it was skipped, and when it is next due
    stops_source: bool = False  # every other dataset of the source fails with the same error
    gaps: list[dict[str, Any]] = field(default_factory=list)

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
    # Per remote sink: what it delivered, and what waits in its outbox for the next run.
    deliveries: dict[str, DeliveryReport] = field(default_factory=dict)
    # What failed outside any dataset (the run's own EPF_Runs_CL rows could not be stored).
    problems: list[str] = field(default_factory=list)
    # Why the disk this run writes to (the workspace, the state folder) took no more, if it
    # did not: the datasets after that are not collected.
    disk_full: str = ""

    @property
    def exit_code(self) -> int:
        """0 all succeeded, 1 all failed, 3 partial: some datasets failed, or a sink could not
        deliver everything (it waits in the outbox)."""
        failed = sum(1 for o in self.outcomes if o.outcome == "Failed")
        undelivered = any(d.error for d in self.deliveries.values()) or bool(self.problems)
        if failed == 0:
            return 3 if undelivered else 0
        return 1 if failed == len(self.outcomes) else 3

    def errors(self) -> list[str]:
        """Distinct error lines, each once (an auth failure fails every dataset of a source)."""
        lines = [o.error for o in self.outcomes if o.error]
        lines += [d.error for d in self.deliveries.values() if d.error]
        return list(dict.fromkeys([*lines, *self.problems]))


def record_runs(summary: RunSummary, sinks: list[Sink], pending: Path | None = None) -> None:
    """The run's ``EPF_Runs_CL`` rows into every sink; a sink that cannot store them is a
    problem of the run (said, exit 3), not a crash: the data it collected stays.

    With ``pending`` (a folder of the state), rows a sink could not take (a full disk takes
    the workspace's next block before the outbox's small file) wait there, one file per sink
    and run, and go in first on the next run: a failed run's record is kept like its data."""
    rows: list[dict[str, Any]] = [
        {
            "DefenderTenantId": o.defender_tenant_id,
            "SourceName": o.tenant,
            "SourceKind": o.kind,
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
            "Reason": o.reason,
            "Gaps": o.gaps or None,
        }
        for o in summary.outcomes
    ]
    stamp = {
        "TimeGenerated": summary.time_generated,
        "SnapshotTime": summary.time_generated,
        "RunId": summary.run_id,
    }
    for sink in sinks:
        waiting = pending / sink.name if pending else None
        if waiting is not None and waiting.is_dir():
            for held in sorted(waiting.glob("*.json")):
                try:
                    earlier = _read_held(held)
                    # Written before a crash took the file's removal: not twice.
                    if not sink.delivered(f"runs/{earlier['stamp']['RunId']}"):
                        _write_runs(sink, earlier["rows"], earlier["stamp"])
                except (EpfError, OSError, ValueError, KeyError) as exc:
                    summary.problems.append(
                        f"{sink.name}: an earlier run's EPF_Runs_CL rows still wait in {held}:"
                        f" {local_failure(exc)}"
                    )
                    break
                held.unlink()
        try:
            _write_runs(sink, rows, stamp)
        except (EpfError, OSError) as exc:
            kept = ""
            if waiting is not None:
                try:
                    waiting.mkdir(parents=True, exist_ok=True)
                    write_atomically(
                        waiting / f"{summary.time_generated:%Y%m%dT%H%M%S}-{summary.run_id}.json",
                        orjson.dumps({"rows": rows, "stamp": stamp}),
                    )
                    kept = "; they wait in the state folder for the next run"
                except OSError:
                    kept = "; they could not be kept for the next run either"
            summary.problems.append(
                f"{sink.name}: the run's EPF_Runs_CL rows: {local_failure(exc)}{kept}"
            )


def _write_runs(sink: Sink, rows: list[dict[str, Any]], stamp: dict[str, Any]) -> None:
    unit = f"runs/{stamp['RunId']}"
    with sink.open(RUNS, unit=unit) as writer:
        writer.write(Batch(RUNS, rows=rows), stamp)


_TIMES = ("StartTime", "EndTime", "TimeGenerated", "SnapshotTime")


def _read_held(path: Path) -> dict[str, Any]:
    held = orjson.loads(path.read_bytes())
    for row in [*held["rows"], held["stamp"]]:
        for key in _TIMES:
            if isinstance(row.get(key), str):
                row[key] = datetime.fromisoformat(row[key])
    return dict(held)

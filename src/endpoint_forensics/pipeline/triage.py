"""The triage stage of a run: once every source is collected, the decision of each open
(device, CVE) is computed again from the workspace (``analytics.triage``) when the workspace
took a change to what triage reads (the posture, a feed, the OT sensors' lists) since the last
triage, or that one is a day old, and delivered to every sink as one
unit of ``EPF_Triage_CL``, so each triage run is kept: into the workspace inside the engine
(millions of rows never pass through Python), then read back for every other sink.

Triage reads the local workspace: a config that writes to Sentinel only has no triage (the
doctor says so). A failure fails the triage row alone: the data collected stays.
May import ``analytics``, ``sinks``, ``config``, ``contracts``, ``errors`` and ``tables``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from typing import Any

from endpoint_forensics.analytics.triage import triage_query
from endpoint_forensics.analytics.triage_inputs import tables_read
from endpoint_forensics.config import Settings
from endpoint_forensics.contracts import Batch, Sink
from endpoint_forensics.errors import EpfError
from endpoint_forensics.pipeline.runlog import DatasetOutcome, RunSummary
from endpoint_forensics.sinks.duckdb import DuckDBSink
from endpoint_forensics.tables import TRIAGE
from endpoint_forensics.workspace import store

__all__ = ["TRIAGE_READS", "run_triage"]

log = logging.getLogger(__name__)

#: The tables a triage decision depends on: a run that changed none of them leaves the last
#: triage standing, for up to ``_REFRESH`` (its windows, a CVE catalogue's 7 days say, move on).
TRIAGE_READS = tables_read()
_REFRESH = timedelta(days=1)


def run_triage(settings: Settings, sinks: list[Sink], summary: RunSummary) -> None:
    """Triage as of the run's time into every sink; its outcome joins the run's."""
    if not any(o.outcome == "Succeeded" and o.table in TRIAGE_READS for o in summary.outcomes):
        return
    workspace = next((s for s in sinks if isinstance(s, DuckDBSink)), None)
    if workspace is None:
        # Without a local workspace there is nothing to decide from, on every run alike: the
        # doctor and docs/triage.md say so once, rather than a row in every run's log.
        return
    outcome = DatasetOutcome("triage", "", "triage", TRIAGE.name, kind="triage")
    summary.outcomes.append(outcome)
    if summary.disk_full:  # it would fail the same way, after minutes of computing
        outcome.outcome, outcome.error = "Failed", f"not run: {summary.disk_full}"
        outcome.end = outcome.start
        return
    try:
        last = _last_triage(workspace)
        interval = timedelta(hours=settings.triage.interval_hours)
        if last is not None and interval and summary.time_generated < last + interval:
            outcome.outcome = "Skipped"
            outcome.reason = (
                f"not due: next triage {last + interval:%Y-%m-%dT%H:%MZ},"
                f" every {settings.triage.interval_hours:g} h"
            )
            return
        if (
            last is not None
            and last <= summary.time_generated < last + _REFRESH
            and not workspace.wrote_since(TRIAGE_READS, TRIAGE.name)
        ):
            # The same inputs give the same decisions: hundreds of thousands of rows again,
            # into the workspace and Sentinel, every run of a quiet hour.
            outcome.outcome = "Skipped"
            outcome.reason = (
                f"nothing it reads changed since the triage of {last:%Y-%m-%dT%H:%MZ};"
                f" next by {last + _REFRESH:%Y-%m-%dT%H:%MZ} at the latest"
            )
            return
        _deliver(settings, sinks, summary, workspace, outcome)
    except (EpfError, MemoryError) as exc:
        outcome.outcome = "Failed"
        outcome.error = f"triage: {exc if isinstance(exc, EpfError) else 'out of memory'}"
        log.warning("%s", outcome.error)
    finally:
        outcome.end = datetime.now(UTC)


def _last_triage(workspace: DuckDBSink) -> datetime | None:
    """The time of the workspace's newest triage, None if it has none."""
    import duckdb

    try:
        with workspace.reading() as cursor:
            newest = cursor.execute('SELECT max(SnapshotTime) FROM "EPF_Triage_CL"').fetchall()
    except duckdb.Error as exc:
        raise EpfError(f"reading the workspace: {store.first_line(str(exc))}") from exc
    return newest[0][0] if newest else None


def _deliver(
    settings: Settings,
    sinks: list[Sink],
    summary: RunSummary,
    workspace: DuckDBSink,
    outcome: DatasetOutcome,
) -> None:
    """Into the workspace inside the engine, then from there to every other sink."""
    import duckdb

    at = summary.time_generated
    unit = f"triage/{summary.run_id}/triage/all"
    # DefenderTenantId comes with each row: a workspace may hold several tenants.
    stamp = {"TimeGenerated": at, "SnapshotTime": at, "RunId": summary.run_id}
    try:
        if not workspace.delivered(unit):
            workspace.derive(
                TRIAGE,
                unit=unit,
                stamp=stamp,
                # Sorted by device: a device's triage is read on its own (epf forensics).
                query=lambda con: triage_query(con, at, settings.triage, by_device=True),
                ordered=True,
            )
        others = [s for s in sinks if s is not workspace and not s.delivered(unit)]
        with workspace.reading() as cursor:
            selected = f'FROM "{TRIAGE.name}" WHERE RunId = ?'
            if not others:  # nothing to send on: the count is all that is needed
                found = cursor.execute(f"SELECT count(*) {selected}", [summary.run_id])
                written = int(found.fetchall()[0][0])
            else:
                written = _send_on(cursor, others, selected, unit, stamp, summary.run_id)
    except duckdb.Error as exc:
        raise EpfError(f"reading the workspace: {store.first_line(str(exc))}") from exc
    outcome.rows = written
    outcome.snapshot_run_id = summary.run_id


def _send_on(
    cursor: Any,
    sinks: list[Sink],
    selected: str,
    unit: str,
    stamp: Mapping[str, Any],
    run_id: str,
) -> int:
    """The run's triage rows, read back from the workspace, to every other sink."""
    columns = [c for c in TRIAGE.column_names if c not in _STAMPED]
    rows = cursor.sql(f"SELECT {', '.join(columns)} {selected}", params=[run_id])
    written = 0
    with ExitStack() as stack:
        writers = [stack.enter_context(s.open(TRIAGE, unit=unit)) for s in sinks]
        for record_batch in rows.to_arrow_reader(50_000):
            batch = Batch(TRIAGE, arrow=record_batch)
            for writer in writers:
                writer.write(batch, stamp)
            written += len(batch)
    return written


# What each sink stamps for itself: read back from the workspace, the rows leave them out.
_STAMPED = frozenset({"TimeGenerated", "SnapshotTime", "RunId", "BatchId"})

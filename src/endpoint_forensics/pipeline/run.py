"""One collection run: every due dataset of every source (Defender tenants, IoT sensors and
consoles, threat feeds), into every sink, resumably.

Owns the run: its id and time, the sources at once (each waiting on its service while another
has the sinks: ``turns``), each source's datasets by ``source_run.SourceRun``, then triage,
one ``EPF_Runs_CL`` row per dataset and source, and the sinks' flush.
May import the other ``pipeline`` modules, ``transforms``, ``contracts``, ``http``, ``config``,
``errors`` and ``runtime``.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from endpoint_forensics.config import Settings, TenantConfig
from endpoint_forensics.contracts import (
    Sink,
)
from endpoint_forensics.http.client import ApiClient
from endpoint_forensics.http.ratelimit import RateBudget
from endpoint_forensics.pipeline.checkpoints import (
    Quarantine,
)
from endpoint_forensics.pipeline.clients import appliance_client, feed_client, tenant_client
from endpoint_forensics.pipeline.plan import Source, sources_of
from endpoint_forensics.pipeline.runlog import DatasetOutcome, Progress, RunSummary, record_runs
from endpoint_forensics.pipeline.source_run import SourceRun
from endpoint_forensics.pipeline.triage import run_triage
from endpoint_forensics.pipeline.turns import SinkTurn, run_each
from endpoint_forensics.runtime import bound_memory, pandas_unseen

__all__ = ["DatasetOutcome", "Progress", "RunSummary", "run_sync"]

log = logging.getLogger(__name__)


def run_sync(
    settings: Settings,
    sinks: list[Sink],
    *,
    progress: Progress | None = None,
    client_factory: Callable[[TenantConfig], ApiClient] | None = None,
    now: datetime | None = None,
    budgets: Mapping[str, RateBudget] | None = None,
    stop: threading.Event | None = None,
) -> RunSummary:
    """Collect every due dataset once and deliver it to ``sinks``.

    ``budgets``: endpoint budgets to spend instead of fresh ones (a worker's, resumed from
    the calls of the workers before it); ``stop``: once set, every source stops before its
    next unit and ``RunStopped`` is raised (what was delivered stays checkpointed).
    """
    bound_memory()
    with pandas_unseen():
        return _run(settings, sinks, progress, client_factory, now, budgets, stop)


def _run(
    settings: Settings,
    sinks: list[Sink],
    progress: Progress | None,
    client_factory: Callable[[TenantConfig], ApiClient] | None,
    now: datetime | None,
    budgets: Mapping[str, RateBudget] | None,
    stop: threading.Event | None,
) -> RunSummary:
    started = time.monotonic()
    summary = RunSummary(run_id=str(uuid.uuid4()), time_generated=now or datetime.now(UTC))
    quarantine = Quarantine(settings.state.dir, summary.run_id)
    # Downloads of runs that were killed: a resumed snapshot downloads into its own run's
    # folder, so none is read again (one run at a time holds the state: pipeline.lock).
    for leftover in (settings.state.dir / "work").glob("*"):
        shutil.rmtree(leftover, ignore_errors=True)
    work_root = settings.state.dir / "work" / summary.run_id
    sources = sources_of(settings)
    outcomes: dict[str, list[DatasetOutcome]] = {s.unit_scope: [] for s in sources}
    turn = SinkTurn(stop)

    def collect(source: Source) -> None:
        if source.kind == "tenant":
            client = (client_factory or tenant_client)(source.config)
        elif source.kind == "feed":
            client = feed_client(source.config)
        else:
            client = appliance_client(source.config)
        with client:
            with turn:
                run = SourceRun(
                    source,
                    client,
                    settings,
                    sinks,
                    summary,
                    quarantine=quarantine,
                    turn=turn,
                    progress=progress,
                    outcomes=outcomes[source.unit_scope],
                    budgets=budgets,
                )
            try:
                run.collect_all(work_root / source.name)
            finally:
                run.writer.close()

    try:
        # The sources at once, each waiting on its service in another's turn at the sinks.
        run_each(sources, collect, turn)
    finally:
        shutil.rmtree(work_root, ignore_errors=True)
        # In the order of the sources, whichever finished first.
        summary.outcomes.extend(o for found in outcomes.values() for o in found)
    run_triage(settings, sinks, summary)
    record_runs(summary, sinks, settings.state.dir / "runs-pending")
    for sink in sinks:
        report = sink.flush()
        if report is not None:
            summary.deliveries[sink.name] = report
    if quarantine.count:
        summary.quarantine_folder = str(quarantine.folder)
    summary.wall_seconds = time.monotonic() - started
    return summary

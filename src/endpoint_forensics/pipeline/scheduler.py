"""``epf run``: the collection repeated on a schedule, until stopped.

Each tick is one ``run_sync`` with freshly opened sinks (a remote sink's outbox is sent at the
end of every tick). Datasets keep their own intervals (the weekly baseline, daily snapshots),
so a tick collects only what is due. A tick that finds another process running on the same
state folder (``pipeline.lock``) is skipped, said so, and the next tick tries again. A tick
that recorded an IoT events gap (a window the API capped, which asking type by type could not
close) makes the next tick come twice as soon, down to ``min_every_seconds``; the pace relaxes
again after an hour of clean ticks.
Imports ``pipeline``, ``sinks`` and ``config``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime

from endpoint_forensics.config import Settings
from endpoint_forensics.errors import RunInProgress
from endpoint_forensics.pipeline.lock import run_lock
from endpoint_forensics.pipeline.run import Progress, RunSummary, run_sync
from endpoint_forensics.sinks import close_sinks, open_sinks

__all__ = ["run_on_schedule"]

log = logging.getLogger(__name__)


def run_on_schedule(
    settings: Settings,
    *,
    every_seconds: float,
    runs: int = 0,
    min_every_seconds: float = 60.0,
    progress: Progress | None = None,
    on_summary: Callable[[RunSummary], None] | None = None,
    on_skipped: Callable[[str], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    now: Callable[[], datetime] | None = None,
) -> list[RunSummary]:
    """Run ``runs`` ticks (0: until interrupted), ``every_seconds`` apart from start to start.

    Returns the summaries of the ticks run (a KeyboardInterrupt between ticks ends the loop);
    a tick skipped because another process holds the state folder counts as a tick, has no
    summary, and is told to ``on_skipped``.
    ``sleep``, ``clock`` and ``now`` let a test drive the schedule on an emulated clock.
    """
    summaries: list[RunSummary] = []
    pace = every_seconds
    clean = 0  # ticks in a row without an events gap
    ticks = 0
    try:
        while runs == 0 or ticks < runs:
            started = clock()
            ticks += 1
            try:
                summary = _tick(settings, progress, now)
            except RunInProgress as exc:
                if on_skipped is not None:
                    on_skipped(str(exc))
                else:
                    log.warning("tick skipped: %s", exc)
                if runs and ticks >= runs:
                    break
                sleep(max(0.0, started + pace - clock()))
                continue
            summaries.append(summary)
            if on_summary is not None:
                on_summary(summary)
            gapped = any(o.dataset == "events" and o.gaps for o in summary.outcomes)
            clean = 0 if gapped else clean + 1
            pace = _next_pace(summary, pace, every_seconds, min_every_seconds, clean)
            if runs and ticks >= runs:
                break
            sleep(max(0.0, started + pace - clock()))
    except KeyboardInterrupt:
        log.info("stopped after %d run(s)", len(summaries))
    return summaries


def _tick(
    settings: Settings, progress: Progress | None, now: Callable[[], datetime] | None
) -> RunSummary:
    with run_lock(settings.state.dir, command="epf run"):
        sinks = open_sinks(settings)
        try:
            return run_sync(
                settings, sinks, progress=progress, now=now() if now is not None else None
            )
        finally:
            close_sinks(sinks)


def _next_pace(summary: RunSummary, pace: float, every: float, floor: float, clean: int) -> float:
    """Half the pace after a tick with an events gap; back up only after a clean hour's worth
    of ticks (at least 3), so the pace does not swing back into the gap."""
    gaps = [o for o in summary.outcomes if o.dataset == "events" and o.gaps]
    if gaps:
        sooner = max(min(floor, every), pace / 2)
        if sooner < pace:
            log.warning(
                "IoT events were capped and not all could be recovered (%s); polling every "
                "%.0f s instead of %.0f s",
                ", ".join(o.tenant for o in gaps),
                sooner,
                pace,
            )
        return sooner
    if pace < every and clean >= max(3, round(3600 / pace)):
        return min(every, pace * 2)
    return pace

"""One unit of a dataset written to the sinks that do not have it yet.

Owns the writing of a unit: each batch to every sink at once (``SinkFanout``), its rejects to
the quarantine, the rows the transforms derive from it after it, the rows counted once it is
committed; a unit whose fast reader gives up (``RedoUnit``) is written again from its
fallback. Its first batch is read while the other sources have the sinks (``SinkTurn``).
May import the other ``pipeline`` modules, ``contracts``, ``transforms`` and ``tables``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from itertools import chain, islice
from operator import methodcaller
from typing import Any

from endpoint_forensics.contracts import Batch, HistoryPlan, RedoUnit, SavedCheckpoint, Sink, Unit
from endpoint_forensics.pipeline.checkpoints import Quarantine
from endpoint_forensics.pipeline.fanout import SinkFanout
from endpoint_forensics.pipeline.plan import Source
from endpoint_forensics.pipeline.runlog import DatasetOutcome, Progress
from endpoint_forensics.pipeline.turns import SinkTurn
from endpoint_forensics.tables.datasets import DatasetSpec
from endpoint_forensics.transforms import TransformStage

__all__ = ["UnitWriter"]

log = logging.getLogger(__name__)


class UnitWriter:
    """Writes the units of one source's datasets (``write``)."""

    def __init__(
        self,
        source: Source,
        *,
        transforms: TransformStage,
        quarantine: Quarantine,
        turn: SinkTurn,
        progress: Progress | None,
    ) -> None:
        self.source = source
        self.transforms = transforms
        self.quarantine = quarantine
        self.turn = turn
        self.progress = progress
        self.fanout = SinkFanout()  # each sink's share of a step at once

    def close(self) -> None:
        self.fanout.close()

    def write(
        self,
        spec: DatasetSpec,
        unit: Unit,
        unit_id: str,
        pending: list[Sink],
        saved: tuple[SavedCheckpoint, HistoryPlan | None],
        stamp: Mapping[str, Any],
        outcome: DatasetOutcome,
    ) -> None:
        try:
            self._write(spec, unit_id, unit.batches, pending, saved, stamp, outcome)
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
            self._write(spec, unit_id, unit.fallback(), pending, saved, stamp, outcome)

    def _write(
        self,
        spec: DatasetSpec,
        unit_id: str,
        batches: Iterator[Batch],
        sinks: list[Sink],
        saved: tuple[SavedCheckpoint, HistoryPlan | None],
        stamp: Mapping[str, Any],
        outcome: DatasetOutcome,
    ) -> None:
        rows = quarantined = 0
        kept = self.transforms.collect(spec.table)
        checkpoint, history = saved
        # The first batch is read (an export part decoded, a page parsed) in the other sources'
        # turn at the sinks; a unit of one batch, the usual one, is then only written in ours.
        with self.turn.waiting():
            first = list(islice(batches, 1))
        units = [
            s.open(spec.table, unit=unit_id, checkpoint=checkpoint, history=history) for s in sinks
        ]
        with self.fanout.open_all(units) as writers:
            for batch in chain(first, batches):
                self.fanout.each(writers, methodcaller("write", batch, stamp))
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

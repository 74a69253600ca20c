"""What sources, the pipeline and sinks share: batches, delivery units, and the Sink protocol.

A source yields ``Unit`` objects (a page, a query, an export part), each a lazy stream of
``Batch`` objects for one table plus the resume token that continues *after* it. The pipeline
delivers a unit to every sink as one all-or-nothing write, then records the token, so a run
that stops midway resumes at the next unit with nothing written twice. Sources never import
sinks, nor sinks sources. May import ``tables`` only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from itertools import islice
from typing import Any, Literal, Protocol

from endpoint_forensics.tables import Table

__all__ = [
    "Batch",
    "CheckpointStore",
    "DeliveryReport",
    "HistoryPlan",
    "RedoUnit",
    "Reject",
    "Row",
    "SavedCheckpoint",
    "Sink",
    "SnapshotChanged",
    "TableWriter",
    "Unit",
    "batch_of",
    "batches_of",
]

Row = dict[str, Any]


@dataclass(frozen=True)
class Reject:
    """A record that could not be turned into a row, with why (it goes to quarantine)."""

    reason: str
    record: Any


@dataclass
class Batch:
    """Rows for one table: either ``rows`` keyed by column name (values typed: aware UTC
    datetimes, dict/list for dynamic columns) or ``arrow``, a pyarrow table or record batch with
    the table's columns. The pipeline stamps TimeGenerated, SnapshotTime, RunId and
    DefenderTenantId."""

    table: Table
    rows: list[Row] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    arrow: Any = None

    def __len__(self) -> int:
        return len(self.rows) + (self.arrow.num_rows if self.arrow is not None else 0)


@dataclass
class Unit:
    """One resumable piece of a dataset: its batches, and the token that continues after it.

    ``fallback`` gives the same rows by a slower, more tolerant way; the pipeline delivers it
    instead when ``batches`` raises ``RedoUnit``.
    """

    key: str
    batches: Iterator[Batch]
    resume: dict[str, Any] = field(default_factory=dict)
    fallback: Callable[[], Iterator[Batch]] | None = None


class RedoUnit(Exception):
    """The fast reader of a unit gave up (e.g. a line that is not JSON): use its fallback."""


class SnapshotChanged(Exception):
    """The remote snapshot a resumed dataset was reading is gone: start the dataset over."""


def batch_of(table: Table, records: Iterable[Any], to_row: Callable[[Any], Row | str]) -> Batch:
    """A batch of ``to_row(record)`` for each record; a string result is a reject's reason."""
    batch = Batch(table)
    for record in records:
        row = to_row(record)
        if isinstance(row, str):
            batch.rejects.append(Reject(row, record))
        else:
            batch.rows.append(row)
    return batch


def batches_of(
    table: Table,
    records: Iterable[Any],
    to_row: Callable[[Any], Row | str],
    *,
    size: int = 5_000,
) -> Iterator[Batch]:
    """``batch_of`` in slices of ``size`` records, so rows never pile up beside the records
    (nor, read from a file, the records themselves)."""
    found = iter(records)
    while chunk := list(islice(found, size)):
        yield batch_of(table, chunk, to_row)


@dataclass
class DeliveryReport:
    """What a sink delivered in this run, and what still waits."""

    sent_uploads: int = 0
    sent_rows: int = 0
    sent_bytes: int = 0  # compressed bytes on the wire
    raw_bytes: int = 0  # uncompressed JSON
    waiting_uploads: int = 0
    waiting_rows: int = 0
    rejected_uploads: int = 0
    throttled: int = 0  # 429s waited out
    seconds: float = 0.0
    error: str = ""


class TableWriter(Protocol):
    def write(self, batch: Batch, stamp: Mapping[str, Any]) -> None:
        """Write ``batch`` with the ``stamp`` columns (TimeGenerated, SnapshotTime, RunId,
        DefenderTenantId); a stamp without SnapshotTime was taken at its TimeGenerated."""
        ...


@dataclass(frozen=True)
class SavedCheckpoint:
    """A dataset's checkpoint as it stands once a unit is delivered: a sink stores it with the
    unit (in the same transaction where it can), so what a sink holds and what it says it holds
    never part ways. ``scope`` names the source (``tenants/contoso``)."""

    scope: str
    dataset: str
    state: Mapping[str, Any]


class CheckpointStore(Protocol):
    """Where one sink keeps its checkpoints: what it holds, per source and dataset."""

    def load(self, scope: str) -> dict[str, dict[str, Any]]:
        """Every dataset's stored checkpoint of the source ``scope`` ({} when none)."""
        ...

    def save(self, checkpoint: SavedCheckpoint) -> None: ...


@dataclass(frozen=True)
class HistoryPlan:
    """How one snapshot of a change-tracked table is written (``Table.changes``): every row
    (``snapshot``), or only what changed against what the sink holds (``changes``, with a full
    baseline every ``baseline_days``). docs/history.md."""

    mode: Literal["snapshot", "changes"]
    snapshot_time: datetime
    baseline_days: float  # the config's [history] baseline_days


class Sink(Protocol):
    """A destination. ``open`` returns a context in which writes are all-or-nothing:
    leaving it normally commits (and remembers ``unit`` as delivered, and ``checkpoint`` as
    where the dataset stands), leaving it with an exception discards every row written."""

    name: str

    @property
    def checkpoints(self) -> CheckpointStore:
        """Where this sink keeps what it holds."""
        ...

    def open(
        self,
        table: Table,
        *,
        unit: str,
        checkpoint: SavedCheckpoint | None = None,
        history: HistoryPlan | None = None,
    ) -> AbstractContextManager[TableWriter]:
        """A unit's writer; with ``history``, a change-tracked table's rows are written as the
        plan says (``sinks.history``)."""
        ...

    def finish_snapshot(
        self,
        table: Table,
        history: HistoryPlan,
        *,
        unit: str,
        stamp: Mapping[str, Any],
    ) -> int:
        """The snapshot of a change-tracked table is complete: write, as the unit ``unit``, the
        ``Removed`` rows of the keys it did not show; return how many."""
        ...

    def holds(self, unit_scope: str) -> bool:
        """Whether the sink ever took a unit of the source ``unit_scope`` (``<scope>/...``)."""
        ...

    def delivered(self, unit: str) -> bool:
        """Whether ``unit`` was committed before (a run stopped between sink and checkpoint)."""
        ...

    def discard(
        self,
        table: Table,
        *,
        run_id: str,
        unit_scope: str,
        where: Mapping[str, str],
        dataset: str,
    ) -> int:
        """Remove a partial snapshot of one source's dataset: the rows of ``run_id`` whose
        ``where`` columns match and whose unit starts ``<unit_scope>/<run_id>/<dataset>/``
        (another dataset of the source may write the same table in the same run), and those
        delivery units; return the rows removed."""
        ...

    def hold_snapshot(self, unit_prefix: str, *, scope: str, dataset: str, run_id: str) -> None:
        """The units starting ``unit_prefix`` belong to a snapshot that cannot resume: a sink
        that cannot take rows back (Sentinel) keeps them until ``release_snapshot``, so a
        snapshot cut short and collected again never reaches it twice."""
        ...

    def release_snapshot(self, unit_prefix: str) -> None:
        """The snapshot of ``unit_prefix`` is complete (its checkpoint says so): deliver it."""
        ...

    def room(self) -> str | None:
        """None when the sink can take another unit; else why not (its outbox is at its cap
        and cannot drain now). Asked before each unit is read from a source: back-pressure."""
        ...

    def flush(self) -> DeliveryReport | None:
        """Finish delivering what was written (a remote sink sends its outbox); report it."""
        ...

    def close(self) -> None: ...

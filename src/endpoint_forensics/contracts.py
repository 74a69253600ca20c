"""What sources, the pipeline and sinks share: the record batch, rejects, and the Sink protocol.

Sources yield ``Batch`` objects for one table; sinks write them. Neither imports the other.
Imports only ``tables``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from endpoint_forensics.tables import Table

__all__ = ["Batch", "Reject", "Row", "Sink", "TableWriter", "batch_of"]

Row = dict[str, Any]


@dataclass(frozen=True)
class Reject:
    """A record that could not be turned into a row, with why (it goes to quarantine)."""

    reason: str
    record: Any


@dataclass
class Batch:
    """Rows for one table, keyed by column name, values already typed (aware UTC datetimes,
    dict/list for dynamic columns). The pipeline stamps TimeGenerated, RunId and DefenderTenantId."""

    table: Table
    rows: list[Row] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)


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


class TableWriter(Protocol):
    def write(self, rows: list[Row]) -> None: ...


class Sink(Protocol):
    """A destination. ``open`` returns a context in which writes are all-or-nothing:
    leaving it normally commits, leaving it with an exception discards every row written."""

    name: str

    def open(self, table: Table) -> AbstractContextManager[TableWriter]: ...

    def close(self) -> None: ...

"""Derived tables: a stage between sources and sinks.

A transform declares the tables it reads and the tables it writes. The pipeline hands it the
rows of every unit of a table it reads, and once every sink holds that unit, delivers what it
derives as units of its own (``<unit>/<transform>/<table>``), so a derived unit is delivered
exactly once like any other and a replayed run derives nothing twice. When a snapshot is
discarded, the tables derived from it are discarded with it. The compat profile
(``transforms.compat``) is the first transform. May import ``contracts`` and ``tables``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol

from endpoint_forensics.contracts import Batch, Row, Sink
from endpoint_forensics.tables import Table

__all__ = ["Transform", "TransformStage", "UnitRows"]


class Transform(Protocol):
    """Rows of tables it reads in, rows of the tables it writes out; no I/O."""

    name: str  # the part of a derived unit id that names the transform
    reads: tuple[Table, ...]
    writes: tuple[Table, ...]

    def derive(
        self, table: Table, rows: Sequence[Mapping[str, Any]]
    ) -> Iterator[tuple[Table, list[Row]]]:
        """What ``rows`` (one unit of ``table``) derive, per written table; empty ones left out."""
        ...

    def derives(self, table: Table) -> tuple[Table, ...]:
        """The tables this transform writes from ``table``."""
        ...


class UnitRows:
    """The rows of one unit, kept for the transforms that read its table."""

    def __init__(self, transforms: Sequence[Transform]) -> None:
        self.transforms = transforms
        self.rows: list[Row] = []

    def add(self, batch: Batch) -> None:
        self.rows.extend(batch.rows)
        if batch.arrow is not None:
            self.rows.extend(batch.arrow.to_pylist())


class TransformStage:
    """The transforms of one run, by the table they read."""

    def __init__(self, transforms: Iterable[Transform]) -> None:
        self._by_table: dict[str, list[Transform]] = {}
        for transform in transforms:
            for table in transform.reads:
                self._by_table.setdefault(table.name, []).append(transform)

    def collect(self, table: Table) -> UnitRows | None:
        """A collector for a unit of ``table``; None when no transform reads it (the rows
        then stream through without being kept)."""
        readers = self._by_table.get(table.name)
        return UnitRows(readers) if readers else None

    def deliver(
        self,
        table: Table,
        unit_rows: UnitRows,
        sinks: Sequence[Sink],
        *,
        unit: str,
        stamp: Mapping[str, Any],
    ) -> None:
        """Deliver what the unit derives, each derived table as its own unit, to every sink
        that lacks it. Derived rows carry the stamp of the rows they come from."""
        for transform in unit_rows.transforms:
            for written, rows in transform.derive(table, unit_rows.rows):
                derived_unit = f"{unit}/{transform.name}/{written.name}"
                for sink in sinks:
                    if sink.delivered(derived_unit):
                        continue
                    with sink.open(written, unit=derived_unit) as writer:
                        writer.write(Batch(written, rows=rows), stamp)

    def derived_from(self, table: Table) -> list[Table]:
        """The tables derived from ``table``: discarded along with a snapshot of it."""
        return [
            t for transform in self._by_table.get(table.name, ()) for t in transform.derives(table)
        ]

"""The DuckDB workspace sink: each dataset's rows land in one transaction.

Delivery guarantee: a dataset's snapshot is committed whole or not at all, so a run that fails
midway leaves no partial snapshot and no duplicates behind. Imports ``tables``, ``store`` and
``contracts`` only.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

from endpoint_forensics import store
from endpoint_forensics.contracts import Row
from endpoint_forensics.tables import KqlType, Table

__all__ = ["DuckDBSink"]


class DuckDBSink:
    name = "duckdb"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._con = store.connect(path)

    @contextmanager
    def open(self, table: Table) -> Iterator[_TableWriter]:
        self._con.begin()
        try:
            yield _TableWriter(self._con, table)
        except BaseException:
            self._con.rollback()
            raise
        self._con.commit()

    def close(self) -> None:
        self._con.close()


class _TableWriter:
    def __init__(self, con: Any, table: Table) -> None:
        self._con = con
        self._table = table
        self.rows = 0

    def write(self, rows: list[Row]) -> None:
        if not rows:
            return
        data = _to_arrow(self._table, rows)
        self._con.register("_epf_batch", data)
        try:
            self._con.execute(f'INSERT INTO "{self._table.name}" BY NAME SELECT * FROM _epf_batch')
        finally:
            self._con.unregister("_epf_batch")
        self.rows += len(rows)


def _to_arrow(table: Table, rows: list[Row]) -> Any:
    import pyarrow as pa

    arrays = []
    for col in table.columns:
        values = [row.get(col.name) for row in rows]
        if col.type is KqlType.DYNAMIC:
            values = [None if v is None else orjson.dumps(v).decode() for v in values]
        arrays.append(pa.array(values, type=_ARROW_TYPES[col.type]()))
    return pa.Table.from_arrays(arrays, names=list(table.column_names))


def _arrow_types() -> dict[KqlType, Any]:
    import pyarrow as pa

    return {
        KqlType.STRING: pa.string,
        KqlType.GUID: pa.string,
        KqlType.DYNAMIC: pa.string,
        KqlType.INT: pa.int32,
        KqlType.LONG: pa.int64,
        KqlType.REAL: pa.float64,
        KqlType.BOOL: pa.bool_,
        KqlType.DATETIME: lambda: pa.timestamp("us", tz="UTC"),
    }


_ARROW_TYPES = _arrow_types()

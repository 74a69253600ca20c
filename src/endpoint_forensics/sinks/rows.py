"""Rows as a pyarrow table with a table's column types: how both sinks hand rows to DuckDB
(the workspace's inserts, the change-only history's comparison). Dynamic values become JSON
text, as the workspace stores them. May import ``tables`` only (and orjson, pyarrow).
"""

from __future__ import annotations

from typing import Any

import orjson

from endpoint_forensics.tables import KqlType, Table

__all__ = ["to_arrow"]


def to_arrow(table: Table, rows: list[dict[str, Any]], *, stamped: set[str]) -> Any:
    import pyarrow as pa

    arrays = []
    names = []
    for col in table.columns:
        if col.name in stamped:
            continue
        values = [row.get(col.name) for row in rows]
        if col.type is KqlType.DYNAMIC:
            values = [None if v is None else orjson.dumps(v).decode() for v in values]
        arrays.append(pa.array(values, type=_ARROW_TYPES[col.type]()))
        names.append(col.name)
    return pa.Table.from_arrays(arrays, names=names)


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

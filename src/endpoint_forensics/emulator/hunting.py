"""Advanced-hunting query execution shared by the MDE legacy and Graph endpoints.

Owns turning posted KQL into rows the way the service answers (defender-apis.md B.3):
translate with duckdb-kql (writes refused), run it on a cursor that sees only the requested
time window, type every column (String, DateTime, Boolean, Int32, Int64, Double, Object),
format datetimes as ISO 8601 with 7 fractional digits and ``Z``, keep lists and dynamic
values as JSON, truncate silently past the row limit, and refuse results over 124 MB or
queries over 200 s. Rows are serialised by DuckDB itself (``to_json``), which is several
times faster than converting them in Python.

Blocking: call ``run_hunting`` from a worker thread, never on the event loop.
Imports only ``store`` of the emulator: it shares no code with the collector.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .store import HUNTING_SCHEMA, Store

__all__ = ["HuntingQueryError", "HuntingResult", "run_hunting"]

#: Result size and duration limits of the MDE API (defender-apis.md B.3).
MAX_RESULT_BYTES = 124 * 1024 * 1024
MAX_SECONDS = 200.0
_TOO_LARGE = (
    "Query execution has exceeded the allowed result size. Optimize your query by limiting the "
    "number of results and try again"
)

# An ISO instant with 7 fractional digits: DuckDB has microseconds, the service 100 ns ticks.
_ISO = "strftime(CAST({c} AS TIMESTAMP), '%Y-%m-%dT%H:%M:%S.%f') || '0Z'"
# KQL timespan text, [-][d.]hh:mm:ss[.fffffff], from an INTERVAL.
_TIMESPAN = (
    "CASE WHEN {c} IS NULL THEN NULL ELSE "
    "(CASE WHEN epoch_us({c}) < 0 THEN '-' ELSE '' END)"
    " || (CASE WHEN abs(epoch_us({c})) >= 86400000000"
    " THEN CAST(abs(epoch_us({c})) // 86400000000 AS VARCHAR) || '.' ELSE '' END)"
    " || lpad(CAST(abs(epoch_us({c})) // 3600000000 % 24 AS VARCHAR), 2, '0')"
    " || ':' || lpad(CAST(abs(epoch_us({c})) // 60000000 % 60 AS VARCHAR), 2, '0')"
    " || ':' || lpad(CAST(abs(epoch_us({c})) // 1000000 % 60 AS VARCHAR), 2, '0')"
    " || (CASE WHEN abs(epoch_us({c})) % 1000000 <> 0"
    " THEN '.' || lpad(CAST(abs(epoch_us({c})) % 1000000 AS VARCHAR), 6, '0') || '0' ELSE '' END) END"
)


class HuntingQueryError(Exception):
    """The query cannot be translated or run; the message is what the 400 body says."""


@dataclass(frozen=True)
class HuntingResult:
    """Column names and types, and one encoded JSON object per row."""

    columns: list[tuple[str, str]]
    rows: list[bytes]


def run_hunting(
    store: Store,
    query: str,
    *,
    start: datetime,
    end: datetime,
    now: datetime,
    row_limit: int,
) -> HuntingResult:
    """Run KQL ``query`` over the tables as of ``now``, seeing rows in ``[start, end]`` only.

    Raises:
        HuntingQueryError: empty query, a construct duckdb-kql refuses, a syntax, schema or
            runtime error, a result over 124 MB, or a query over 200 s.
    """
    import duckdb
    import duckdb_kql

    if not query.strip():
        raise HuntingQueryError("The query is empty.")
    try:
        sql = duckdb_kql.to_sql(
            query,
            schema=HUNTING_SCHEMA,
            allow_write=False,
            query_now=now.astimezone(UTC).replace(tzinfo=None),
        )
    except duckdb_kql.KqlError as exc:
        raise HuntingQueryError(_first_line(exc)) from exc
    except Exception as exc:  # a translator bug must still be a clean 400, not a 500
        raise HuntingQueryError(f"The query could not be translated: {_first_line(exc)}") from exc
    params: dict[str, Any] = dict(sql.parameters or {})
    with store.window(start, end) as cursor:
        timer = threading.Timer(MAX_SECONDS, cursor.interrupt)
        timer.daemon = True
        timer.start()
        try:
            relation = cursor.sql(str(sql), params=params) if params else cursor.sql(str(sql))
            if relation is None:
                raise HuntingQueryError("The query does not return a table.")
            names, kinds = list(relation.columns), [str(t) for t in relation.types]
            columns = [(name, _schema_type(kind)) for name, kind in zip(names, kinds, strict=True)]
            encoded = relation.limit(row_limit).project(_row_json(names, kinds))
            rows: list[bytes] = []
            size = 0
            for (text,) in encoded.fetchall():
                data = text.encode()
                size += len(data) + 1
                if size > MAX_RESULT_BYTES:
                    raise HuntingQueryError(_TOO_LARGE)
                rows.append(data)
        except duckdb.InterruptException as exc:
            message = f"Query execution has exceeded the allowed time of {MAX_SECONDS:g} seconds."
            raise HuntingQueryError(message) from exc
        except duckdb.Error as exc:
            raise HuntingQueryError(_first_line(exc)) from exc
        finally:
            timer.cancel()
    return HuntingResult(columns=columns, rows=rows)


def _row_json(names: list[str], types: list[str]) -> str:
    """A projection that renders each row as one JSON object, values in the service's format."""
    items = []
    for name, kind in zip(names, types, strict=True):
        column = '"' + name.replace('"', '""') + '"'
        items.append(f"'{name.replace(chr(39), chr(39) * 2)}': {_render(column, kind.upper())}")
    return "to_json({" + ", ".join(items) + "})"


def _render(column: str, kind: str) -> str:
    if kind.startswith("TIMESTAMP") or kind == "DATE":
        return _ISO.format(c=column)
    if kind == "INTERVAL":
        return _TIMESPAN.format(c=column)
    if kind in ("DOUBLE", "FLOAT", "REAL") or kind.startswith("DECIMAL"):
        # JSON has no NaN or infinity; the service would not send them as numbers either.
        number = f"CAST({column} AS DOUBLE)"
        return f"CASE WHEN isfinite({number}) THEN {number} ELSE NULL END"
    if kind == "BLOB":
        return f"base64({column})"
    if kind in ("TIME", "UUID") or kind.startswith(("TIME ", "BIT", "ENUM")):
        return f"CAST({column} AS VARCHAR)"
    return column


def _schema_type(kind: str) -> str:
    """The advanced-hunting schema type of a DuckDB result type."""
    kind = kind.upper()
    if kind == "JSON" or kind.endswith("]") or kind.startswith(("STRUCT", "MAP", "UNION")):
        return "Object"
    if kind.startswith("TIMESTAMP") or kind == "DATE":
        return "DateTime"
    if kind == "BOOLEAN":
        return "Boolean"
    if kind in ("TINYINT", "SMALLINT", "INTEGER", "UTINYINT", "USMALLINT"):
        return "Int32"
    if kind in ("BIGINT", "UINTEGER", "UBIGINT", "HUGEINT", "UHUGEINT"):
        return "Int64"
    if kind in ("DOUBLE", "FLOAT", "REAL") or kind.startswith("DECIMAL"):
        return "Double"
    return "String"


def _first_line(exc: BaseException) -> str:
    """The useful part of an error (DuckDB appends 'Did you mean ...' lines about its catalog)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__

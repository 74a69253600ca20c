"""The embedded DuckDB workspace: opening it with every registered table, and querying it.

Owns the workspace file's schema (created and extended from the ``tables`` registry) and
KQL/SQL queries over it (KQL through duckdb-kql). May import ``tables`` and ``errors`` only.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from endpoint_forensics.errors import ConfigError, EpfError, WorkspaceBusy
from endpoint_forensics.tables import TABLES
from endpoint_forensics.workspace.kql_errors import plain_kql_error

__all__ = [
    "QUERY_MEMORY_MB",
    "STAGE_MEMORY_MB",
    "SYNC_MEMORY_MB",
    "QueryError",
    "QueryResult",
    "connect",
    "connect_as_of",
    "first_line",
    "plain_value",
    "query_on",
    "run_query",
]


class QueryError(EpfError):
    """A query could not be translated or run."""

    exit_code = 2


@dataclass(frozen=True)
class QueryResult:
    columns: list[str]
    types: list[str]
    rows: list[tuple[Any, ...]]

    def records(self) -> list[dict[str, Any]]:
        """Rows as objects, JSON columns decoded, datetimes as ISO 8601 UTC strings."""
        json_cols = {i for i, t in enumerate(self.types) if t == "JSON"}
        out = []
        for row in self.rows:
            out.append(
                {
                    name: plain_value(value, decode_json=i in json_cols)
                    for i, (name, value) in enumerate(zip(self.columns, row, strict=True))
                }
            )
        return out


def _query_memory_mb() -> int:
    """4 GB, or half the machine's memory if that is less, but at least 2 GB."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows)
        total = 0
    return max(2048, min(4096, total // 2))


QUERY_MEMORY_MB = _query_memory_mb()
#: What a writing connection gets: a sync of a large tenant stays in a few hundred MB.
SYNC_MEMORY_MB = 128
#: What a sync's stage over the whole workspace (triage) gets unless ``store.stage_memory_mb``
#: says: a bound, not a share of the machine, so a sync's peak does not grow with the fleet.
#: Triage of 2.4M open rows (100,000 devices) took 12.4 s in 1.1 GB, 10.6 s in 2.7 GB with
#: 4 GB; of 4.9M rows (200,000) 24.1 s in 1.1 GB, 21.5 s in 4.1 GB.
STAGE_MEMORY_MB = 1024


def connect(path: Path, *, read_only: bool = False) -> Any:
    """Open (and, unless read-only, create or extend) the workspace at ``path``."""
    import duckdb

    if read_only and not path.exists():
        raise ConfigError(
            f"workspace {str(path)!r} does not exist; run `epf sync` or `epf demo` first"
        )
    if not read_only:
        remove_unfinished(path)
    try:
        con = duckdb.connect(str(path), read_only=read_only)
    except duckdb.Error as exc:
        raise _cannot_open(path, exc) from exc
    con.execute("SET TimeZone = 'UTC'")
    # DuckDB's own progress bar prints to stdout when a query runs past 2 s; ours stays.
    con.execute("SET enable_progress_bar = false")
    # Bounded, so a sync of a large tenant stays in a few hundred MB; DuckDB spills beyond.
    # A read-only connection answers questions over the whole history: it gets more room
    # (at 2 GB the 90-day lifecycle of 20,000 devices spilled and took 40% longer; 4 GB held
    # it, where DuckDB's default, 80% of the machine, let snapshot-mode history take 10 GB).
    con.execute(f"SET memory_limit = '{QUERY_MEMORY_MB if read_only else SYNC_MEMORY_MB}MB'")
    if not read_only:
        _ensure_schema(con)
    return con


# A new DuckDB file starts with three 4 KiB headers, written before anything else.
_HEADERS_BYTES = 3 * 4096


def remove_unfinished(path: Path) -> None:
    """Remove a DuckDB file shorter than its headers: its creation never finished (the disk
    filled first), so it holds nothing, and DuckDB would refuse to open it for good."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return
    if size < _HEADERS_BYTES:
        path.unlink()
        path.with_name(path.name + ".wal").unlink(missing_ok=True)


def _cannot_open(path: Path, exc: Exception) -> EpfError:
    """Why the workspace could not be opened: busy (another process writes it; DuckDB lets one
    process open a file for writing, and none to read it meanwhile), or another failure."""
    text = str(exc)
    if "Could not set lock" in text:
        holder = re.search(r"\(PID (\d+)\)", text)
        return WorkspaceBusy(
            f"workspace {str(path)!r} is open in another process"
            + (f" (process {holder.group(1)})" if holder else "")
            + ": a sync, `epf run` or the dashboard; while one process writes a workspace file"
            " DuckDB lets no other open it. Try again when that one has finished"
        )
    return ConfigError(f"cannot open workspace {str(path)!r}: {text}")


def connect_as_of(path: Path, at: datetime) -> Any:
    """The workspace read-only as it stood at ``at``: each registered table a view of its rows
    with ``SnapshotTime`` at or before ``at``. A query for "the newest snapshot" then answers
    with the newest one known at ``at``, so one text answers now and any time before.

    Raises:
        ConfigError: the workspace does not exist or cannot be opened.
    """
    import duckdb

    if not path.exists():
        raise ConfigError(
            f"workspace {str(path)!r} does not exist; run `epf sync` or `epf demo` first"
        )
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET enable_progress_bar = false")
    con.execute(f"SET memory_limit = '{QUERY_MEMORY_MB}MB'")
    try:
        con.execute("ATTACH ? AS workspace (READ_ONLY)", [str(path)])
    except duckdb.Error as exc:
        con.close()
        raise _cannot_open(path, exc) from exc
    present = {
        str(r[0])
        for r in con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = 'workspace'"
        ).fetchall()
    }
    for name in sorted(present & set(TABLES)):
        con.execute(
            f'CREATE VIEW "{name}" AS SELECT * FROM workspace.main."{name}"'
            f" WHERE SnapshotTime <= TIMESTAMPTZ '{at.isoformat()}'"
        )
    return con


def table_columns(con: Any) -> dict[str, list[str]]:
    """Each table of the workspace and its columns, in order: what a KQL translation needs
    (duckdb-kql's ``schema``). Read from duckdb_columns(), in a third of the time
    information_schema takes."""
    found: dict[str, list[str]] = {}
    for table, column in con.execute(
        "SELECT table_name, column_name FROM duckdb_columns()"
        " WHERE database_name = current_database() AND schema_name = 'main'"
        " ORDER BY table_name, column_index"
    ).fetchall():
        found.setdefault(str(table), []).append(str(column))
    return found


def run_query(path: Path, query: str, *, sql: bool = False, functions: Any = None) -> QueryResult:
    """Run a KQL (default) or SQL query on the workspace and return every row; a KQL query
    may call ``functions`` (duckdb-kql's ``functions=``: Kusto definitions or their parsed
    registry)."""
    con = connect(path, read_only=True)
    try:
        return query_on(con, query, sql=sql, functions=functions)
    finally:
        con.close()


def query_on(
    con: Any, query: str, *, sql: bool = False, functions: Any = None, limit: int | None = None
) -> QueryResult:
    """``run_query`` on an open connection, keeping at most ``limit`` rows (all by default).

    Raises:
        QueryError: the query was refused or failed, said in a line its author can act on.
    """
    try:
        if sql:
            rel = con.sql(query)
        else:
            import duckdb_kql

            rel = duckdb_kql.kql(con, query, functions=functions)
        if rel is None:
            return QueryResult([], [], [])
        rows = (rel if limit is None else rel.limit(limit)).fetchall()
        return QueryResult(list(rel.columns), [str(t) for t in rel.types], rows)
    except Exception as exc:
        reason = query_failure(exc)
        if reason is None:
            raise
        raise QueryError(reason) from exc


def query_failure(exc: BaseException) -> str | None:
    """What a failed query means to its author, one line, or None for a failure that is not
    the query's (a bug of ours: it goes on as it is). DuckDB's errors keep their hints;
    duckdb-kql raises its own parse and unsupported-construct errors, said in KQL's terms."""
    import duckdb

    if isinstance(exc, duckdb.Error):
        return f"query failed: {first_line(str(exc))}"
    if type(exc).__module__.startswith("duckdb_kql"):
        return f"KQL not accepted: {plain_kql_error(first_line(str(exc)))}"
    return None


def _ensure_schema(con: Any) -> None:
    existing: dict[str, set[str]] = {}
    for table, column in con.execute(
        "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'main'"
    ).fetchall():
        existing.setdefault(table, set()).add(column)
    for table in TABLES.values():
        if table.name not in existing:
            con.execute(table.duckdb_ddl())
            continue
        for col in table.columns:  # a column added to the registry later
            if col.name not in existing[table.name]:
                con.execute(f'ALTER TABLE "{table.name}" ADD COLUMN {col.duckdb_definition}')
                if col.name == "SnapshotTime":
                    # Rows written before the column existed: locally the two were always equal.
                    con.execute(f'UPDATE "{table.name}" SET SnapshotTime = TimeGenerated')


def plain_value(value: Any, *, decode_json: bool = False) -> Any:
    """A cell as JSON carries it: a datetime as ISO 8601 UTC, a JSON column's text decoded."""
    if isinstance(value, datetime):
        # The workspace keeps UTC: a naive value (a KQL todatetime()) is UTC too.
        return value.isoformat().replace("+00:00", "Z") + ("Z" if value.tzinfo is None else "")
    if decode_json and isinstance(value, str):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return value
    return value


def first_line(text: str) -> str:
    """The first line of an error message, at most 400 characters."""
    return text.strip().splitlines()[0][:400] if text.strip() else "unknown error"

"""The read-only workspace connection one forensic answer shares, and its error.

Owns running an answer's reads at once (each on its own cursor), SQL as it is and KQL through
duckdb-kql with each text translated once per process; ``analytics.forensics`` says what to
read. May import ``analytics.functions``, ``workspace`` and ``errors``.
"""

from __future__ import annotations

import os
import queue
from datetime import datetime
from pathlib import Path
from typing import Any

from endpoint_forensics.analytics.changes import WindowQuery
from endpoint_forensics.analytics.functions import registry_for
from endpoint_forensics.errors import EpfError
from endpoint_forensics.workspace import store

__all__ = ["ForensicsError", "Workspace"]


class ForensicsError(EpfError):
    """The question cannot be answered from this workspace (no such device, a bad predicate)."""

    exit_code = 2


class Workspace:
    """The read-only connection an answer's queries share; ``run_all`` runs them at once, each
    on its own cursor (DuckDB plans one query on one thread: an answer is a dozen of them)."""

    def __init__(self, db: Path) -> None:
        self.con = store.connect(db, read_only=True)
        self.schema = store.table_columns(self.con)  # for the translation
        if any(
            t in self.schema and "HistoryKind" not in self.schema[t]
            for t in ("EPF_Devices_CL", "EPF_SecureConfig_CL")
        ):
            self.con.close()
            raise ForensicsError(
                f"workspace {db} was written by an older epf (no HistoryKind column):"
                " run `epf sync` on it once, which upgrades it in place"
            )
        self._schema_key = hash(tuple(sorted((t, tuple(c)) for t, c in self.schema.items())))

    def close(self) -> None:
        self.con.close()

    def has(self, table: str) -> bool:
        return table in self.schema

    def kql(self, query: str, **values: Any) -> list[dict[str, Any]]:
        """Run ``query`` with ``values`` as its declared parameters."""
        return self._run(self.con, query, values)

    def run_all(self, queries: dict[str, WindowQuery]) -> dict[str, Any]:
        """Every named query run at once; the rows by name."""
        from concurrent.futures import ThreadPoolExecutor

        workers = max(1, min(len(queries), os.cpu_count() or 1, 4))
        cursors: queue.SimpleQueue[Any] = queue.SimpleQueue()
        for _ in range(workers):
            cursor = self.con.cursor()
            cursor.execute("SET TimeZone = 'UTC'")
            cursors.put(cursor)

        def run(query: WindowQuery) -> list[dict[str, Any]]:
            cursor = cursors.get()
            try:
                if query.sql:
                    return self._run_sql(cursor, query.text, query.values)
                return self._run(cursor, query.text, query.values)
            finally:
                cursors.put(cursor)

        try:
            with ThreadPoolExecutor(workers, thread_name_prefix="epf-forensics") as pool:
                results = dict(zip(queries, pool.map(run, queries.values()), strict=True))
        finally:
            while not cursors.empty():
                cursors.get().close()
        return results

    def _run_sql(self, con: Any, text: str, values: dict[str, Any]) -> list[dict[str, Any]]:
        try:
            cursor = con.execute(text, values)
            columns = [str(d[0]) for d in cursor.description or ()]
            types = [str(d[1]) for d in cursor.description or ()]
            rows = cursor.fetchall() if columns else []
        except Exception as exc:
            reason = store.query_failure(exc)
            if reason is None:
                raise
            raise ForensicsError(reason) from exc
        return store.QueryResult(columns, types, rows).records()

    def _run(self, con: Any, query: str, values: dict[str, Any]) -> list[dict[str, Any]]:
        """Each text is translated once per process (translating costs more than running,
        for one device's rows)."""
        import duckdb_kql
        from duckdb_kql.params import coerce

        if values:
            declared = ", ".join(f"{k}:{_kql_type(v)}" for k, v in values.items())
            query = f"declare query_parameters({declared});\n{query}"
        try:
            translated = _TRANSLATED.get((query, self._schema_key))
            if translated is None:
                translated = duckdb_kql.to_sql(
                    query, schema=self.schema, functions=registry_for(query), parameters=values
                )
                _TRANSLATED[(query, self._schema_key)] = translated
            bound = {
                d.slot: coerce(values[d.name], d.type, d.name)
                for d in translated.declarations
                if d.slot in translated.slots
            }
            # One call that binds once: a relation (``con.sql``) binds its text again when
            # it runs, which doubled the cost of these short, wide queries.
            cursor = con.execute(str(translated), bound or None)
            columns = [str(d[0]) for d in cursor.description or ()]
            types = [str(d[1]) for d in cursor.description or ()]
            rows = cursor.fetchall() if columns else []
        except Exception as exc:
            reason = store.query_failure(exc)
            if reason is None:
                raise
            raise ForensicsError(reason) from exc
        return store.QueryResult(columns, types, rows).records()


#: Translations by (query text, schema): the answers of one process reuse them.
_TRANSLATED: dict[tuple[str, int], Any] = {}


def _kql_type(value: Any) -> str:
    return "datetime" if isinstance(value, datetime) else "string"

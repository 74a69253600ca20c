"""The workspace for analysts in Jupyter or msticpy (docs/notebooks.md): KQL or SQL in, Arrow
out (``.to_pandas()`` on the result with pandas installed), and the product's answers as the
commands give them::

    from endpoint_forensics.analytics.notebook import Workspace

    with Workspace("epf-demo.duckdb") as ws:
        off = ws.kql("EPF_AgentHealthAt(datetime(2026-11-03T14:00:00Z))"
                     " | where TamperProtection == 'Fail'")
        print(off.num_rows, off.to_pandas().head())

The workspace is opened read-only, so a notebook can read while a collector is not writing;
the shipped KQL functions are callable as in Sentinel. An expected failure (no such file, a
query the engine refuses) raises ``QueryError`` with a one-line reason.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any

from endpoint_forensics.analytics.functions import registry
from endpoint_forensics.workspace import store
from endpoint_forensics.workspace.store import QueryError

__all__ = ["QueryError", "Workspace"]


class Workspace:
    """A read-only connection to a workspace file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self._con = store.connect(self.path, read_only=True)
        except Exception as exc:  # a missing file or a workspace another process writes
            raise QueryError(f"cannot open {self.path}: {store.first_line(str(exc))}") from exc

    def __enter__(self) -> Workspace:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._con.close()

    def tables(self) -> list[str]:
        """The workspace's tables, by name."""
        return sorted(store.table_columns(self._con))

    def kql(self, query: str) -> Any:
        """The rows of a KQL query as a ``pyarrow.Table``; the shipped functions are callable."""
        import duckdb_kql

        return self._arrow(lambda: duckdb_kql.kql(self._con, query, functions=registry()))

    def sql(self, query: str, parameters: list[Any] | None = None) -> Any:
        """The rows of a DuckDB SQL query as a ``pyarrow.Table``."""
        return self._arrow(lambda: self._con.sql(query, params=parameters))

    def posture(self, device: str, at: datetime, *, window: timedelta = timedelta(days=7)) -> Any:
        """``epf forensics``' answer for one device (its id or name) at ``at``, as a dict."""
        from endpoint_forensics.analytics.forensics import device_posture

        return device_posture(self.path, device, at, window=window)

    def triage(self, *, at: datetime | None = None, group: str | None = None) -> Any:
        """``epf triage``'s report of the newest triage run at or before ``at``, as a dict."""
        from endpoint_forensics.analytics.triage_report import triage_report

        return triage_report(self.path, at=at, group=group)

    def _arrow(self, relation: Any) -> Any:
        import pyarrow as pa

        try:
            rel = relation()
            return pa.table({}) if rel is None else rel.to_arrow_table()
        except Exception as exc:
            reason = store.query_failure(exc)
            if reason is None:
                raise
            raise QueryError(reason) from exc

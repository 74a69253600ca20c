"""The DuckDB workspace sink: each delivery unit lands in one transaction, exactly once.

Delivery guarantee: a unit (a page, an export part, a query result) is committed whole together
with a record of its id in ``_epf_units`` and the dataset's checkpoint as it stands after the
unit in ``_epf_checkpoints``; a unit already recorded is never written again, so a run resumed
after a failure leaves no duplicates. The checkpoints live in the workspace itself: a workspace
that is new, copied or restored from a backup knows exactly what it holds. May import ``workspace.store``, ``contracts``,
``tables`` and ``errors``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from endpoint_forensics.contracts import Batch, HistoryPlan, SavedCheckpoint
from endpoint_forensics.errors import SinkError
from endpoint_forensics.sinks.history import ChangeHistory
from endpoint_forensics.sinks.rows import to_arrow
from endpoint_forensics.tables import COMMON_COLUMNS, Table
from endpoint_forensics.workspace import store

__all__ = ["DuckDBSink"]

_STAMP_COLUMNS = tuple(c.name for c in COMMON_COLUMNS)


class DuckDBSink:
    name = "duckdb"
    # A unit's checkpoint commits with its rows, in one transaction (open): a snapshot needs
    # no saving before its first unit (pipeline.checkpoints.CheckpointGroup.begin).
    checkpoint_in_unit = True

    def __init__(self, path: Path, *, stage_memory_mb: int | None = None) -> None:
        self.path = path
        # What a stage over the whole workspace may hold (store.stage_memory_mb).
        self._stage_memory_mb = stage_memory_mb or store.STAGE_MEMORY_MB
        self._con = store.connect(path)
        self._con.execute(
            "CREATE TABLE IF NOT EXISTS _epf_units (unit VARCHAR PRIMARY KEY, table_name VARCHAR, "
            "rows BIGINT, committed_at TIMESTAMPTZ)"
        )
        self._con.execute(
            "CREATE TABLE IF NOT EXISTS _epf_checkpoints (scope VARCHAR, dataset VARCHAR, "
            "state JSON, saved_at TIMESTAMPTZ, PRIMARY KEY (scope, dataset))"
        )
        self.checkpoints = self  # the workspace is its own checkpoint store
        # Change-only history compares with what this workspace holds, in its own transaction.
        self._history = ChangeHistory(self._con)

    @contextmanager
    def open(
        self,
        table: Table,
        *,
        unit: str,
        checkpoint: SavedCheckpoint | None = None,
        history: HistoryPlan | None = None,
    ) -> Iterator[_TableWriter]:
        with _storing(self.path, f"starting {table.name}"):
            self._con.begin()
        plan = history if table.changes is not None else None
        writer = _TableWriter(
            self._con, table, batch_id=unit, path=self.path, history=(self._history, plan)
        )
        try:
            yield writer
            with _storing(self.path, f"committing {table.name}"):
                self._con.execute(
                    "INSERT INTO _epf_units VALUES (?, ?, ?, ?)",
                    [unit, table.name, writer.rows, datetime.now(UTC)],
                )
                if checkpoint is not None:
                    self._put_checkpoint(checkpoint)
                self._con.commit()
        except BaseException:
            self._rollback()
            raise

    def holds(self, unit_scope: str) -> bool:
        with _storing(self.path, "reading the delivered units"):
            found = self._con.execute(
                "SELECT 1 FROM _epf_units WHERE starts_with(unit, ?) LIMIT 1", [f"{unit_scope}/"]
            ).fetchall()
        return bool(found)

    def load(self, scope: str) -> dict[str, dict[str, Any]]:
        """The checkpoints this workspace holds for the source ``scope``."""
        with _storing(self.path, "reading the checkpoints"):
            found = self._con.execute(
                "SELECT dataset, state FROM _epf_checkpoints WHERE scope = ?", [scope]
            ).fetchall()
        return {dataset: orjson.loads(state) for dataset, state in found}

    def save(self, checkpoint: SavedCheckpoint) -> None:
        try:
            with _storing(self.path, "saving a checkpoint"):
                self._con.begin()
                self._put_checkpoint(checkpoint)
                self._con.commit()
        except BaseException:
            self._rollback()
            raise

    def _put_checkpoint(self, checkpoint: SavedCheckpoint) -> None:
        self._con.execute(
            "INSERT OR REPLACE INTO _epf_checkpoints VALUES (?, ?, ?, ?)",
            [
                checkpoint.scope,
                checkpoint.dataset,
                orjson.dumps(checkpoint.state).decode(),
                datetime.now(UTC),
            ],
        )

    def finish_snapshot(
        self, table: Table, history: HistoryPlan, *, unit: str, stamp: Mapping[str, Any]
    ) -> int:
        """Write the ``Removed`` rows of a complete change-only snapshot, as one unit."""
        if table.changes is None or history.mode != "changes" or self.delivered(unit):
            return 0
        with self.open(table, unit=unit) as writer:
            gone = self._history.removed(table, stamp, history)
            if gone.num_rows:
                writer.write(Batch(table, arrow=gone), stamp)
        return int(gone.num_rows)

    def delivered(self, unit: str) -> bool:
        with _storing(self.path, "reading the delivered units"):
            found = self._con.execute("SELECT 1 FROM _epf_units WHERE unit = ?", [unit]).fetchall()
        return bool(found)

    def wrote_since(self, tables: Collection[str], mark: str) -> bool:
        """Whether a unit committed after the newest one of table ``mark`` wrote rows to one of
        ``tables`` (any unit, when ``mark`` has none): what changed since ``mark`` was derived.
        A change-only snapshot that changed nothing wrote no rows."""
        if not tables:
            return False
        listed = ", ".join("?" for _ in tables)
        with _storing(self.path, "reading the delivered units"):
            found = self._con.execute(
                f"SELECT 1 FROM _epf_units WHERE table_name IN ({listed}) AND rows > 0"
                " AND committed_at > coalesce((SELECT max(committed_at) FROM _epf_units"
                " WHERE table_name = ?), TIMESTAMPTZ '-infinity') LIMIT 1",
                [*tables, mark],
            ).fetchall()
        return bool(found)

    def discard(
        self,
        table: Table,
        *,
        run_id: str,
        unit_scope: str,
        where: Mapping[str, str],
        dataset: str,
    ) -> int:
        """Remove one source dataset's rows of ``run_id`` from ``table`` (a row's ``BatchId``
        is its unit), and its delivery records."""
        conditions = "".join(f' AND "{column}" = ?' for column in where)
        units = f"{unit_scope}/{run_id}/{dataset}/"
        try:
            with _storing(self.path, f"removing a partial snapshot of {table.name}"):
                self._con.begin()
                removed = self._con.execute(
                    f'DELETE FROM "{table.name}" WHERE RunId = ?{conditions}'
                    " AND starts_with(BatchId, ?)",
                    [run_id, *where.values(), units],
                ).fetchall()
                self._con.execute(
                    "DELETE FROM _epf_units WHERE table_name = ? AND starts_with(unit, ?)",
                    [table.name, units],
                )
                if table.changes is not None:  # its state no longer says what is here
                    self._history.forget(table)
                self._con.commit()
        except BaseException:
            self._rollback()
            raise
        return int(removed[0][0]) if removed else 0

    def _rollback(self) -> None:
        import duckdb

        with contextlib.suppress(duckdb.Error):  # no transaction left: the failure ended it
            self._con.rollback()

    def derive(
        self,
        table: Table,
        *,
        unit: str,
        stamp: Mapping[str, Any],
        query: Callable[[Any], tuple[str, list[Any]]],
        ordered: bool = False,
    ) -> int:
        """Write, as one unit, the rows ``query`` selects from this workspace (it is given the
        connection, and answers the SELECT of the table's columns and its parameters): the
        rows go from the workspace's tables to the table inside the engine, never through
        Python, with the memory of a stage (``store.stage_memory_mb``). Returns the rows
        written.

        ``ordered``: the query gives its rows in the order to store them, kept (triage's by
        DeviceId: each row group then holds a narrow range of devices, and a read of one
        device's rows, ``epf forensics``, skips the others by their DeviceId bounds)."""
        with self.open(table, unit=unit) as writer:
            with _storing(self.path, f"deriving {table.name}"):
                self._con.execute(f"SET memory_limit = '{self._stage_memory_mb}MB'")
                if not ordered:
                    # Rows with no order to keep: inserting them in any order spares the
                    # engine the work of keeping one (a tenth of the write).
                    self._con.execute("SET preserve_insertion_order = false")
            try:
                sql, params = query(self._con)
                writer.write_query(sql, params, stamp)
            finally:
                with contextlib.suppress(Exception):
                    self._con.execute(f"SET memory_limit = '{store.SYNC_MEMORY_MB}MB'")
                with contextlib.suppress(Exception):
                    self._con.execute("RESET preserve_insertion_order")
        return writer.rows

    def hold_snapshot(self, unit_prefix: str, *, scope: str, dataset: str, run_id: str) -> None:
        """Nothing to hold: a snapshot cut short is deleted from the workspace (``discard``)."""

    def release_snapshot(self, unit_prefix: str) -> None:
        """Nothing was held."""

    def room(self) -> str | None:
        """Always: what the workspace cannot store fails its unit (``SinkError``) instead."""
        return None

    @contextmanager
    def reading(self) -> Iterator[Any]:
        """A cursor that reads what this workspace has committed, with the memory a question
        over the whole history gets (``store.stage_memory_mb``) while it is open: what the run
        derives from the workspace (triage) reads through it."""
        cursor = self._con.cursor()
        try:
            with _storing(self.path, "reading the workspace"):
                cursor.execute(f"SET memory_limit = '{self._stage_memory_mb}MB'")
            yield cursor
        finally:
            with contextlib.suppress(Exception):
                cursor.execute(f"SET memory_limit = '{store.SYNC_MEMORY_MB}MB'")
            cursor.close()

    def flush(self) -> None:
        """Every unit was committed as it was written: nothing waits."""

    def close(self) -> None:
        self._con.close()


@contextmanager
def _storing(path: Path, doing: str) -> Iterator[None]:
    """Turn a DuckDB failure (out of memory, disk full, I/O) into a ``SinkError``: the unit is
    rolled back and only its dataset fails."""
    import duckdb

    try:
        yield
    except duckdb.Error as exc:
        raise SinkError(
            f"workspace {path.name}: {doing} failed: {store.first_line(str(exc))}"
        ) from exc


class _TableWriter:
    def __init__(
        self,
        con: Any,
        table: Table,
        *,
        batch_id: str,
        path: Path,
        history: tuple[ChangeHistory, HistoryPlan | None],
    ) -> None:
        self._con = con
        self._table = table
        self._batch_id = batch_id
        self._path = path
        self._history, self._plan = history
        self.rows = 0

    def write(self, batch: Batch, stamp: Mapping[str, Any]) -> None:
        # Locally TimeGenerated is SnapshotTime: nothing here replaces it, however late.
        stamp = {"SnapshotTime": stamp.get("TimeGenerated"), **stamp, "BatchId": self._batch_id}
        if batch.rows:
            self._write(to_arrow(self._table, batch.rows, stamped=set(stamp)), stamp)
        if batch.arrow is not None and batch.arrow.num_rows:
            self._write(batch.arrow, stamp)

    def write_query(self, sql: str, params: list[Any], stamp: Mapping[str, Any]) -> None:
        """The rows of ``sql`` (a SELECT of this table's columns over the workspace), stamped
        with the columns it does not select, inserted in one statement."""
        assert self._plan is None, "a derived table keeps no change-only history"
        stamp = {"SnapshotTime": stamp.get("TimeGenerated"), **stamp, "BatchId": self._batch_id}
        literals = {
            c: (
                f"TIMESTAMPTZ '{v.isoformat()}'"
                if isinstance(v, datetime)
                else "'" + str(v).replace("'", "''") + "'"
            )
            for c, v in stamp.items()
            if c in _STAMP_COLUMNS and v is not None
        }
        with _storing(self._path, f"writing {self._table.name}"):
            selected = {d[0] for d in self._con.execute(f"DESCRIBE {sql}", params).fetchall()}
            extra = "".join(f', {v} AS "{c}"' for c, v in literals.items() if c not in selected)
            found = self._con.execute(
                f'INSERT INTO "{self._table.name}" BY NAME SELECT *{extra} FROM ({sql})', params
            ).fetchall()
        self.rows += int(found[0][0]) if found else 0

    def _write(self, data: Any, stamp: Mapping[str, Any]) -> None:
        if self._plan is not None:
            with _storing(self._path, f"comparing {self._table.name} with its history"):
                data = self._history.rows_to_write(self._table, data, stamp, self._plan)
        if data.num_rows:
            self._insert(data, stamp)
        self.rows += data.num_rows

    def _insert(self, data: Any, stamp: Mapping[str, Any]) -> None:
        import duckdb

        present = set(data.schema.names)
        stamps = [c for c in _STAMP_COLUMNS if c not in present]
        select = ", ".join(
            ["*", *(f'$p{i}::{_STAMP_SQL[c]} AS "{c}"' for i, c in enumerate(stamps))]
        )
        self._con.register("_epf_batch", data)
        try:
            with _storing(self._path, f"writing {self._table.name}"):
                self._con.execute(
                    f'INSERT INTO "{self._table.name}" BY NAME SELECT {select} FROM _epf_batch',
                    {f"p{i}": stamp[c] for i, c in enumerate(stamps)},
                )
        finally:
            with contextlib.suppress(duckdb.Error):  # an aborted transaction refuses it
                self._con.unregister("_epf_batch")


_STAMP_SQL = {
    "TimeGenerated": "TIMESTAMPTZ",
    "SnapshotTime": "TIMESTAMPTZ",
    "RunId": "VARCHAR",
    "DefenderTenantId": "VARCHAR",
    "BatchId": "VARCHAR",
}

"""Change-only history: what a sink writes of a snapshot when it keeps only what changed.

Owns the state a sink last delivered for each key of a change-tracked table (``Table.changes``):
a hash of the compared columns, the key columns (for the ``Removed`` rows) and the snapshot that
last showed the key. It lives in a DuckDB database the sink owns: the workspace itself, so the
state and the rows commit in one transaction, or a file beside Sentinel's checkpoints, committed
once the unit is in the outbox. Each destination is compared with what it holds: a restored
workspace brings its own state back with it.

A snapshot is a baseline (every row, ``Baseline``) when the sink has none of that table and
tenant yet, or its last one is ``baseline_days`` old; otherwise only rows whose state differs are
written (``Added`` or ``Changed``), and when the snapshot is complete the keys it did not show
are written as ``Removed``. docs/history.md says how "state at T" is read back.

May import ``contracts`` and ``tables``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from endpoint_forensics.contracts import HistoryPlan
from endpoint_forensics.tables import COMMON_COLUMNS, HISTORY_KIND, Table
from endpoint_forensics.workspace import store

__all__ = ["ChangeHistory", "HistoryFile", "with_kind"]

_STAMPS = frozenset(c.name for c in COMMON_COLUMNS)
_KIND = HISTORY_KIND.name
# Besides the key: what a Removed row carries so that it reads on its own.
_CONTEXT = ("DeviceId", "DeviceName")


def with_kind(data: Any, kind: str) -> Any:
    """``data`` (a pyarrow table) with every row's ``HistoryKind`` set to ``kind``."""
    import pyarrow as pa

    if _KIND in data.schema.names:
        data = data.drop_columns([_KIND])
    return data.append_column(_KIND, pa.array([kind] * data.num_rows, type=pa.string()))


class ChangeHistory:
    """The delivered state of the change-tracked tables, on the connection ``con``.

    No table here has an index: DuckDB keeps an index in memory whole, and the state of a
    large tenant (millions of keys) would not fit the workspace's memory limit. A snapshot's
    keys are appended to ``_epf_history_staged`` as its units are written (hashes only, and the
    key's columns for the rows written), compared with the state by a join; when the snapshot
    is complete, the state loses the keys it did not show and takes the states that changed.
    Only what changed is written to the state: rewriting every key each day wrote the whole
    state to the write-ahead log and the database file again, most of a quiet day's work.
    ``_epf_history_finished`` says which snapshot was last finished, so finishing it again
    finds nothing removed.
    """

    def __init__(self, con: Any) -> None:
        self._con = con
        # The unit (table, scope, snapshot, transaction) whose batches are being written.
        self._unit: tuple[str, str, datetime, int] | None = None
        self._unit_baseline = False
        con.execute(
            "CREATE TABLE IF NOT EXISTS _epf_history (table_name VARCHAR, scope VARCHAR,"
            " key_hash UBIGINT, state_hash UBIGINT, seen TIMESTAMPTZ, key JSON)"
        )
        con.execute(
            "CREATE TABLE IF NOT EXISTS _epf_history_staged (table_name VARCHAR, scope VARCHAR,"
            " key_hash UBIGINT, state_hash UBIGINT, seen TIMESTAMPTZ, key JSON)"
        )
        for marks in ("_epf_history_baselines", "_epf_history_finished"):
            con.execute(
                f"CREATE TABLE IF NOT EXISTS {marks} (table_name VARCHAR, scope VARCHAR,"
                " snapshot_time TIMESTAMPTZ, PRIMARY KEY (table_name, scope))"
            )

    def is_baseline(self, table: Table, scope: str, plan: HistoryPlan) -> bool:
        """Whether the snapshot of ``plan`` is written in full (and marked a baseline)."""
        last = self._baseline_time(table.name, scope)
        if last is None:
            return True
        # A baseline resumed in a later run is the same snapshot: still the baseline.
        return last == plan.snapshot_time or plan.snapshot_time - last >= timedelta(
            days=plan.baseline_days
        )

    def rows_to_write(
        self, table: Table, data: Any, stamp: Mapping[str, Any], plan: HistoryPlan
    ) -> Any:
        """Of ``data`` (one batch of a snapshot, a pyarrow table), the rows this sink writes,
        with ``HistoryKind`` set; its keys are staged (in the caller's transaction)."""
        import pyarrow as pa

        if plan.mode == "snapshot":
            return with_kind(data, "Snapshot")
        scope = str(stamp.get("DefenderTenantId") or "")
        params = [table.name, scope]
        baseline = self._begin_unit(table, scope, plan)
        if _KIND in data.schema.names:  # rows as a batch of the table may carry it, empty
            data = data.drop_columns([_KIND])
        if not isinstance(data, pa.Table):  # a decoded part's record batch
            data = pa.Table.from_batches([data])
        if baseline:
            self._stage(table, data, params, plan)
            return with_kind(data, "Baseline")
        found = self._stage(table, data, params, plan, compare=True)
        # The rows themselves are taken from the batch: only the hashes went through DuckDB.
        written = data.take(found.column("_i").combine_chunks())
        return written.append_column(_KIND, found.column(_KIND))

    def _begin_unit(self, table: Table, scope: str, plan: HistoryPlan) -> bool:
        """Once per unit (transaction) of a snapshot, not per batch (each scanned the staged
        keys): drop what an abandoned snapshot staged, and mark a baseline. Whether the
        snapshot is a baseline."""
        unit = (table.name, scope, plan.snapshot_time, self._transaction())
        if self._unit != unit:
            # What an abandoned snapshot staged is no part of this one.
            self._con.execute(
                "DELETE FROM _epf_history_staged WHERE table_name = ? AND scope = ? AND seen <> ?",
                [table.name, scope, plan.snapshot_time],
            )
            self._unit_baseline = self.is_baseline(table, scope, plan)
            if self._unit_baseline:
                self._con.execute(
                    "INSERT OR REPLACE INTO _epf_history_baselines VALUES (?, ?, ?)",
                    [table.name, scope, plan.snapshot_time],
                )
            self._unit = unit
        return self._unit_baseline

    def _transaction(self) -> int:
        # A rolled-back unit's work is gone with its transaction: the next one has a new id.
        return int(self._con.execute("SELECT txid_current()").fetchall()[0][0])

    def _stage(
        self,
        table: Table,
        data: Any,
        params: list[Any],
        plan: HistoryPlan,
        *,
        compare: bool = False,
    ) -> Any:
        """Stage the keys of ``data`` (in the caller's transaction); with ``compare``, first
        find the rows that changed since the state and were not already written in this
        snapshot: a pyarrow table of their positions in ``data`` (``_i``, ascending) and their
        ``HistoryKind`` (``Added`` or ``Changed``). A staged key carries its columns (JSON)
        only when its row is written: every row of a baseline, the found ones otherwise."""
        import pyarrow as pa

        names = data.schema.names
        indexed = data.append_column("_i", pa.array(range(data.num_rows), type=pa.int64()))
        self._con.register("_epf_history_in", indexed)
        found = None
        try:
            # Hashed once: the comparison and the staging both read it. Only the hashes, the
            # key and the position: the rows stay in the batch.
            self._con.execute(
                "CREATE OR REPLACE TEMP TABLE _epf_history_batch AS"
                f" SELECT _i, {self._hashes_sql(table, names)},"
                f" {self._key_json(table, names)} AS _key FROM _epf_history_in"
            )
            written = "_key"
            if compare:
                self._con.execute(
                    "CREATE OR REPLACE TEMP TABLE _epf_history_found AS"
                    f" SELECT b._i, CASE WHEN h.key_hash IS NULL THEN 'Added'"
                    f" ELSE 'Changed' END AS {_KIND} FROM _epf_history_batch b"
                    " LEFT JOIN (FROM _epf_history WHERE table_name = ? AND scope = ?) h"
                    " ON h.key_hash = b._k"
                    " ANTI JOIN (FROM _epf_history_staged WHERE table_name = ? AND scope = ?) s"
                    " ON s.key_hash = b._k AND s.state_hash = b._s"
                    " WHERE h.key_hash IS NULL OR h.state_hash <> b._s",
                    [*params, *params],
                )
                found = self._con.sql("FROM _epf_history_found ORDER BY _i").to_arrow_table()
                written = "CASE WHEN _i IN (SELECT _i FROM _epf_history_found) THEN _key END"
            self._con.execute(
                f"INSERT INTO _epf_history_staged SELECT ?, ?, _k, _s, ?, {written}"
                " FROM _epf_history_batch"
                # Of a key shown twice in the batch, the row written (with its columns).
                f" QUALIFY row_number() OVER (PARTITION BY _k ORDER BY ({written}) IS NULL) = 1",
                [*params, plan.snapshot_time],
            )
        finally:
            with contextlib.suppress(Exception):  # an aborted transaction refuses it
                self._con.unregister("_epf_history_in")
            for temp in ("_epf_history_batch", "_epf_history_found"):
                with contextlib.suppress(Exception):
                    self._con.execute(f"DROP TABLE IF EXISTS {temp}")
        return found

    def removed(self, table: Table, stamp: Mapping[str, Any], plan: HistoryPlan) -> Any:
        """The ``Removed`` rows of the keys the complete snapshot did not show (none after a
        baseline, which replaces the state); the state then becomes the snapshot's. A pyarrow
        table.

        Idempotent: once ``plan.snapshot_time`` is finished, a second call finds nothing (unless
        a snapshot of the same time staged keys since, as one taken again at that time does).
        """
        scope = str(stamp.get("DefenderTenantId") or "")
        params = [table.name, scope, plan.snapshot_time]
        fields = [
            c for c in (*table.key, *_CONTEXT) if c in table.column_names and c not in _STAMPS
        ]
        columns = ", ".join(
            f"json_extract_string(h.key, '$.{c}') AS \"{c}\"" for c in dict.fromkeys(fields)
        )
        nothing = f"SELECT {columns}, 'Removed' AS {_KIND} FROM _epf_history h LIMIT 0"
        if self._finished_time(table.name, scope) == plan.snapshot_time and not self._staged(
            params
        ):
            return self._con.sql(nothing).to_arrow_table()
        baseline = self._baseline_time(table.name, scope) == plan.snapshot_time
        temps = ("_epf_history_twice", "_epf_history_shown", "_epf_history_changed")
        try:
            shown = self._shown(params)
            if baseline:
                # The whole state is the snapshot's, and nothing is removed: no comparison.
                self._con.execute(
                    "DELETE FROM _epf_history WHERE table_name = ? AND scope = ?", params[:2]
                )
                self._con.execute(
                    f"INSERT INTO _epf_history SELECT ?, ?, key_hash, state_hash, ?, key {shown}",
                    [*params, *params, *params],
                )
                gone = self._con.sql(nothing).to_arrow_table()
            else:
                gone = self._replace_state(columns, params, shown)
        finally:
            for temp in temps:
                with contextlib.suppress(Exception):  # an aborted transaction refuses it
                    self._con.execute(f"DROP TABLE IF EXISTS {temp}")
        self._con.execute(
            "DELETE FROM _epf_history_staged WHERE table_name = ? AND scope = ?", params[:2]
        )
        self._con.execute("INSERT OR REPLACE INTO _epf_history_finished VALUES (?, ?, ?)", params)
        return gone

    def _shown(self, params: list[Any]) -> str:
        """The FROM of the snapshot's state of each key (``key_hash, state_hash, key``; six
        parameters: ``params`` twice): of a key shown twice, the least state hash, with the
        columns of a row of that state that was written.

        The keys shown twice are few: they are grouped apart, and the rest is taken as
        staged. Grouping every staged key with its columns took 27 s of CPU at 2.7M keys in
        the sync's memory (it spilled); finding the repeated ones groups only their hashes."""
        self._con.execute(
            "CREATE OR REPLACE TEMP TABLE _epf_history_twice AS SELECT key_hash"
            " FROM _epf_history_staged WHERE table_name = ? AND scope = ? AND seen = ?"
            " GROUP BY key_hash HAVING count(*) > 1",
            params,
        )
        staged = "FROM _epf_history_staged WHERE table_name = ? AND scope = ? AND seen = ?"
        return (
            "FROM (SELECT key_hash, state_hash, key"
            f" {staged} AND key_hash NOT IN (FROM _epf_history_twice)"
            " UNION ALL SELECT key_hash, min(state_hash),"
            " arg_min_null(key, (state_hash, key IS NULL))"
            f" {staged} AND key_hash IN (FROM _epf_history_twice) GROUP BY key_hash)"
        )

    def _replace_state(self, columns: str, params: list[Any], shown: str) -> Any:
        """The ``Removed`` rows of the keys the state holds and the snapshot did not show; the
        state then takes the snapshot's changed and new keys."""
        self._con.execute(
            f"CREATE OR REPLACE TEMP TABLE _epf_history_shown AS SELECT * {shown}",
            [*params, *params],
        )
        gone = self._con.sql(
            f"SELECT {columns}, 'Removed' AS {_KIND} FROM _epf_history h"
            " WHERE h.table_name = ? AND h.scope = ?"
            " AND h.key_hash NOT IN (SELECT key_hash FROM _epf_history_shown)",
            params=params[:2],
        ).to_arrow_table()
        self._con.execute(
            "CREATE OR REPLACE TEMP TABLE _epf_history_changed AS"
            " FROM _epf_history_shown s ANTI JOIN (FROM _epf_history"
            " WHERE table_name = ? AND scope = ?) h"
            " ON h.key_hash = s.key_hash AND h.state_hash = s.state_hash",
            params[:2],
        )
        self._con.execute(
            "DELETE FROM _epf_history WHERE table_name = ? AND scope = ?"
            " AND (key_hash NOT IN (SELECT key_hash FROM _epf_history_shown)"
            " OR key_hash IN (SELECT key_hash FROM _epf_history_changed))",
            params[:2],
        )
        self._con.execute(
            "INSERT INTO _epf_history SELECT ?, ?, key_hash, state_hash, ?, key"
            " FROM _epf_history_changed",
            params,
        )
        return gone

    def _baseline_time(self, table_name: str, scope: str) -> datetime | None:
        return self._mark("_epf_history_baselines", table_name, scope)

    def _finished_time(self, table_name: str, scope: str) -> datetime | None:
        return self._mark("_epf_history_finished", table_name, scope)

    def _staged(self, params: list[Any]) -> bool:
        return bool(
            self._con.execute(
                "SELECT 1 FROM _epf_history_staged WHERE table_name = ? AND scope = ?"
                " AND seen = ? LIMIT 1",
                params,
            ).fetchall()
        )

    def _mark(self, marks: str, table_name: str, scope: str) -> datetime | None:
        found = self._con.execute(
            f"SELECT snapshot_time FROM {marks} WHERE table_name = ? AND scope = ?",
            [table_name, scope],
        ).fetchall()
        return found[0][0] if found else None

    def forget(self, table: Table) -> None:
        """Drop the table's state: its next snapshot is a baseline (after a partial snapshot
        was discarded, the state no longer says what the destination holds)."""
        for state in (
            "_epf_history",
            "_epf_history_staged",
            "_epf_history_baselines",
            "_epf_history_finished",
        ):
            self._con.execute(f"DELETE FROM {state} WHERE table_name = ?", [table.name])

    @staticmethod
    def _hashes_sql(table: Table, present: list[str]) -> str:
        """``_k`` (the key's hash) and ``_s`` (the compared columns' hash) of a batch row."""
        assert table.changes is not None, f"{table.name} keeps no change-only history"
        keys = [c for c in table.key if c in present]
        ignored = {*_STAMPS, _KIND, *table.changes.ignores, "BatchId"}
        compared = sorted(c for c in present if c not in ignored)
        return f"{_text_hash(keys)} AS _k, {_text_hash(compared)} AS _s"

    @staticmethod
    def _key_json(table: Table, present: list[str]) -> str:
        fields = [c for c in (*table.key, *_CONTEXT) if c in present and c not in _STAMPS]
        pairs = ", ".join(f'"{c}" := CAST("{c}" AS VARCHAR)' for c in dict.fromkeys(fields))
        return f"to_json(struct_pack({pairs}))"


def _text_hash(columns: list[str]) -> str:
    """SQL for one 64-bit hash of the columns' text (JSON included), NULL told from empty.

    One string is hashed rather than ``hash(a, b, ...)``, whose arguments combine too weakly
    to trust with telling two states apart.
    """
    parts = ", ".join(f'coalesce(CAST("{c}" AS VARCHAR), chr(30))' for c in columns)
    return f"hash(concat_ws(chr(31), {parts}))" if columns else "hash('')"


class HistoryFile:
    """A ``ChangeHistory`` in a DuckDB file of its own (a destination that cannot be read back,
    like Sentinel): opened on first use; a unit's changes to it commit after the unit."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._con: Any = None
        self._history: ChangeHistory | None = None

    def begin(self) -> ChangeHistory:
        if self._history is None:
            import duckdb

            self.path.parent.mkdir(parents=True, exist_ok=True)
            store.remove_unfinished(self.path)
            self._con = duckdb.connect(str(self.path))
            self._con.execute("SET TimeZone = 'UTC'")
            self._history = ChangeHistory(self._con)
        self._con.begin()
        return self._history

    def commit(self) -> None:
        self._con.commit()

    def rollback(self) -> None:
        with contextlib.suppress(Exception):  # nothing left to roll back
            self._con.rollback()

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = self._history = None

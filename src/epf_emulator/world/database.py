"""The emulated tenant's DuckDB database: the advanced-hunting tables and the posture timeline.

Owns the one in-memory database (attached ``raw`` for the hunting tables, ``tvm`` for the
posture timeline of ``world.posture``), loading the fleet into ``DeviceInfo`` (daily
snapshots, generated in SQL) and ``tvm.dev``, having ``world.secure_config_history`` generate
the secure-configuration history, and holding every hunting table to its documented schema
(``world.hunting_schema``); the per-request view of the hunting tables limited to a time
window (temporary views on a fresh cursor, so concurrent requests never share state, each
making only the rows its window can see); fresh cursors for everyone else; the ground-truth
agent-health count; and the lock-down that keeps network queries away from the file system
(only the export folder, where DuckDB itself writes the via-files parts); and, given a spill
folder, DuckDB's memory limit (``_memory_config``).

Imports only ``world.devices``, ``world.hunting_schema``, ``world.posture``,
``world.scid_catalog`` and ``world.secure_config_history`` of the emulator: it shares no code
with the collector.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from epf_emulator.world.devices import Device, epoch_micros, format_time
from epf_emulator.world.hunting_schema import DOCUMENTED_TABLES, duckdb_columns
from epf_emulator.world.posture import FUTURE_US, HISTORY_US, load_devices
from epf_emulator.world.scid_catalog import HEALTH_SCIDS
from epf_emulator.world.secure_config_history import (
    ASSESSMENTS_TABLE,
    assessments_sql,
    build_history,
)

if TYPE_CHECKING:
    import duckdb

__all__ = ["DEVICE_INFO_COLUMNS", "HUNTING_SCHEMA", "RETENTION", "Store"]

#: Advanced hunting shows the last 30 days only (defender-apis.md B.3).
RETENTION = timedelta(days=30)
_DAY_US = 86_400_000_000
_MEMORY_LIMIT = "512MB"  # DuckDB's share of a large tenant's memory (``_memory_config``)

#: DeviceInfo column -> DuckDB type, as documented (``world.hunting_schema``); ``Timestamp`` and
#: ``ReportId`` are per snapshot, the rest come from the device or are empty.
DEVICE_INFO_COLUMNS: dict[str, str] = duckdb_columns("DeviceInfo")
_SNAPSHOTS = 135  # daily DeviceInfo snapshots per device: the whole timeline, both ends
_TIMED_TABLES = ("DeviceInfo", "DeviceTvmSecureConfigurationAssessment")
_STATIC_TABLES = ("DeviceTvmSecureConfigurationAssessmentKB",)
_PER_SNAPSHOT = ("Timestamp", "ReportId")

#: Table -> columns, what duckdb-kql needs to translate ``join`` and ``arg_max(*)``.
HUNTING_SCHEMA: dict[str, list[str]] = {
    table: list(columns) for table, columns in DOCUMENTED_TABLES.items()
}
assert set(HUNTING_SCHEMA) == set(_TIMED_TABLES + _STATIC_TABLES)


class Store:
    """The hunting tables of one emulated tenant; call ``close`` when done."""

    def __init__(
        self,
        devices: list[Device],
        anchor: datetime,
        *,
        seed: int,
        export_dir: Path | None = None,
        temp_dir: Path | None = None,
    ) -> None:
        import duckdb_kql

        self._lock = threading.Lock()
        self._seed, self._anchor = seed, anchor
        self._device_info_static: list[str] = []
        self._con: duckdb.DuckDBPyConnection = duckdb_kql.connect(
            ":memory:", config=_memory_config(temp_dir)
        )
        con = self._con
        con.execute("SET GLOBAL TimeZone = 'UTC'")
        # The raw tables live in their own compressed in-memory databases (a checkpoint
        # compresses them about tenfold); each request sees windowed views of the hunting
        # ones under the documented names.
        con.execute("ATTACH ':memory:' AS raw (COMPRESS)")
        con.execute("ATTACH ':memory:' AS tvm (COMPRESS)")
        self._load_device_info(devices, anchor)
        load_devices(con, devices, anchor)
        build_history(con, seed=seed, anchor=anchor)
        self._conform_documented()
        con.execute("CHECKPOINT raw")
        self._row_counts: dict[str, int] | None = None  # counted when first asked for
        # Queries come from the network: no file access but the export folder (DuckDB writes
        # the via-files parts there), and no changing that afterwards.
        if export_dir is not None:
            folder = str(export_dir.resolve()).replace("'", "''")
            con.execute(f"SET allowed_directories = ['{folder}/']")
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")

    def _count_rows(self, cursor: duckdb.DuckDBPyConnection) -> dict[str, int]:
        # The assessment view has a row per stored row: count those, without the joins.
        sources = {t: f'raw.main."{t}"' for t in _TIMED_TABLES + _STATIC_TABLES}
        sources["DeviceTvmSecureConfigurationAssessment"] = ASSESSMENTS_TABLE
        return {
            table: int(cursor.execute(f"SELECT count(*) FROM {source}").fetchall()[0][0])
            for table, source in sources.items()
        }

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A fresh cursor on the database (one per thread or request)."""
        with self._lock:
            return self._con.cursor()

    def close(self) -> None:
        with self._lock:
            self._con.close()

    @contextmanager
    def window(self, start: datetime, end: datetime) -> Iterator[duckdb.DuckDBPyConnection]:
        """A fresh cursor on which the hunting tables show only rows in ``[start, end]``."""
        with self._lock:
            cursor = self._con.cursor()
        try:
            # Each timed table is windowed where its rows are made, so a query pays only
            # for the rows its window can see (``_device_info_sql``, ``assessments_sql``).
            views = {
                "DeviceInfo": self._device_info_sql((start, end)),
                "DeviceTvmSecureConfigurationAssessment": assessments_sql(
                    self._seed,
                    epoch_micros(self._anchor),
                    (epoch_micros(start), epoch_micros(end)),
                ),
            }
            for table in _TIMED_TABLES:
                cursor.execute(f'CREATE TEMP VIEW "{table}" AS {views[table]}')
            for table in _STATIC_TABLES:
                cursor.execute(f'CREATE TEMP VIEW "{table}" AS SELECT * FROM raw.main."{table}"')
            yield cursor
        finally:
            cursor.close()

    def agent_health_truth(self, now: datetime) -> int:
        """Distinct devices with at least one health SCID of their platform in the last 30 days."""
        conditions = " OR ".join(
            f"({_platform_sql(family)} AND ConfigurationId IN ({', '.join(repr(s) for s in scids)}))"
            for family, scids in HEALTH_SCIDS.items()
        )
        sql = (
            "SELECT count(DISTINCT DeviceId) FROM DeviceTvmSecureConfigurationAssessment"
            f" WHERE {conditions}"
        )
        with self.window(now - RETENTION, now) as cursor:
            row = cursor.execute(sql).fetchone()
        return int(row[0]) if row else 0

    def posture_counts(self) -> dict[str, int]:
        """Rows per posture timeline table (the whole timeline, not a snapshot)."""
        tables = ("dev", "sw", "vrow", "cve", "rbac_move")
        cursor = self.cursor()
        try:
            return {
                t: int(cursor.execute(f"SELECT count(*) FROM tvm.{t}").fetchall()[0][0])
                for t in tables
            }
        finally:
            cursor.close()

    def row_counts(self) -> dict[str, int]:
        """Rows per hunting table (all history, before any time window); fixed after loading."""
        if self._row_counts is None:
            cursor = self.cursor()
            try:
                self._row_counts = self._count_rows(cursor)
            finally:
                cursor.close()
        return dict(self._row_counts)

    # --- loading ----------------------------------------------------------------------------
    def _load_device_info(self, devices: list[Device], anchor: datetime) -> None:
        """``DeviceInfo`` is a view: one snapshot per report of the device over the whole
        timeline, on its report grid (daily, or every 6 days for a device only discovery sees;
        back from its last report: when a stale device stopped, else the last report before
        the timeline's end); the hunting window hides the ones after now.

        Only the devices are stored; DuckDB expands the ~135 snapshots each on the fly, which
        costs milliseconds per query and no memory. The view has exactly the documented
        columns, in order: a documented column the emulated devices have no value for is empty
        (a Kusto string is never null), and list values travel as JSON text, as the
        documented ``string`` type says.
        """
        known = set(devices[0].info) if devices else set(DEVICE_INFO_COLUMNS) - set(_PER_SNAPSHOT)
        undocumented = known - set(DEVICE_INFO_COLUMNS)
        if undocumented:
            raise RuntimeError(
                f"DeviceInfo attributes not in the documented schema: {undocumented}"
            )
        static = [c for c in DEVICE_INFO_COLUMNS if c in known and c not in _PER_SNAPSHOT]
        columns: dict[str, list[Any]] = {c: [] for c in static}
        columns.update({"_index": [], "_first": [], "_last": [], "_period": []})
        anchor_us = epoch_micros(anchor)
        for index, device in enumerate(devices):
            info = device.info
            for name in static:
                value = info[name]
                if isinstance(value, (list, dict)):
                    value = orjson.dumps(value).decode()
                columns[name].append(value)
            columns["_index"].append(index)
            columns["_first"].append(anchor_us - int(device.first_seen_ago * 1_000_000))
            # On the device's report grid (world.fleet): daily, or every 6 days for a device
            # only device discovery sees; a stale one stopped at its lastSeen.
            period = _DAY_US if device.onboarding == "Onboarded" else 6 * _DAY_US
            last = anchor_us - int(device.last_seen_ago * 1_000_000)
            if not device.stale:  # reports until the end of the timeline
                last += (FUTURE_US + (anchor_us - last)) // period * period
            columns["_last"].append(last)
            columns["_period"].append(period // _DAY_US)
        types = {c: DEVICE_INFO_COLUMNS[c] for c in static}
        types.update(
            {
                "_index": "BIGINT",
                "_first": "TIMESTAMPTZ",
                "_last": "TIMESTAMPTZ",
                "_period": "BIGINT",
            }
        )
        self._create_table("_devices", types)
        self._load_table("_devices", types, columns)
        self._device_info_static = static
        self._con.execute(f'CREATE VIEW raw.main."DeviceInfo" AS {self._device_info_sql()}')

    def _device_info_sql(self, window: tuple[datetime, datetime] | None = None) -> str:
        """``DeviceInfo``'s snapshots; with ``window`` only those in it (both ends included).

        A window expands each device into only the snapshots that can fall in it (about 31
        of its 135 for 30 days) where the whole view expands them all and then filters: at
        100,000 devices that was 13.5 million rows and most of an agent-health query's time.
        The exact conditions stay, so the bounds need only not be too narrow.
        """
        oldest = _sql_time(self._anchor - timedelta(microseconds=HISTORY_US))
        snapshot = "d._last - to_days(CAST(days.k * d._period AS INTEGER))"
        projections = []
        for name, kind in DEVICE_INFO_COLUMNS.items():
            if name == "Timestamp":
                value = snapshot
            elif name == "ReportId":
                value = f"d._index * {_SNAPSHOTS} + days.k"
            elif name in self._device_info_static:
                value = f'd."{name}"'
            else:
                value = "NULL"
            if kind == "VARCHAR":
                value = f"coalesce({value}, '')"
            projections.append(f'CAST({value} AS {kind}) AS "{name}"')
        where = f"{snapshot} >= greatest(d._first, TIMESTAMPTZ '{oldest}')"
        if window is None:
            days = f"range(0, {_SNAPSHOTS}) AS days(k)"
        else:
            low, high = (epoch_micros(t) for t in window)
            period, last = f"(d._period * {_DAY_US})", "epoch_us(d._last)"
            first_k = f"greatest(0, CAST(({last} - {high}) // {period} AS BIGINT))"
            last_k = f"least({_SNAPSHOTS - 1}, CAST(({last} - {low}) // {period} + 1 AS BIGINT))"
            days = f"LATERAL (SELECT unnest(generate_series({first_k}, {last_k}))) AS days(k)"
            where += (
                f" AND {snapshot} BETWEEN TIMESTAMPTZ '{_sql_time(window[0])}'"
                f" AND TIMESTAMPTZ '{_sql_time(window[1])}'"
            )
        return (
            f'SELECT {", ".join(projections)} FROM raw.main."_devices" AS d, {days} WHERE {where}'
        )

    def _conform_documented(self) -> None:
        """Give every served table exactly its documented columns, in order, with the
        documented types (a generated column may come out, say, DECIMAL for a ``real``)."""
        for table, documented in DOCUMENTED_TABLES.items():
            expected = duckdb_columns(table)
            name = f'raw.main."{table}"'
            rows = self._con.execute(f"DESCRIBE {name}").fetchall()
            actual = {str(row[0]): str(row[1]) for row in rows}
            if list(actual) != list(expected):
                raise RuntimeError(
                    f"the emulated {table} does not have its {len(documented)} documented "
                    f"columns: {list(actual)} != {list(expected)}"
                )
            for column, kind in expected.items():
                if actual[column] != kind:  # the views (DeviceInfo, the assessments) conform
                    self._con.execute(f'ALTER TABLE {name} ALTER "{column}" TYPE {kind}')

    def _create_table(self, name: str, types: dict[str, str]) -> None:
        columns = ", ".join(f'"{c}" {t}' for c, t in types.items())
        self._con.execute(f'CREATE TABLE raw.main."{name}" ({columns})')

    def _load_table(self, name: str, types: dict[str, str], columns: dict[str, list[Any]]) -> None:
        """Bulk-load plain Python columns through pyarrow (JSON travels as text)."""
        source_types = {c: ("VARCHAR" if t == "JSON" else t) for c, t in types.items()}
        table = _arrow_table(columns, source_types)
        self._con.register("_source", table)
        try:
            projections = ", ".join(f'CAST("{c}" AS {t})' for c, t in types.items())
            self._con.execute(f'INSERT INTO raw.main."{name}" SELECT {projections} FROM _source')
        finally:
            self._con.unregister("_source")


def _memory_config(temp_dir: Path | None) -> dict[str, Any]:
    """DuckDB's memory held to ``_MEMORY_LIMIT``, the rest spilled to ``temp_dir``.

    Without a limit DuckDB takes up to 80% of the machine, and its peaks (the posture
    timeline's joins, a snapshot's aggregate, every snapshot table kept) make up most of a
    large tenant's memory: 100,000 devices peaked at 1.9 GB, 1.3 GB with the limit. Its
    allocator's background threads hand freed memory back to the system. Without a folder
    to spill to (unit tests' small stores), DuckDB's defaults stay.
    """
    if temp_dir is None:
        return {}
    return {
        "memory_limit": _MEMORY_LIMIT,
        "temp_directory": str(temp_dir),
        "allocator_background_threads": True,
    }


def _arrow_table(columns: dict[str, list[Any]], types: dict[str, str]) -> Any:
    import pyarrow as pa

    arrow_types = {
        "VARCHAR": pa.string(),
        "TIMESTAMP WITH TIME ZONE": pa.timestamp("us", tz="UTC"),
        "BIGINT": pa.int64(),
        "DOUBLE": pa.float64(),
        "BOOLEAN": pa.bool_(),
        "TIMESTAMPTZ": pa.timestamp("us", tz="UTC"),
    }
    arrays = {}
    for name, values in columns.items():
        kind = types[name]
        if kind in ("TIMESTAMPTZ", "TIMESTAMP WITH TIME ZONE"):  # epoch µs: far faster
            arrays[name] = pa.array(values, type=pa.int64()).cast(arrow_types[kind])
        else:
            arrays[name] = pa.array(values, type=arrow_types[kind])
    return pa.table(arrays)


def _platform_sql(family: str) -> str:
    if family == "Windows":
        return "OSPlatform LIKE 'Windows%'"
    return f"OSPlatform = '{family}'"


def _sql_time(t: datetime) -> str:
    """A literal DuckDB reads back as the same UTC instant (microsecond precision)."""
    return format_time(t, 0)[:-2] + "+00:00"

"""A Sentinel outage of days: every row keeps its snapshot time (``SnapshotTime``), although
Azure Monitor gives a ``TimeGenerated`` more than 2 days old the receive time instead
(defender-apis.md F). The emulated Logs Ingestion endpoint receives on the emulated clock, so
``Emulator.advance`` stands in for the days the uploads wait in the outbox."""

import socket
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pyarrow as pa
import pytest

from endpoint_forensics.config import Settings, load_settings
from endpoint_forensics.pipeline.run import RunSummary, run_sync
from endpoint_forensics.sinks import close_sinks, open_sinks
from endpoint_forensics.tables import TABLES, KqlType, Table
from endpoint_forensics.workspace import store
from epf_emulator import Emulator, EmulatorSettings

from ..history_modes import EVERY_ROW

pytestmark = pytest.mark.e2e

DATASETS = ["machines", "av_health", "agent_health"]
# The tables those datasets write, with the compat profile's legacy tables and the run log.
TABLES_WRITTEN = {
    "EPF_Devices_CL",
    "EPF_AvHealth_CL",
    "EPF_AgentHealth_CL",
    "AgentHealthStatusWindows_CL",
    "MDE_MAC_devicehealth_CL",
    "EPF_Runs_CL",
}
OUTAGE_HOURS = 72

# The state of every device as it was at a given time: the posture question of a forensic
# timeline, asked on one time column or the other.
AS_OF = (
    "EPF_Devices_CL | where {time} <= datetime({at}) | summarize arg_max({time}, *) by DeviceId"
    " | project DeviceId, RunId, HealthStatus, SnapshotTime | order by DeviceId asc"
)


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port that refuses connections: bound, never listening, held for the whole test."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


def collector_settings(emu: Emulator, tmp_path: Path, **overrides: Any) -> Settings:
    config = tmp_path / "epf.toml"
    emu.write_config(config, iot="none")
    values: dict[str, Any] = {
        "store.path": str(tmp_path / "ws.duckdb"),
        "state.dir": str(tmp_path / "state"),
        "output.compat": True,
        "tenants.0.datasets": DATASETS,
        # Every row in every run: the subject here is delivery, not change-only history.
        "history.mode": EVERY_ROW,
        **overrides,
    }
    return load_settings(config, environ={}, overrides=values)


def sync(settings: Settings, *, now: datetime) -> RunSummary:
    sinks = open_sinks(settings)
    try:
        return run_sync(settings, sinks, now=now)
    finally:
        close_sinks(sinks)


def local_rows(settings: Settings, table: str) -> list[dict[str, Any]]:
    con = duckdb.connect(str(settings.store.path), read_only=True)
    try:
        cursor = con.execute(f'SELECT * FROM "{table}"')
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    finally:
        con.close()


def sentinel_workspace(emu: Emulator, path: Path) -> Path:
    """What the emulated Sentinel ingested, as a workspace file the same KQL runs on."""
    con = store.connect(path)
    try:
        for table in TABLES.values():
            rows = emu.ingested_rows(table.name)
            if rows:
                con.register("ingested", _arrow(table, rows))
                con.execute(f'INSERT INTO "{table.name}" BY NAME SELECT * FROM ingested')
                con.unregister("ingested")
    finally:
        con.close()
    return path


def _arrow(table: Table, rows: list[dict[str, Any]]) -> pa.Table:
    types = {
        KqlType.DATETIME: pa.timestamp("us", tz="UTC"),
        KqlType.INT: pa.int32(),
        KqlType.LONG: pa.int64(),
        KqlType.REAL: pa.float64(),
        KqlType.BOOL: pa.bool_(),
    }
    columns = {}
    for column in table.columns:
        values = [row[column.name] for row in rows]
        if column.type is KqlType.DYNAMIC:
            values = [None if v is None else orjson.dumps(v).decode() for v in values]
        columns[column.name] = pa.array(values, type=types.get(column.type, pa.string()))
    return pa.table(columns)


def as_of(db: Path, time_column: str, at: datetime) -> list[dict[str, Any]]:
    query = AS_OF.format(time=time_column, at=at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
    return store.run_query(db, query).records()


def test_a_three_day_outage_keeps_every_snapshot_time(tmp_path: Path, closed_port: int) -> None:
    with Emulator(EmulatorSettings(devices=30, seed=23, iot_sensors=0)) as emu:
        # The first snapshot is taken while Sentinel is down: it waits in the outbox.
        first_at = emu.now
        down = collector_settings(
            emu, tmp_path, **{"sentinel.endpoint": f"https://127.0.0.1:{closed_port}"}
        )
        first = sync(down, now=first_at)
        assert all(o.outcome == "Succeeded" for o in first.outcomes), first.errors()
        assert "cannot reach Sentinel" in first.deliveries["sentinel"].error
        assert emu.stats()["ingested"] == {}

        # Three days later Sentinel is back: the outbox goes first, then a new snapshot.
        emu.advance(hours=OUTAGE_HOURS)
        received = emu.now
        up = collector_settings(emu, tmp_path)
        second = sync(up, now=received)
        assert second.exit_code == 0, second.errors()
        sentinel = sentinel_workspace(emu, tmp_path / "sentinel.duckdb")
        ingested = {name: emu.ingested_rows(name) for name in TABLES_WRITTEN}

    snapshot_at = {first.run_id: first_at, second.run_id: received}
    for name in TABLES_WRITTEN:
        local = local_rows(up, name)
        assert {r["RunId"] for r in local} == set(snapshot_at), name
        # Locally TimeGenerated is the snapshot time, as SnapshotTime is.
        assert all(r["TimeGenerated"] == r["SnapshotTime"] for r in local), name
        assert all(r["SnapshotTime"] == snapshot_at[r["RunId"]] for r in local), name
        # Sentinel has every row with the same snapshot time...
        remote = ingested[name]
        assert Counter((r["RunId"], r["SnapshotTime"]) for r in remote) == Counter(
            (r["RunId"], r["SnapshotTime"]) for r in local
        ), name
        # ...while the first run's TimeGenerated, 3 days old on arrival, became the receive
        # time: only SnapshotTime still tells the two snapshots apart.
        assert {r["TimeGenerated"] for r in remote} == {received}, name

    # The same posture-time question gets the same answer from both places with SnapshotTime.
    between = first_at + timedelta(days=1)
    then = as_of(up.store.path, "SnapshotTime", between)
    assert {r["RunId"] for r in then} == {first.run_id}
    first_devices = {
        r["DeviceId"] for r in ingested["EPF_Devices_CL"] if r["RunId"] == first.run_id
    }
    assert {r["DeviceId"] for r in then} == first_devices and len(then) == len(first_devices) > 0
    assert as_of(sentinel, "SnapshotTime", between) == then
    assert as_of(up.store.path, "TimeGenerated", between) == then  # locally the same column
    latest = as_of(up.store.path, "SnapshotTime", received)
    assert {r["RunId"] for r in latest} == {second.run_id}
    assert as_of(sentinel, "SnapshotTime", received) == latest
    # Asked on TimeGenerated, Sentinel has forgotten the state before the outage.
    assert as_of(sentinel, "TimeGenerated", between) == []

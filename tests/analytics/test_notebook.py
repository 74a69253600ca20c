"""The notebook API on a workspace synced from the emulator: KQL and SQL to Arrow and pandas,
the forensic answer and triage as the commands give them, and expected failures as QueryError."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from endpoint_forensics.analytics.functions import registry
from endpoint_forensics.analytics.notebook import QueryError, Workspace
from endpoint_forensics.config import load_settings
from endpoint_forensics.pipeline.run import run_sync
from endpoint_forensics.sinks.duckdb import DuckDBSink
from endpoint_forensics.workspace import store
from epf_emulator import Emulator, EmulatorSettings

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def synced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    tmp = tmp_path_factory.mktemp("notebook")
    with Emulator(EmulatorSettings(devices=15, seed=12, iot_sensors=0)) as emu:
        emu.write_config(tmp / "epf.toml", iot="none", sentinel=False, feeds=True)
        settings = load_settings(
            tmp / "epf.toml",
            environ={},
            overrides={"store.path": str(tmp / "ws.duckdb"), "state.dir": str(tmp / "state")},
        )
        sink = DuckDBSink(settings.store.path)
        try:
            summary = run_sync(settings, [sink], now=emu.now)
        finally:
            sink.close()
    assert summary.exit_code == 0, summary.errors()
    yield settings.store.path


def _newest(db: Path) -> str:
    (row,) = store.run_query(db, "SELECT max(SnapshotTime) FROM EPF_Devices_CL", sql=True).rows
    return row[0].strftime("%Y-%m-%dT%H:%M:%SZ")


def test_kql_gives_the_rows_epf_query_gives_as_arrow_and_pandas(synced: Path) -> None:
    query = f"EPF_AgentHealthAt(datetime({_newest(synced)})) | project DeviceId, TamperProtection"
    expected = store.run_query(synced, query, functions=registry())
    with Workspace(synced) as ws:
        table = ws.kql(query)
    assert isinstance(table, pa.Table)
    assert table.column_names == expected.columns
    assert sorted(zip(*table.to_pydict().values(), strict=True)) == sorted(expected.rows)
    frame = table.to_pandas()
    assert len(frame) == len(expected.rows) > 0
    assert set(frame["TamperProtection"]) <= {"Pass", "Fail", "NotApplicable", "Unknown"}


def test_sql_takes_parameters_and_lists_tables(synced: Path) -> None:
    with Workspace(synced) as ws:
        assert "EPF_Triage_CL" in ws.tables() and "EPF_Devices_CL" in ws.tables()
        first = ws.sql("SELECT DeviceId FROM EPF_Devices_CL ORDER BY DeviceId LIMIT 1").to_pylist()
        device = first[0]["DeviceId"]
        found = ws.sql("SELECT count(*) AS n FROM EPF_Devices_CL WHERE DeviceId = ?", [device])
        assert found.to_pylist()[0]["n"] >= 1


def test_the_answers_are_the_commands_answers(synced: Path) -> None:
    from datetime import datetime

    at = datetime.fromisoformat(_newest(synced).replace("Z", "+00:00"))
    with Workspace(synced) as ws:
        device = ws.sql("SELECT DeviceName FROM EPF_Devices_CL LIMIT 1").to_pylist()[0]
        answer = ws.posture(device["DeviceName"], at, window=timedelta(days=2))
        report = ws.triage()
    assert answer["device"]["DeviceName"] == device["DeviceName"]
    assert {"agent_health", "antivirus", "vulnerabilities_open", "missing"} <= set(answer)
    assert report["open"] > 0 and sum(report["decisions"].values()) == report["open"]


def test_expected_failures_are_query_errors(synced: Path, tmp_path: Path) -> None:
    with Workspace(synced) as ws:
        with pytest.raises(QueryError, match="EPF_Nope_CL"):
            ws.kql("EPF_Nope_CL | take 1")
        with pytest.raises(QueryError, match="query failed"):
            ws.sql("SELECT nope FROM EPF_Devices_CL")
    with pytest.raises(QueryError, match="does not exist"):
        Workspace(tmp_path / "none.duckdb")

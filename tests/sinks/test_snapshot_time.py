"""Both sinks write ``SnapshotTime``: locally equal to ``TimeGenerated``, and in every record
sent to Sentinel, where the service may replace ``TimeGenerated`` (defender-apis.md F)."""

from datetime import UTC, datetime
from pathlib import Path

import duckdb
import orjson

from endpoint_forensics.contracts import Batch
from endpoint_forensics.sinks.duckdb import DuckDBSink
from endpoint_forensics.sinks.sentinel_writer import encode_rows
from endpoint_forensics.tables import AGENT_HEALTH, DEVICES
from endpoint_forensics.transforms import TransformStage
from endpoint_forensics.transforms.compat import COMPAT

TAKEN = datetime(2026, 11, 28, 1, 2, 3, 456789, tzinfo=UTC)
STAMP = {"TimeGenerated": TAKEN, "SnapshotTime": TAKEN, "RunId": "run-1", "DefenderTenantId": "t"}


def times(path: Path, table: str) -> set[tuple[datetime, datetime]]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        rows = con.execute(f'SELECT TimeGenerated, SnapshotTime FROM "{table}"').fetchall()
    finally:
        con.close()
    return set(rows)


def test_the_local_store_keeps_the_snapshot_time_in_both_columns(tmp_path: Path) -> None:
    sink = DuckDBSink(tmp_path / "ws.duckdb")
    with sink.open(DEVICES, unit="t/run-1/machines/page-0") as writer:
        writer.write(Batch(DEVICES, rows=[{"DeviceId": "a"}, {"DeviceId": "b"}]), STAMP)
    # A stamp that names only TimeGenerated was taken then: SnapshotTime is that time too.
    only_time = {k: v for k, v in STAMP.items() if k != "SnapshotTime"}
    with sink.open(DEVICES, unit="t/run-1/machines/page-1") as writer:
        writer.write(Batch(DEVICES, rows=[{"DeviceId": "c"}]), only_time)
    sink.close()
    assert times(tmp_path / "ws.duckdb", DEVICES.name) == {(TAKEN, TAKEN)}


def test_legacy_rows_carry_the_snapshot_time_of_their_source_rows(tmp_path: Path) -> None:
    sink = DuckDBSink(tmp_path / "ws.duckdb")
    rows = [{"DeviceId": "w", "DeviceName": "w", "OSFamily": "Windows", "SensorEnabled": "Pass"}]
    stage = TransformStage([COMPAT])
    unit_rows = stage.collect(AGENT_HEALTH)
    assert unit_rows is not None
    unit_rows.add(Batch(AGENT_HEALTH, rows=rows))
    stage.deliver(AGENT_HEALTH, unit_rows, [sink], unit="t/run-1/agent_health/0", stamp=STAMP)
    sink.close()
    assert times(tmp_path / "ws.duckdb", "AgentHealthStatusWindows_CL") == {(TAKEN, TAKEN)}


def test_every_record_sent_to_sentinel_has_its_snapshot_time() -> None:
    expected = "2026-11-28T01:02:03.456789+00:00"
    for stamp in (STAMP, {k: v for k, v in STAMP.items() if k != "SnapshotTime"}):
        records = [orjson.loads(r) for r in encode_rows(DEVICES, Batch(DEVICES, rows=[{}]), stamp)]
        assert [(r["TimeGenerated"], r["SnapshotTime"]) for r in records] == [(expected, expected)]

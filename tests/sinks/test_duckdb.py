from datetime import UTC, datetime

import duckdb
import pytest

from endpoint_forensics.contracts import Batch
from endpoint_forensics.sinks.duckdb import DuckDBSink
from endpoint_forensics.tables import DEVICES

STAMP = {
    "TimeGenerated": datetime(2026, 11, 1, tzinfo=UTC),
    "RunId": "run-1",
    "DefenderTenantId": "t1",
}


def count(path):
    con = duckdb.connect(str(path), read_only=True)
    try:
        return con.execute('SELECT count(*) FROM "EPF_Devices_CL"').fetchone()[0]
    finally:
        con.close()


def test_a_unit_is_committed_once_and_remembered(tmp_path):
    sink = DuckDBSink(tmp_path / "ws.duckdb")
    with sink.open(DEVICES, unit="t1/run-1/machines/page-0") as writer:
        writer.write(
            Batch(DEVICES, rows=[{"DeviceId": "a", "MachineTags": ["x"]}, {"DeviceId": "b"}]), STAMP
        )
    assert sink.delivered("t1/run-1/machines/page-0")
    assert not sink.delivered("t1/run-1/machines/page-1")
    sink.close()
    assert count(tmp_path / "ws.duckdb") == 2


def test_a_failed_unit_leaves_nothing(tmp_path):
    sink = DuckDBSink(tmp_path / "ws.duckdb")
    with pytest.raises(RuntimeError), sink.open(DEVICES, unit="u") as writer:
        writer.write(Batch(DEVICES, rows=[{"DeviceId": "a"}]), STAMP)
        raise RuntimeError("the source failed")
    assert not sink.delivered("u")
    sink.close()
    assert count(tmp_path / "ws.duckdb") == 0


def test_discard_removes_a_partial_snapshot_and_its_units(tmp_path):
    sink = DuckDBSink(tmp_path / "ws.duckdb")
    for n in range(2):
        with sink.open(DEVICES, unit=f"t1/run-1/machines/page-{n}") as writer:
            writer.write(Batch(DEVICES, rows=[{"DeviceId": f"d{n}"}]), STAMP)
    with sink.open(DEVICES, unit="t1/run-2/machines/page-0") as writer:
        writer.write(Batch(DEVICES, rows=[{"DeviceId": "x"}]), {**STAMP, "RunId": "run-2"})
    # Another dataset of the source writes the same table in the same run (an IoT console's
    # devices and device changes): its rows and units stay.
    with sink.open(DEVICES, unit="t1/run-1/other/page-0") as writer:
        writer.write(Batch(DEVICES, rows=[{"DeviceId": "o"}]), STAMP)
    assert (
        sink.discard(
            DEVICES,
            run_id="run-1",
            unit_scope="t1",
            where={"DefenderTenantId": "t1"},
            dataset="machines",
        )
        == 2
    )
    assert not sink.delivered("t1/run-1/machines/page-0")
    assert sink.delivered("t1/run-2/machines/page-0") and sink.delivered("t1/run-1/other/page-0")
    sink.close()
    assert count(tmp_path / "ws.duckdb") == 2

"""A workspace written before a column existed is extended in place when it is opened."""

from pathlib import Path

import duckdb

from endpoint_forensics.analytics.functions import registry
from endpoint_forensics.workspace import store


def _older_devices(path: Path, columns: str, rows: str) -> None:
    """A workspace whose EPF_Devices_CL has only ``columns``, holding ``rows``, then opened."""
    con = duckdb.connect(str(path))
    con.execute(f'CREATE TABLE "EPF_Devices_CL" ({columns})')
    con.execute(f'INSERT INTO "EPF_Devices_CL" VALUES {rows}')
    con.close()
    store.connect(path).close()


def test_an_older_workspace_gets_snapshot_time_from_time_generated(tmp_path: Path) -> None:
    path = tmp_path / "old.duckdb"
    _older_devices(
        path,
        '"TimeGenerated" TIMESTAMPTZ, "RunId" VARCHAR, "DeviceId" VARCHAR',
        "('2026-11-01 06:00:00+00', 'r1', 'd1'), ('2026-11-02 06:00:00+00', 'r2', 'd1')",
    )

    rows = store.run_query(
        path, "EPF_Devices_CL | project RunId, SnapshotTime, TimeGenerated | order by RunId asc"
    ).records()
    assert [(r["RunId"], r["SnapshotTime"]) for r in rows] == [
        ("r1", "2026-11-01T06:00:00Z"),
        ("r2", "2026-11-02T06:00:00Z"),
    ]
    assert all(r["SnapshotTime"] == r["TimeGenerated"] for r in rows)


def test_an_older_workspace_counts_its_rows_as_snapshots(tmp_path: Path) -> None:
    """Rows from before change-only history were full snapshots: their HistoryKind is the empty
    string, as in Sentinel, never SQL's NULL (which the state functions would not count)."""
    path = tmp_path / "old.duckdb"
    _older_devices(
        path,
        '"TimeGenerated" TIMESTAMPTZ, "SnapshotTime" TIMESTAMPTZ, "RunId" VARCHAR,'
        ' "DefenderTenantId" VARCHAR, "DeviceId" VARCHAR, "DeviceName" VARCHAR',
        "('2026-11-01 06:00:00+00', '2026-11-01 06:00:00+00', 'r1', 't1', 'd1', 'ws-1'),"
        " ('2026-11-02 06:00:00+00', '2026-11-02 06:00:00+00', 'r2', 't1', 'd2', 'ws-2')",
    )

    kinds = store.run_query(path, "EPF_Devices_CL | distinct HistoryKind").rows
    assert kinds == [("",)]
    at = store.run_query(
        path,
        "EPF_DevicesAt(datetime(2026-11-02T12:00:00Z)) | project DeviceName",
        functions=registry(),
    ).rows
    assert at == [("ws-2",)]  # the newest snapshot alone: d1 was not listed in it

"""A workspace written before a column existed is extended in place when it is opened."""

from pathlib import Path

import duckdb

from endpoint_forensics.workspace import store


def test_an_older_workspace_gets_snapshot_time_from_time_generated(tmp_path: Path) -> None:
    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))
    con.execute(
        'CREATE TABLE "EPF_Devices_CL" ("TimeGenerated" TIMESTAMPTZ, "RunId" VARCHAR, '
        '"DeviceId" VARCHAR)'
    )
    con.execute(
        "INSERT INTO \"EPF_Devices_CL\" VALUES ('2026-11-01 06:00:00+00', 'r1', 'd1'), "
        "('2026-11-02 06:00:00+00', 'r2', 'd1')"
    )
    con.close()

    store.connect(path).close()

    rows = store.run_query(
        path, "EPF_Devices_CL | project RunId, SnapshotTime, TimeGenerated | order by RunId asc"
    ).records()
    assert [(r["RunId"], r["SnapshotTime"]) for r in rows] == [
        ("r1", "2026-11-01T06:00:00Z"),
        ("r2", "2026-11-02T06:00:00Z"),
    ]
    assert all(r["SnapshotTime"] == r["TimeGenerated"] for r in rows)

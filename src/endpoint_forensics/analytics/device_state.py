"""One device's state at T in DuckDB SQL, standing for a shipped state function filtered to
that device (``EPF_DevicesAt(at) | where DeviceId == device | project ...``) in the local
workspace. Sentinel runs the shipped KQL as it is; tests check the two agree row for row, in
both history modes, at sync times and between them.

Why: for one device, DuckDB spends most of such a read planning duckdb-kql's translation (each
column's ``arg_max`` wrapped for KQL's nulls, a ``typeof`` branch per comparison), about ten
times what it spends running it; ``epf forensics`` makes a dozen of them per answer. The SQL
here reads the same rows with the same rules in a plan a fraction of the size.

Each text takes the named parameters ``$at`` (a timezone-aware datetime) and ``$device``.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["STATE_PART", "device_state_sql", "device_vulnerabilities_sql"]

#: What the state rows of ``device_state_sql`` with ``window`` say in their ``Part``.
STATE_PART = "state"

# The state functions' window and their test of a full snapshot (docs/history.md).
_WINDOW = "{t}SnapshotTime <= $at AND {t}SnapshotTime > $at - INTERVAL 31 DAY"
_FULL = "HistoryKind IN ('', 'Snapshot', 'Baseline')"
_SAME_TENANT = "t.DefenderTenantId IS NOT DISTINCT FROM f.DefenderTenantId"


def _full_snapshot(table: str) -> str:
    """The newest full snapshot of each tenant within the window (the functions' ``full``)."""
    return (
        f'SELECT DefenderTenantId, max(SnapshotTime) AS NewestFull FROM "{table}"'
        f" WHERE {_WINDOW.format(t='')} AND {_FULL} GROUP BY DefenderTenantId"
    )


def device_state_sql(
    table: str, keys: Sequence[str], columns: Sequence[str], window: Sequence[str] = ()
) -> str:
    """``columns`` of one device's items in the state of ``table`` at ``$at``, as its ``*At``
    function gives them: the newest full snapshot within 31 days and the rows written after
    it, the newest row of each item (``keys`` beyond the tenant and device) winning, removed
    items left out.

    With ``window``, also every row of the device in ``($since - 31 days, $at]`` (``$since``
    at or before ``$at``), from the same scan: a first column ``Part`` tells the state rows
    (``STATE_PART``) from the window's (``window``), each row with ``columns`` then the
    other ``window`` columns."""
    partition = ", ".join(["t.DefenderTenantId", "t.DeviceId", *(f"t.{k}" for k in keys)])
    if not window:
        picked = ", ".join(f"t.{c}" for c in dict.fromkeys([*columns, "HistoryKind"]))
        return f"""
WITH full_snapshot AS ({_full_snapshot(table)}),
newest AS (
    SELECT {picked} FROM "{table}" t JOIN full_snapshot f ON {_SAME_TENANT}
    WHERE {_WINDOW.format(t="t.")} AND t.SnapshotTime >= f.NewestFull AND t.DeviceId = $device
    QUALIFY row_number() OVER (PARTITION BY {partition} ORDER BY t.SnapshotTime DESC) = 1
)
SELECT {", ".join(columns)} FROM newest WHERE coalesce(HistoryKind <> 'Removed', TRUE)
"""
    shown = list(dict.fromkeys([*columns, *window]))
    read = dict.fromkeys(["DefenderTenantId", "DeviceId", "SnapshotTime", "HistoryKind", *keys])
    return f"""
WITH full_snapshot AS ({_full_snapshot(table)}),
device_rows AS MATERIALIZED (
    SELECT {", ".join(dict.fromkeys([*read, *shown]))} FROM "{table}"
    WHERE DeviceId = $device AND SnapshotTime > $since - INTERVAL 31 DAY AND SnapshotTime <= $at
),
newest AS (
    SELECT t.* FROM device_rows t JOIN full_snapshot f ON {_SAME_TENANT}
    WHERE {_WINDOW.format(t="t.")} AND t.SnapshotTime >= f.NewestFull
    QUALIFY row_number() OVER (PARTITION BY {partition} ORDER BY t.SnapshotTime DESC) = 1
)
SELECT '{STATE_PART}' AS Part, {", ".join(shown)} FROM newest
WHERE coalesce(HistoryKind <> 'Removed', TRUE)
UNION ALL
SELECT 'window' AS Part, {", ".join(shown)} FROM device_rows
"""


def device_vulnerabilities_sql(columns: Sequence[str], change_columns: Sequence[str]) -> str:
    """``columns`` of one device's open vulnerabilities at ``$at``, as
    ``EPF_VulnerabilitiesAt`` gives them: the records of the newest full snapshot and the
    rows after it, then the vulnerability events after the newest snapshot, the newest of
    each record winning; a record whose newest is Fixed or removed is closed.
    ``change_columns``: those of ``columns`` the events table has (the others are null there,
    as in KQL's union)."""
    snapshot_part = ", ".join(f"t.{c}" for c in columns)
    change_part = ", ".join(f"t.{c}" if c in change_columns else f"NULL AS {c}" for c in columns)
    return f"""
WITH full_snapshot AS ({_full_snapshot("EPF_Vulnerabilities_CL")}),
newest_snapshot AS (
    SELECT t.DefenderTenantId, max(t.SnapshotTime) AS NewestSnapshot
    FROM "EPF_Vulnerabilities_CL" t JOIN full_snapshot f ON {_SAME_TENANT}
    WHERE {_WINDOW.format(t="t.")} GROUP BY t.DefenderTenantId
),
records AS (
    SELECT t.DefenderTenantId, t.RecordId, t.SnapshotTime AS EventTimestamp,
        CASE WHEN t.HistoryKind = 'Removed' THEN 'Fixed' ELSE 'Snapshot' END AS Status,
        {snapshot_part}
    FROM "EPF_Vulnerabilities_CL" t JOIN full_snapshot f ON {_SAME_TENANT}
    WHERE {_WINDOW.format(t="t.")} AND t.SnapshotTime >= f.NewestFull AND t.DeviceId = $device
    UNION ALL
    SELECT t.DefenderTenantId, t.RecordId, t.EventTimestamp, t.Status, {change_part}
    FROM "EPF_VulnerabilityChanges_CL" t JOIN newest_snapshot f ON {_SAME_TENANT}
    WHERE t.EventTimestamp <= $at AND t.EventTimestamp > $at - INTERVAL 31 DAY
        AND t.EventTimestamp > f.NewestSnapshot AND t.DeviceId = $device
),
newest AS (
    SELECT * FROM records
    QUALIFY row_number() OVER (
        PARTITION BY DefenderTenantId, RecordId ORDER BY EventTimestamp DESC) = 1
)
SELECT {", ".join(columns)} FROM newest WHERE coalesce(Status <> 'Fixed', TRUE)
"""

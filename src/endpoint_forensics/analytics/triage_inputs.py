"""The inputs of triage in the local workspace: ``EPF_TriageInputs(at)`` translated to SQL,
with the open vulnerabilities it starts from computed by ``open_vulnerabilities_sql`` (a
window over the rows) in place of ``EPF_OpenVulnerabilitiesAt``'s translation, which over a
fleet's millions of records costs four times as much. Sentinel runs the shipped KQL as it is.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache
from typing import Any

from endpoint_forensics.analytics.functions import definitions
from endpoint_forensics.workspace import store

__all__ = ["inputs_sql", "open_vulnerabilities_sql"]


def open_vulnerabilities_sql(at: datetime) -> str:
    """``EPF_OpenVulnerabilitiesAt(at)`` in DuckDB SQL, the newest row of each record by a
    window rather than by duckdb-kql's ``arg_max`` of each column wrapped for KQL's nulls
    (four times the time over a fleet's millions of records). Tests check the two agree, in
    both history modes and between syncs."""
    when = f"TIMESTAMPTZ '{at.astimezone(UTC).isoformat()}'"
    window = f"SnapshotTime <= {when} AND SnapshotTime > {when} - INTERVAL 31 DAY"
    same = "t.DefenderTenantId IS NOT DISTINCT FROM f.DefenderTenantId"
    columns = (
        "DeviceId, DeviceName, RecordId, CveId, SoftwareName, SoftwareVersion,"
        " VulnerabilitySeverityLevel, CvssScore, ExploitabilityLevel, FirstSeenTimestamp"
    )
    return f"""
WITH full_snapshot AS (
    SELECT DefenderTenantId, max(SnapshotTime) AS NewestFull FROM "EPF_Vulnerabilities_CL"
    WHERE {window} AND HistoryKind IN ('', 'Snapshot', 'Baseline') GROUP BY DefenderTenantId
),
newest AS (
    SELECT t.DefenderTenantId, max(t.SnapshotTime) AS NewestSnapshot
    FROM "EPF_Vulnerabilities_CL" t JOIN full_snapshot f ON {same}
    WHERE t.{window} GROUP BY t.DefenderTenantId
),
events AS (
    SELECT t.DefenderTenantId, {columns}, t.SnapshotTime AS EventTimestamp,
        CASE WHEN t.HistoryKind = 'Removed' THEN 'Fixed' ELSE 'Snapshot' END AS Status
    FROM "EPF_Vulnerabilities_CL" t JOIN full_snapshot f ON {same}
    WHERE t.{window} AND t.SnapshotTime >= f.NewestFull
    UNION ALL
    SELECT t.DefenderTenantId, {columns}, t.EventTimestamp, t.Status
    FROM "EPF_VulnerabilityChanges_CL" t JOIN newest f ON {same}
    WHERE t.EventTimestamp <= {when} AND t.EventTimestamp > {when} - INTERVAL 31 DAY
        AND t.EventTimestamp > f.NewestSnapshot
),
newest_row AS (
    SELECT * FROM events
    QUALIFY row_number() OVER (
        PARTITION BY DefenderTenantId, DeviceId, RecordId ORDER BY EventTimestamp DESC) = 1
)
SELECT DefenderTenantId, {columns} FROM newest_row WHERE coalesce(Status, '') <> 'Fixed'
"""


#: The view that stands for EPF_OpenVulnerabilitiesAt in the local translation of
#: EPF_TriageInputs (see ``open_vulnerabilities_sql``).
_OPEN_VIEW = "_EpfOpenVulnerabilities"
_OPEN_COLUMNS = [
    "DefenderTenantId", "DeviceId", "DeviceName", "RecordId", "CveId", "SoftwareName",
    "SoftwareVersion", "VulnerabilitySeverityLevel", "CvssScore", "ExploitabilityLevel",
    "FirstSeenTimestamp",
]  # fmt: skip


@cache
def _local_registry() -> Any:
    """The shipped functions, EPF_OpenVulnerabilitiesAt reading the view instead."""
    from duckdb_kql.stored_functions import parse_functions

    texts = [
        f"function EPF_OpenVulnerabilitiesAt(at:datetime) {{ {_OPEN_VIEW} }}"
        if d.startswith("function EPF_OpenVulnerabilitiesAt(")
        else d
        for d in definitions()
    ]
    return parse_functions(texts)


def inputs_sql(con: Any, at: datetime) -> str:
    """``EPF_TriageInputs(at)`` as SQL over the view of the open vulnerabilities at ``at``;
    translated once per workspace schema in a process (translating costs about a second, and
    a scheduled collector triages every run)."""
    import duckdb_kql

    con.execute(f"CREATE OR REPLACE TEMP VIEW {_OPEN_VIEW} AS {open_vulnerabilities_sql(at)}")
    schema = {**store.table_columns(con), _OPEN_VIEW: _OPEN_COLUMNS}
    key = hash(tuple(sorted((t, tuple(c)) for t, c in schema.items())))
    if key not in _TRANSLATED:
        text = f"EPF_TriageInputs(datetime({_PLACEHOLDER}))"
        sql = str(duckdb_kql.to_sql(text, schema=schema, functions=_local_registry()))
        assert f"'{_PLACEHOLDER}'" in sql, "the time is a literal of the translation"
        _TRANSLATED[key] = sql
    moment = at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return _TRANSLATED[key].replace(f"'{_PLACEHOLDER}'", f"'{moment}'")


_TRANSLATED: dict[int, str] = {}
# A time no workspace holds, replaced by the triage time in the translated text.
_PLACEHOLDER = "1901-02-03T04:05:06Z"

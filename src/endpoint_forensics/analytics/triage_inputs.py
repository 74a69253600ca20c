"""The inputs of triage in the local workspace, as the parts ``EPF_TriageInputs`` joins: the
(device, CVE) pairs of Defender's devices computed by ``open_device_cves_sql`` in place of
``EPF_OpenDeviceCvesAt``'s translation (which over a fleet's millions of records costs several
times as much), the other parts the shipped functions translated. Sentinel runs the shipped
KQL as it is; tests check the parts joined give its rows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any

from endpoint_forensics.analytics.functions import functions, registry, with_callees
from endpoint_forensics.workspace import store

__all__ = [
    "TriageParts",
    "open_device_cves_sql",
    "open_vulnerabilities_sql",
    "tables_read",
    "triage_parts",
]


def open_vulnerabilities_sql(at: datetime) -> str:
    """``EPF_OpenVulnerabilitiesAt(at)`` in DuckDB SQL. The newest full snapshot has one row
    per record; only the records written after it (changes, usually few) need the newest of
    their rows, by a window over those alone, where duckdb-kql's ``arg_max`` of each column
    (wrapped for KQL's nulls) or one window over the whole snapshot sorts millions of rows.
    Tests check it agrees with the shipped function, in both history modes and between syncs."""
    when = f"TIMESTAMPTZ '{at.astimezone(UTC).isoformat()}'"
    window = f"SnapshotTime <= {when} AND SnapshotTime > {when} - INTERVAL 31 DAY"
    same = "t.DefenderTenantId IS NOT DISTINCT FROM f.DefenderTenantId"
    full = "HistoryKind IN ('', 'Snapshot', 'Baseline')"
    columns = (
        "DeviceId, DeviceName, RecordId, CveId, SoftwareName, SoftwareVersion,"
        " VulnerabilitySeverityLevel, CvssScore, ExploitabilityLevel, FirstSeenTimestamp"
    )
    return f"""
WITH full_snapshot AS (
    SELECT DefenderTenantId, max(SnapshotTime) AS NewestFull FROM "EPF_Vulnerabilities_CL"
    WHERE {window} AND {full} GROUP BY DefenderTenantId
),
newest AS (
    SELECT t.DefenderTenantId, max(t.SnapshotTime) AS NewestSnapshot
    FROM "EPF_Vulnerabilities_CL" t JOIN full_snapshot f ON {same}
    WHERE t.{window} GROUP BY t.DefenderTenantId
),
later AS (
    SELECT t.DefenderTenantId, {columns}, t.SnapshotTime AS EventTimestamp,
        CASE WHEN t.HistoryKind = 'Removed' THEN 'Fixed' ELSE 'Snapshot' END AS Status
    FROM "EPF_Vulnerabilities_CL" t JOIN full_snapshot f ON {same}
    WHERE t.{window} AND t.SnapshotTime >= f.NewestFull
        AND NOT (t.SnapshotTime = f.NewestFull AND t.{full})
    UNION ALL
    SELECT t.DefenderTenantId, {columns}, t.EventTimestamp, t.Status
    FROM "EPF_VulnerabilityChanges_CL" t JOIN newest f ON {same}
    WHERE t.EventTimestamp <= {when} AND t.EventTimestamp > {when} - INTERVAL 31 DAY
        AND t.EventTimestamp > f.NewestSnapshot
),
later_newest AS (
    SELECT * FROM later
    QUALIFY row_number() OVER (
        PARTITION BY DefenderTenantId, DeviceId, RecordId ORDER BY EventTimestamp DESC) = 1
),
snapshot AS (
    SELECT t.DefenderTenantId, {columns}
    FROM "EPF_Vulnerabilities_CL" t JOIN full_snapshot f ON {same}
        AND t.SnapshotTime = f.NewestFull
    WHERE t.{full}
)
SELECT s.* FROM snapshot s ANTI JOIN later_newest l
    ON l.DefenderTenantId IS NOT DISTINCT FROM s.DefenderTenantId AND l.DeviceId = s.DeviceId
    AND l.RecordId = s.RecordId
UNION ALL
SELECT DefenderTenantId, {columns} FROM later_newest WHERE coalesce(Status, '') <> 'Fixed'
"""


def open_device_cves_sql(at: datetime) -> str:
    """``EPF_OpenDeviceCvesAt(at)`` in DuckDB SQL over ``open_vulnerabilities_sql``: plain
    aggregates where duckdb-kql's ``make_set`` parses every software name as JSON and wraps
    each ``arg_max`` for KQL's nulls. Tests check it agrees with the shipped function."""
    return f"""
SELECT DefenderTenantId, DeviceId, CveId, max(CvssScore) AS CvssScore,
    coalesce(arg_max({{'v': VulnerabilitySeverityLevel}}, CvssScore),
        any_value({{'v': VulnerabilitySeverityLevel}}))['v'] AS VulnerabilitySeverityLevel,
    coalesce(arg_max({{'v': ExploitabilityLevel}}, CvssScore),
        any_value({{'v': ExploitabilityLevel}}))['v'] AS ExploitabilityLevel,
    min(FirstSeenTimestamp) AS FirstSeen,
    to_json(coalesce(list_distinct(list(SoftwareName)), [])) AS Software
FROM ({open_vulnerabilities_sql(at)})
WHERE coalesce(CveId, '') <> ''
GROUP BY DefenderTenantId, DeviceId, CveId
"""


@dataclass(frozen=True)
class TriageParts:
    """What triage reads at a time, as the local workspace computes it: SQL relations of the
    (device, CVE) pairs of Defender's devices, the OT pairs with their devices' facts (one
    row per pair), the facts of Defender's devices and of every CVE (``EPF_TriageInputs``
    joins the same parts row by row; triage joins them once per CVE and device)."""

    it_pairs: str  # EPF_OpenDeviceCvesAt
    ot_pairs: str  # EPF_OtOpenVulnerabilitiesAt
    it_devices: str  # EPF_TriageDevicesAt
    cves: str  # EPF_TriageCvesAt


_IT_PAIRS = "_EpfOpenDeviceCves"
# The shipped functions translated for the parts (EPF_OpenDeviceCvesAt is hand-written SQL).
_PARTS = ("EPF_OtOpenVulnerabilitiesAt", "EPF_TriageDevicesAt", "EPF_TriageCvesAt")
_OT_PAIRS = "_EpfOtOpenVulnerabilities"


def triage_parts(con: Any, at: datetime) -> TriageParts:
    """The parts of triage at ``at`` over the workspace connection ``con``: the Defender
    pairs by ``open_device_cves_sql`` (a view), the OT pairs kept in a temporary table (few
    rows, read twice), the rest the shipped functions translated by duckdb-kql, once per
    workspace schema in a process (translating costs about a second, and a scheduled
    collector triages every run)."""
    con.execute(f"CREATE OR REPLACE TEMP VIEW {_IT_PAIRS} AS {open_device_cves_sql(at)}")
    ot = _translated(con, "EPF_OtOpenVulnerabilitiesAt", at)
    con.execute(f"CREATE OR REPLACE TEMP TABLE {_OT_PAIRS} AS {ot}")
    return TriageParts(
        it_pairs=_IT_PAIRS,
        ot_pairs=_OT_PAIRS,
        it_devices=f"({_translated(con, 'EPF_TriageDevicesAt', at)})",
        cves=f"({_translated(con, 'EPF_TriageCvesAt', at)})",
    )


def _translated(con: Any, function: str, at: datetime) -> str:
    """``function(at)`` in DuckDB SQL for the workspace's schema."""
    import duckdb_kql

    schema = store.table_columns(con)
    key = (function, hash(tuple(sorted((t, tuple(c)) for t, c in schema.items()))))
    if key not in _TRANSLATED:
        text = f"{function}(datetime({_PLACEHOLDER}))"
        sql = str(duckdb_kql.to_sql(text, schema=schema, functions=registry(*_PARTS)))
        assert f"'{_PLACEHOLDER}'" in sql, "the time is a literal of the translation"
        _TRANSLATED[key] = sql
    moment = at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return _TRANSLATED[key].replace(f"'{_PLACEHOLDER}'", f"'{moment}'")


@cache
def tables_read() -> frozenset[str]:
    """The tables triage reads: those the parts' SQL and shipped functions name (with the
    functions they call). A run that changed none of them leaves the last triage standing."""
    shipped = functions()
    texts = [open_device_cves_sql(datetime.now(UTC))]
    texts += [shipped[name].body for name in sorted(with_callees(_PARTS))]
    return frozenset(t for text in texts for t in _TABLE.findall(text))


# A custom table's name, as the SQL and the KQL name them.
_TABLE = re.compile(r"\b(EPF_\w+_CL)\b")
_TRANSLATED: dict[tuple[str, int], str] = {}
# A time no workspace holds, replaced by the triage time in the translated text.
_PLACEHOLDER = "1901-02-03T04:05:06Z"

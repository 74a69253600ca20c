"""SQL standing for the shipped ``EPF_RemediationLifecycle`` in the local workspace.

The function orders each item's observations by building a list, sorting it and expanding it
again (``make_list``, ``mv-expand``): Kusto has no other way without serializing the rows, and
duckdb-kql translates ``prev()`` to nothing. Translated, those lists become JSON values, about
a second of the 90-day lifecycle's ten. Here the same steps use DuckDB's own lists (a window
function, ``lag``, cost snapshot-mode history a third more than the JSON did), and everything
else is the shipped text: the state functions it starts from are translated from KQL, and
``lifecycle_registry`` gives the two lifecycle functions with ``EPF_RemediationLifecycle``
reading the table this SQL fills (``REMEDIATION_TABLE``). Tested equal to the shipped
functions in both history modes (tests/analytics/test_lifecycle.py). May import
``analytics.functions`` and ``workspace``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache
from typing import Any

from endpoint_forensics.analytics.functions import (
    definitions,
    functions,
    kql_datetime,
    registry,
    with_callees,
)
from endpoint_forensics.workspace import store

__all__ = ["REMEDIATION_COLUMNS", "REMEDIATION_TABLE", "lifecycle_registry", "remediation_sql"]

#: The temporary table the local ``EPF_RemediationLifecycle`` reads, and its columns.
REMEDIATION_TABLE = "epf_remediation_lifecycle"
REMEDIATION_COLUMNS = (
    "DefenderTenantId", "DeviceId", "Kind", "Item", "FirstSeen", "FixedAt", "ReopenCount",
    "DaysOpen", "Status",
)  # fmt: skip


@cache
def lifecycle_registry() -> Any:
    """``EPF_VulnerabilityLifecycle``, ``EPF_ConfigurationLifecycle`` and what they call, parsed,
    with ``EPF_RemediationLifecycle`` reading ``REMEDIATION_TABLE``."""
    from duckdb_kql.stored_functions import parse_functions

    wanted = with_callees(["EPF_VulnerabilityLifecycle", "EPF_ConfigurationLifecycle"])
    wanted.discard("EPF_RemediationLifecycle")
    shipped = [d for f, d in zip(functions(), definitions(), strict=True) if f in wanted]
    local = (
        'function EPF_RemediationLifecycle(since:datetime, until:datetime, itemKind:string = "")'
        f' {{\n{REMEDIATION_TABLE}\n| where itemKind == "" or Kind == itemKind\n}}'
    )
    return parse_functions([*shipped, local])


def remediation_sql(con: Any, since: datetime, until: datetime) -> str:
    """The rows of ``EPF_RemediationLifecycle(since, until)``, both kinds of item."""
    import duckdb_kql

    schema = store.table_columns(con)

    def kql(text: str) -> str:
        states = registry("EPF_VulnerabilitiesAt", "EPF_SecureConfigAt", "EPF_DevicesAt")
        found = duckdb_kql.to_sql(text, schema=schema, functions=states)
        return str(found)

    start, end = kql_datetime(since), kql_datetime(until)
    # Kusto's datetimes, as the translation gives them: UTC without a zone.
    since_at = _naive(since)
    since_tz, until_tz = f"TIMESTAMPTZ '{since.isoformat()}'", f"TIMESTAMPTZ '{until.isoformat()}'"
    keys = "DefenderTenantId, DeviceId, Kind, Item"
    same = _same(*keys.split(", "))
    same_device = _same("DefenderTenantId", "DeviceId")
    return f"""
WITH vulnerabilities_at_start AS ({
        kql(
            f"EPF_VulnerabilitiesAt({start})"
            " | project DefenderTenantId, DeviceId, RecordId, FirstSeenTimestamp"
        )
    }),
configurations_at_start AS ({
        kql(
            f"EPF_SecureConfigAt({start})"
            " | project DefenderTenantId, DeviceId, ConfigurationId, IsApplicable, IsCompliant"
        )
    }),
devices_at_end AS ({
        kql(f"EPF_DevicesAt({end}) | project DefenderTenantId, DeviceId, HealthStatus")
    }),
configurations AS (
    SELECT DefenderTenantId, DeviceId, ConfigurationId AS Item, SnapshotTime AS Observed,
        CASE WHEN coalesce(coalesce(HistoryKind, '') <> 'Removed' AND IsApplicable
            AND NOT IsCompliant, false) THEN 1 ELSE 0 END AS Open
    FROM "EPF_SecureConfig_CL" WHERE SnapshotTime > {since_tz} AND SnapshotTime <= {until_tz}
    UNION ALL
    SELECT DefenderTenantId, DeviceId, ConfigurationId, {since_tz},
        CASE WHEN coalesce(IsApplicable AND NOT IsCompliant, false) THEN 1 ELSE 0 END
    FROM configurations_at_start
),
failed AS (SELECT DISTINCT DefenderTenantId, DeviceId, Item FROM configurations WHERE Open = 1),
observations AS (
    SELECT DefenderTenantId, DeviceId, 'Vulnerability' AS Kind, RecordId AS Item,
        CASE WHEN coalesce(HistoryKind, '') = 'Removed' THEN -1 ELSE 1 END AS Open,
        SnapshotTime AS Observed,
        CASE WHEN coalesce(HistoryKind, '') <> 'Removed' AND FirstSeenTimestamp <= {until_tz}
            THEN FirstSeenTimestamp END AS Sighted
    FROM "EPF_Vulnerabilities_CL" WHERE SnapshotTime > {since_tz} AND SnapshotTime <= {until_tz}
    UNION ALL
    SELECT DefenderTenantId, DeviceId, 'Vulnerability', RecordId, 1, {since_tz},
        CASE WHEN FirstSeenTimestamp <= {until_tz} THEN FirstSeenTimestamp END
    FROM vulnerabilities_at_start
    UNION ALL
    SELECT DefenderTenantId, DeviceId, 'Vulnerability', RecordId,
        CASE WHEN coalesce(Status = 'Fixed', false) THEN 0 ELSE 1 END, EventTimestamp, NULL
    FROM "EPF_VulnerabilityChanges_CL"
    WHERE EventTimestamp > {since_tz} AND EventTimestamp <= {until_tz}
    UNION ALL
    SELECT a.DefenderTenantId, a.DeviceId, 'Configuration', a.Item, a.Open, a.Observed, NULL
    FROM configurations a JOIN failed b ON {_same("DefenderTenantId", "DeviceId", "Item")}
),
items AS (
    SELECT {keys}, min(Observed) AS Earliest, min(Sighted) AS EarliestSighting,
        count(*) FILTER (WHERE Open <= 0) AS Closings
    FROM observations GROUP BY ALL
),
entries AS (
    SELECT a.{keys.replace(", ", ", a.")}, a.Open, a.Observed, a.Sighted
    FROM observations a SEMI JOIN (SELECT * FROM items WHERE Closings > 0) b ON {same}
),
-- Whole milliseconds, cut as Kusto's datetime_diff cuts them (epoch_ms rounds).
-- Each item's observations in time order, then the state (0 a tombstone, 1 closed, 2 open),
-- as one number; each paired with the one before it (-1 before the first): the sorted list
-- and itself shifted by one, unnested side by side.
keyed AS (
    SELECT {
        keys
    }, (epoch_us(Observed) // 1000 + 10000000000000) * 3 + Open + 1 AS Entry FROM entries
    UNION ALL
    SELECT {keys}, (epoch_us(Sighted) // 1000 + 10000000000000) * 3 + 2 FROM entries
    WHERE Sighted IS NOT NULL
),
sequences AS (SELECT {keys}, list_sort(list(Entry)) AS Sequence FROM keyed GROUP BY ALL),
paired AS (
    SELECT {keys}, unnest(Sequence) AS Entry,
        unnest(list_concat([-1], Sequence[1:len(Sequence) - 1])) AS Prior
    FROM sequences
),
transitions AS (
    SELECT {keys}, Entry // 3 - 10000000000000 AS Ms,
        CASE WHEN Entry % 3 = 2 THEN 1 ELSE 0 END AS Now,
        CASE WHEN Prior < 0 THEN -1 WHEN Prior % 3 = 2 THEN 1 ELSE 0 END AS Before,
        Entry % 3 = 0 AS Tombstone
    FROM paired
),
sequenced AS (
    SELECT {keys},
        coalesce(sum(Ms) FILTER (WHERE Now = 1), 0) AS OpenedMs,
        coalesce(sum(Ms) FILTER (WHERE Now = 0 AND Before = 1), 0) AS ClosedMs,
        count(*) FILTER (WHERE Now = 1) AS Opens,
        count(*) FILTER (WHERE Now = 0 AND Before = -1 AND NOT Tombstone) AS StartsClosed,
        coalesce(sum(Ms) FILTER (WHERE Now = 0 AND Before = -1 AND NOT Tombstone), 0)
            AS FirstClosedMs,
        min(Ms) FILTER (WHERE Now = 1) AS FirstOpenMs,
        max(Ms) AS Ms, arg_max(Now, Ms) AS Now
    FROM transitions WHERE Now <> Before GROUP BY ALL
),
lifecycles AS (
    SELECT {keys}, epoch_us(CASE WHEN EarliestSighting < Earliest THEN EarliestSighting
            ELSE Earliest END) // 1000 AS Ms, 1 AS Now, 1 AS Opens, 0 AS StartsClosed,
        0 AS FirstClosedMs, 0 AS ClosedMs
    FROM items WHERE Closings = 0
),
timed AS (
    SELECT {keys}, Ms AS LastMs, Now, Opens, Ms AS OpenedMs, ClosedMs, StartsClosed,
        FirstClosedMs, Ms AS FirstOpenMs FROM lifecycles
    UNION ALL
    SELECT {keys}, Ms, Now, Opens, OpenedMs, ClosedMs, StartsClosed, FirstClosedMs,
        FirstOpenMs FROM sequenced
),
-- Only a vulnerability's closing says it was open before: a configuration first seen
-- compliant never failed in the window.
kept AS (
    SELECT *, CASE WHEN Kind = 'Vulnerability' THEN StartsClosed ELSE 0 END AS Starts
    FROM timed WHERE FirstOpenMs IS NOT NULL OR (StartsClosed > 0 AND Kind = 'Vulnerability')
),
devices AS (
    SELECT a.DefenderTenantId, a.DeviceId, a.LastReport,
        b.HealthStatus IS NOT NULL AND b.HealthStatus <> '' AND b.HealthStatus <> 'Inactive'
            AS Reporting
    FROM (
        SELECT DefenderTenantId, DeviceId, max(LastSeen) AS LastReport FROM "EPF_Devices_CL"
        WHERE SnapshotTime <= {until_tz} AND coalesce(HistoryKind, '') <> 'Removed'
        GROUP BY ALL
    ) a LEFT JOIN devices_at_end b ON {same_device}
),
closed AS (
    SELECT a.*, CASE WHEN Now = 0 THEN make_timestamp(LastMs * 1000) END AS FixedAt,
        b.LastReport, b.Reporting
    FROM kept a LEFT JOIN devices b ON {same_device}
)
SELECT DefenderTenantId, DeviceId, Kind, Item,
    CASE WHEN FirstOpenMs IS NULL THEN {since_at} ELSE make_timestamp(FirstOpenMs * 1000) END
        AS FirstSeen,
    FixedAt,
    CASE WHEN Opens > 0 THEN Opens - 1 + Starts ELSE 0 END AS ReopenCount,
    round(CAST(ClosedMs - OpenedMs + Starts * (FirstClosedMs - {_ms(since)})
        + CASE WHEN Now = 1 THEN {_ms(until)} ELSE 0 END AS DOUBLE) / CAST(86400000.0 AS DOUBLE),
        2) AS DaysOpen,
    CASE WHEN coalesce(NOT Reporting AND (Now = 1 OR LastReport IS NULL
            OR FixedAt >= LastReport - INTERVAL '1 day'), false) THEN 'DeviceGone'
        WHEN Now = 1 THEN 'Open' ELSE 'Fixed' END AS Status
FROM closed"""


def _same(*keys: str) -> str:
    """``a`` and ``b`` agree on ``keys``, nulls equal: as the translation joins (Kusto's)."""
    return " AND ".join(f"a.{k} IS NOT DISTINCT FROM b.{k}" for k in keys)


def _naive(at: datetime) -> str:
    return f"TIMESTAMP '{at.astimezone(UTC).replace(tzinfo=None).isoformat(sep=' ')}'"


def _ms(at: datetime) -> int:
    return int((at - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds() * 1000)

"""The table registry: every table the product writes, its columns, KQL types, key and source.

This is the one place a column is added. DuckDB DDL, Sentinel table and DCR definitions,
docs and the schemas used to validate shipped KQL are all generated from it.
Imports nothing of ours outside this package (the emulator may import it too).
"""

from __future__ import annotations

from collections.abc import Iterable

from endpoint_forensics.tables.catalogues import (
    CATALOGUE_TABLES,
    CVE_CATALOG,
    RECOMMENDATIONS,
)
from endpoint_forensics.tables.compat import (
    COMPAT_TABLES,
    LEGACY_IOT_CVES,
    LEGACY_IOT_DEVICES,
    LEGACY_IOT_EVENTS,
    LEGACY_MAC_HEALTH,
    LEGACY_WINDOWS_HEALTH,
)
from endpoint_forensics.tables.feeds import FEED_TABLES
from endpoint_forensics.tables.iot import (
    IOT_ALERTS,
    IOT_CONNECTIONS,
    IOT_CVES,
    IOT_DEVICES,
    IOT_EVENTS,
    IOT_EXPOSURE,
    IOT_SENSORS,
    IOT_TABLES,
)
from endpoint_forensics.tables.mde import (
    AGENT_HEALTH,
    AGENT_HEALTH_TESTS,
    DEVICES,
    MDE_TABLES,
    RUNS,
)
from endpoint_forensics.tables.posture import (
    AV_HEALTH,
    POSTURE_TABLES,
    SECURE_CONFIG,
    SOFTWARE_INVENTORY,
    VULNERABILITIES,
    VULNERABILITY_CHANGES,
)
from endpoint_forensics.tables.schema import (
    COMMON_COLUMNS,
    HISTORY_KIND,
    RESERVED_COLUMN_NAMES,
    Column,
    HealthResult,
    KqlType,
    Table,
    name_problem,
)
from endpoint_forensics.tables.triage import TRIAGE, TRIAGE_TABLES

__all__ = [
    "AGENT_HEALTH",
    "AGENT_HEALTH_TESTS",
    "AV_HEALTH",
    "COMMON_COLUMNS",
    "COMPAT_TABLES",
    "CVE_CATALOG",
    "DEVICES",
    "HISTORY_KIND",
    "IOT_ALERTS",
    "IOT_CONNECTIONS",
    "IOT_CVES",
    "IOT_DEVICES",
    "IOT_EVENTS",
    "IOT_EXPOSURE",
    "IOT_SENSORS",
    "LEGACY_IOT_CVES",
    "LEGACY_IOT_DEVICES",
    "LEGACY_IOT_EVENTS",
    "LEGACY_MAC_HEALTH",
    "LEGACY_WINDOWS_HEALTH",
    "RECOMMENDATIONS",
    "RESERVED_COLUMN_NAMES",
    "RUNS",
    "SECURE_CONFIG",
    "SOFTWARE_INVENTORY",
    "TABLES",
    "TRIAGE",
    "VULNERABILITIES",
    "VULNERABILITY_CHANGES",
    "Column",
    "HealthResult",
    "KqlType",
    "Table",
    "get_table",
    "kql_database_schema",
    "name_problem",
]

# Each module lists its own tables, so a new table is added in one file.
TABLES: dict[str, Table] = {
    t.name: t
    for t in (
        *MDE_TABLES,
        *POSTURE_TABLES,
        *CATALOGUE_TABLES,
        *IOT_TABLES,
        *FEED_TABLES,
        *TRIAGE_TABLES,
        RUNS,
        # The legacy tables of the compat profile (profile="compat"), after ours.
        *COMPAT_TABLES,
    )
}


def get_table(name: str) -> Table:
    """Return the registered table ``name``; raise KeyError if there is none."""
    try:
        return TABLES[name]
    except KeyError:
        raise KeyError(f"no table named {name!r}; known: {', '.join(TABLES)}") from None


def kql_database_schema(tables: Iterable[Table] | None = None) -> dict[str, dict[str, str]]:
    """``{table: {column: KQL type}}`` for ``tables`` (default: every registered table, the
    compat profile's included): the database a KQL parser binds queries against, in the type
    names `epf tables --format json` shows (Kusto.Language reads them as they are)."""
    return {t.name: t.kql_schema() for t in (TABLES.values() if tables is None else tables)}

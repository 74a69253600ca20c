"""What a table is: columns with KQL types, a key, a source; Log Analytics' naming rules.

Imports nothing of ours.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "COMMON_COLUMNS",
    "RESERVED_COLUMN_NAMES",
    "Column",
    "HealthResult",
    "KqlType",
    "Table",
    "name_problem",
]


class KqlType(StrEnum):
    """Log Analytics column types (the KQL spelling)."""

    STRING = "string"
    INT = "int"
    LONG = "long"
    REAL = "real"
    BOOL = "bool"
    DATETIME = "datetime"
    DYNAMIC = "dynamic"
    GUID = "guid"


class HealthResult(StrEnum):
    """The one vocabulary of every agent health test column."""

    PASS = "Pass"
    FAIL = "Fail"
    NOT_APPLICABLE = "NotApplicable"
    UNKNOWN = "Unknown"


# DuckDB types per KQL type. Datetimes are stored as TIMESTAMPTZ (always UTC) and dynamic
# values as JSON, which is what duckdb-kql expects for `ago()` and `parse_json()`.
_DUCKDB_TYPES = {
    KqlType.STRING: "VARCHAR",
    KqlType.INT: "INTEGER",
    KqlType.LONG: "BIGINT",
    KqlType.REAL: "DOUBLE",
    KqlType.BOOL: "BOOLEAN",
    KqlType.DATETIME: "TIMESTAMPTZ",
    KqlType.DYNAMIC: "JSON",
    KqlType.GUID: "VARCHAR",
}

# Log Analytics refuses these as custom column names (create-custom-table.md).
RESERVED_COLUMN_NAMES = frozenset(
    {
        "id",
        "billedsize",
        "isbillable",
        "invalidtimegenerated",
        "tenantid",
        "title",
        "type",
        "uniqueid",
        "_itemid",
        "_resourcegroup",
        "_resourceid",
        "_subscriptionid",
        "_timereceived",
    }
)
_NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_]{1,44}$")


@dataclass(frozen=True)
class Column:
    name: str
    type: KqlType
    description: str

    @property
    def duckdb_type(self) -> str:
        return _DUCKDB_TYPES[self.type]


@dataclass(frozen=True)
class Table:
    name: str
    description: str
    source: str
    key: tuple[str, ...]
    columns: tuple[Column, ...]
    # "core" for the EPF_* tables; "compat" for the original connector's legacy tables, which
    # are written only when the compat output profile is on.
    profile: str = "core"

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"{self.name} has no column {name!r}")

    def duckdb_ddl(self) -> str:
        cols = ",\n    ".join(f'"{c.name}" {c.duckdb_type}' for c in self.columns)
        return f'CREATE TABLE IF NOT EXISTS "{self.name}" (\n    {cols}\n);'

    def kql_schema(self) -> dict[str, str]:
        return {c.name: c.type.value for c in self.columns}

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "description": self.description,
            "source": self.source,
            "profile": self.profile,
            "key": list(self.key),
            "columns": [
                {"name": c.name, "type": c.type.value, "description": c.description}
                for c in self.columns
            ],
        }


def name_problem(name: str, *, table: bool = False) -> str | None:
    """Say why ``name`` is not a valid Log Analytics table or column name, or None if it is."""
    if not _NAME_PATTERN.match(name):
        return "must be 2-45 characters: a letter, then letters, digits or underscores"
    if not table and name.lower() in RESERVED_COLUMN_NAMES:
        return "is a reserved column name in Log Analytics"
    if table and not name.endswith("_CL"):
        return "custom tables must end in _CL"
    return None


# Every table starts with these: when the snapshot was taken (twice: Azure Monitor replaces a
# TimeGenerated more than 2 days older than its receive time, or more than a day ahead of it,
# with the receive time, so a delivery delayed in the outbox would lose it; SnapshotTime is
# kept as sent), which run wrote it, which Defender tenant it came from (`TenantId` is reserved
# in Log Analytics), and which delivery batch carried it.
COMMON_COLUMNS = (
    Column(
        "TimeGenerated",
        KqlType.DATETIME,
        "When the snapshot was taken (UTC), as SnapshotTime; in Sentinel, the receive time "
        "instead when the row arrived more than 2 days late. Query SnapshotTime for posture time.",
    ),
    Column(
        "SnapshotTime",
        KqlType.DATETIME,
        "When the snapshot was taken (UTC); one value per run, kept however late the row "
        "was delivered. The time to ask 'when' with.",
    ),
    Column("RunId", KqlType.STRING, "The collection run that wrote the row."),
    Column(
        "DefenderTenantId",
        KqlType.STRING,
        "Entra tenant id of the Defender tenant the row came from.",
    ),
    Column(
        "BatchId",
        KqlType.STRING,
        "The delivery batch that carried the row (a unit of the local store, one upload to "
        "Sentinel). A batch re-sent after a lost acknowledgement keeps its id, so duplicates "
        "can be removed by BatchId.",
    ),
)

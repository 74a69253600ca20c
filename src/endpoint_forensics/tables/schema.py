"""What a table is (columns with KQL types, a key, a source; Log Analytics' naming rules) and
what a dataset is (the source function that fills a table, with what it needs and costs).

Imports nothing of ours.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

__all__ = [
    "COMMON_COLUMNS",
    "HISTORY_KIND",
    "RESERVED_COLUMN_NAMES",
    "SOURCE_KINDS",
    "ChangeTracking",
    "Column",
    "DatasetSpec",
    "HealthResult",
    "KqlType",
    "Permission",
    "RateLimit",
    "SourceKind",
    "Table",
    "files_export_limit",
    "json_export_limit",
    "name_problem",
    "tracked",
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
    duckdb_default: str | None = None  # a SQL literal, for rows written without the column

    @property
    def duckdb_type(self) -> str:
        return _DUCKDB_TYPES[self.type]

    @property
    def duckdb_definition(self) -> str:
        default = f" DEFAULT {self.duckdb_default}" if self.duckdb_default is not None else ""
        return f'"{self.name}" {self.duckdb_type}{default}'


@dataclass(frozen=True)
class ChangeTracking:
    """How a snapshot table keeps change-only history (docs/history.md): a row is written when
    the state of its key differs from the one the sink last took, a ``Removed`` row when a key
    disappears, and every row again at each baseline. ``ignores`` are the columns that move on
    every snapshot without the state changing (refresh times, an age computed at the snapshot):
    they are not compared, so a changed row carries their value as of its change."""

    ignores: tuple[str, ...] = ()


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
    # A snapshot table that may keep only its changes (``tracked``); None: every row, every run.
    changes: ChangeTracking | None = None

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"{self.name} has no column {name!r}")

    def duckdb_ddl(self) -> str:
        cols = ",\n    ".join(c.duckdb_definition for c in self.columns)
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


SourceKind = Literal["tenant", "sensor", "console", "feed"]
SOURCE_KINDS: tuple[SourceKind, ...] = ("tenant", "sensor", "console", "feed")


@dataclass(frozen=True)
class RateLimit:
    """At most ``per_minute`` calls in any 60 s and ``per_hour`` in any 3,600 s, per tenant
    (per appliance for Defender for IoT) and endpoint."""

    name: str
    per_minute: int
    per_hour: int


@dataclass(frozen=True)
class Permission:
    """An application permission (app role) a dataset needs. ``when`` narrows it to one way of
    collecting: ``files`` (the via-files exports), ``mde_hunting`` or ``graph_hunting`` (the
    tenant's ``hunting_api``)."""

    api: Literal["MDE", "Graph"]
    role: str
    when: Literal["always", "files", "mde_hunting", "graph_hunting"] = "always"


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset: where it comes from and what it costs. ``fetch`` names the function of
    ``endpoint_forensics.sources`` that yields its units, as ``module:function``."""

    name: str
    kind: SourceKind
    table: Table
    fetch: str
    origin: str  # what it reads, for the README and `epf tables`
    row_per: str  # what one row is
    permissions: tuple[Permission, ...] = ()
    limits: tuple[RateLimit, ...] = ()  # the documented budgets of the endpoints it calls
    interval_hours: float = 0.0  # hours between snapshots; 0: every run
    resumable: bool = False  # units carry resume tokens; else an unfinished snapshot restarts

    def as_dict(self) -> dict[str, object]:
        """The declaration as ``epf tables --format json`` shows it."""
        return {
            "name": self.name,
            "kind": self.kind,
            "table": self.table.name,
            "from": self.origin,
            "row_per": self.row_per,
            "permissions": [
                {"api": p.api, "role": p.role, "when": p.when} for p in self.permissions
            ],
            "rate_limits": [
                {"endpoint": r.name, "per_minute": r.per_minute, "per_hour": r.per_hour}
                for r in self.limits
            ],
            "interval_hours": self.interval_hours,
            "resumable": self.resumable,
        }


def json_export_limit(endpoint: str) -> RateLimit:
    """The documented limit of a JSON export or collection endpoint (B.6): 30/min, 1,000/h."""
    return RateLimit(endpoint, per_minute=30, per_hour=1_000)


def files_export_limit(endpoint: str) -> RateLimit:
    """The documented limit of a via-files export (B.6): 5/min, 20/h."""
    return RateLimit(endpoint, per_minute=5, per_hour=20)


#: What each row of a change-tracked table is: ``Snapshot`` (a full snapshot, every row),
#: ``Baseline`` (a full snapshot in change-only mode), ``Added`` or ``Changed`` (the new state of
#: a key), ``Removed`` (the key is gone; only the key columns are set).
HISTORY_KIND = Column(
    "HistoryKind",
    KqlType.STRING,
    "Snapshot, Baseline, Added, Changed or Removed: how this row came into the history "
    "(docs/history.md).",
    # Sentinel's value for a row written before the column existed, or without it: the empty
    # string, never NULL; the state functions count it as a full snapshot.
    duckdb_default="''",
)


def tracked(table: Table, *, ignores: tuple[str, ...] = ()) -> Table:
    """``table`` with change-only history: the ``HistoryKind`` column added, last."""
    from dataclasses import replace

    unknown = set(ignores) - set(table.column_names)
    if unknown:
        raise ValueError(f"{table.name}: cannot ignore unknown columns {sorted(unknown)}")
    return replace(
        table, columns=(*table.columns, HISTORY_KIND), changes=ChangeTracking(ignores=ignores)
    )

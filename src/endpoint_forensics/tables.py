"""The table registry: every table the product writes, its columns, KQL types, key and source.

This is the one place a column is added. DuckDB DDL, Sentinel table and DCR definitions,
docs and the schemas used to validate shipped KQL are all generated from it.
Imports nothing of ours (the emulator may import it too).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "AGENT_HEALTH_TESTS",
    "RESERVED_COLUMN_NAMES",
    "TABLES",
    "Column",
    "HealthResult",
    "KqlType",
    "Table",
    "get_table",
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


S, INT, L, R, B, T, D = (
    KqlType.STRING,
    KqlType.INT,
    KqlType.LONG,
    KqlType.REAL,
    KqlType.BOOL,
    KqlType.DATETIME,
    KqlType.DYNAMIC,
)

# Every table starts with these three: when the snapshot was taken, which run wrote it,
# and which Defender tenant it came from (`TenantId` is reserved in Log Analytics).
_COMMON = (
    Column("TimeGenerated", T, "When the snapshot was taken (UTC); one value per run."),
    Column("RunId", S, "The collection run that wrote the row."),
    Column("DefenderTenantId", S, "Entra tenant id of the Defender tenant the row came from."),
)

# The health tests, in the order of the original workbook (shared/reference/original-connector.md).
AGENT_HEALTH_TESTS: tuple[str, ...] = (
    "SensorEnabled",
    "SensorDataCollection",
    "ImpairedCommunications",
    "TamperProtection",
    "AntivirusEnabled",
    "AntivirusSignatureVersion",
    "RealtimeProtection",
    "BehaviorMonitoring",
    "PUAProtection",
    "AntivirusReporting",
    "CloudProtection",
)

DEVICES = Table(
    name="EPF_Devices_CL",
    description="Defender for Endpoint device inventory (GET /api/machines), one row per device per run.",
    source="mde:machines",
    key=("DefenderTenantId", "DeviceId"),
    columns=_COMMON
    + (
        Column("DeviceId", S, "Defender device id (machine id)."),
        Column("DeviceName", S, "Fully qualified computer name (computerDnsName)."),
        Column("FirstSeen", T, "First time the device was seen by Defender."),
        Column("LastSeen", T, "Time of the device's last full report (about daily)."),
        Column("OSPlatform", S, "Operating system platform, e.g. Windows11, macOS, Linux."),
        Column("OSVersion", S, "Operating system version (osVersion); often empty."),
        Column("OSVersionInfo", S, "Operating system release, e.g. 21H2 (the API's `version`)."),
        Column("OSProcessor", S, "Processor (deprecated by Defender in favour of OSArchitecture)."),
        Column("OSArchitecture", S, "32-bit or 64-bit."),
        Column("OSBuild", L, "Operating system build number."),
        Column("LastIpAddress", S, "Last IP address on the local network interface."),
        Column("LastExternalIpAddress", S, "Last IP address seen from the internet."),
        Column(
            "HealthStatus",
            S,
            "Sensor health: Active, Inactive, ImpairedCommunication, NoSensorData, ...",
        ),
        Column("OnboardingStatus", S, "Onboarded, CanBeOnboarded, Unsupported, InsufficientInfo."),
        Column("DeviceValue", S, "Normal, Low or High."),
        Column("RbacGroupId", L, "Device group id (0 when ungrouped)."),
        Column("RbacGroupName", S, "Device group name."),
        Column("RiskScore", S, "None, Informational, Low, Medium or High."),
        Column("ExposureLevel", S, "None, Low, Medium or High."),
        Column("IsAadJoined", B, "Whether the device is joined to Entra ID."),
        Column("AadDeviceId", S, "Entra device id, when joined."),
        Column("MachineTags", D, "Device tags (array of strings)."),
        Column(
            "IpAddresses", D, "Network interfaces: ipAddress, macAddress, type, operationalStatus."
        ),
        Column("AgentVersion", S, "Defender sensor version."),
        Column("DefenderAvStatus", S, "Defender Antivirus status as reported with the device."),
        Column("ManagedBy", S, "Management tool, e.g. Intune, ConfigMgr, MDE, Unknown."),
        Column("ManagedByStatus", S, "Status of the management enrolment."),
        Column("IsPotentialDuplication", B, "Defender flags the device as a likely duplicate."),
        Column("MergedIntoMachineId", S, "The device this one was merged into, if any."),
        Column("IsExcluded", B, "Whether the device is excluded from vulnerability management."),
        Column("ExclusionReason", S, "Why the device is excluded."),
        Column("VmMetadata", D, "Cloud VM facts: vmId, cloudProvider, resourceId, subscriptionId."),
        Column(
            "AdditionalFields", D, "Fields the API returned that this version does not know yet."
        ),
    ),
)

AGENT_HEALTH = Table(
    name="EPF_AgentHealth_CL",
    description=(
        "Defender agent health tests per device (secure configuration assessment SCIDs through "
        "advanced hunting), one row per device per run, for Windows, macOS and Linux."
    ),
    source="hunting:DeviceTvmSecureConfigurationAssessment",
    key=("DefenderTenantId", "DeviceId"),
    columns=_COMMON
    + (
        Column("DeviceId", S, "Defender device id."),
        Column("DeviceName", S, "Device name as reported with the assessment."),
        Column("OSPlatform", S, "Operating system platform."),
        Column("OSFamily", S, "Windows, macOS or Linux: which SCID set was applied."),
        Column("LastAssessed", T, "Newest assessment timestamp among the device's health SCIDs."),
    )
    + tuple(Column(test, S, "Pass, Fail, NotApplicable or Unknown.") for test in AGENT_HEALTH_TESTS)
    + (Column("FailingTests", INT, "How many of the tests are Fail."),),
)

RUNS = Table(
    name="EPF_Runs_CL",
    description="One row per dataset per collection run: rows, duration, outcome and error.",
    source="pipeline",
    key=("RunId", "DefenderTenantId", "Dataset"),
    columns=_COMMON
    + (
        Column("Dataset", S, "The dataset collected, e.g. machines, agent_health."),
        Column("TableName", S, "The table the dataset writes."),
        Column("Outcome", S, "Succeeded, Failed or Skipped."),
        Column("Rows", L, "Rows written."),
        Column("Quarantined", L, "Records set aside as malformed (see the quarantine folder)."),
        Column("Requests", L, "HTTP requests made for the dataset."),
        Column("Throttled", L, "Responses that were 429 and were waited out."),
        Column("StartTime", T, "When the dataset started."),
        Column("EndTime", T, "When the dataset ended."),
        Column("DurationSeconds", R, "Wall time of the dataset."),
        Column("Error", S, "What went wrong, one line, no secrets; empty on success."),
    ),
)

TABLES: dict[str, Table] = {t.name: t for t in (DEVICES, AGENT_HEALTH, RUNS)}


def get_table(name: str) -> Table:
    """Return the registered table ``name``; raise KeyError if there is none."""
    try:
        return TABLES[name]
    except KeyError:
        raise KeyError(f"no table named {name!r}; known: {', '.join(TABLES)}") from None

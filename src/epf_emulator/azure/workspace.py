"""The tables of one emulated Log Analytics workspace, and the Tables API's rules for them.

Owns the workspace's facts (subscription per seed, resource group, name, region, retention),
its tables and what a Tables - Create Or Update may change: the original 2021 connector's five
tables start classic (``tableSubType`` "Classic", created by the HTTP Data Collector API),
each field typed by its suffix (learn.microsoft.com/azure/azure-monitor/logs/data-collector-api:
``_s`` string, ``_b`` boolean, ``_d`` real, ``_t`` dateTime, ``_g`` a GUID "stored as a
string") beside the classic standard columns. A schema change on a classic table is refused
until ``migrate``; a column never changes type, not even one a later ``PUT`` dropped
(logs/custom-logs-migrate: "You can't reuse a column name with a data type that's different
to the original data type"); a new table is ``*_CL`` with ``TimeGenerated`` (dateTime) and no
reserved column; retention is -1 or 4-730 days, total retention -1 or 4-4383 and, where the
docs are silent and so stricter, not below the interactive retention (Tables API 2022-10-01,
TableProperties); a plan is one the api-version knows, a Basic or Auxiliary table keeps 30
interactive days and takes no ``retentionInDays`` (``azure.table_rules``), and a table's plan
switches at most once a week ("Configure a table plan"). ``azure.resource_manager`` serves it
over HTTP.

Imports nothing of the emulator: it shares no code with the collector.
"""

from __future__ import annotations

import secrets
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from epf_emulator.azure.errors import ArmRefusal
from epf_emulator.azure.table_rules import (
    COLUMN_NAME,
    FIXED_INTERACTIVE_DAYS,
    RETENTION,
    TOTAL_RETENTION,
    checked_plan,
    declared_columns,
    rendered_column,
    retention_value,
)

__all__ = [
    "CLASSIC_TABLES",
    "LOCATION",
    "RESOURCE_GROUP",
    "WORKSPACE_NAME",
    "WORKSPACE_RETENTION_DAYS",
    "ArmRefusal",
    "WorkspaceTables",
    "subscription_id",
    "workspace_resource_id",
    "workspace_resource_id_of",
]

RESOURCE_GROUP = "epf-sentinel"
WORKSPACE_NAME = "epf-workspace"
LOCATION = "westeurope"
WORKSPACE_RETENTION_DAYS = 30
_WINDOWS_TESTS = (
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
#: The original connector's tables and the fields it sent, as the Data Collector API named them
#: (shared/reference/original-connector.md, "Tables it wrote").
CLASSIC_TABLES: Mapping[str, tuple[str, ...]] = {
    "AgentHealthStatusWindows_CL": ("DeviceId_s", *(f"{t}_s" for t in _WINDOWS_TESTS)),
    "MDE_MAC_devicehealth_CL": ("Results_s",),
    "AD4IOT_Devices_CL": (
        "id_d",
        "name_s",
        "vendor_s",
        "type_s",
        "operatingSystem_s",
        "ipAddresses_s",
        "macAddresses_s",
        "protocols_s",
        "firmware_s",
        "authorized_b",
        "engineeringStation_b",
        "scanner_b",
        "hasDynamicAddress_b",
    ),
    "AD4IOT_CVE_CL": ("cveId_s", "score_s", "attackVector_s", "description_s", "ipAddress_s"),
    "AD4IOT_Events_CL": ("timestamp_d", "type_s", "title_s", "severity_s", "content_s", "owner_s"),
}
# The Data Collector API's suffixes: "GUID (stored as a string)".
_SUFFIX_TYPES = {"_s": "string", "_b": "boolean", "_d": "real", "_t": "dateTime", "_g": "string"}
# Every table the Data Collector API created has these (the Tables API's standardColumns).
_CLASSIC_STANDARD = (
    ("TenantId", "guid"),
    ("SourceSystem", "string"),
    ("MG", "guid"),
    ("ManagementGroupName", "string"),
    ("TimeGenerated", "dateTime"),
    ("Computer", "string"),
    ("RawData", "string"),
)
# Azure allows one plan switch per table per week ("Configure a table plan").
_PLAN_SWITCH_INTERVAL_S = 7 * 24 * 3600.0


def subscription_id(seed: int) -> str:
    """The emulated subscription that holds the workspace: stable per seed."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"epf-emulator/subscription/{seed}"))


def workspace_resource_id(seed: int) -> str:
    """The ARM id of the emulated Log Analytics workspace."""
    return workspace_resource_id_of(subscription_id(seed))


def workspace_resource_id_of(subscription: str) -> str:
    return (
        f"/subscriptions/{subscription}/resourceGroups/{RESOURCE_GROUP}/providers/"
        f"Microsoft.OperationalInsights/workspaces/{WORKSPACE_NAME}"
    )


@dataclass
class _Table:
    name: str
    sub_type: str  # "Classic" or "DataCollectionRuleBased"
    columns: list[dict[str, str]]
    standard: list[dict[str, str]]
    retention: int = -1  # -1: the workspace's
    total: int = -1  # -1: the interactive retention
    plan: str = "Analytics"
    plan_switched_at: float | None = None  # wall-clock seconds of the last plan switch
    description: str = ""
    # Every column the table ever had, by lower-cased name: a type never changes.
    types: dict[str, tuple[str, str]] = field(default_factory=dict)

    def remember(self, columns: Iterable[Mapping[str, str]]) -> None:
        for column in columns:
            self.types.setdefault(column["name"].lower(), (column["name"], column["type"]))


class WorkspaceTables:
    """The emulated workspace and its tables; thread-safe."""

    def __init__(self, *, seed: int) -> None:
        self.subscription = subscription_id(seed)
        self._lock = threading.Lock()
        self._tables: dict[str, _Table] = {}
        for name, fields in CLASSIC_TABLES.items():
            standard = [{"name": n, "type": t} for n, t in _CLASSIC_STANDARD]
            columns = [{"name": f, "type": _SUFFIX_TYPES[f[-2:]]} for f in fields]
            table = _Table(name, "Classic", columns, standard)
            table.remember(standard + columns)
            self._tables[name.lower()] = table

    def get(self, name: str) -> dict[str, Any]:
        """The table resource (Tables - Get).

        Raises:
            ArmRefusal: 404 for a table the workspace lacks.
        """
        with self._lock:
            return self._rendered(self._existing(name))

    def put(
        self, name: str, body: Mapping[str, Any], *, api_version: str = "2022-10-01"
    ) -> dict[str, Any]:
        """Create or change a table (Tables - Create Or Update); the table as it now is.

        Raises:
            ArmRefusal: 400 for what Azure refuses (see the module docstring).
        """
        with self._lock:
            return self._rendered(self._put(name, body, api_version))

    def plan_of(self, name: str) -> str | None:
        """The table's plan, or None for a table the workspace lacks."""
        with self._lock:
            table = self._tables.get(name.lower())
            return table.plan if table else None

    def migrate(self, name: str) -> None:
        """Tables - Migrate: a classic table becomes DataCollectionRuleBased; again, no effect.

        Raises:
            ArmRefusal: 404 for a table the workspace lacks.
        """
        with self._lock:
            self._existing(name).sub_type = "DataCollectionRuleBased"

    def _existing(self, name: str) -> _Table:
        table = self._tables.get(name.lower())
        if table is None:
            raise ArmRefusal(
                404,
                "ResourceNotFound",
                f"The specified table: '{name}' was not found. Please make sure proper table "
                f"name is used. Operation Id: '{secrets.token_hex(16)}'",
            )
        return table

    def _put(self, name: str, body: Mapping[str, Any], api_version: str) -> _Table:
        props = body.get("properties")
        if not isinstance(props, dict):
            raise ArmRefusal(
                400, "InvalidParameter", "The request body has no 'properties' object."
            )
        table = self._tables.get(name.lower())
        plan = checked_plan(props, table.plan if table else "Analytics", api_version)
        if table is not None and plan != table.plan:
            self._check_switch(table)
        retention = retention_value(
            props, "retentionInDays", RETENTION, "the workspace's retention"
        )
        total = retention_value(
            props, "totalRetentionInDays", TOTAL_RETENTION, "the table's retention"
        )
        interactive = retention if retention is not None else (table.retention if table else -1)
        interactive = WORKSPACE_RETENTION_DAYS if interactive == -1 else interactive
        interactive = interactive if plan == "Analytics" else FIXED_INTERACTIVE_DAYS
        if total is not None and total != -1 and total < interactive:
            raise ArmRefusal(
                400,
                "InvalidParameter",
                f"totalRetentionInDays ({total}) can't be less than the interactive retention "
                f"({interactive} days).",
            )
        columns = declared_columns(name, props.get("schema"))
        if table is None:
            table = self._create(name, columns)
        elif columns is not None:
            self._change_schema(table, columns)
        if columns is not None:
            schema = props["schema"]
            table.description = str(schema.get("description") or "")
        if plan != table.plan:
            table.plan_switched_at = time.time()
        table.plan = plan
        table.retention = table.retention if retention is None else retention
        table.total = table.total if total is None else total
        return table

    @staticmethod
    def _check_switch(table: _Table) -> None:
        # Wall-clock time, as Azure counts it: the emulated clock only moves the posture data.
        last = table.plan_switched_at
        if last is not None and time.time() - last < _PLAN_SWITCH_INTERVAL_S:
            raise ArmRefusal(
                400,
                "InvalidParameter",
                f"The plan of table {table.name} was changed less than a week ago; a table's "
                "plan can be switched once a week.",
            )

    def _create(self, name: str, columns: list[dict[str, str]] | None) -> _Table:
        if not name.endswith("_CL") or not COLUMN_NAME.match(name[:-3] or "-"):
            raise ArmRefusal(
                400,
                "InvalidParameter",
                f"Table name '{name}' is not valid: a custom table's name must end with '_CL'.",
            )
        if columns is None:
            raise ArmRefusal(
                400, "InvalidParameter", f"A schema with columns is required to create {name}."
            )
        if not any(c["name"] == "TimeGenerated" and c["type"] == "dateTime" for c in columns):
            raise ArmRefusal(
                400,
                "InvalidParameter",
                "Table validation failed with following errors: MSG 1005: Table missing "
                "mandatory 'TimeGenerated' column.",
            )
        table = _Table(
            name, "DataCollectionRuleBased", columns, [{"name": "TenantId", "type": "guid"}]
        )
        table.remember(table.standard + columns)
        self._tables[name.lower()] = table
        return table

    def _change_schema(self, table: _Table, columns: list[dict[str, str]]) -> None:
        if table.sub_type == "Classic":
            raise ArmRefusal(
                400,
                "InvalidParameter",
                f"Changing Classic table {table.name} schema by using DataCollectionRuleBased "
                "tables api is forbidden, please migrate the table first or use the appropriate "
                f"classic table api. Operation Id: '{secrets.token_hex(16)}'",
            )
        for column in columns:
            known = table.types.get(column["name"].lower())
            if known is not None and known[1] != column["type"]:
                raise ArmRefusal(
                    400,
                    "InvalidParameter",
                    f"Column '{known[0]}' of table {table.name} has type '{known[1]}'; a "
                    f"column's type can't change (to '{column['type']}').",
                )
        table.columns = columns
        table.remember(columns)

    def workspace(self) -> dict[str, Any]:
        """The workspace resource (Workspaces - Get)."""
        body = {
            "properties": {
                "customerId": str(uuid.uuid5(uuid.NAMESPACE_URL, self.subscription)),
                "provisioningState": "Succeeded",
                "sku": {"name": "PerGB2018"},
                "retentionInDays": WORKSPACE_RETENTION_DAYS,
                "publicNetworkAccessForIngestion": "Enabled",
                "publicNetworkAccessForQuery": "Enabled",
            },
            "id": workspace_resource_id_of(self.subscription),
            "name": WORKSPACE_NAME,
            "type": "Microsoft.OperationalInsights/workspaces",
            "location": LOCATION,
        }
        return body

    def _rendered(self, table: _Table) -> dict[str, Any]:
        retention = WORKSPACE_RETENTION_DAYS if table.retention == -1 else table.retention
        retention = retention if table.plan == "Analytics" else FIXED_INTERACTIVE_DAYS
        total = retention if table.total == -1 else table.total
        table_id = f"{workspace_resource_id_of(self.subscription)}/tables/{table.name}"
        body = {
            "properties": {
                "totalRetentionInDays": total,
                "archiveRetentionInDays": total - retention,
                "plan": table.plan,
                "retentionInDaysAsDefault": table.plan == "Analytics" and table.retention == -1,
                "totalRetentionInDaysAsDefault": table.total == -1,
                "schema": {
                    "name": table.name,
                    "tableSubType": table.sub_type,
                    "tableType": "CustomLog",
                    "description": table.description or None,
                    "columns": [rendered_column(c) for c in table.columns],
                    "standardColumns": [rendered_column(c) for c in table.standard],
                    "solutions": ["LogManagement"],
                },
                "provisioningState": "Succeeded",
                "retentionInDays": retention,
            },
            "id": table_id,
            "name": table.name,
            "type": "Microsoft.OperationalInsights/workspaces/tables",
        }
        return body

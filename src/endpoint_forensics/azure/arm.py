"""The ARM deployment template for Sentinel: custom tables, DCRs and the collector's role.

Owns the mapping from the table registry to Log Analytics tables, Logs Ingestion DCRs
(kind Direct) and the Monitoring Metrics Publisher role assignments, and the template's
parameters and outputs. Imports the table registry only.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from endpoint_forensics.tables import TABLES, KqlType, Table

__all__ = [
    "DCR_API_VERSION",
    "MAX_STREAMS_PER_DCR",
    "MONITORING_METRICS_PUBLISHER_ROLE_ID",
    "PROFILES",
    "TABLES_API_VERSION",
    "build_arm_template",
    "stream_name",
    "write_arm_template",
]

ArmObject = dict[str, Any]

SCHEMA_URL = "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#"
TABLES_API_VERSION = "2022-10-01"
DCR_API_VERSION = "2023-03-11"
ROLE_ASSIGNMENT_API_VERSION = "2022-04-01"
MONITORING_METRICS_PUBLISHER_ROLE_ID = "3913510d-42f4-4e42-8a64-420c390055eb"

# Azure Monitor service limits, "Data collection rules": at most 10 data flows and 10 data
# streams per DCR (azure-monitor-docs includes/azure-monitor-limits-data-collection-rules.md,
# ms.date 2025-05-21). The registry has more tables than that, so tables are split over DCRs.
MAX_STREAMS_PER_DCR = 10

# Profile order is DCR order: core tables never share a DCR with compat tables, so turning
# compat on adds DCRs without moving a core stream to another DCR (and another immutable id).
PROFILES = ("core", "compat")

_TABLE_COLUMN_TYPES = {
    KqlType.STRING: "string",
    KqlType.INT: "int",
    KqlType.LONG: "long",
    KqlType.REAL: "real",
    KqlType.BOOL: "boolean",
    KqlType.DATETIME: "dateTime",
    KqlType.DYNAMIC: "dynamic",
    KqlType.GUID: "guid",
}
# DCR stream declarations have no guid type; the table column still is one.
_STREAM_COLUMN_TYPES = {
    KqlType.STRING: "string",
    KqlType.INT: "int",
    KqlType.LONG: "long",
    KqlType.REAL: "real",
    KqlType.BOOL: "boolean",
    KqlType.DATETIME: "datetime",
    KqlType.DYNAMIC: "dynamic",
    KqlType.GUID: "string",
}
_WORKSPACE_DESTINATION = "epfWorkspace"


def stream_name(table: Table) -> str:
    """The DCR input stream (and output stream) of a custom table: ``Custom-<table name>``."""
    return f"Custom-{table.name}"


def _literal(text: str) -> str:
    """Escape registry text that ARM would otherwise evaluate as an expression."""
    return "[" + text if text.startswith("[") and text.endswith("]") else text


def _quote(text: str) -> str:
    """``text`` as an ARM string literal inside an expression."""
    return "'" + text.replace("'", "''") + "'"


def _profile(table: Table) -> str:
    # The profile attribute is being added to Table by another change; until then all are core.
    profile = getattr(table, "profile", "core")
    if profile not in PROFILES:
        raise ValueError(f"{table.name}: unknown profile {profile!r} (known: {PROFILES})")
    return str(profile)


def _selected_tables(tables: Iterable[Table], *, compat: bool) -> dict[str, list[Table]]:
    wanted = PROFILES if compat else ("core",)
    by_profile: dict[str, list[Table]] = {p: [] for p in wanted}
    for table in tables:
        profile = _profile(table)
        if profile in by_profile:
            if not any(c.name == "TimeGenerated" for c in table.columns):
                # Log Analytics refuses a custom table without it (defender-apis.md D.5).
                raise ValueError(f"{table.name} has no TimeGenerated column")
            by_profile[profile].append(table)
    return {p: ts for p, ts in by_profile.items() if ts}


def _table_resource_id(table: Table) -> str:
    return (
        "[resourceId('Microsoft.OperationalInsights/workspaces/tables', "
        f"parameters('workspaceName'), {_quote(table.name)})]"
    )


def _table_resource(table: Table) -> ArmObject:
    return {
        "type": "Microsoft.OperationalInsights/workspaces/tables",
        "apiVersion": TABLES_API_VERSION,
        "name": f"[concat(parameters('workspaceName'), {_quote('/' + table.name)})]",
        "properties": {
            "plan": "Analytics",
            "retentionInDays": "[parameters('retentionInDays')]",
            "totalRetentionInDays": "[parameters('totalRetentionInDays')]",
            "schema": {
                "name": table.name,
                "description": _literal(table.description),
                "columns": [
                    {
                        "name": c.name,
                        "type": _TABLE_COLUMN_TYPES[c.type],
                        "description": _literal(c.description),
                    }
                    for c in table.columns
                ],
            },
        },
    }


def _dcr_name(profile: str, index: int) -> str:
    """The DCR name as an expression body (no outer brackets)."""
    return f"format('{{0}}-{profile}-{index}', parameters('dataCollectionRuleName'))"


def _dcr_resource_id(name: str) -> str:
    return f"resourceId('Microsoft.Insights/dataCollectionRules', {name})"


def _dcr_resource(name: str, tables: Sequence[Table]) -> ArmObject:
    return {
        "type": "Microsoft.Insights/dataCollectionRules",
        "apiVersion": DCR_API_VERSION,
        "name": f"[{name}]",
        "location": "[parameters('location')]",
        "kind": "Direct",
        "dependsOn": [_table_resource_id(t) for t in tables],
        "properties": {
            "description": "Endpoint forensics collector: Logs Ingestion streams for "
            + ", ".join(t.name for t in tables),
            "streamDeclarations": {
                stream_name(t): {
                    "columns": [
                        {"name": c.name, "type": _STREAM_COLUMN_TYPES[c.type]} for c in t.columns
                    ]
                }
                for t in tables
            },
            "destinations": {
                "logAnalytics": [
                    {
                        "workspaceResourceId": "[variables('workspaceResourceId')]",
                        "name": _WORKSPACE_DESTINATION,
                    }
                ]
            },
            # Our table names already end in _CL, so the output stream equals the input one.
            "dataFlows": [
                {
                    "streams": [stream_name(t)],
                    "destinations": [_WORKSPACE_DESTINATION],
                    "transformKql": "source",
                    "outputStream": stream_name(t),
                }
                for t in tables
            ],
        },
    }


def _role_assignment_resource(name: str) -> ArmObject:
    dcr_id = _dcr_resource_id(name)
    return {
        "type": "Microsoft.Authorization/roleAssignments",
        "apiVersion": ROLE_ASSIGNMENT_API_VERSION,
        "name": (
            f"[guid({dcr_id}, parameters('collectorPrincipalId'), "
            "variables('monitoringMetricsPublisherRoleId'))]"
        ),
        "scope": f"[format('Microsoft.Insights/dataCollectionRules/{{0}}', {name})]",
        "dependsOn": [f"[{dcr_id}]"],
        "properties": {
            "roleDefinitionId": (
                "[subscriptionResourceId('Microsoft.Authorization/roleDefinitions', "
                "variables('monitoringMetricsPublisherRoleId'))]"
            ),
            "principalId": "[parameters('collectorPrincipalId')]",
            "principalType": "ServicePrincipal",
            "description": "Lets the endpoint forensics collector send rows to this DCR.",
        },
    }


def _parameters() -> ArmObject:
    def described(kind: str, text: str, **extra: Any) -> ArmObject:
        return {"type": kind, **extra, "metadata": {"description": text}}

    return {
        "workspaceName": described(
            "string", "Name of the existing Log Analytics workspace in this resource group."
        ),
        "location": described(
            "string",
            "Region of the data collection rules; it must be the workspace's region.",
            defaultValue="[resourceGroup().location]",
        ),
        "collectorPrincipalId": described(
            "string",
            "Object id of the collector's identity: the app registration's service principal "
            "or the managed identity. It gets Monitoring Metrics Publisher on each DCR.",
        ),
        "retentionInDays": described(
            "int",
            "Interactive (analytics) retention of the tables, in days (-1: the workspace's).",
            defaultValue=90,
        ),
        "totalRetentionInDays": described(
            "int", "Total retention of the tables, long-term included, in days.", defaultValue=365
        ),
        "dataCollectionRuleName": described(
            "string",
            f"Name prefix of the data collection rules: <prefix>-<profile>-<n>; a DCR holds at "
            f"most {MAX_STREAMS_PER_DCR} streams.",
            defaultValue="epf-dcr",
        ),
    }


def _outputs(dcrs: Sequence[tuple[str, Sequence[Table]]]) -> ArmObject:
    def reference(name: str) -> str:
        return f"reference({_dcr_resource_id(name)}, '{DCR_API_VERSION}')"

    routes = [
        {
            "name": f"[{name}]",
            "immutableId": f"[{reference(name)}.immutableId]",
            "endpoint": f"[{reference(name)}.endpoints.logsIngestion]",
            "streams": [stream_name(t) for t in tables],
        }
        for name, tables in dcrs
    ]
    outputs: ArmObject = {"dataCollectionRules": {"type": "array", "value": routes}}
    if len(dcrs) == 1:
        # With one DCR the collector's [sentinel] dcr_immutable_id and endpoint are enough;
        # with several, one pair would send most streams to a DCR that lacks them (404).
        outputs["dataCollectionRuleImmutableId"] = {
            "type": "string",
            "value": routes[0]["immutableId"],
        }
        outputs["logsIngestionEndpoint"] = {"type": "string", "value": routes[0]["endpoint"]}
    return outputs


def _check_extra(resource: ArmObject) -> None:
    missing = [k for k in ("type", "apiVersion", "name") if not resource.get(k)]
    if missing:
        raise ValueError(f"extra resource lacks {', '.join(missing)}: {resource!r}")


def build_arm_template(
    *,
    compat: bool = False,
    tables: Iterable[Table] | None = None,
    extra_resources: Sequence[ArmObject] = (),
) -> ArmObject:
    """The ARM template deploying the registry's tables, their DCRs and the collector's role.

    ``compat`` adds the legacy-compatible tables (profile "compat"). ``tables`` defaults to
    the registry. ``extra_resources`` (the workbook and hunting queries, later) are appended
    as given; each needs at least ``type``, ``apiVersion`` and ``name``.
    """
    for extra in extra_resources:
        _check_extra(extra)
    selected = _selected_tables(TABLES.values() if tables is None else tables, compat=compat)
    dcrs: list[tuple[str, Sequence[Table]]] = []
    for profile, profile_tables in selected.items():
        for start in range(0, len(profile_tables), MAX_STREAMS_PER_DCR):
            index = start // MAX_STREAMS_PER_DCR + 1
            chunk = profile_tables[start : start + MAX_STREAMS_PER_DCR]
            dcrs.append((_dcr_name(profile, index), chunk))

    resources: list[ArmObject] = [
        _table_resource(t) for profile_tables in selected.values() for t in profile_tables
    ]
    resources += [_dcr_resource(name, chunk) for name, chunk in dcrs]
    resources += [_role_assignment_resource(name) for name, _ in dcrs]
    resources += [dict(extra) for extra in extra_resources]
    return {
        "$schema": SCHEMA_URL,
        "contentVersion": "1.0.0.0",
        "parameters": _parameters(),
        "variables": {
            "workspaceResourceId": (
                "[resourceId('Microsoft.OperationalInsights/workspaces', "
                "parameters('workspaceName'))]"
            ),
            "monitoringMetricsPublisherRoleId": MONITORING_METRICS_PUBLISHER_ROLE_ID,
        },
        "resources": resources,
        "outputs": _outputs(dcrs),
    }


def write_arm_template(
    path: str | Path,
    *,
    compat: bool = False,
    extra_resources: Sequence[ArmObject] = (),
) -> None:
    """Write :func:`build_arm_template` to ``path`` as indented UTF-8 JSON."""
    template = build_arm_template(compat=compat, extra_resources=extra_resources)
    text = json.dumps(template, indent=2, ensure_ascii=False) + "\n"
    Path(path).write_text(text, encoding="utf-8")

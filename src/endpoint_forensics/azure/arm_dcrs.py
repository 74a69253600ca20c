"""The data collection rules of the ARM template, as a nested deployment in the workspace's region.

Owns the Logs Ingestion DCRs (kind Direct: one stream and one data flow per table, into the
workspace), the Monitoring Metrics Publisher role assignment of the collector on each, and the
nested deployment that holds them with its outputs (each DCR's immutable id, endpoint and
streams; on request the same routes in the shape of the config's ``[[sentinel.dcrs]]``). A DCR
must be in its workspace's region; ARM allows ``reference()`` only in a resource's
``properties`` and in ``outputs``, not in its ``location``
(learn.microsoft.com/azure/azure-resource-manager/templates/template-functions-resource,
"reference", Valid uses), so the nested deployment's ``location`` parameter is set, in the
deployment's properties, from the existing workspace's ``reference(..., 'Full').location``.
May import ``tables`` only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from endpoint_forensics.tables import KqlType, Table

__all__ = [
    "CONFIG_ROUTES_OUTPUT",
    "DCR_API_VERSION",
    "DEPLOYMENTS_API_VERSION",
    "MAX_STREAMS_PER_DCR",
    "MONITORING_METRICS_PUBLISHER_ROLE_ID",
    "ROLE_ASSIGNMENT_API_VERSION",
    "SCHEMA_URL",
    "WORKSPACE_API_VERSION",
    "dcr_deployment",
    "dcr_name",
    "stream_name",
]

ArmObject = dict[str, Any]

SCHEMA_URL = "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#"
DCR_API_VERSION = "2023-03-11"
ROLE_ASSIGNMENT_API_VERSION = "2022-04-01"
DEPLOYMENTS_API_VERSION = "2022-09-01"
WORKSPACE_API_VERSION = "2022-10-01"
MONITORING_METRICS_PUBLISHER_ROLE_ID = "3913510d-42f4-4e42-8a64-420c390055eb"

# Azure Monitor service limits, "Data collection rules": at most 10 data flows and 10 data
# streams per DCR (azure-monitor-docs includes/azure-monitor-limits-data-collection-rules.md,
# ms.date 2025-05-21). The registry has more tables than that, so tables are split over DCRs.
MAX_STREAMS_PER_DCR = 10

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


def dcr_name(profile: str, index: int) -> str:
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
                        "workspaceResourceId": "[parameters('workspaceResourceId')]",
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


#: The nested deployment's output of the routes as ``[[sentinel.dcrs]]`` entries (``config``'s
#: ``DcrRoute``: ``immutable_id``, ``endpoint``, ``tables``), when asked for.
CONFIG_ROUTES_OUTPUT = "sentinelDcrs"
_COLLECTOR_PRINCIPAL = "[parameters('collectorPrincipalId')]"


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


def _dcr_outputs(
    dcrs: Sequence[tuple[str, Sequence[Table]]], *, config_routes: bool = False
) -> ArmObject:
    """The nested deployment's outputs: each DCR's immutable id, endpoint and streams; with
    ``config_routes`` the same as ``[[sentinel.dcrs]]`` entries too."""

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
    if config_routes:
        # The config's own keys, so that string() of this array is an EPF_SENTINEL__DCRS value.
        outputs[CONFIG_ROUTES_OUTPUT] = {
            "type": "array",
            "value": [
                {
                    "immutable_id": r["immutableId"],
                    "endpoint": r["endpoint"],
                    "tables": r["streams"],
                }
                for r in routes
            ],
        }
    return outputs


def dcr_deployment(
    dcrs: Sequence[tuple[str, Sequence[Table]]],
    *,
    deployment_name: str,
    depends_on: Sequence[str],
    collector_principal_id: str = _COLLECTOR_PRINCIPAL,
    config_routes: bool = False,
) -> ArmObject:
    """The nested deployment ``deployment_name`` (an expression) of the DCRs and their role
    assignments, in the workspace's region; ``dcrs`` are (DCR name expression, its tables).

    ``collector_principal_id`` (an expression, evaluated in the outer template) is the identity
    granted Monitoring Metrics Publisher on each DCR: the ``collectorPrincipalId`` parameter by
    default. ``config_routes`` adds the :data:`CONFIG_ROUTES_OUTPUT` output.
    """

    def string_parameter(text: str) -> ArmObject:
        return {"type": "string", "metadata": {"description": text}}

    workspace_location = (
        f"reference(variables('workspaceResourceId'), '{WORKSPACE_API_VERSION}', 'Full').location"
    )
    return {
        "type": "Microsoft.Resources/deployments",
        "apiVersion": DEPLOYMENTS_API_VERSION,
        "name": deployment_name,
        # A DCR's output stream must be an existing table.
        "dependsOn": list(depends_on),
        "properties": {
            "mode": "Incremental",
            "expressionEvaluationOptions": {"scope": "inner"},
            "parameters": {
                "location": {
                    "value": (
                        f"[if(empty(parameters('location')), {workspace_location}, "
                        "parameters('location'))]"
                    )
                },
                "workspaceResourceId": {"value": "[variables('workspaceResourceId')]"},
                "dataCollectionRuleName": {"value": "[parameters('dataCollectionRuleName')]"},
                "collectorPrincipalId": {"value": collector_principal_id},
            },
            "template": {
                "$schema": SCHEMA_URL,
                "contentVersion": "1.0.0.0",
                "parameters": {
                    "location": string_parameter("Region of the DCRs: the workspace's."),
                    "workspaceResourceId": string_parameter("The Log Analytics workspace."),
                    "dataCollectionRuleName": string_parameter("Name prefix of the DCRs."),
                    "collectorPrincipalId": string_parameter("Object id of the collector."),
                },
                "variables": {
                    "monitoringMetricsPublisherRoleId": MONITORING_METRICS_PUBLISHER_ROLE_ID,
                },
                "resources": [_dcr_resource(dcr, chunk) for dcr, chunk in dcrs]
                + [_role_assignment_resource(dcr) for dcr, _ in dcrs],
                "outputs": _dcr_outputs(dcrs, config_routes=config_routes),
            },
        },
    }

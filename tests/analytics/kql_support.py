"""Microsoft's KQL parser for the tests: the product's helpers (``analytics.kql_check``), and
Sentinel's documented tables the shipped content joins."""

from __future__ import annotations

from endpoint_forensics.analytics.kql_check import (
    error_messages,
    kql_schema,
    load_kustology,
    parameters_declaration,
)

__all__ = [
    "SECURITY_ALERT",
    "error_messages",
    "kql_schema",
    "load_kustology",
    "parameters_declaration",
]


#: Sentinel's own table the hunting queries join, as Azure Monitor's table reference documents
# it (learn.microsoft.com/azure/azure-monitor/reference/tables/securityalert).
SECURITY_ALERT = {
    "TimeGenerated": "datetime", "AlertName": "string", "AlertSeverity": "string",
    "AlertType": "string", "AlertLink": "string", "CompromisedEntity": "string",
    "ConfidenceLevel": "string", "ConfidenceScore": "real", "Description": "string",
    "DisplayName": "string", "StartTime": "datetime", "EndTime": "datetime",
    "Entities": "string", "ExtendedLinks": "string", "ExtendedProperties": "string",
    "IsIncident": "bool", "ProcessingEndTime": "datetime", "ProductComponentName": "string",
    "ProductName": "string", "ProviderName": "string", "RemediationSteps": "string",
    "ResourceId": "string", "SourceComputerId": "string", "Status": "string",
    "SubTechniques": "string", "SystemAlertId": "string", "Tactics": "string",
    "Techniques": "string", "Type": "string", "VendorName": "string",
    "VendorOriginalId": "string", "WorkspaceResourceGroup": "string",
    "WorkspaceSubscriptionId": "string",
}  # fmt: skip

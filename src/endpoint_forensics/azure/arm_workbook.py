"""The template's workbook: ``analytics.workbook``'s document as a ``Microsoft.Insights/
workbooks`` resource (ARM template reference, api-version 2022-04-01): ``kind`` shared,
``category`` sentinel (Sentinel's Workbooks blade lists it), ``serializedData`` the document as
a JSON string, ``sourceId`` the workspace. Its name is a GUID derived from the workspace, so a
redeploy updates the same workbook. May import ``analytics.workbook``.
"""

from __future__ import annotations

import json
from typing import Any

from endpoint_forensics.analytics.workbook import workbook_document

__all__ = ["WORKBOOKS_API_VERSION", "WORKBOOK_DISPLAY_NAME", "workbook_resource"]

WORKBOOKS_API_VERSION = "2022-04-01"
WORKBOOK_DISPLAY_NAME = "Endpoint Forensics"


def workbook_resource(depends_on: list[str]) -> dict[str, Any]:
    """The workbook resource, after ``depends_on`` (the saved functions its panels call)."""
    return {
        "type": "Microsoft.Insights/workbooks",
        "apiVersion": WORKBOOKS_API_VERSION,
        "name": "[guid(parameters('workspaceName'), 'endpoint-forensics-workbook')]",
        "location": "[resourceGroup().location]",
        "kind": "shared",
        "dependsOn": depends_on,
        "properties": {
            "displayName": WORKBOOK_DISPLAY_NAME,
            "serializedData": json.dumps(workbook_document(), ensure_ascii=False),
            "version": "1.0",
            "sourceId": "[variables('workspaceResourceId')]",
            "category": "sentinel",
        },
    }

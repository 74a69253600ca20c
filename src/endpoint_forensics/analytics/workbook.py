"""The Sentinel workbook (docs/workbook.md), generated: ``workbook_document`` turns the
panels of ``analytics.workbook_panels`` into the workbook's JSON (``Notebook/1.0``), each
panel's query bound to the time range (the workbook applies it to ``TimeGenerated``, the
collection's time). ``panel_queries`` gives each query with the parameter tokens replaced,
as tests run them locally and bind them with Microsoft's parser. Every panel says what to do
when it is empty. Imports only ``analytics.workbook_panels``.
"""

from __future__ import annotations

import uuid

from endpoint_forensics.analytics.workbook_panels import ALL, PARAMETERS, SECTIONS, Panel

__all__ = ["ALL", "PARAMETERS", "SECTIONS", "Panel", "panel_queries", "workbook_document"]

_IDS = uuid.UUID("9d3c1f4e-0a6b-4c55-8f0e-2b7d6e1a5c33")


def panel_queries(values: dict[str, str] | None = None) -> dict[str, str]:
    """Each panel's query by panel name, the parameter tokens replaced by ``values`` (default
    ``*``: everything), as the workbook runs it."""
    chosen = {name: ALL for name, _, _ in PARAMETERS} | (values or {})
    found = {}
    for _, _, panels in SECTIONS:
        for panel in panels:
            text = panel.query
            for name, value in chosen.items():
                text = text.replace("{" + name + "}", value)
            found[panel.name] = text
    return found


def _id(name: str) -> str:
    return str(uuid.uuid5(_IDS, name))


_WORKSPACE = "microsoft.operationalinsights/workspaces"
_FOURTEEN_DAYS_MS = 14 * 86_400_000


def workbook_document() -> dict[str, object]:
    """The workbook as Azure Workbooks reads it (``Notebook/1.0``)."""
    items: list[dict[str, object]] = [
        {
            "type": 1,
            "content": {
                "json": "## Endpoint Forensics\n"
                "Posture history from Microsoft Defender: was each device healthy, protected,"
                " configured and patched, and what changed. Each panel answers as of the newest"
                " collection in the time range."
            },
            "name": "title",
        },
        {
            "type": 9,
            "content": {
                "version": "KqlParameterItem/1.0",
                "parameters": [
                    {
                        "id": _id("TimeRange"),
                        "version": "KqlParameterItem/1.0",
                        "name": "TimeRange",
                        "label": "Time range",
                        "type": 4,
                        "isRequired": True,
                        "value": {"durationMs": _FOURTEEN_DAYS_MS},
                        "typeSettings": {
                            "selectableValues": [
                                {"durationMs": d * 86_400_000} for d in (1, 3, 7, 14, 30, 90)
                            ],
                            "allowCustom": True,
                        },
                    },
                    *(
                        {
                            "id": _id(name),
                            "version": "KqlParameterItem/1.0",
                            "name": name,
                            "label": label,
                            "type": 2,
                            "isRequired": True,
                            "query": query,
                            "value": ALL,
                            "typeSettings": {"showDefault": False},
                            "timeContextFromParameter": "TimeRange",
                            "queryType": 0,
                            "resourceType": _WORKSPACE,
                        }
                        for name, label, query in PARAMETERS
                    ),
                ],
            },
            "name": "parameters",
        },
    ]
    for title, description, panels in SECTIONS:
        items.append({"type": 1, "content": {"json": f"### {title}\n{description}"}, "name": title})
        for panel in panels:
            items.append(
                {
                    "type": 3,
                    "content": {
                        "version": "KqlItem/1.0",
                        "query": panel.query,
                        "size": 0,
                        "title": panel.title,
                        "noDataMessage": panel.empty,
                        "timeContextFromParameter": "TimeRange",
                        "queryType": 0,
                        "resourceType": _WORKSPACE,
                        "visualization": panel.visualization,
                    },
                    "customWidth": str(panel.width),
                    "name": panel.name,
                }
            )
    return {
        "version": "Notebook/1.0",
        "items": items,
        "fallbackResourceIds": [],
        "fromTemplateId": "sentinel-EndpointForensics",
        "$schema": "https://github.com/Microsoft/Application-Insights-Workbooks/blob/master/schema/workbook.json",
    }

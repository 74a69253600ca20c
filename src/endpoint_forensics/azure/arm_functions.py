"""The template's saved KQL functions and hunting queries: each shipped function, and with
the content each hunting query, as a workspace saved search.

Owns the ``Microsoft.OperationalInsights/workspaces/savedSearches`` resources (ARM template
reference, api-version 2020-08-01: ``category``, ``displayName`` and ``query`` required;
``functionAlias`` and ``functionParameters`` make the query a function; ``version`` 2, the
current query language) and which tables each function reads, so that each resource depends on
its tables and on the functions it calls, and no function is deployed over a Basic or Auxiliary
table, directly or through a function it calls. May import
``analytics.functions``, ``analytics.hunting`` and ``tables``.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from endpoint_forensics.analytics.functions import KqlFunction
from endpoint_forensics.analytics.hunting import HuntingQuery

__all__ = [
    "FUNCTION_CATEGORY",
    "HUNTING_CATEGORY",
    "SAVED_SEARCHES_API_VERSION",
    "function_resources",
    "functions_called",
    "hunting_resources",
    "plan_conflict",
    "saved_search_id",
    "saved_search_resource",
    "table_resource_id",
    "tables_read",
]

ArmObject = dict[str, Any]

SAVED_SEARCHES_API_VERSION = "2020-08-01"
FUNCTION_CATEGORY = "Endpoint Forensics"
# The category Sentinel's Hunting blade lists saved searches of.
HUNTING_CATEGORY = "Hunting Queries"
# The current query language version (SavedSearchProperties.version: "The current version is
# 2 and is the default").
_QUERY_LANGUAGE_VERSION = 2
_CUSTOM_TABLE = re.compile(r"\b[A-Za-z][A-Za-z0-9_]*_CL\b")
_LINE_COMMENT = re.compile(r"//[^\n]*")
_CALL = re.compile(r"\b([A-Za-z_][A-Za-z0-9_]*)\s*\(")


def tables_read(
    function: KqlFunction, shipped: Mapping[str, KqlFunction] | None = None
) -> tuple[str, ...]:
    """The custom tables (``*_CL``) the function's body names, sorted; comments ignored. With
    ``shipped``, also those the functions it calls read, at any depth."""
    code = _LINE_COMMENT.sub("", function.body)
    found = set(_CUSTOM_TABLE.findall(code))
    if shipped:
        for name in functions_called(function, shipped):
            found.update(tables_read(shipped[name], shipped))
    return tuple(sorted(found))


def functions_called(function: KqlFunction, shipped: Mapping[str, KqlFunction]) -> tuple[str, ...]:
    """The names of the ``shipped`` functions ``function``'s body calls, sorted."""
    code = _LINE_COMMENT.sub("", function.body)
    return tuple(
        sorted(
            name for name in set(_CALL.findall(code)) if name in shipped and name != function.name
        )
    )


def _literal(text: str) -> str:
    """Escape text that ARM would otherwise evaluate as an expression."""
    return "[" + text if text.startswith("[") and text.endswith("]") else text


def saved_search_resource(function: KqlFunction, depends_on: list[str]) -> ArmObject:
    """The saved search that makes ``function`` callable by name in the workspace.

    Named after the function (``<workspace>/<function name>``), so redeploying a template
    updates the same saved search rather than adding another with the same alias.
    """
    properties: ArmObject = {
        "category": FUNCTION_CATEGORY,
        "displayName": function.name,
        "query": _literal(function.body),
        "functionAlias": function.name,
        "version": _QUERY_LANGUAGE_VERSION,
    }
    if function.parameters:
        properties["functionParameters"] = function.signature
    if function.description:
        properties["tags"] = [{"name": "description", "value": _literal(function.description)}]
    quoted = "'/" + function.name.replace("'", "''") + "'"
    return {
        "type": "Microsoft.OperationalInsights/workspaces/savedSearches",
        "apiVersion": SAVED_SEARCHES_API_VERSION,
        "name": f"[concat(parameters('workspaceName'), {quoted})]",
        "dependsOn": depends_on,
        "properties": properties,
    }


def table_resource_id(table: str) -> str:
    """The ARM expression of a workspace table's resource id."""
    quoted = "'" + table.replace("'", "''") + "'"
    return (
        "[resourceId('Microsoft.OperationalInsights/workspaces/tables', "
        f"parameters('workspaceName'), {quoted})]"
    )


def plan_conflict(saved: Iterable[KqlFunction], plans: Mapping[str, str]) -> str | None:
    """Say which function reads a Basic or Auxiliary table, or None when none does.

    The docs disagree: older pages say queries on Basic and Auxiliary tables are limited to
    one table and support no user-defined functions, newer ones allow full KQL across tables.
    The stricter reading holds here.
    """
    shipped = {f.name: f for f in saved}
    # A function that reads the table itself names it best; then one that reads it through
    # another function.
    for through in (None, shipped):
        for function in shipped.values():
            for table in tables_read(function, through):
                plan = plans.get(table, "Analytics")
                if plan != "Analytics":
                    return (
                        f"{table}: plan {plan} cannot serve the function {function.name}, which "
                        "reads it (functions over Basic or Auxiliary tables are not supported); "
                        "keep it Analytics"
                    )
    return None


def function_resources(saved: Iterable[KqlFunction], tables: Collection[str]) -> list[ArmObject]:
    """A saved search per function, each depending on the template's tables it reads and on
    the saved searches of the functions it calls.

    Raises:
        ValueError: a function reads a table the template does not deploy.
    """
    shipped = {f.name: f for f in saved}
    resources = []
    for function in shipped.values():
        read = tables_read(function)
        missing = [t for t in read if t not in tables]
        if missing:
            raise ValueError(
                f"the function {function.name} reads {', '.join(missing)}, not in the template"
            )
        depends_on = [table_resource_id(t) for t in read]
        depends_on += [saved_search_id(f) for f in functions_called(function, shipped)]
        resources.append(saved_search_resource(function, depends_on))
    return resources


def saved_search_id(name: str) -> str:
    """The ARM expression of the saved search that holds the function ``name``."""
    quoted = "'" + name.replace("'", "''") + "'"
    return (
        "[resourceId('Microsoft.OperationalInsights/workspaces/savedSearches', "
        f"parameters('workspaceName'), {quoted})]"
    )


def hunting_resources(
    queries: Iterable[HuntingQuery], shipped: Mapping[str, KqlFunction], tables: Collection[str]
) -> list[ArmObject]:
    """A saved search per hunting query in the Hunting blade's category, named by the query's
    id (a redeploy updates it), its description, tactics and techniques as the tags Sentinel
    reads; each depends on the template's tables it reads and the functions it calls.

    Raises:
        ValueError: a query reads a custom table the template does not deploy.
    """
    resources = []
    for query in queries:
        code = _LINE_COMMENT.sub("", query.query)
        read = sorted(set(_CUSTOM_TABLE.findall(code)))
        missing = [t for t in read if t not in tables]
        if missing:
            raise ValueError(
                f"the hunting query {query.file} reads {', '.join(missing)}, not in the template"
            )
        called = sorted(n for n in set(_CALL.findall(code)) if n in shipped)
        quoted = "'/" + query.id + "'"
        resources.append(
            {
                "type": "Microsoft.OperationalInsights/workspaces/savedSearches",
                "apiVersion": SAVED_SEARCHES_API_VERSION,
                "name": f"[concat(parameters('workspaceName'), {quoted})]",
                "dependsOn": [table_resource_id(t) for t in read]
                + [saved_search_id(n) for n in called],
                "properties": {
                    "category": HUNTING_CATEGORY,
                    "displayName": query.name,
                    "query": _literal(query.query),
                    "version": _QUERY_LANGUAGE_VERSION,
                    "tags": [
                        {"name": "description", "value": _literal(query.description)},
                        {"name": "tactics", "value": ",".join(query.tactics)},
                        {"name": "techniques", "value": ",".join(query.techniques)},
                    ],
                },
            }
        )
    return resources

"""The ARM deployment template for Sentinel: custom tables, DCRs and the collector's role.

Owns the mapping from the table registry to Log Analytics tables (each with its plan:
Analytics, Basic or Auxiliary), the template's parameters (with the retention limits Azure
enforces) and outputs; the DCRs and role assignments are ``azure.arm_dcrs``'s, the saved KQL
functions ``azure.arm_functions``'s, the function app ``azure.arm_function_app``'s (and
``azure.arm_function_app_options``'s), the legacy column types ``azure.classic``'s. May import
``tables``, ``analytics.functions``, ``analytics.hunting``, ``azure.arm_dcrs``,
``azure.arm_functions``, ``azure.arm_function_app``, ``azure.arm_function_app_options``,
``azure.arm_workbook`` and ``azure.classic``.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from endpoint_forensics.analytics.functions import KqlFunction, functions
from endpoint_forensics.analytics.hunting import hunting_queries
from endpoint_forensics.azure.arm_dcrs import (
    DCR_API_VERSION,
    DEPLOYMENTS_API_VERSION,
    MAX_STREAMS_PER_DCR,
    MONITORING_METRICS_PUBLISHER_ROLE_ID,
    SCHEMA_URL,
    dcr_deployment,
    dcr_name,
    stream_name,
)
from endpoint_forensics.azure.arm_function_app import (
    function_app_outputs,
    function_app_principal_id,
    function_app_resources,
    function_app_site_id,
    function_app_variables,
)
from endpoint_forensics.azure.arm_function_app_options import (
    FunctionApp,
    function_app_parameters,
    function_app_problem,
)
from endpoint_forensics.azure.arm_functions import (
    function_resources,
    hunting_resources,
    plan_conflict,
    saved_search_id,
    table_resource_id,
)
from endpoint_forensics.azure.arm_workbook import workbook_resource
from endpoint_forensics.azure.classic import legacy_type_problems
from endpoint_forensics.tables import TABLES, KqlType, Table

__all__ = [
    "AUXILIARY_TABLES_API_VERSION",
    "DCR_API_VERSION",
    "MAX_STREAMS_PER_DCR",
    "MONITORING_METRICS_PUBLISHER_ROLE_ID",
    "PROFILES",
    "RETENTION_DAYS",
    "TABLES_API_VERSION",
    "TABLE_COLUMN_TYPES",
    "TABLE_PLANS",
    "TOTAL_RETENTION_DAYS",
    "FunctionApp",
    "build_arm_template",
    "plan_problem",
    "retention_problem",
    "stream_name",
    "write_arm_template",
]

ArmObject = dict[str, Any]

TABLES_API_VERSION = "2022-10-01"
# TablePlanEnum is Basic | Analytics in 2022-10-01; Auxiliary is a known value in 2025-07-01
# (Tables - Create Or Update). A template with an Auxiliary table uses it for every table.
AUXILIARY_TABLES_API_VERSION = "2025-07-01"
TABLE_PLANS = ("Analytics", "Basic", "Auxiliary")
# Basic and Auxiliary tables keep 30 days of interactive retention; their retentionInDays is
# read-only, so the template leaves it out and their total retention starts from 30 days.
_FIXED_INTERACTIVE_DAYS = 30

# Table retention (Tables API 2022-10-01, TableProperties): interactive 4-730 days, total
# 4-4383 days, and -1 for the default (the workspace's retention; the table's retention).
RETENTION_DAYS = (4, 730)
TOTAL_RETENTION_DAYS = (4, 4383)

# Profile order is DCR order: core tables never share a DCR with compat tables, so turning
# compat on adds DCRs without moving a core stream to another DCR (and another immutable id).
PROFILES = ("core", "compat")

TABLE_COLUMN_TYPES = {
    KqlType.STRING: "string",
    KqlType.INT: "int",
    KqlType.LONG: "long",
    KqlType.REAL: "real",
    KqlType.BOOL: "boolean",
    KqlType.DATETIME: "dateTime",
    KqlType.DYNAMIC: "dynamic",
    KqlType.GUID: "guid",
}
_DCR_DEPLOYMENT = "dcrDeploymentName"


def retention_problem(retention_days: int, total_retention_days: int) -> str | None:
    """Say why a table retention is one Azure refuses, or None when it is valid.

    ``retention_days``: -1 (the workspace's) or 4-730; ``total_retention_days``: -1 (the
    interactive retention) or 4-4383, and not less than ``retention_days``.
    """
    low, high = RETENTION_DAYS
    if retention_days != -1 and not low <= retention_days <= high:
        return (
            f"interactive retention must be -1 (the workspace's) or {low}-{high} days, "
            f"not {retention_days}"
        )
    low, high = TOTAL_RETENTION_DAYS
    if total_retention_days != -1 and not low <= total_retention_days <= high:
        return (
            f"total retention must be -1 (the interactive retention) or {low}-{high} days, "
            f"not {total_retention_days}"
        )
    if total_retention_days != -1 and total_retention_days < retention_days:
        return (
            f"total retention ({total_retention_days} days) must not be less than the "
            f"interactive retention ({retention_days} days)"
        )
    return None


def plan_problem(
    plans: Mapping[str, str], *, compat: bool = False, total_retention_days: int = 365
) -> str | None:
    """Say why table plans are ones the template cannot deploy, or None when they can.

    ``plans`` maps a table of the template (the registry's, with ``compat`` its legacy tables
    too) to Analytics, Basic or Auxiliary. The shipped functions must read Analytics tables
    only, and a Basic or Auxiliary table's total retention must cover its 30 interactive days.
    """
    names = [t.name for ts in _selected_tables(TABLES.values(), compat=compat).values() for t in ts]
    return _plan_problem(plans, names, functions().values(), total_retention_days)


def _plan_problem(
    plans: Mapping[str, str],
    tables: Collection[str],
    saved: Iterable[KqlFunction],
    total_retention_days: int,
) -> str | None:
    for table, plan in plans.items():
        if table not in tables:
            return f"unknown table {table!r}: the template's tables are {', '.join(tables)}"
        if plan not in TABLE_PLANS:
            return f"{table}: unknown plan {plan!r} (one of {', '.join(TABLE_PLANS)})"
    conflict = plan_conflict(saved, plans)
    if conflict is not None:
        return conflict
    low = _FIXED_INTERACTIVE_DAYS
    if total_retention_days != -1 and total_retention_days < low:
        cheap = [t for t, plan in plans.items() if plan != "Analytics"]
        if cheap:
            return (
                f"{cheap[0]}: a {plans[cheap[0]]} table keeps {low} days interactively; its "
                f"total retention ({total_retention_days} days) must be -1 or at least {low}"
            )
    return None


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
    # The legacy tables exist, classic, in the workspaces compat is for: the template must
    # declare each legacy column with the type the Data Collector API gave it.
    problems = legacy_type_problems(by_profile.get("compat", ()))
    if problems:
        raise ValueError("; ".join(problems))
    return {p: ts for p, ts in by_profile.items() if ts}


def _table_resource_id(table: Table) -> str:
    return table_resource_id(table.name)


def _table_resource(table: Table, plan: str, api_version: str) -> ArmObject:
    retention: ArmObject = {"retentionInDays": "[parameters('retentionInDays')]"}
    return {
        "type": "Microsoft.OperationalInsights/workspaces/tables",
        "apiVersion": api_version,
        "name": f"[concat(parameters('workspaceName'), {_quote('/' + table.name)})]",
        "properties": {
            "plan": plan,
            # Read-only on a Basic or Auxiliary table: setting it there is refused.
            **(retention if plan == "Analytics" else {}),
            "totalRetentionInDays": "[parameters('totalRetentionInDays')]",
            "schema": {
                "name": table.name,
                "description": _literal(table.description),
                "columns": [
                    {
                        "name": c.name,
                        "type": TABLE_COLUMN_TYPES[c.type],
                        "description": _literal(c.description),
                    }
                    for c in table.columns
                ],
            },
        },
    }


def _parameters(retention_days: int, total_retention_days: int) -> ArmObject:
    def described(kind: str, text: str, **extra: Any) -> ArmObject:
        return {"type": kind, **extra, "metadata": {"description": text}}

    # ARM has minValue/maxValue and allowedValues, nothing for "-1 or 4-730": allowedValues
    # would list 728 (and 4,381) numbers. So the bounds take -1, and the 0-3 left between
    # are refused by the Tables API itself (its minimum is 4) before any table changes.
    low, high = RETENTION_DAYS
    total_low, total_high = TOTAL_RETENTION_DAYS
    return {
        "workspaceName": described(
            "string", "Name of the existing Log Analytics workspace in this resource group."
        ),
        "location": described(
            "string",
            "Region of the data collection rules. Empty (the default): the workspace's region, "
            "where Azure needs them.",
            defaultValue="",
        ),
        "collectorPrincipalId": described(
            "string",
            "Object id of the collector's identity: the app registration's service principal "
            "or the managed identity. It gets Monitoring Metrics Publisher on each DCR.",
        ),
        "retentionInDays": described(
            "int",
            f"Interactive (analytics) retention of the tables: {low}-{high} days, or -1 for "
            "the workspace's retention.",
            defaultValue=retention_days,
            minValue=-1,
            maxValue=high,
        ),
        "totalRetentionInDays": described(
            "int",
            f"Total retention of the tables, long-term included: {total_low}-{total_high} days "
            "and not less than the interactive retention, or -1 for the interactive retention "
            "(no long-term retention).",
            defaultValue=total_retention_days,
            minValue=-1,
            maxValue=total_high,
        ),
        "dataCollectionRuleName": described(
            "string",
            f"Name prefix of the data collection rules: <prefix>-<profile>-<n>; a DCR holds at "
            f"most {MAX_STREAMS_PER_DCR} streams.",
            defaultValue="epf-dcr",
        ),
    }


_DCR_DEPLOYMENT_ID = (
    f"resourceId('Microsoft.Resources/deployments', variables('{_DCR_DEPLOYMENT}'))"
)


def _outputs(inner: ArmObject) -> ArmObject:
    """The template's outputs: the nested deployment's, passed through."""
    deployment = f"reference({_DCR_DEPLOYMENT_ID}, '{DEPLOYMENTS_API_VERSION}')"
    return {
        key: {"type": output["type"], "value": f"[{deployment}.outputs.{key}.value]"}
        for key, output in inner.items()
    }


def _check_extra(resource: ArmObject) -> None:
    missing = [k for k in ("type", "apiVersion", "name") if not resource.get(k)]
    if missing:
        raise ValueError(f"extra resource lacks {', '.join(missing)}: {resource!r}")


def build_arm_template(
    *,
    compat: bool = False,
    tables: Iterable[Table] | None = None,
    plans: Mapping[str, str] | None = None,
    kql_functions: Iterable[KqlFunction] | None = None,
    hunting: bool = False,
    extra_resources: Sequence[ArmObject] = (),
    retention_days: int = 90,
    total_retention_days: int = 365,
    function_app: FunctionApp | None = None,
) -> ArmObject:
    """The ARM template deploying the registry's tables, their DCRs, the collector's role and
    the shipped KQL functions as saved functions.

    ``compat`` adds the legacy-compatible tables (profile "compat"). ``tables`` defaults to
    the registry. ``plans`` maps a table to Analytics, Basic or Auxiliary (default Analytics);
    with any Auxiliary table, every table resource uses :data:`AUXILIARY_TABLES_API_VERSION`.
    ``kql_functions`` defaults to the shipped functions with the registry's tables, and to
    none with ``tables`` given. ``hunting`` adds the shipped hunting queries as saved searches
    of the Hunting blade and the workbook (they read the registry's tables and call the
    shipped functions).
    ``extra_resources`` (the workbook, later) are appended as given; each needs at least
    ``type``, ``apiVersion`` and ``name``.
    ``retention_days`` and ``total_retention_days`` are the defaults of the retention
    parameters. ``function_app`` adds the collector's Flex Consumption function app, its
    storage and its roles (``azure.arm_function_app``); the app is then the collector, so its
    identity, not a ``collectorPrincipalId`` parameter, gets Monitoring Metrics Publisher on
    each DCR, and its app settings carry the DCR routes.

    Raises:
        ValueError: a retention Azure refuses (see :func:`retention_problem`), plans it
            refuses (see :func:`plan_problem`), a function reading a table not in the template,
            a compat column whose type is not its legacy suffix's, a table without
            ``TimeGenerated`` or of an unknown profile, an extra resource without type,
            apiVersion or name, or a function app name Azure refuses.
    """
    problem = retention_problem(retention_days, total_retention_days)
    if problem is not None:
        raise ValueError(problem)
    if function_app is not None:
        problem = function_app_problem(function_app)
        if problem is not None:
            raise ValueError(problem)
    for extra in extra_resources:
        _check_extra(extra)
    selected = _selected_tables(TABLES.values() if tables is None else tables, compat=compat)
    names = [t.name for profile_tables in selected.values() for t in profile_tables]
    plans = dict(plans or {})
    if kql_functions is None:
        kql_functions = functions().values() if tables is None else ()
    saved = list(kql_functions)
    problem = _plan_problem(plans, names, saved, total_retention_days)
    if problem is not None:
        raise ValueError(problem)
    dcrs: list[tuple[str, Sequence[Table]]] = []
    for profile, profile_tables in selected.items():
        for start in range(0, len(profile_tables), MAX_STREAMS_PER_DCR):
            index = start // MAX_STREAMS_PER_DCR + 1
            chunk = profile_tables[start : start + MAX_STREAMS_PER_DCR]
            dcrs.append((dcr_name(profile, index), chunk))

    version = AUXILIARY_TABLES_API_VERSION if "Auxiliary" in plans.values() else TABLES_API_VERSION
    resources: list[ArmObject] = [
        _table_resource(t, plans.get(t.name, "Analytics"), version)
        for profile_tables in selected.values()
        for t in profile_tables
    ]
    depends_on = [_table_resource_id(t) for _, chunk in dcrs for t in chunk]
    if function_app is None:
        deployment = dcr_deployment(
            dcrs, deployment_name=f"[variables('{_DCR_DEPLOYMENT}')]", depends_on=depends_on
        )
    else:
        # The app is the collector: its identity publishes to the DCRs, which it must exist
        # for, and its settings take the routes in the config's shape.
        deployment = dcr_deployment(
            dcrs,
            deployment_name=f"[variables('{_DCR_DEPLOYMENT}')]",
            depends_on=[*depends_on, function_app_site_id()],
            collector_principal_id=function_app_principal_id(),
            config_routes=True,
        )
    resources.append(deployment)
    resources += function_resources(saved, names)
    if hunting:
        queries = list(hunting_queries().values())
        for query in queries:
            basic = [t for t in query.tables if plans.get(t, "Analytics") != "Analytics"]
            if basic:
                raise ValueError(
                    f"{basic[0]}: plan {plans[basic[0]]} cannot serve the hunting query"
                    f" {query.file}, which reads it; keep it Analytics"
                )
        resources += hunting_resources(queries, functions(), names)
        # The workbook's panels call the shipped functions: it follows their saved searches.
        resources.append(workbook_resource([saved_search_id(f.name) for f in saved]))
    parameters = _parameters(retention_days, total_retention_days)
    variables: ArmObject = {
        "workspaceResourceId": (
            "[resourceId('Microsoft.OperationalInsights/workspaces', parameters('workspaceName'))]"
        ),
        _DCR_DEPLOYMENT: "[format('{0}-dcrs', parameters('dataCollectionRuleName'))]",
    }
    outputs = _outputs(deployment["properties"]["template"]["outputs"])
    if function_app is not None:
        del parameters["collectorPrincipalId"]
        parameters.update(function_app_parameters(function_app))
        variables.update(function_app_variables())
        resources += function_app_resources(function_app, dcr_deployment_id=_DCR_DEPLOYMENT_ID)
        outputs.update(function_app_outputs())
    resources += [dict(extra) for extra in extra_resources]
    return {
        "$schema": SCHEMA_URL,
        "contentVersion": "1.0.0.0",
        "parameters": parameters,
        "variables": variables,
        "resources": resources,
        "outputs": outputs,
    }


def write_arm_template(
    path: str | Path,
    *,
    compat: bool = False,
    plans: Mapping[str, str] | None = None,
    hunting: bool = False,
    extra_resources: Sequence[ArmObject] = (),
    retention_days: int = 90,
    total_retention_days: int = 365,
    function_app: FunctionApp | None = None,
) -> ArmObject:
    """Write :func:`build_arm_template` to ``path`` as indented UTF-8 JSON; return it."""
    template = build_arm_template(
        compat=compat,
        plans=plans,
        hunting=hunting,
        extra_resources=extra_resources,
        retention_days=retention_days,
        total_retention_days=total_retention_days,
        function_app=function_app,
    )
    text = json.dumps(template, indent=2, ensure_ascii=False) + "\n"
    Path(path).write_text(text, encoding="utf-8")
    return template

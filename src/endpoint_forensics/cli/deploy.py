"""``epf deploy``: the deployment artefacts for Microsoft Sentinel, generated from the table
registry, and with ``--function-app`` the collector's Azure Functions app. Thin, as ``cli``:
parse, call ``azure``, say what was written and what to run next. May import ``azure`` and
``errors``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from endpoint_forensics.errors import ConfigError

__all__ = ["deploy_app"]

deploy_app = typer.Typer(
    help="Deployment artefacts for Microsoft Sentinel, generated from the table registry.",
    no_args_is_help=True,
)


_SAVED_SEARCH = "Microsoft.OperationalInsights/workspaces/savedSearches"
# How the summary names a resource type; any other is named by its last segment.
_KINDS = {
    "Microsoft.Authorization/roleAssignments": "role assignments",
    "Microsoft.Insights/workbooks": "workbook",
    "Microsoft.Storage/storageAccounts": "storage account",
    "Microsoft.Storage/storageAccounts/blobServices/containers": "blob containers",
    "Microsoft.Storage/storageAccounts/queueServices/queues": "queues",
    "Microsoft.Web/serverfarms": "Flex Consumption plan",
    "Microsoft.Web/sites": "function app",
    "Microsoft.Web/sites/config": "app settings",
}


def _plans(given: list[str]) -> dict[str, str]:
    """``TABLE=PLAN`` options as a table -> plan map; the plans themselves are checked later."""
    plans: dict[str, str] = {}
    for item in given:
        table, sep, plan = item.partition("=")
        if not sep or not table.strip() or not plan.strip():
            raise ConfigError(f"--plan: expected TABLE=PLAN, not {item!r}")
        table, plan = table.strip(), plan.strip()
        if plans.get(table, plan) != plan:
            raise ConfigError(f"--plan: {table} given two plans, {plans[table]} and {plan}")
        plans[table] = plan
    return plans


@deploy_app.command("arm")
def deploy_arm(
    out: Annotated[Path, typer.Option("--out", "-o", help="Write the template here.")],
    compat: Annotated[
        bool,
        typer.Option(
            "--compat",
            help="Also the original connector's tables (output.compat), and beside the "
            "template the script that migrates them where they are still classic.",
        ),
    ] = False,
    retention_days: Annotated[
        int,
        typer.Option(
            "--retention-days",
            help="Default interactive retention of the tables: 4-730 days, -1 the workspace's.",
        ),
    ] = 90,
    total_retention_days: Annotated[
        int,
        typer.Option(
            "--total-retention-days",
            help="Default total retention: 4-4383 days, -1 the interactive retention.",
        ),
    ] = 365,
    plan: Annotated[
        list[str] | None,
        typer.Option(
            "--plan",
            metavar="TABLE=PLAN",
            help="A table's plan: Analytics (the default), Basic or Auxiliary. Repeatable. "
            "The tables the KQL functions read stay Analytics.",
        ),
    ] = None,
    content: Annotated[
        bool,
        typer.Option(
            "--content",
            help="Also the hunting queries (saved searches in Sentinel's Hunting blade) and"
            " the workbook.",
        ),
    ] = False,
    function_app: Annotated[
        str | None,
        typer.Option(
            "--function-app",
            metavar="NAME",
            help="Also the collector's Azure Functions app NAME (Flex Consumption, Linux, "
            "Python) with a managed identity, its storage account (work queue, state "
            "container), its roles, and app settings that route to the DCRs; the app is then "
            "the collector. See deploy/functions/README.md.",
        ),
    ] = None,
    app_insights: Annotated[
        str | None,
        typer.Option(
            "--app-insights",
            metavar="NAME",
            help="With --function-app: an existing Application Insights component in the "
            "resource group the app logs to, with its identity.",
        ),
    ] = None,
) -> None:
    """Write an ARM template: every custom table, the DCRs (10 streams each, in the
    workspace's region), the Monitoring Metrics Publisher role for the collector's
    identity and the KQL functions as saved functions; with --content, the hunting queries and
    the workbook; with --function-app, the collector's function app and what it needs."""
    from endpoint_forensics.azure import (
        plan_problem,
        retention_problem,
        write_arm_template,
        write_migration_script,
    )
    from endpoint_forensics.azure.arm_function_app_options import (
        FunctionApp,
        app_insights_name_problem,
        app_name_problem,
    )

    problem = retention_problem(retention_days, total_retention_days)
    if problem is not None:
        raise ConfigError(f"--retention-days/--total-retention-days: {problem}")
    plans = _plans(plan or [])
    problem = plan_problem(plans, compat=compat, total_retention_days=total_retention_days)
    if problem is not None:
        raise ConfigError(f"--plan: {problem}")
    app = None
    if function_app is not None:
        problem = app_name_problem(function_app)
        if problem is not None:
            raise ConfigError(f"--function-app: {problem}")
        if app_insights is not None:
            problem = app_insights_name_problem(app_insights)
            if problem is not None:
                raise ConfigError(f"--app-insights: {problem}")
        app = FunctionApp(function_app, app_insights=app_insights)
    elif app_insights is not None:
        raise ConfigError("--app-insights: only with --function-app, for the app's logs")
    template = write_arm_template(
        out,
        compat=compat,
        plans=plans,
        hunting=content,
        retention_days=retention_days,
        total_retention_days=total_retention_days,
        function_app=app,
    )
    kinds: dict[str, int] = {}
    for resource in template["resources"]:
        kind = _KINDS.get(resource["type"], resource["type"].rsplit("/", 1)[-1])
        if resource["type"] == _SAVED_SEARCH:
            saved_function = "functionAlias" in resource["properties"]
            kind = "saved functions" if saved_function else "hunting queries"
        kinds[kind] = kinds.get(kind, 0) + 1
    summary = ", ".join(f"{n} {kind}" for kind, n in kinds.items())
    typer.echo(f"Wrote {out}: {summary}", err=True)
    if compat:
        script = write_migration_script(out)
        typer.echo(
            f"Wrote {script}. In a workspace that still has the original connector's tables "
            f"(classic), run it first: sh {script} <subscription id> <resource group> "
            "<workspace>; Azure refuses the template's change to a classic table.",
            err=True,
        )
    if app is None:
        typer.echo(
            "Deploy it with: az deployment group create -g <resource group> --template-file "
            f"{out} -p workspaceName=<workspace> collectorPrincipalId=<object id>; then copy "
            "its dataCollectionRules output into [[sentinel.dcrs]] (immutable_id, endpoint, "
            "tables).",
            err=True,
        )
        return
    typer.echo(
        "Deploy it with: az deployment group create -g <resource group> --template-file "
        f"{out} -p workspaceName=<workspace>; the app's identity gets Monitoring Metrics "
        "Publisher on each DCR and its app settings carry the routes, so leave [sentinel] out "
        "of the app's epf.toml. Then publish the code: cd deploy/functions && func azure "
        f"functionapp publish {app.name} (deploy/functions/README.md).",
        err=True,
    )


@deploy_app.command("content")
def deploy_content(
    out: Annotated[Path, typer.Option("--out", "-o", help="Write the content under this folder.")],
) -> None:
    """Write the Sentinel content in the Azure-Sentinel repository's layout: the hunting
    queries, the KQL functions as parsers, and the custom tables' schemas its KQL validation
    needs."""
    from endpoint_forensics.azure.content import write_content

    written = write_content(out)
    summary = ", ".join(f"{n} in {folder}/" for folder, n in written.items())
    typer.echo(f"Wrote {out}: {summary}", err=True)

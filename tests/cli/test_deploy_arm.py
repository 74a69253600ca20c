"""`epf deploy arm` as a user runs it: retention limits refused in one line, and with --compat
the migration script for the original connector's classic tables beside the template."""

import orjson
import pytest

from endpoint_forensics.tables import TABLES

from .test_cli import epf

LEGACY = [n for n, t in TABLES.items() if t.profile == "compat"]


@pytest.mark.parametrize(
    "args, problem",
    [
        (("--retention-days", "2"), "interactive retention must be -1 (the workspace's) or 4-730"),
        (("--retention-days", "731"), "not 731"),
        (("--total-retention-days", "4384"), "total retention must be -1"),
        (("--retention-days", "90", "--total-retention-days", "30"), "must not be less than"),
    ],
)
def test_a_retention_azure_refuses_is_one_line_and_writes_nothing(tmp_path, args, problem):
    out = tmp_path / "epf.json"
    result = epf("deploy", "arm", "--out", str(out), *args)
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: --retention-days/--total-retention-days: ")
    assert problem in line
    assert "Traceback" not in result.stderr
    assert not out.exists()


def test_retention_given_is_the_templates_default(tmp_path):
    out = tmp_path / "epf.json"
    result = epf(
        "deploy",
        "arm",
        "--out",
        str(out),
        "--retention-days",
        "-1",
        "--total-retention-days",
        "4383",
    )
    assert result.returncode == 0, result.stderr
    params = orjson.loads(out.read_bytes())["parameters"]
    assert params["retentionInDays"]["defaultValue"] == -1
    assert params["totalRetentionInDays"]["defaultValue"] == 4383
    assert not (tmp_path / "epf-migrate-classic.sh").exists()  # no compat, no script


def test_compat_writes_the_migration_script_and_says_to_run_it_first(tmp_path):
    out = tmp_path / "epf-arm.json"
    result = epf("deploy", "arm", "--out", str(out), "--compat")
    assert result.returncode == 0, result.stderr
    script = tmp_path / "epf-arm-migrate-classic.sh"
    text = script.read_text()
    assert text.startswith("#!/bin/sh\n")
    for name in LEGACY:
        assert name in text
    assert "/tables/$table/migrate?$version" in text and "api-version=2022-10-01" in text
    assert f"run it first: sh {script} <subscription id> <resource group> <workspace>" in (
        " ".join(result.stderr.split())
    )
    template = orjson.loads(out.read_bytes())
    tables = {r["name"] for r in template["resources"] if r["type"].endswith("/workspaces/tables")}
    assert all(any(name in t for t in tables) for name in LEGACY)


def test_plans_are_written_and_the_saved_functions_counted(tmp_path):
    out = tmp_path / "epf.json"
    result = epf(
        "deploy",
        "arm",
        "--out",
        str(out),
        "--plan",
        "EPF_IotEvents_CL=Auxiliary",
        "--plan",
        "EPF_Runs_CL=Basic",
    )
    assert result.returncode == 0, result.stderr
    template = orjson.loads(out.read_bytes())
    tables = {
        r["name"].split("'/")[1].rstrip("')]"): r
        for r in template["resources"]
        if r["type"].endswith("/workspaces/tables")
    }
    assert tables["EPF_IotEvents_CL"]["properties"]["plan"] == "Auxiliary"
    assert tables["EPF_IotEvents_CL"]["apiVersion"] == "2025-07-01"
    assert "retentionInDays" not in tables["EPF_Runs_CL"]["properties"]
    saved = [r for r in template["resources"] if r["type"].endswith("/savedSearches")]
    assert saved
    assert f"{len(saved)} saved functions" in result.stderr


@pytest.mark.parametrize(
    "plan, problem",
    [
        ("EPF_Runs_CL", "expected TABLE=PLAN"),
        ("EPF_Nope_CL=Basic", "unknown table 'EPF_Nope_CL'"),
        ("EPF_Runs_CL=Hot", "unknown plan 'Hot'"),
        ("EPF_Devices_CL=Basic", "cannot serve the function EPF_DevicesAt"),
    ],
)
def test_a_plan_that_cannot_be_deployed_is_one_line_naming_the_option(tmp_path, plan, problem):
    out = tmp_path / "epf.json"
    result = epf("deploy", "arm", "--out", str(out), "--plan", plan)
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: --plan: ") and problem in line
    assert not out.exists()


def test_a_function_app_is_written_with_what_to_run_next(tmp_path):
    out = tmp_path / "epf.json"
    result = epf(
        "deploy",
        "arm",
        "--out",
        str(out),
        "--function-app",
        "epf-collector",
        "--app-insights",
        "epf-insights",
    )
    assert result.returncode == 0, result.stderr
    template = orjson.loads(out.read_bytes())
    [site] = [r for r in template["resources"] if r["type"] == "Microsoft.Web/sites"]
    assert site["kind"] == "functionapp,linux"
    params = template["parameters"]
    assert params["functionAppName"]["defaultValue"] == "epf-collector"
    assert params["applicationInsightsName"]["defaultValue"] == "epf-insights"
    assert "collectorPrincipalId" not in params  # the app is the collector
    said = " ".join(result.stderr.split())
    assert "1 function app, " in said and "1 Flex Consumption plan" in said
    assert "5 role assignments" in said
    assert "-p workspaceName=<workspace>;" in said and "collectorPrincipalId" not in said
    assert "func azure functionapp publish epf-collector" in said


@pytest.mark.parametrize(
    "args, line",
    [
        (("--function-app", "-bad-"), "error: --function-app: '-bad-' is not a function app name"),
        (("--function-app", "x"), "error: --function-app: 'x' is not a function app name"),
        (("--app-insights", "epf-insights"), "error: --app-insights: only with --function-app"),
        (
            ("--function-app", "epf-collector", "--app-insights", "a/b"),
            "error: --app-insights: 'a/b' is not an Application Insights name",
        ),
    ],
)
def test_a_function_app_azure_would_refuse_is_one_line_and_writes_nothing(tmp_path, args, line):
    out = tmp_path / "epf.json"
    result = epf("deploy", "arm", "--out", str(out), *args)
    assert result.returncode == 2
    [said] = result.stderr.strip().splitlines()
    assert said.startswith(line)
    assert not out.exists()

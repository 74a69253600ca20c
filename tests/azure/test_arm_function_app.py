"""`epf deploy arm --function-app`: the collector's Flex Consumption function app in the
template, checked as Resource Manager would deploy it.

The template's expressions are evaluated (``arm_eval``) with stand-ins for the deployed
resources: every ``dependsOn`` names a resource of the template, every ``reference()`` reads a
resource the reader waits for (or one that exists before the deployment), every role
assignment's scope is a resource it waits for, and the app settings, evaluated, are a config
the collector loads, routing each table to its own DCR. Without the option the template is
what it always was.
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest

from endpoint_forensics.azure import app_settings as names
from endpoint_forensics.azure import build_arm_template, expression_problems
from endpoint_forensics.azure.arm import FunctionApp
from endpoint_forensics.azure.arm_function_app import function_app_app_settings
from endpoint_forensics.azure.arm_function_app_options import (
    DEFAULT_MAXIMUM_INSTANCE_COUNT,
    function_app_problem,
)
from endpoint_forensics.config import Settings, load_settings
from endpoint_forensics.tables import TABLES

from .arm_eval import LOCATION, RESOURCE_GROUP_ID, ArmError, Scope, resource_id, resource_name_id

APP = FunctionApp("epf-collector")
APP_WITH_INSIGHTS = FunctionApp("epf-collector", app_insights="epf-insights")
PRINCIPAL = "0f0c2f6e-1b2c-4d5e-8f90-a1b2c3d4e5f6"
CONNECTION_STRING = "InstrumentationKey=stand-in;IngestionEndpoint=https://x.example/"

SITE = "Microsoft.Web/sites"
PLAN = "Microsoft.Web/serverfarms"
ACCOUNT = "Microsoft.Storage/storageAccounts"
CONTAINER = "Microsoft.Storage/storageAccounts/blobServices/containers"
QUEUE = "Microsoft.Storage/storageAccounts/queueServices/queues"
ROLE = "Microsoft.Authorization/roleAssignments"
CONFIG = "Microsoft.Web/sites/config"
DEPLOYMENT = "Microsoft.Resources/deployments"
DCR = "Microsoft.Insights/dataCollectionRules"
COMPONENT = "Microsoft.Insights/components"
WORKSPACE = "Microsoft.OperationalInsights/workspaces"

# Built-in role definition ids (learn.microsoft.com/azure/role-based-access-control/built-in-roles).
BLOB_OWNER = "b7e6dc6d-f1e8-4753-8033-0f276bb0955b"
BLOB_CONTRIBUTOR = "ba92f5b4-2d11-453d-a403-e96b0029c9fe"
QUEUE_CONTRIBUTOR = "974c5e8b-45b9-4653-ba55-5f855dd0fb88"
TABLE_CONTRIBUTOR = "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3"
METRICS_PUBLISHER = "3913510d-42f4-4e42-8a64-420c390055eb"

CORE = [t for t in TABLES.values() if t.profile == "core"]
WORKSPACE_NAME = "epf-workspace"
LOCAL_ONLY = [names.LOCAL_STORAGE_CONNECTION]
CONFIG_TOML = """
[store]
enabled = false

[[tenants]]
name = "contoso"
tenant_id = "11111111-2222-3333-4444-555555555555"
client_id = "66666666-7777-8888-9999-000000000000"
client_secret = "env:CONTOSO_SECRET"
"""


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return build_arm_template(function_app=APP)


@pytest.fixture(scope="module")
def with_insights() -> dict[str, Any]:
    return build_arm_template(function_app=APP_WITH_INSIGHTS)


def _of_type(template: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [r for r in template["resources"] if r["type"] == kind]


def _one(template: dict[str, Any], kind: str) -> dict[str, Any]:
    [resource] = _of_type(template, kind)
    return resource


# --- evaluating the template as deployed ------------------------------------------------------


def _dcr_answer(dcr_id: str) -> dict[str, Any]:
    name = dcr_id.rsplit("/", 1)[-1]
    return {
        "immutableId": "dcr-" + hashlib.md5(dcr_id.encode()).hexdigest(),
        "endpoints": {
            "logsIngestion": f"https://{name}-a1b2.{LOCATION}-1.ingest.monitor.azure.com"
        },
    }


class Deployed:
    """The template's outer scope, with ``reference()`` answered as after a deployment."""

    def __init__(self, template: dict[str, Any], **given: Any) -> None:
        self.template = template
        given = {"workspaceName": WORKSPACE_NAME, **given}
        self.scope = Scope(template, given, reference=self._reference)
        self.ids = {resource_name_id(self.scope, r): r for r in template["resources"]}

    def parameter(self, name: str) -> Any:
        return self.scope.evaluate(f"parameters('{name}')")

    def _reference(self, target: str, rest: tuple[Any, ...]) -> Any:
        full = "Full" in rest
        kind_name = target.removeprefix(f"{RESOURCE_GROUP_ID}/providers/")
        if kind_name.startswith(f"{ACCOUNT}/") and kind_name.count("/") == 2:
            account = kind_name.rsplit("/", 1)[-1]
            return {
                "primaryEndpoints": {
                    service: f"https://{account}.{service}.core.windows.net/"
                    for service in ("blob", "queue", "table")
                }
            }
        if kind_name.startswith(f"{SITE}/"):
            # The identity is in the full resource only ('Full'), not in its properties.
            return {"identity": {"principalId": PRINCIPAL}, "properties": {}} if full else {}
        if kind_name.startswith(f"{WORKSPACE}/") and full:
            return {"location": LOCATION}
        if kind_name.startswith(f"{COMPONENT}/"):
            return {"ConnectionString": CONNECTION_STRING}
        if kind_name.startswith(f"{DEPLOYMENT}/"):
            inner = self.inner()
            outputs = inner.template["outputs"]
            return {"outputs": {k: {"value": inner.value(v["value"])} for k, v in outputs.items()}}
        raise ArmError(f"reference() to {target}: nothing there")

    def inner(self) -> Scope:
        """The nested DCR deployment's scope: its parameters as the outer template sets them."""
        deployment = _one(self.template, DEPLOYMENT)
        given = {
            k: self.scope.value(v["value"])
            for k, v in deployment["properties"]["parameters"].items()
        }

        def reference(target: str, rest: tuple[Any, ...]) -> Any:
            if f"/providers/{DCR}/" in target:
                return _dcr_answer(target)
            raise ArmError(f"inner reference() to {target}: nothing there")

        return Scope(deployment["properties"]["template"], given, reference=reference)

    def app_settings(self) -> dict[str, str]:
        return self.scope.value(_one(self.template, CONFIG)["properties"])


# --- without the option -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [{}, {"compat": True}, {"hunting": True}, {"plans": {"EPF_Runs_CL": "Basic"}}],
)
def test_without_the_option_the_template_is_what_it_was(options):
    plain = build_arm_template(**options)
    assert json.dumps(build_arm_template(function_app=None, **options)) == json.dumps(plain)
    text = json.dumps(plain)
    assert "Microsoft.Web" not in text and "Microsoft.Storage" not in text
    assert "sentinelDcrs" not in text
    assert "collectorPrincipalId" in plain["parameters"]


# --- the resources --------------------------------------------------------------------------------


def test_the_plan_is_flex_consumption_and_the_site_a_linux_python_app(template):
    plan = _one(template, PLAN)
    assert plan["apiVersion"] == "2024-04-01"
    assert plan["kind"] == "functionapp"
    assert plan["sku"] == {"tier": "FlexConsumption", "name": "FC1"}
    assert plan["properties"] == {"reserved": True}  # Linux
    site = _one(template, SITE)
    assert site["apiVersion"] >= "2023-12-01"  # functionAppConfig came with 2023-12-01
    assert site["kind"] == "functionapp,linux"
    props = site["properties"]
    assert (
        props["serverFarmId"]
        == "[resourceId('Microsoft.Web/serverfarms', variables('functionPlanName'))]"
    )
    assert props["httpsOnly"] is True
    assert props["siteConfig"] == {"minTlsVersion": "1.2"}  # no linuxFxVersion on Flex
    config = props["functionAppConfig"]
    assert config["runtime"] == {"name": "python", "version": "[parameters('pythonVersion')]"}
    assert config["scaleAndConcurrency"] == {
        "maximumInstanceCount": "[parameters('maximumInstanceCount')]",
        "instanceMemoryMB": "[parameters('instanceMemoryMB')]",
    }
    deployed = Deployed(template)
    assert deployed.scope.value(plan["location"]) == LOCATION
    assert deployed.scope.value(plan["name"]) == "epf-collector-plan"


def test_the_site_has_a_system_assigned_identity_and_deploys_from_its_container_with_it(template):
    site = _one(template, SITE)
    assert site["identity"] == {"type": "SystemAssigned"}
    storage = site["properties"]["functionAppConfig"]["deployment"]["storage"]
    assert storage["type"] == "blobContainer"
    assert storage["authentication"] == {"type": "SystemAssignedIdentity"}
    deployed = Deployed(template)
    account = deployed.parameter("storageAccountName")
    assert deployed.scope.value(storage["value"]) == (
        f"https://{account}.blob.core.windows.net/{names.DEPLOYMENT_CONTAINER_NAME}"
    )


def test_the_storage_account_takes_no_key_and_no_plain_http_and_holds_the_queues_and_containers(
    template,
):
    account = _one(template, ACCOUNT)
    assert (account["kind"], account["apiVersion"]) == ("StorageV2", "2023-05-01")
    props = account["properties"]
    assert props["allowSharedKeyAccess"] is False
    assert props["supportsHttpsTrafficOnly"] is True
    assert props["minimumTlsVersion"] == "TLS1_2"
    assert props["allowBlobPublicAccess"] is False
    deployed = Deployed(template)
    name = deployed.parameter("storageAccountName")
    assert re.fullmatch(r"[a-z0-9]{3,24}", name)
    containers = {deployed.scope.value(c["name"]) for c in _of_type(template, CONTAINER)}
    assert containers == {f"{name}/default/epf-state", f"{name}/default/epf-app-package"}
    assert all(c["properties"] == {"publicAccess": "None"} for c in _of_type(template, CONTAINER))
    queues = {deployed.scope.value(q["name"]) for q in _of_type(template, QUEUE)}
    # The Functions host moves a message that failed every try to <queue>-poison.
    assert queues == {f"{name}/default/epf-work", f"{name}/default/epf-work-poison"}
    assert names.POISON_QUEUE_NAME == names.poison_queue(names.WORK_QUEUE_NAME)
    for name_ in (*containers, *queues):
        leaf = name_.rsplit("/", 1)[-1]
        assert re.fullmatch(r"[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}", leaf), leaf


ROLES = {
    # role id -> (scope kind, the name under the resource group's providers)
    BLOB_OWNER: "account",
    TABLE_CONTRIBUTOR: "account",
    QUEUE_CONTRIBUTOR: "account",
    BLOB_CONTRIBUTOR: "state container",
}


def test_each_role_is_the_built_in_one_on_its_scope_for_the_apps_identity(template):
    deployed = Deployed(template)
    account = deployed.parameter("storageAccountName")
    scopes = {
        "account": f"{ACCOUNT}/{account}",
        "state container": f"{ACCOUNT}/{account}/blobServices/default/containers/epf-state",
    }
    roles = _of_type(template, ROLE)
    found = {}
    for role in roles:
        props = deployed.scope.value(role["properties"])
        role_id = props["roleDefinitionId"].rsplit("/", 1)[-1]
        assert props["roleDefinitionId"] == resource_id(
            "Microsoft.Authorization/roleDefinitions",
            role_id,
            scope="/subscriptions/00000000-0000-0000-0000-000000000001",
        )
        assert props["principalId"] == PRINCIPAL
        assert props["principalType"] == "ServicePrincipal"
        found[role_id] = deployed.scope.value(role["scope"])
        # A GUID derived from scope, app and role: the same assignment on every redeploy.
        assert role["name"].startswith("[guid(") and "reference(" not in role["name"]
        assert re.fullmatch(r"[0-9a-f-]{36}", deployed.scope.value(role["name"]))
    assert found == {role_id: scopes[kind] for role_id, kind in ROLES.items()}
    assert len({deployed.scope.value(r["name"]) for r in roles}) == len(roles)
    # No Storage Account Contributor: only the blob trigger needs it, and there is none.
    assert "17d1049b-9a84-46fb-8f53-869881c3d3ab" not in json.dumps(template)


def test_each_dcr_grants_monitoring_metrics_publisher_to_the_apps_identity(template):
    deployed = Deployed(template)
    inner = deployed.inner()
    assert inner.evaluate("parameters('collectorPrincipalId')") == PRINCIPAL
    dcrs = [r for r in inner.template["resources"] if r["type"] == DCR]
    roles = [r for r in inner.template["resources"] if r["type"] == ROLE]
    assert len(dcrs) == len(roles) == 3
    dcr_names = {inner.value(d["name"]) for d in dcrs}
    scopes = {inner.value(r["scope"]) for r in roles}
    assert scopes == {f"{DCR}/{name}" for name in dcr_names}
    for role in roles:
        props = inner.value(role["properties"])
        assert props["roleDefinitionId"].endswith(f"/{METRICS_PUBLISHER}")
        assert props["principalId"] == PRINCIPAL
    # The app is the collector: no other principal is asked for.
    assert "collectorPrincipalId" not in template["parameters"]
    site = f"[resourceId('{SITE}', parameters('functionAppName'))]"
    assert site in _one(template, DEPLOYMENT)["dependsOn"]


# --- deployment order -----------------------------------------------------------------------------


def _closure(ids: dict[str, dict[str, Any]], scope: Scope, start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for needed in scope.value(ids[todo.pop()].get("dependsOn", [])):
            assert needed in ids, f"{start} depends on {needed}, which the template lacks"
            if needed not in seen:
                seen.add(needed)
                todo.append(needed)
    return seen


@pytest.mark.parametrize("app", [APP, APP_WITH_INSIGHTS], ids=["plain", "app-insights"])
def test_every_resource_waits_for_what_it_reads_and_where_it_is_assigned(app):
    template = build_arm_template(function_app=app, hunting=True)
    deployed = Deployed(template)
    # Names, scopes, locations and dependencies are known before anything is deployed.
    fixed = Scope(template, {"workspaceName": WORKSPACE_NAME}, reference=None)
    for rid, resource in deployed.ids.items():
        for key in ("name", "scope", "location", "dependsOn"):
            if key in resource:
                fixed.value(resource[key])
        before = _closure(deployed.ids, deployed.scope, rid)
        assert rid not in before, f"{rid} depends on itself"
        deployed.scope.references.clear()
        body = dict(resource)
        if resource["type"] == DEPLOYMENT:  # its template is the inner scope's
            body["properties"] = {"parameters": resource["properties"]["parameters"]}
        deployed.scope.value(body)
        for read in deployed.scope.references:
            # A resource of the template is read after it is deployed; others exist already.
            assert read not in deployed.ids or read in before, f"{rid} reads {read} too early"
        if "scope" in resource:
            target = f"{RESOURCE_GROUP_ID}/providers/{deployed.scope.value(resource['scope'])}"
            assert target in before or (
                target not in deployed.ids and f"/providers/{COMPONENT}/" in target
            ), f"{rid} is assigned on {target} before it exists"


# --- app settings ------------------------------------------------------------------------------------

# Flex Consumption plan deprecations (learn.microsoft.com/azure/azure-functions/
# functions-app-settings#flex-consumption-plan-deprecations).
DEPRECATED_ON_FLEX = {
    "FUNCTIONS_EXTENSION_VERSION",
    "FUNCTIONS_WORKER_RUNTIME",
    "FUNCTIONS_WORKER_RUNTIME_VERSION",
    "WEBSITE_RUN_FROM_PACKAGE",
    "WEBSITE_CONTENTSHARE",
    "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING",
    "WEBSITE_CONTENTOVERVNET",
    "SCM_DO_BUILD_DURING_DEPLOYMENT",
    "ENABLE_ORYX_BUILD",
    "WEBSITE_MAX_DYNAMIC_APPLICATION_SCALE_OUT",
    "WEBSITE_TIME_ZONE",
}


def test_the_app_settings_are_the_hosts_by_identity_and_ours_and_none_flex_deprecates(template):
    settings = Deployed(template).app_settings()
    assert not DEPRECATED_ON_FLEX & set(settings)
    assert "AzureWebJobsStorage" not in settings  # the connection-string form
    account = Deployed(template).parameter("storageAccountName")
    blob = f"https://{account}.blob.core.windows.net/"
    assert settings == {
        "AzureWebJobsStorage__accountName": account,
        "AzureWebJobsStorage__blobServiceUri": blob,
        "AzureWebJobsStorage__queueServiceUri": f"https://{account}.queue.core.windows.net/",
        "AzureWebJobsStorage__tableServiceUri": f"https://{account}.table.core.windows.net/",
        "AzureWebJobsStorage__credential": "managedidentity",
        "EPF_SCHEDULE": "0 0 * * * *",
        "EPF_WORK_QUEUE": "epf-work",
        "EPF_STATE_URL": f"{blob}epf-state",
        "EPF_SENTINEL__ENDPOINT": settings["EPF_SENTINEL__ENDPOINT"],
        "EPF_SENTINEL__MANAGED_IDENTITY": "true",
        "EPF_SENTINEL__DCRS": settings["EPF_SENTINEL__DCRS"],
    }
    # The names the planner and the worker may import are the ones the template sets.
    assert {
        names.SCHEDULE,
        names.WORK_QUEUE,
        names.STATE_URL,
        names.HOST_QUEUE_SERVICE_URI,
        *names.HOST_STORAGE_SETTINGS,
        names.SENTINEL_ENDPOINT,
        names.SENTINEL_MANAGED_IDENTITY,
        names.SENTINEL_DCRS,
    } <= set(settings)
    assert names.LOCAL_STORAGE_CONNECTION not in settings and names.STATE_DIR not in settings


ROOT = Path(__file__).resolve().parents[2]
FUNCTIONS_CODE = [
    ROOT / "deploy" / "functions" / "function_app.py",
    ROOT / "src" / "endpoint_forensics" / "azure" / "functions.py",
    ROOT / "src" / "endpoint_forensics" / "azure" / "work_queue.py",
]
SETTING = re.compile(r"(?:EPF_[A-Z0-9_]+|AzureWebJobsStorage(?:__\w+)?|APPLICATIONINSIGHTS_\w+)")


def _setting_names(path: Path) -> set[str]:
    """The string constants of a module that are app setting names (not docstrings)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and SETTING.fullmatch(node.value.strip("%"))
    }


def test_epf_config_is_set_only_when_a_path_is_given(template):
    assert names.CONFIG not in Deployed(template).app_settings()
    given = Deployed(template, epfConfigPath="/home/site/wwwroot/conf/epf.toml").app_settings()
    assert given[names.CONFIG] == "/home/site/wwwroot/conf/epf.toml"


def test_every_app_setting_the_functions_code_reads_is_one_the_template_sets(template):
    read = {n.strip("%") for path in FUNCTIONS_CODE if path.exists() for n in _setting_names(path)}
    set_ = set(Deployed(template, epfConfigPath="/x/epf.toml").app_settings())
    # A connection string (a local host's) and the one-run layout's folder are never set here;
    # the queue trigger's connection "AzureWebJobsStorage" is the prefix of settings it sets.
    local = {names.LOCAL_STORAGE_CONNECTION, names.STATE_DIR, names.HOST_STORAGE}
    assert read - local <= set_, sorted(read - local - set_)
    assert names.HOST_QUEUE_SERVICE_URI in set_ and f"{names.HOST_STORAGE}__credential" in set_


def test_the_app_settings_load_as_a_config_that_routes_each_table_to_its_own_dcr(
    template, tmp_path
):
    deployed = Deployed(template)
    settings = deployed.app_settings()
    path = tmp_path / "epf.toml"
    path.write_text(CONFIG_TOML)  # no [sentinel]: the app settings are the whole of it
    loaded = load_settings(path, environ={**settings, "CONTOSO_SECRET": "x"})
    sentinel = loaded.sentinel
    assert sentinel is not None and sentinel.managed_identity
    assert sentinel.managed_identity_client_id == ""  # the system-assigned identity
    inner = deployed.inner()
    dcrs = [r for r in inner.template["resources"] if r["type"] == DCR]
    first = _dcr_answer(resource_id(DCR, inner.value(dcrs[0]["name"])))
    assert sentinel.endpoint == first["endpoints"]["logsIngestion"]
    for dcr in dcrs:
        answer = _dcr_answer(resource_id(DCR, inner.value(dcr["name"])))
        for stream in dcr["properties"]["streamDeclarations"]:
            table = stream.removeprefix("Custom-")
            assert sentinel.route(table) == (
                answer["endpoints"]["logsIngestion"],
                answer["immutableId"],
            )
    assert {t for d in sentinel.dcrs for t in d.tables} == {t.name for t in CORE}


def test_only_the_sentinel_settings_are_config_overrides_and_extra_settings_cannot_replace_ours(
    template,
):
    every = [*function_app_app_settings(APP_WITH_INSIGHTS, dcr_deployment="x"), *LOCAL_ONLY]
    for name in every:
        if name.startswith("EPF_"):
            section = name.removeprefix("EPF_").lower().split("__")[0]
            assert (section in Settings.model_fields) == name.startswith("EPF_SENTINEL__"), name
    extra = {"EPF_WORK_QUEUE": "elsewhere", "EPF_MDE_SECRET": "@Microsoft.KeyVault(SecretUri=x)"}
    settings = Deployed(template, extraAppSettings=extra).app_settings()
    assert settings["EPF_WORK_QUEUE"] == "epf-work"
    assert settings["EPF_MDE_SECRET"] == extra["EPF_MDE_SECRET"]


def test_app_insights_adds_its_settings_and_its_role_only_when_asked(template, with_insights):
    assert "applicationInsightsName" not in template["parameters"]
    assert "APPLICATIONINSIGHTS" not in json.dumps(template)
    deployed = Deployed(with_insights)
    settings = deployed.app_settings()
    assert settings["APPLICATIONINSIGHTS_CONNECTION_STRING"] == CONNECTION_STRING
    assert settings["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"] == "Authorization=AAD"
    assert with_insights["parameters"]["applicationInsightsName"]["defaultValue"] == "epf-insights"
    [role] = [
        r
        for r in _of_type(with_insights, ROLE)
        if deployed.scope.value(r["scope"]).startswith(COMPONENT)
    ]
    assert deployed.scope.value(role["scope"]) == f"{COMPONENT}/epf-insights"
    assert deployed.scope.value(role["properties"])["roleDefinitionId"].endswith(METRICS_PUBLISHER)


# --- no secret ----------------------------------------------------------------------------------

SECRET_SHAPES = [
    "AccountKey",
    "SharedAccessSignature",
    "DefaultEndpointsProtocol",
    "listKeys(",
    "listAccountSas(",
    "listServiceSas(",
    "StorageAccountConnectionString",
    "DEPLOYMENT_STORAGE_CONNECTION_STRING",
    "InstrumentationKey",
    "securestring",
]


@pytest.mark.parametrize("app", [APP, APP_WITH_INSIGHTS], ids=["plain", "app-insights"])
def test_no_secret_or_key_is_anywhere_in_the_template(app):
    text = json.dumps(build_arm_template(function_app=app, hunting=True, compat=True))
    found = [shape for shape in SECRET_SHAPES if shape.lower() in text.lower()]
    assert found == []


# --- parameters, outputs, expressions ---------------------------------------------------------


def test_the_parameters_defaults_are_the_documented_ones_and_their_limits_azures(template):
    params = template["parameters"]
    assert params["functionAppName"]["defaultValue"] == "epf-collector"
    assert (params["functionAppName"]["minLength"], params["functionAppName"]["maxLength"]) == (
        2,
        60,
    )
    assert params["functionAppLocation"]["defaultValue"] == "[resourceGroup().location]"
    assert params["instanceMemoryMB"]["defaultValue"] == 2048
    assert params["instanceMemoryMB"]["allowedValues"] == [512, 2048, 4096]
    count = params["maximumInstanceCount"]
    assert (count["defaultValue"], count["minValue"], count["maxValue"]) == (40, 40, 1000)
    assert DEFAULT_MAXIMUM_INSTANCE_COUNT == 40
    assert params["pythonVersion"]["defaultValue"] == "3.11"
    assert params["collectionSchedule"]["defaultValue"] == "0 0 * * * *"
    assert params["extraAppSettings"] == {
        "type": "object",
        "defaultValue": {},
        "metadata": params["extraAppSettings"]["metadata"],
    }
    assert (
        params["storageAccountName"]["minLength"],
        params["storageAccountName"]["maxLength"],
    ) == (
        3,
        24,
    )
    # Every parameter is used, and each a deployer may set is checked by ARM first.
    text = json.dumps({k: v for k, v in template.items() if k != "parameters"})
    assert [p for p in params if f"parameters('{p}')" not in text] == []
    with pytest.raises(ArmError, match="instanceMemoryMB"):
        Deployed(template, instanceMemoryMB=1024)
    with pytest.raises(ArmError, match="maximumInstanceCount"):
        Deployed(template, maximumInstanceCount=10)
    with pytest.raises(ArmError, match="pythonVersion"):
        Deployed(template, pythonVersion="3.10")  # below the collector's 3.11


def test_the_outputs_name_the_app_its_identity_and_its_storage(template):
    deployed = Deployed(template)
    outputs = {k: deployed.scope.value(v["value"]) for k, v in template["outputs"].items()}
    account = deployed.parameter("storageAccountName")
    assert outputs["functionAppName"] == "epf-collector"
    assert outputs["functionAppPrincipalId"] == PRINCIPAL
    assert outputs["storageAccountName"] == account
    assert outputs["workQueueName"] == "epf-work"
    assert outputs["poisonQueueName"] == "epf-work-poison"
    assert outputs["stateContainerName"] == "epf-state"
    assert outputs["stateContainerUrl"] == f"https://{account}.blob.core.windows.net/epf-state"
    assert outputs["deploymentContainerName"] == "epf-app-package"
    # The DCR routes, also in [[sentinel.dcrs]]'s shape.
    routes = outputs["sentinelDcrs"]
    assert [set(r) for r in routes] == [{"immutable_id", "endpoint", "tables"}] * 3
    assert json.loads(deployed.app_settings()["EPF_SENTINEL__DCRS"]) == routes
    arrays = {"dataCollectionRules", "sentinelDcrs"}
    assert {
        k: v["type"] for k, v in template["outputs"].items() if k not in arrays
    } == dict.fromkeys(set(outputs) - arrays, "string")


def test_every_expression_is_balanced_with_the_function_app(with_insights):
    assert expression_problems(with_insights) == []
    assert expression_problems(build_arm_template(function_app=APP, compat=True)) == []


@pytest.mark.parametrize(
    "app, problem",
    [
        (FunctionApp("-leading"), "not a function app name"),
        (FunctionApp("trailing-"), "not a function app name"),
        (FunctionApp("a"), "not a function app name"),
        (FunctionApp("x" * 61), "not a function app name"),
        (FunctionApp("under_score"), "not a function app name"),
        (FunctionApp("fine", app_insights=""), "not an Application Insights name"),
        (FunctionApp("fine", app_insights="a/b"), "not an Application Insights name"),
    ],
)
def test_a_name_azure_refuses_is_refused(app, problem):
    assert problem in (function_app_problem(app) or "")
    with pytest.raises(ValueError, match=problem):
        build_arm_template(function_app=app)


def test_the_written_template_is_the_built_one(tmp_path: Path):
    from endpoint_forensics.azure import write_arm_template

    out = tmp_path / "epf.json"
    written = write_arm_template(out, function_app=APP)
    assert (
        json.loads(out.read_text(encoding="utf-8"))
        == written
        == build_arm_template(function_app=APP)
    )

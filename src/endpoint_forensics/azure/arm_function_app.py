"""The template's function app, with ``epf deploy arm --function-app NAME``: the collector on
Azure Functions, Flex Consumption, with a system-assigned managed identity and no key anywhere.

Owns the resources the option adds: the storage account (its deployment, state and work
queue containers and queues), the Flex Consumption plan and the Linux site, the site's app
settings (``azure.app_settings`` names them), its role assignments on the storage account and on
the Application Insights component, and the outputs; ``azure.arm`` grants it Monitoring Metrics
Publisher on each DCR by making it the nested DCR deployment's collector. What is asked of
the app (names, limits, parameters) is ``azure.arm_function_app_options``'s. May import
``azure.app_settings``, ``azure.arm_dcrs`` and ``azure.arm_function_app_options``.

Sources, for what is not obvious:

* Plan and site (api-version 2024-04-01; ``functionAppConfig`` exists from 2023-12-01): the
  quickstart ``Azure/azure-quickstart-templates`` quickstarts/microsoft.web/
  function-app-flex-managed-identities (azuredeploy.json) and
  ``Azure-Samples/azure-functions-flex-consumption-samples`` IaC/armtemplate/azuredeploy.json
  (the system-assigned variant): a ``functionapp`` serverfarm with sku ``FC1`` / tier
  ``FlexConsumption`` and ``reserved: true`` (Linux); a ``functionapp,linux`` site whose
  ``functionAppConfig`` holds the deployment container (``type: blobContainer``, ``value`` its
  URL, ``authentication.type: SystemAssignedIdentity``), ``scaleAndConcurrency``
  (``maximumInstanceCount``, ``instanceMemoryMB``) and ``runtime`` (``python``, a version).
* App settings (learn.microsoft.com/azure/azure-functions/functions-app-settings, "Flex
  Consumption plan deprecations"): no ``FUNCTIONS_EXTENSION_VERSION`` (the platform sets it),
  no ``FUNCTIONS_WORKER_RUNTIME`` (``functionAppConfig.runtime`` says it), no
  ``WEBSITE_RUN_FROM_PACKAGE`` or ``WEBSITE_CONTENT*`` (the package is the deployment
  container's).
* The host's storage by identity (learn.microsoft.com/azure/azure-functions/functions-reference,
  "Connecting to host storage with an identity"): ``AzureWebJobsStorage__accountName`` or the
  ``__blobServiceUri``/``__queueServiceUri``/``__tableServiceUri`` settings, ``__credential``
  ``managedidentity``, the system-assigned identity when no client id is given; Flex
  Consumption has no Azure Files share, so the account can refuse shared keys. Roles: Storage
  Blob Data Owner is the host's minimum (the timer trigger's locks need nothing more), Storage
  Table Data Contributor lets it persist its diagnostic events; Storage Account Contributor is
  for the blob trigger only, which the app does not use. The queue trigger needs Storage Queue
  Data Reader and Message Processor, an output Contributor or Message Sender: Storage Queue
  Data Contributor covers both.
* Role ids: learn.microsoft.com/azure/role-based-access-control/built-in-roles (the same ids as
  the quickstart's variables).
"""

from __future__ import annotations

from typing import Any

from endpoint_forensics.azure import app_settings as names
from endpoint_forensics.azure.arm_dcrs import (
    CONFIG_ROUTES_OUTPUT,
    DEPLOYMENTS_API_VERSION,
    MONITORING_METRICS_PUBLISHER_ROLE_ID,
    ROLE_ASSIGNMENT_API_VERSION,
)
from endpoint_forensics.azure.arm_function_app_options import APP_NAME, FunctionApp

__all__ = [
    "APP_INSIGHTS_API_VERSION",
    "ROLE_IDS",
    "STORAGE_API_VERSION",
    "WEB_API_VERSION",
    "function_app_app_settings",
    "function_app_outputs",
    "function_app_principal_id",
    "function_app_resources",
    "function_app_site_id",
    "function_app_variables",
]

ArmObject = dict[str, Any]

WEB_API_VERSION = "2024-04-01"
STORAGE_API_VERSION = "2023-05-01"
APP_INSIGHTS_API_VERSION = "2020-02-02"

#: Built-in role definition ids, by the template variable that carries each.
ROLE_IDS = {
    "storageBlobDataOwnerRoleId": "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",
    "storageBlobDataContributorRoleId": "ba92f5b4-2d11-453d-a403-e96b0029c9fe",
    "storageQueueDataContributorRoleId": "974c5e8b-45b9-4653-ba55-5f855dd0fb88",
    "storageTableDataContributorRoleId": "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3",
    "monitoringMetricsPublisherRoleId": MONITORING_METRICS_PUBLISHER_ROLE_ID,
}

_SITE = "Microsoft.Web/sites"
_PLAN = "Microsoft.Web/serverfarms"
_ACCOUNT = "Microsoft.Storage/storageAccounts"
_CONTAINER = "Microsoft.Storage/storageAccounts/blobServices/containers"
_QUEUE = "Microsoft.Storage/storageAccounts/queueServices/queues"
_COMPONENT = "Microsoft.Insights/components"
_ROLE = "Microsoft.Authorization/roleAssignments"

_ACCOUNT_NAME = "parameters('storageAccountName')"
_COMPONENT_NAME = "parameters('applicationInsightsName')"
_PLAN_NAME = "variables('functionPlanName')"
_LOCATION = "[parameters('functionAppLocation')]"


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _id(kind: str, *segments: str) -> str:
    """A ``resourceId()`` expression body."""
    return f"resourceId('{kind}', {', '.join(segments)})"


def _child(*segments: str) -> str:
    """A child resource's name expression: the segments joined with ``/``."""
    body = "/".join(f"{{{i}}}" for i in range(len(segments)))
    return f"[format('{body}', {', '.join(segments)})]"


_SITE_ID = _id(_SITE, APP_NAME)
_ACCOUNT_ID = _id(_ACCOUNT, _ACCOUNT_NAME)
_PLAN_ID = _id(_PLAN, _PLAN_NAME)
_COMPONENT_ID = _id(_COMPONENT, _COMPONENT_NAME)
# reference() is evaluated when the resource it names is deployed: only in properties and
# outputs (template-functions-resource, "reference", Valid uses).
_ENDPOINTS = f"reference({_ACCOUNT_ID}, '{STORAGE_API_VERSION}').primaryEndpoints"
_PRINCIPAL = f"reference({_SITE_ID}, '{WEB_API_VERSION}', 'Full').identity.principalId"
# primaryEndpoints.blob ends with a slash.
_STATE_URL = f"concat({_ENDPOINTS}.blob, {_quote(names.STATE_CONTAINER_NAME)})"


def _container_id(container: str) -> str:
    return _id(_CONTAINER, _ACCOUNT_NAME, "'default'", _quote(container))


def _queue_id(queue: str) -> str:
    return _id(_QUEUE, _ACCOUNT_NAME, "'default'", _quote(queue))


def function_app_site_id() -> str:
    """The site's resource id, as an expression (for a ``dependsOn``)."""
    return f"[{_SITE_ID}]"


def function_app_principal_id() -> str:
    """The object id of the site's system-assigned identity, as an expression."""
    return f"[{_PRINCIPAL}]"


def function_app_variables() -> ArmObject:
    """The variables the function app adds: its plan's name and the role ids."""
    return {
        # Serverfarm names: at most 60 characters.
        "functionPlanName": f"[format('{{0}}-plan', take({APP_NAME}, 55))]",
        **ROLE_IDS,
    }


def function_app_app_settings(app: FunctionApp, *, dcr_deployment: str) -> dict[str, str]:
    """Every app setting the template sets, name to value (an ARM expression or a literal),
    but ``EPF_CONFIG``, set only when the ``epfConfigPath`` parameter is.

    ``dcr_deployment`` is the expression body of ``reference()`` to the nested DCR deployment,
    whose outputs give the Sentinel routes.
    """
    account, blob, queue, table, credential = names.HOST_STORAGE_SETTINGS
    settings = {
        # The host's storage (and the queue trigger's), by identity: no connection string, no
        # key. The service URIs come from the account, so they hold in any cloud.
        account: f"[{_ACCOUNT_NAME}]",
        blob: f"[{_ENDPOINTS}.blob]",
        queue: f"[{_ENDPOINTS}.queue]",
        table: f"[{_ENDPOINTS}.table]",
        credential: "managedidentity",
        names.SCHEDULE: "[parameters('collectionSchedule')]",
        names.WORK_QUEUE: names.WORK_QUEUE_NAME,
        names.STATE_URL: f"[{_STATE_URL}]",
        # The first DCR's endpoint stands for [sentinel] endpoint; each route names its own.
        names.SENTINEL_ENDPOINT: (
            f"[first({dcr_deployment}.outputs.dataCollectionRules.value).endpoint]"
        ),
        names.SENTINEL_MANAGED_IDENTITY: "true",
        # string() of an array is its JSON, which the config loader reads as a list.
        names.SENTINEL_DCRS: f"[string({dcr_deployment}.outputs.{CONFIG_ROUTES_OUTPUT}.value)]",
    }
    if app.app_insights is not None:
        settings["APPLICATIONINSIGHTS_CONNECTION_STRING"] = (
            f"[reference({_COMPONENT_ID}, '{APP_INSIGHTS_API_VERSION}').ConnectionString]"
        )
        # Entra authentication for ingestion: the system-assigned identity, no client id.
        settings["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"] = "Authorization=AAD"
    return settings


# Without a path the code finds epf.toml next to function_app.py, wherever the package is.
_CONFIG_PATH_SETTING = (
    "if(empty(parameters('epfConfigPath')), createObject(), "
    f"createObject('{names.CONFIG}', parameters('epfConfigPath')))"
)


def _argument(value: str) -> str:
    """An app setting's value as an argument inside an expression."""
    return value[1:-1] if value.startswith("[") and value.endswith("]") else _quote(value)


def _role(role: str, *, scope: str, scope_id: str, depends_on: list[str], why: str) -> ArmObject:
    """A role assignment of ``role`` (a ``ROLE_IDS`` variable) to the app's identity.

    ``scope`` is the scope as an expression body (a resource's id relative to the resource
    group), ``scope_id`` its ``resourceId()``: the name is a GUID of scope, app and role, so a
    redeploy finds the same assignment.
    """
    return {
        "type": _ROLE,
        "apiVersion": ROLE_ASSIGNMENT_API_VERSION,
        "name": f"[guid({scope_id}, {_SITE_ID}, variables('{role}'))]",
        "scope": f"[{scope}]",
        "dependsOn": [f"[{d}]" for d in depends_on],
        "properties": {
            "roleDefinitionId": (
                f"[subscriptionResourceId('Microsoft.Authorization/roleDefinitions', "
                f"variables('{role}'))]"
            ),
            "principalId": f"[{_PRINCIPAL}]",
            "principalType": "ServicePrincipal",
            "description": why,
        },
    }


def _storage_resources() -> list[ArmObject]:
    account: ArmObject = {
        "type": _ACCOUNT,
        "apiVersion": STORAGE_API_VERSION,
        "name": f"[{_ACCOUNT_NAME}]",
        "location": _LOCATION,
        "kind": "StorageV2",
        "sku": {"name": "Standard_LRS"},
        "properties": {
            "supportsHttpsTrafficOnly": True,
            "minimumTlsVersion": "TLS1_2",
            "allowBlobPublicAccess": False,
            # Every client (the host, the deployment, the collector) signs in with Entra ID.
            "allowSharedKeyAccess": False,
            "defaultToOAuthAuthentication": True,
            "accessTier": "Hot",
        },
    }
    depends = [f"[{_ACCOUNT_ID}]"]
    containers: list[ArmObject] = [
        {
            "type": _CONTAINER,
            "apiVersion": STORAGE_API_VERSION,
            "name": _child(_ACCOUNT_NAME, "'default'", _quote(container)),
            "dependsOn": depends,
            "properties": {"publicAccess": "None"},
        }
        for container in (names.DEPLOYMENT_CONTAINER_NAME, names.STATE_CONTAINER_NAME)
    ]
    # The host would create the poison queue at its first poison message; made here, it can be
    # watched (and alerted on) from the start.
    queues: list[ArmObject] = [
        {
            "type": _QUEUE,
            "apiVersion": STORAGE_API_VERSION,
            "name": _child(_ACCOUNT_NAME, "'default'", _quote(queue)),
            "dependsOn": depends,
        }
        for queue in (names.WORK_QUEUE_NAME, names.POISON_QUEUE_NAME)
    ]
    return [account, *containers, *queues]


def _app_resources() -> list[ArmObject]:
    plan: ArmObject = {
        "type": _PLAN,
        "apiVersion": WEB_API_VERSION,
        "name": f"[{_PLAN_NAME}]",
        "location": _LOCATION,
        "kind": "functionapp",
        "sku": {"tier": "FlexConsumption", "name": "FC1"},
        "properties": {"reserved": True},
    }
    site: ArmObject = {
        "type": _SITE,
        "apiVersion": WEB_API_VERSION,
        "name": f"[{APP_NAME}]",
        "location": _LOCATION,
        "kind": "functionapp,linux",
        "identity": {"type": "SystemAssigned"},
        "dependsOn": [
            f"[{_PLAN_ID}]",
            f"[{_ACCOUNT_ID}]",
            f"[{_container_id(names.DEPLOYMENT_CONTAINER_NAME)}]",
        ],
        "properties": {
            "serverFarmId": f"[{_PLAN_ID}]",
            "httpsOnly": True,
            "siteConfig": {"minTlsVersion": "1.2"},
            "functionAppConfig": {
                "deployment": {
                    "storage": {
                        "type": "blobContainer",
                        "value": (
                            f"[concat({_ENDPOINTS}.blob, "
                            f"{_quote(names.DEPLOYMENT_CONTAINER_NAME)})]"
                        ),
                        "authentication": {"type": "SystemAssignedIdentity"},
                    }
                },
                "scaleAndConcurrency": {
                    "maximumInstanceCount": "[parameters('maximumInstanceCount')]",
                    "instanceMemoryMB": "[parameters('instanceMemoryMB')]",
                },
                "runtime": {"name": "python", "version": "[parameters('pythonVersion')]"},
            },
        },
    }
    return [plan, site]


def _role_resources(app: FunctionApp) -> list[ArmObject]:
    account_scope = f"format('{_ACCOUNT}/{{0}}', {_ACCOUNT_NAME})"
    state = names.STATE_CONTAINER_NAME
    state_scope = (
        f"format('{_ACCOUNT}/{{0}}/blobServices/default/containers/{state}', {_ACCOUNT_NAME})"
    )
    on_account = [_ACCOUNT_ID, _SITE_ID]
    roles = [
        _role(
            "storageBlobDataOwnerRoleId",
            scope=account_scope,
            scope_id=_ACCOUNT_ID,
            depends_on=on_account,
            why="The Functions host's storage (AzureWebJobsStorage: keys, timer locks) and "
            "the deployment package, by identity.",
        ),
        _role(
            "storageTableDataContributorRoleId",
            scope=account_scope,
            scope_id=_ACCOUNT_ID,
            depends_on=on_account,
            why="The Functions host's diagnostic events, in Table storage.",
        ),
        _role(
            "storageQueueDataContributorRoleId",
            scope=account_scope,
            scope_id=_ACCOUNT_ID,
            depends_on=on_account,
            why="The planner adds units of work to the work queue; the worker's trigger reads "
            "and deletes them and moves a failing one to the poison queue.",
        ),
        _role(
            "storageBlobDataContributorRoleId",
            scope=state_scope,
            scope_id=_container_id(state),
            depends_on=[_container_id(state), _SITE_ID],
            why="The collector's state: checkpoints, outbox, quarantine, run records, leases.",
        ),
    ]
    if app.app_insights is not None:
        roles.append(
            _role(
                "monitoringMetricsPublisherRoleId",
                scope=f"format('{_COMPONENT}/{{0}}', {_COMPONENT_NAME})",
                scope_id=_COMPONENT_ID,
                depends_on=[_SITE_ID],
                why="The app's logs and metrics, sent with Entra authentication.",
            )
        )
    return roles


def function_app_resources(app: FunctionApp, *, dcr_deployment_id: str) -> list[ArmObject]:
    """The function app's resources, in dependency order.

    ``dcr_deployment_id`` is the expression body of the nested DCR deployment's resource id:
    the app settings wait for it, as they carry its outputs.
    """
    deployment = f"reference({dcr_deployment_id}, '{DEPLOYMENTS_API_VERSION}')"
    settings = function_app_app_settings(app, dcr_deployment=deployment)
    pairs = ", ".join(f"{_quote(k)}, {_argument(v)}" for k, v in settings.items())
    app_settings: ArmObject = {
        "type": "Microsoft.Web/sites/config",
        "apiVersion": WEB_API_VERSION,
        "name": _child(APP_NAME, "'appsettings'"),
        "dependsOn": [
            f"[{_SITE_ID}]",
            f"[{dcr_deployment_id}]",
            f"[{_container_id(names.STATE_CONTAINER_NAME)}]",
            *(f"[{_queue_id(q)}]" for q in (names.WORK_QUEUE_NAME, names.POISON_QUEUE_NAME)),
        ],
        # The last object of union() wins a clash: the template's own settings.
        "properties": (
            f"[union(parameters('extraAppSettings'), {_CONFIG_PATH_SETTING}, "
            f"createObject({pairs}))]"
        ),
    }
    return [
        *_storage_resources(),
        *_app_resources(),
        *_role_resources(app),
        app_settings,
    ]


def function_app_outputs() -> ArmObject:
    """The outputs the function app adds: what the planner, the worker and an operator need."""

    def string(value: str) -> ArmObject:
        return {"type": "string", "value": value}

    return {
        "functionAppName": string(f"[{APP_NAME}]"),
        "functionAppPrincipalId": string(f"[{_PRINCIPAL}]"),
        "storageAccountName": string(f"[{_ACCOUNT_NAME}]"),
        "workQueueName": string(names.WORK_QUEUE_NAME),
        "poisonQueueName": string(names.POISON_QUEUE_NAME),
        "stateContainerName": string(names.STATE_CONTAINER_NAME),
        "stateContainerUrl": string(f"[{_STATE_URL}]"),
        "deploymentContainerName": string(names.DEPLOYMENT_CONTAINER_NAME),
    }

"""What ``epf deploy arm --function-app NAME`` asks of the function app, checked before any
template is written: the names Azure would refuse, the Flex Consumption limits, and the
parameters through which a deployment may change them (``azure.arm_function_app`` builds the
resources from these).

Limits (learn.microsoft.com/azure/azure-functions/flex-consumption-plan): instance memory 512,
2,048 (the default) or 4,096 MB; "The lowest maximum scale is currently 40. The highest currently
supported value is 1000"; Python 3.10, 3.11 and 3.12 (the collector needs 3.11+). May import
``azure.app_settings``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from endpoint_forensics.azure import app_settings as names

__all__ = [
    "APP_NAME",
    "DEFAULT_INSTANCE_MEMORY_MB",
    "DEFAULT_MAXIMUM_INSTANCE_COUNT",
    "DEFAULT_PYTHON_VERSION",
    "INSTANCE_MEMORY_MB",
    "MAXIMUM_INSTANCE_COUNT",
    "PYTHON_VERSIONS",
    "FunctionApp",
    "app_insights_name_problem",
    "app_name_problem",
    "function_app_parameters",
    "function_app_problem",
]

ArmObject = dict[str, Any]

#: The app's name in the template's expressions.
APP_NAME = "parameters('functionAppName')"

INSTANCE_MEMORY_MB = (512, 2048, 4096)
DEFAULT_INSTANCE_MEMORY_MB = 2048
MAXIMUM_INSTANCE_COUNT = (40, 1000)
# The lowest Flex allows: a unit of work calls a Defender tenant's API, whose rate budget is
# per app and tenant, so more instances make more waits, not more speed.
DEFAULT_MAXIMUM_INSTANCE_COUNT = 40
PYTHON_VERSIONS = ("3.11", "3.12")
DEFAULT_PYTHON_VERSION = "3.11"

# Microsoft.Web/sites names: 2-60 letters, digits and hyphens, not starting or ending with one
# (the app's default host name is <name>.azurewebsites.net).
_VALID_APP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,58}[A-Za-z0-9]")
# Microsoft.Insights/components names: 1-260 characters, none of these.
_COMPONENT_FORBIDDEN = set("%&\\?/") | {chr(c) for c in range(32)}


@dataclass(frozen=True)
class FunctionApp:
    """What ``--function-app`` asks for: the app's name (the ``functionAppName`` parameter's
    default) and, optionally, an existing Application Insights component in the resource group
    to log to (with Entra authentication)."""

    name: str
    app_insights: str | None = None


def app_name_problem(name: str) -> str | None:
    """Say why Azure would refuse ``name`` for a function app, or None when it takes it."""
    if not _VALID_APP_NAME.fullmatch(name):
        return (
            f"{name!r} is not a function app name: 2-60 letters, digits and hyphens, not "
            "starting or ending with a hyphen"
        )
    return None


def app_insights_name_problem(name: str) -> str | None:
    """Say why Azure would refuse ``name`` for an Application Insights component, or None."""
    if not name or len(name) > 260 or set(name) & _COMPONENT_FORBIDDEN:
        return (
            f"{name!r} is not an Application Insights name: 1-260 characters, none of "
            "% & \\ ? / or a control character"
        )
    return None


def function_app_problem(app: FunctionApp) -> str | None:
    """Say why Azure would refuse these names, or None when it takes them."""
    problem = app_name_problem(app.name)
    if problem is None and app.app_insights is not None:
        problem = app_insights_name_problem(app.app_insights)
    return problem


def function_app_parameters(app: FunctionApp) -> ArmObject:
    """The parameters the function app adds, with their defaults and Azure's limits."""

    def described(kind: str, text: str, **extra: Any) -> ArmObject:
        return {"type": kind, **extra, "metadata": {"description": text}}

    low, high = MAXIMUM_INSTANCE_COUNT
    parameters: ArmObject = {
        "functionAppName": described(
            "string",
            "Name of the function app (Flex Consumption, Linux): globally unique, it is the "
            "host name <name>.azurewebsites.net.",
            defaultValue=app.name,
            minLength=2,
            maxLength=60,
        ),
        "functionAppLocation": described(
            "string",
            "Region of the function app, its plan and its storage account: one where Flex "
            "Consumption is offered (az functionapp list-flexconsumption-locations).",
            defaultValue="[resourceGroup().location]",
        ),
        "storageAccountName": described(
            "string",
            "Name of the function app's storage account (created): 3-24 lowercase letters and "
            "digits, globally unique.",
            defaultValue=(f"[format('epf{{0}}', uniqueString(resourceGroup().id, {APP_NAME}))]"),
            minLength=3,
            maxLength=24,
        ),
        "maximumInstanceCount": described(
            "int",
            f"Most instances the app scales out to: {low}-{high} (Flex Consumption's limits).",
            defaultValue=DEFAULT_MAXIMUM_INSTANCE_COUNT,
            minValue=low,
            maxValue=high,
        ),
        "instanceMemoryMB": described(
            "int",
            "Memory of each instance, in MB.",
            defaultValue=DEFAULT_INSTANCE_MEMORY_MB,
            allowedValues=list(INSTANCE_MEMORY_MB),
        ),
        "pythonVersion": described(
            "string",
            "Python version of the app (functionAppConfig.runtime).",
            defaultValue=DEFAULT_PYTHON_VERSION,
            allowedValues=list(PYTHON_VERSIONS),
        ),
        "collectionSchedule": described(
            "string",
            f"When the planner runs ({names.SCHEDULE}): NCRONTAB with seconds.",
            defaultValue=names.DEFAULT_SCHEDULE,
        ),
        "epfConfigPath": described(
            "string",
            f"The collector's config file ({names.CONFIG}). Empty (the default): epf.toml "
            "next to function_app.py, in the deployed package.",
            defaultValue="",
        ),
        "extraAppSettings": described(
            "object",
            "More app settings, name to value: the template owns the app's settings, so a "
            "redeploy keeps only these and its own (which win on a clash). No secrets: use "
            "Key Vault references.",
            defaultValue={},
        ),
    }
    if app.app_insights is not None:
        parameters["applicationInsightsName"] = described(
            "string",
            "An existing Application Insights component in this resource group: the app logs "
            "to it with its identity (Monitoring Metrics Publisher on the component).",
            defaultValue=app.app_insights,
        )
    return parameters

"""The Log Analytics workspace behind the Sentinel output, for ``epf doctor`` to read.

Owns ``WorkspaceRef``: the workspace's ARM resource id and the Resource Manager endpoint and
scope to read it with (``[sentinel.workspace]``). Syncs never use it: only the doctor reads the
workspace's tables (Tables - Get), to find classic ones that a deployment must migrate first.
May import ``config.models``.
"""

from __future__ import annotations

import re

from pydantic import field_validator

from endpoint_forensics.config.models import Model, https_url

__all__ = ["WorkspaceRef"]

_WORKSPACE_ID = re.compile(
    r"^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/"
    r"Microsoft\.OperationalInsights/workspaces/[^/]+$",
    re.IGNORECASE,
)


class WorkspaceRef(Model):
    """Where the workspace is in Resource Manager, and how to reach Resource Manager."""

    # /subscriptions/<id>/resourceGroups/<group>/providers/Microsoft.OperationalInsights/
    # workspaces/<name>: the workspace's Properties page in the portal shows it.
    resource_id: str
    # Resource Manager of another cloud (or the emulator), and the token scope it takes.
    endpoint: str = "https://management.azure.com"
    scope: str = "https://management.azure.com/.default"

    @field_validator("resource_id")
    @classmethod
    def _workspace_id(cls, value: str) -> str:
        value = value.rstrip("/")
        if not _WORKSPACE_ID.match(value):
            raise ValueError(
                "must be a workspace's resource id: /subscriptions/<id>/resourceGroups/<group>/"
                "providers/Microsoft.OperationalInsights/workspaces/<name>"
            )
        return value

    @field_validator("endpoint")
    @classmethod
    def _https_endpoint(cls, value: str) -> str:
        return https_url(value)

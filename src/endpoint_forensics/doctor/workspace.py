"""``epf doctor`` for the Log Analytics workspace behind Sentinel: are the tables a sync writes
there, as the registry declares them, and none of them still classic?

Runs when ``[sentinel.workspace]`` names the workspace: with the ``[sentinel]`` identity and a
Resource Manager token it reads the workspace, then each table (Tables - Get). A classic table
(``properties.schema.tableSubType`` "Classic": one the HTTP Data Collector API created, as the
original connector's were) refuses the schema of ``epf deploy arm --compat`` until it is migrated
(Tables - Migrate; learn.microsoft.com/azure/azure-monitor/logs/custom-logs-migrate); a column
whose type differs from the registry's can never change; a missing table or column means the
template is not deployed, or an older one is. Syncs need no right on the workspace, so an
identity that may not read it is a warning, not a failure. May import ``doctor.checks``,
``doctor.sentinel``, ``azure.arm`` and ``azure.classic`` (the tables the template deploys),
``http``, ``identity.credentials``, ``config``, ``tables`` and ``errors``.
"""

from __future__ import annotations

import re
import ssl
from typing import Any

from endpoint_forensics.azure.arm import TABLE_COLUMN_TYPES
from endpoint_forensics.azure.classic import migrate_url
from endpoint_forensics.config import SentinelConfig, Settings
from endpoint_forensics.config.workspace import WorkspaceRef
from endpoint_forensics.doctor.checks import Check
from endpoint_forensics.doctor.sentinel import tables_written
from endpoint_forensics.errors import AuthError, EpfError, HttpStatusError
from endpoint_forensics.http.client import ApiClient, AuthStyle
from endpoint_forensics.http.ratelimit import RateBudget, RateLimit
from endpoint_forensics.identity.credentials import build_credential, first_line
from endpoint_forensics.tables import TABLES, Table

__all__ = ["TABLES_API_VERSION", "compat_without_workspace", "workspace_checks"]

_AREA = "sentinel"
TABLES_API_VERSION = "2022-10-01"
# Resource Manager's read budget per principal and subscription; the doctor reads ~20 things.
_ARM_READS = RateLimit("arm_reads", per_minute=1_200, per_hour=12_000)
_PROBE_RETRIES = 1
# Resource Manager's refusals: Azure roles (RBAC) on the workspace, not Entra API permissions.
_ARM_AUTH = AuthStyle(
    prefix="Bearer ",
    renew_on_401=False,  # the doctor holds one token: a 401 is reported as it is
    refused="Resource Manager refused the token",
    forbidden="no Azure role of the identity allows this on the workspace",
    untrusted="set ca_bundle in [sentinel] to the CA that issued it",
)
# The Tables API's column types, by registry type, as the template declares them (the API
# answers them in lower case).
_ARM_TYPES = {kind: name.lower() for kind, name in TABLE_COLUMN_TYPES.items()}


class _Bearer:
    """The one token the doctor got (``http.TokenProvider``): a 401 is reported, not renewed."""

    def __init__(self, token: str) -> None:
        self._token = token

    def get_token(self, scope: str) -> str:
        return self._token

    def invalidate(self, scope: str) -> None:
        pass


def compat_without_workspace() -> Check:
    """The warning for a compat config that does not say where its workspace is."""
    detail = (
        "not checked: set resource_id in [sentinel.workspace] to let doctor find the original "
        "connector's classic tables, which Azure wants migrated before `epf deploy arm --compat`"
    )
    return Check(_AREA, "workspace", None, detail)


def workspace_checks(settings: Settings) -> list[Check]:
    """The workspace, then each table a sync writes (assumes ``[sentinel.workspace]``)."""
    config = settings.sentinel
    assert config is not None and config.workspace is not None
    workspace = config.workspace
    token = _token(config, workspace)
    if isinstance(token, Check):
        return [token]
    verify = ssl.create_default_context(cafile=str(config.ca_bundle)) if config.ca_bundle else True
    client = ApiClient(
        _Bearer(token),
        verify=verify,
        timeout_seconds=min(60.0, config.timeout_seconds),
        max_retries=_PROBE_RETRIES,
        auth_style=_ARM_AUTH,
    )
    with client:
        reader = _Reader(client, workspace)
        try:
            location = reader.workspace_location()
        except EpfError as exc:
            return [_unread(workspace, exc, "workspace")]
        checks = [Check(_AREA, "workspace", True, f"{workspace.resource_id} in {location}")]
        fine = 0
        missing: list[str] = []
        for name in tables_written(settings):
            table = TABLES.get(name)
            try:
                found = reader.table(name)
            except HttpStatusError as exc:
                if exc.status != 404:
                    checks.append(_unread(workspace, exc, f"table {name}"))
                    return checks
                missing.append(name)
                continue
            except EpfError as exc:
                checks.append(_unread(workspace, exc, f"table {name}"))
                return checks
            check = _table_check(workspace, name, table, found)
            if check is None:
                fine += 1
            else:
                checks.append(check)
    if missing:
        checks.append(_missing_tables(missing))
    if fine:
        detail = f"{fine} table(s) as the registry declares them, none classic"
        checks.append(Check(_AREA, "tables", True, detail))
    return checks


class _Reader:
    def __init__(self, client: ApiClient, workspace: WorkspaceRef) -> None:
        self._client = client
        self._workspace = workspace
        self._budget = RateBudget(_ARM_READS)

    def workspace_location(self) -> str:
        body = self._get(self._workspace.resource_id)
        return str(body.get("location") or "an unknown region") if isinstance(body, dict) else ""

    def table(self, name: str) -> dict[str, Any]:
        body = self._get(f"{self._workspace.resource_id}/tables/{name}")
        return body if isinstance(body, dict) else {}

    def _get(self, path: str) -> Any:
        return self._client.request_json(
            "GET",
            f"{self._workspace.endpoint}{path}",
            scope=self._workspace.scope,
            budget=self._budget,
            params={"api-version": TABLES_API_VERSION},
        )


def _token(config: SentinelConfig, workspace: WorkspaceRef) -> str | Check:
    """A Resource Manager token for the identity, or the warning that there is none."""
    from azure.core.exceptions import ClientAuthenticationError, ServiceRequestError

    try:
        credential = build_credential(config)
    except (ValueError, OSError) as exc:
        return Check(_AREA, "workspace", None, f"not checked: {first_line(str(exc))}")
    try:
        return str(credential.get_token(workspace.scope).token)
    except (ClientAuthenticationError, ServiceRequestError) as exc:
        message = first_line(getattr(exc, "message", None) or str(exc))
        detail = f"not checked: the identity got no token for {workspace.scope}: {message}"
        return Check(_AREA, "workspace", None, detail)
    finally:
        credential.close()


def _unread(workspace: WorkspaceRef, exc: EpfError, name: str) -> Check:
    """What could not be read: a missing workspace fails, anything else is a warning."""
    if isinstance(exc, HttpStatusError) and exc.status == 404 and name == "workspace":
        fix = (
            "Set resource_id of [sentinel.workspace] to the workspace's Resource ID (its "
            "Properties page in the portal)"
        )
        return Check(_AREA, name, False, f"no workspace {workspace.resource_id}: {exc}", fix)
    if isinstance(exc, AuthError) and "-> 401" in str(exc):
        detail = (
            f"not checked: {exc}; check endpoint and scope of [sentinel.workspace] "
            f"({workspace.endpoint}, {workspace.scope})"
        )
        return Check(_AREA, name, None, detail)
    if isinstance(exc, AuthError):
        # The ARM error code, not its message: that repeats the object id and scope.
        code = re.search(r"-> 403: [^(]*\((\w+):", str(exc))
        detail = (
            f"not checked: the identity may not read the workspace (HTTP 403"
            f"{' ' + code.group(1) if code else ''}); give it Log Analytics Reader on "
            f"{workspace.resource_id} for doctor to check the tables (syncs do not need it)"
        )
        return Check(_AREA, name, None, detail)
    return Check(_AREA, name, None, f"not checked: {exc}")


def _missing_tables(names: list[str]) -> Check:
    compat = any(name in TABLES and TABLES[name].profile == "compat" for name in names)
    fix = f"Deploy the template of `epf deploy arm{' --compat' if compat else ''}`: it creates them"
    detail = f"{len(names)} table(s) not in the workspace: {', '.join(names)}"
    return Check(_AREA, "missing tables", False, detail, fix)


def _table_check(
    workspace: WorkspaceRef, name: str, table: Table | None, found: dict[str, Any]
) -> Check | None:
    """None when ``found`` is DCR-based and has the registry's columns, else what is wrong."""
    schema = (found.get("properties") or {}).get("schema") or {}
    have: dict[str, str] = {}
    for column in [*(schema.get("standardColumns") or ()), *(schema.get("columns") or ())]:
        if isinstance(column, dict) and isinstance(column.get("name"), str):
            have[column["name"].lower()] = str(column.get("type", "")).lower()
    declared = table.columns if table is not None else ()
    clashes = [
        f"{c.name} is {have[c.name.lower()]} in the workspace, {_ARM_TYPES[c.type]} in epf's "
        "registry"
        for c in declared
        if c.name.lower() in have and have[c.name.lower()] != _ARM_TYPES[c.type]
    ]
    if schema.get("tableSubType") == "Classic":
        url = migrate_url(workspace.resource_id, name, endpoint=workspace.endpoint)
        detail = (
            f"{name} is a classic table (made by the HTTP Data Collector API): Azure refuses "
            "the template's columns for it until it is migrated"
        )
        if clashes:
            detail += "; and its types differ: " + "; ".join(clashes)
        fix = (
            "Migrate it once (one-way; data and column types stay): "
            f'az rest --method post --url "{url}" '
            "(the <template>-migrate-classic.sh of `epf deploy arm --compat` migrates every "
            "legacy table), then deploy the template"
        )
        return Check(_AREA, f"table {name}", False, detail, fix)
    if clashes:
        fix = (
            "Log Analytics never changes a column's type: keep that table's data elsewhere "
            "and delete the table before deploying the template, or leave its dataset out"
        )
        return Check(_AREA, f"table {name}", False, "; ".join(clashes), fix)
    missing = [c.name for c in declared if c.name.lower() not in have]
    if missing:
        fix = "Deploy the current template of `epf deploy arm`: it adds the columns"
        detail = f"{name} lacks column(s) {', '.join(missing)}"
        return Check(_AREA, f"table {name}", False, detail, fix)
    return None

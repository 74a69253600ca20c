"""``epf doctor`` for one Defender tenant: tokens, application permissions, reachability.

For each API the configured datasets use (MDE, and Graph for hunting through Graph) it gets a
token the way a sync does (``identity.credentials.CredentialTokenProvider``), compares the
token's ``roles`` with the permissions the registry declares for those datasets
(``tables.datasets``, defender-apis.md A.6), and makes one cheap call through
``http.client.ApiClient``. May import ``identity``, ``http``, ``config``, ``tables``, ``errors``
and ``doctor.checks``.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from endpoint_forensics.config import TenantConfig
from endpoint_forensics.doctor.checks import (
    GRAPH_RESOURCE,
    MDE_RESOURCE,
    Check,
    grant_fix,
    refusal_fix,
    token_claims,
)
from endpoint_forensics.errors import (
    AuthError,
    ConfigError,
    CredentialRefused,
    EpfError,
    TransientError,
)
from endpoint_forensics.http.client import ApiClient
from endpoint_forensics.http.ratelimit import DOCUMENTED_LIMITS, RateBudget
from endpoint_forensics.identity.credentials import CredentialTokenProvider
from endpoint_forensics.tables.datasets import spec_of

__all__ = ["required_permissions", "tenant_checks"]

# A broader permission that the API accepts in place of the read-only one.
_ALSO_GRANTS = {"Machine.ReadWrite.All": "Machine.Read.All"}
_PROBE_QUERY = "DeviceInfo | take 1"
# The config's defaults: the scopes whose tokens each API accepts.
_DEFAULT_SCOPES = {
    "MDE": TenantConfig.model_fields["mde_scope"].default,
    "Graph": TenantConfig.model_fields["graph_scope"].default,
}
_PROBE_RETRIES = 1  # one cheap call: a service that is down is reported, not waited out


@dataclass(frozen=True)
class _Api:
    label: str  # "MDE" or "Graph"
    resource: str  # the Entra resource app the permissions live on
    scope: str
    # permission -> the datasets needing it; "warn" ones may be needed later (auto exports)
    needed: dict[str, list[str]]
    maybe: dict[str, list[str]]


def required_permissions(tenant: TenantConfig) -> tuple[dict[str, list[str]], ...]:
    """(MDE needed, MDE maybe needed, Graph needed): permission -> datasets needing it, from
    the registry's declarations and the tenant's ways of collecting."""
    mde: dict[str, list[str]] = {}
    maybe: dict[str, list[str]] = {}
    graph: dict[str, list[str]] = {}
    hunting = f"{tenant.hunting_api}_hunting"
    for dataset in tenant.datasets:
        for permission in spec_of("tenant", dataset).permissions:
            target = graph if permission.api == "Graph" else mde
            label = dataset
            if permission.when == "files":
                if tenant.export_mode == "json":
                    continue
                # "auto" switches to the via-files exports at files_threshold_devices devices.
                target = mde if tenant.export_mode == "files" else maybe
                label = f"{dataset} via files"
            elif permission.when != "always" and permission.when != hunting:
                continue
            target.setdefault(permission.role, []).append(label)
    for role in mde:
        maybe.pop(role, None)
    return mde, maybe, graph


def tenant_checks(tenant: TenantConfig) -> list[Check]:
    """Every check of one tenant, in order; stops early when the credential is refused."""
    area = f"tenant {tenant.name}"
    mde, maybe, graph = required_permissions(tenant)
    apis = [
        _Api("MDE", MDE_RESOURCE, tenant.mde_scope, mde, maybe),
        _Api("Graph", GRAPH_RESOURCE, tenant.graph_scope, graph, {}),
    ]
    checks: list[Check] = []
    tokens = CredentialTokenProvider(tenant)
    with _client(tenant, tokens) as client:
        for api in apis:
            if not api.needed and not api.maybe:
                continue  # no configured dataset calls this API
            granted = _token_check(tenant, tokens, api, area, checks)
            if granted is None:
                return checks  # the same credential serves every API
            checks.append(_permission_check(tenant, api, granted, area))
            checks.extend(_probes(tenant, client, api, granted, area))
    return checks


def _client(tenant: TenantConfig, tokens: CredentialTokenProvider) -> ApiClient:
    # As the sync builds it: a configured bundle replaces the system store for the APIs too.
    verify = ssl.create_default_context(cafile=str(tenant.ca_bundle)) if tenant.ca_bundle else True
    return ApiClient(
        tokens,
        verify=verify,
        timeout_seconds=tenant.timeout_seconds,
        max_retries=min(tenant.max_retries, _PROBE_RETRIES),
    )


def _token_check(
    tenant: TenantConfig,
    tokens: CredentialTokenProvider,
    api: _Api,
    area: str,
    checks: list[Check],
) -> set[str] | None:
    """Append the token check; return the granted roles, or None when there is no token."""
    name = f"{api.label} token"
    where = f'[[tenants]] "{tenant.name}"'
    try:
        # The client's own provider: the probes then reuse this token from its cache.
        token = tokens.get_token(api.scope)
    except CredentialRefused as exc:
        checks.append(Check(area, name, False, str(exc), refusal_fix(str(exc), tenant, where)))
        return None
    except ConfigError as exc:
        fix = f"Point certificate_path of {where} at a PEM with the private key and certificate"
        checks.append(Check(area, name, False, str(exc), fix))
        return None
    except TransientError as exc:
        fix = (
            f"Check authority_host of {where} ({tenant.authority_host}) and that this machine "
            "can reach it (firewall, proxy); a TLS-inspecting proxy needs ca_bundle"
        )
        checks.append(Check(area, name, False, str(exc), fix))
        return None
    claims = token_claims(token)
    roles = claims.get("roles")
    granted = _granted(roles)
    shown = (
        ", ".join(sorted(r for r in roles if isinstance(r, str))) if isinstance(roles, list) else ""
    )
    shown = shown or "none"
    checks.append(Check(area, name, True, f"token for {api.scope}; roles: {shown}"))
    return granted


def _granted(roles: Any) -> set[str]:
    granted = {r for r in roles if isinstance(r, str)} if isinstance(roles, list) else set()
    return granted | {_ALSO_GRANTS[r] for r in granted if r in _ALSO_GRANTS}


def _permission_check(tenant: TenantConfig, api: _Api, granted: set[str], area: str) -> Check:
    name = f"{api.label} permissions"
    missing = {p: ds for p, ds in api.needed.items() if p not in granted}
    later = {p: ds for p, ds in api.maybe.items() if p not in granted}
    if missing:
        detail = "; ".join(
            f"{p} missing (needed by {', '.join(ds)})" for p, ds in sorted(missing.items())
        )
        fix = "; ".join(grant_fix(tenant.client_id, api.resource, p) for p in sorted(missing))
        return Check(area, name, False, detail, fix)
    if later:
        detail = "; ".join(
            f"{p} missing: needed by {', '.join(ds)} once the tenant has "
            f"{tenant.files_threshold_devices} devices (export_mode auto); "
            + grant_fix(tenant.client_id, api.resource, p)
            for p, ds in sorted(later.items())
        )
        return Check(area, name, None, detail)
    return Check(area, name, True, "granted: " + ", ".join(sorted(api.needed)))


def _probes(
    tenant: TenantConfig, client: ApiClient, api: _Api, granted: set[str], area: str
) -> list[Check]:
    """One cheap call per API, with the permission it needs."""
    probes: list[tuple[str, str, str, dict[str, str] | None, Any, str]] = []
    if api.label == "MDE":
        if "Machine.Read.All" in api.needed or "Machine.Read.All" in granted:
            probes.append(
                (
                    "GET",
                    f"{tenant.mde_base_url}/api/machines",
                    "machines",
                    {"$top": "1"},
                    None,
                    "Machine.Read.All",
                )
            )
        if "AdvancedQuery.Read.All" in api.needed:
            url = f"{tenant.mde_base_url}/api/advancedqueries/run"
            body = {"Query": _PROBE_QUERY}
            probes.append(("POST", url, "advanced_hunting", None, body, "AdvancedQuery.Read.All"))
    elif "ThreatHunting.Read.All" in api.needed:
        url = f"{tenant.graph_base_url}/security/runHuntingQuery"
        body = {"Query": _PROBE_QUERY}
        probes.append(("POST", url, "advanced_hunting", None, body, "ThreatHunting.Read.All"))
    if not probes:
        return [
            Check(
                area,
                f"{api.label} API",
                None,
                f"not called: the cheap calls need Machine.Read.All, which {tenant.name!r} "
                "neither has nor needs",
            )
        ]
    return [_probe(tenant, client, api, area, granted, *probe) for probe in probes]


def _probe(
    tenant: TenantConfig,
    client: ApiClient,
    api: _Api,
    area: str,
    granted: set[str],
    method: str,
    url: str,
    budget: str,
    params: dict[str, str] | None,
    body: Any,
    permission: str,
) -> Check:
    what = f"{method} {urlsplit(url).path}"
    if params:
        what += "?" + "&".join(f"{k}={v}" for k, v in params.items())
    if body is not None:
        what += f" ({body['Query']})"
    name = f"{api.label} API"
    try:
        answer = client.request_json(
            method,
            url,
            scope=api.scope,
            budget=RateBudget(DOCUMENTED_LIMITS[budget]),
            params=params,
            json_body=body,
        )
    except AuthError as exc:
        if "-> 403" in str(exc) and permission in granted:
            # The MDE API answers a token for another resource with 403 too, not 401
            # (MicrosoftDocs/microsoft-365-docs#9246): with the role granted, that is the cause.
            fix = (
                f"The token carries {permission}, so the API refused the token itself: "
                f"{api.label.lower()}_scope ({api.scope}) of [[tenants]] {tenant.name!r} must "
                f"be this API's resource, e.g. {_DEFAULT_SCOPES.get(api.label, api.scope)}"
            )
        elif "-> 403" in str(exc):
            fix = grant_fix(tenant.client_id, api.resource, permission)
        else:
            fix = (
                f"The API refused a fresh token: check that {api.label.lower()}_scope "
                f"({api.scope}) and the API's base URL of [[tenants]] {tenant.name!r} belong "
                "to the same cloud"
            )
        return Check(area, name, False, str(exc), fix)
    except EpfError as exc:
        fix = (
            f"Check the base URL of [[tenants]] {tenant.name!r} and that this machine can reach "
            "it; a TLS-inspecting proxy needs ca_bundle"
        )
        return Check(area, name, False, str(exc), fix)
    rows = _count(answer)
    return Check(area, name, True, f"{what} answered ({rows} row{'s' * (rows != 1)})")


def _count(answer: Any) -> int:
    if isinstance(answer, dict):
        for key, value in answer.items():
            if key.lower() in ("value", "results") and isinstance(value, list):
                return len(value)
    return 0

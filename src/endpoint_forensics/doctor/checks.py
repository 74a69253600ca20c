"""What ``epf doctor`` reports, and the words for what an admin must fix.

Owns ``Check`` (one finding), reading an access token's claims (no signature check: the doctor
only reads what the authority granted), and turning an Entra refusal (its AADSTS code) into
the step that fixes it. May import ``config`` only.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Any

from endpoint_forensics.config import SentinelConfig, TenantConfig

__all__ = [
    "GRAPH_RESOURCE",
    "MDE_RESOURCE",
    "Check",
    "grant_fix",
    "refusal_fix",
    "token_claims",
]

MDE_RESOURCE = "WindowsDefenderATP"
GRAPH_RESOURCE = "Microsoft Graph"
_AADSTS = re.compile(r"AADSTS(\d+)")


@dataclass(frozen=True)
class Check:
    """One finding: ``ok`` True (fine), False (a failure: ``fix`` says what to do) or None (a
    warning, or not checked because something before it failed)."""

    area: str  # "tenant contoso", "sensor plant-1", "sentinel", "local"
    name: str  # "MDE token", "TLS", "route EPF_Devices_CL"
    ok: bool | None
    detail: str
    fix: str = ""


def token_claims(token: str) -> dict[str, Any]:
    """The payload of a JWT access token (base64url JSON); {} when it is not one."""
    parts = token.split(".")
    if len(parts) != 3:
        return {}
    try:
        payload = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4))
        claims = json.loads(payload)
    except (binascii.Error, ValueError):
        return {}
    return claims if isinstance(claims, dict) else {}


def grant_fix(client_id: str, resource: str, permission: str) -> str:
    """The portal steps that grant one application permission."""
    where = f"{resource} (APIs my organization uses)" if resource == MDE_RESOURCE else resource
    return (
        f"In Entra ID > App registrations > {client_id} > API permissions, add {where} > "
        f"Application permissions > {permission}, then Grant admin consent"
    )


def refusal_fix(message: str, config: TenantConfig | SentinelConfig, where: str) -> str:
    """What to change when the authority refused ``config``'s credential with ``message``.

    ``where`` names the config block (``[[tenants]] "contoso"``, ``[sentinel]``).
    """
    match = _AADSTS.search(message)
    code = int(match.group(1)) if match else None
    app = f"Entra ID > App registrations > {config.client_id}"
    secret = config.client_secret
    source = f" (now read from {secret.source})" if secret and secret.source != "literal" else ""
    if getattr(config, "managed_identity", False):
        return (
            "No managed identity answered: run epf on the Azure resource that has the identity "
            f"(and set managed_identity_client_id for a user-assigned one), or give {where} "
            "client_secret or certificate_path instead"
        )
    if code == 7000222:
        return (
            f"The client secret has expired: in {app} > Certificates & secrets, create a new "
            f"client secret and put its Value in client_secret of {where}{source}"
        )
    if code in (7000215, 7000216):
        return (
            f"The client secret is not the app's: in {app} > Certificates & secrets, create a "
            f"new client secret and put its Value (not its Secret ID) in client_secret of "
            f"{where}{source}"
        )
    if code == 700016:
        return (
            f"No app with client id {config.client_id} exists in tenant {config.tenant_id}: set "
            f"client_id of {where} to the app's Application (client) ID and tenant_id to its "
            "Directory (tenant) ID (both on the app's Overview page)"
        )
    # Without instance discovery (an emulated or sovereign authority) MSAL says it this way.
    if code in (90002, 900023, 90072) or "authority configuration" in message:
        return (
            f"Tenant {config.tenant_id} is not known to {config.authority_host}: set tenant_id "
            f"of {where} to the Directory (tenant) ID on the app's Overview page"
        )
    if code in (700027, 700024, 700021, 50027):
        return (
            f"The certificate in certificate_path of {where} is not one the app knows: upload "
            f"its public part in {app} > Certificates & secrets > Certificates, or point "
            "certificate_path at the certificate registered there (private key included)"
        )
    return (
        f"Check tenant_id, client_id and the secret or certificate of {where} against {app} "
        "(Overview, Certificates & secrets)"
    )

"""Secrets from Azure Key Vault: the ``keyvault:`` references of the config, read at load time.

Owns the reference syntax, the credential the ``[keyvault]`` section names, one
``SecretClient`` per vault (each secret fetched once) and turning azure-core errors into reasons
that name the vault and the secret, never a value (defender-apis.md A.2, A.7).

Reference forms (``<version>`` is optional: without it, the current version):

- ``keyvault:<vault name>/<secret>[/<version>]``: ``https://<vault name>.vault.azure.net``;
- ``keyvault:https://<vault host>/<secret>[/<version>]``: any vault URL (sovereign clouds, the
  emulator);
- ``keyvault:https://<vault host>/secrets/<secret>[/<version>]``: the secret identifier the
  portal shows. A path starting with ``/secrets/`` is always read this way.

The SDK's challenge flow finds the tenant and the resource: the first request goes without a
token, the vault answers 401 with ``WWW-Authenticate: Bearer authorization=".../<tenant>",
resource="https://vault.azure.net"``, and the request is retried with a token for that resource.
The SDK checks that the resource matches the vault's host; for hosts outside the public and
sovereign Key Vault domains (the emulator) that check is off.

``resolve_references`` is the config loader's ``KeyVaultResolver``: the commands pass it to
``load_settings``, so the config imports no identity code.
May import ``identity.credentials``, ``config`` and ``errors``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from endpoint_forensics.config import KeyVaultConfig, Secret, SecretReferenceError
from endpoint_forensics.identity.credentials import build_credential, first_line

__all__ = [
    "API_VERSION",
    "PUBLIC_VAULT_SUFFIX",
    "SecretFetchError",
    "SecretReference",
    "fetch_secrets",
    "parse_reference",
    "resolve_references",
]

PREFIX = "keyvault:"
PUBLIC_VAULT_SUFFIX = "vault.azure.net"
#: The documented version (A.7); every cloud serves it, unlike the SDK's newest default.
API_VERSION = "7.4"
# Hosts whose challenge resource the SDK may check: public, US Government, China, Germany.
_KEY_VAULT_SUFFIXES = (
    "vault.azure.net",
    "vault.azure.us",
    "vault.azure.cn",
    "vault.usgovcloudapi.net",
    "vault.microsoftazure.de",
)
_VAULT_NAME = re.compile(r"^[A-Za-z](?!.*--)[A-Za-z0-9-]{1,22}[A-Za-z0-9]$")
_SECRET_NAME = re.compile(r"^[0-9A-Za-z-]{1,127}$")
_VERSION = re.compile(r"^[0-9A-Fa-f]{32}$")
# Load-time reads: an unreachable vault fails in seconds, not azure-core's five minutes.
_CONNECT_TIMEOUT_SECONDS = 10
_READ_TIMEOUT_SECONDS = 30
_ACCESS_DENIED = "access denied (grant 'Key Vault Secrets User' or a get policy)"


@dataclass(frozen=True)
class SecretReference:
    """One secret (one version of it, or its current one) in one vault."""

    vault_url: str
    name: str
    version: str | None = None

    @property
    def text(self) -> str:
        """The canonical reference, safe to show (it is where the secret is, not what)."""
        suffix = f"/{self.version}" if self.version else ""
        return f"{PREFIX}{self.vault_url}/secrets/{self.name}{suffix}"

    def describe(self) -> str:
        version = f" version {self.version}" if self.version else ""
        return f"Key Vault {self.vault_url} secret {self.name}{version}"


class SecretFetchError(Exception):
    """A reference could not be read; the message says why and names no value.

    ``reference`` is the secret that failed, or None when the ``[keyvault]`` credential itself
    is unusable (then ``setting`` is the key to fix).
    """

    def __init__(
        self, message: str, *, reference: SecretReference | None, setting: str = "keyvault"
    ) -> None:
        super().__init__(message)
        self.reference = reference
        self.setting = setting


def parse_reference(text: str) -> SecretReference:
    """Parse ``keyvault:<vault>/<secret>[/<version>]`` (see the module docstring).

    Raises:
        ValueError: not one of the forms, or a name Key Vault would not accept.
    """
    body = text.removeprefix(PREFIX)
    if body.lower().startswith("https://"):
        parts = urlsplit(body)
        if not parts.hostname or parts.query or parts.fragment:
            raise ValueError(f"{text!r} is not a Key Vault URL with a secret name")
        vault_url = f"https://{parts.netloc.lower()}"
        segments = parts.path.strip("/").split("/")
        if segments[0].lower() == "secrets" and len(segments) in (2, 3):
            segments = segments[1:]  # the secret identifier form
    elif "://" in body:
        raise ValueError(f"{text!r}: a Key Vault URL must be https://")
    else:
        vault, _, rest = body.partition("/")
        if not _VAULT_NAME.match(vault):
            raise ValueError(
                f"{text!r}: {vault!r} is not a vault name (3-24 letters, digits and single "
                "hyphens, starting with a letter) or an https:// URL"
            )
        vault_url = f"https://{vault.lower()}.{PUBLIC_VAULT_SUFFIX}"
        segments = rest.split("/")
    if not 1 <= len(segments) <= 2 or not _SECRET_NAME.match(segments[0]):
        raise ValueError(
            f"{text!r}: expected keyvault:<vault>/<secret>[/<version>], the secret name being "
            "1-127 letters, digits and hyphens"
        )
    version = segments[1] if len(segments) == 2 else None
    if version is not None and not _VERSION.match(version):
        raise ValueError(f"{text!r}: the version must be 32 hex digits")
    return SecretReference(vault_url, segments[0], version.lower() if version else None)


def resolve_references(config: KeyVaultConfig, texts: Sequence[str]) -> dict[str, Secret]:
    """Parse and read ``keyvault:`` references as written: the config's ``KeyVaultResolver``.

    Raises:
        SecretReferenceError: a malformed reference, one that could not be read (both named
            as written, with every other text for the same secret), or an unusable credential.
    """
    parsed: dict[str, SecretReference] = {}
    for text in texts:
        try:
            parsed[text] = parse_reference(text)
        except ValueError as exc:
            raise SecretReferenceError(str(exc), references=(text,)) from None
    try:
        fetched = fetch_secrets(config, parsed.values())
    except SecretFetchError as exc:
        failed = [text for text, ref in parsed.items() if ref == exc.reference]
        raise SecretReferenceError(str(exc), references=failed, setting=exc.setting) from None
    return {text: fetched[ref] for text, ref in parsed.items()}


def fetch_secrets(
    config: KeyVaultConfig, references: Iterable[SecretReference]
) -> dict[SecretReference, Secret]:
    """Read every reference with ``config``'s identity: one client per vault, each once.

    Raises:
        SecretFetchError: the first reference that could not be read, or an unusable credential.
    """
    from azure.keyvault.secrets import SecretClient

    by_vault: dict[str, list[SecretReference]] = {}
    for ref in dict.fromkeys(references):
        by_vault.setdefault(ref.vault_url, []).append(ref)
    fetched: dict[SecretReference, Secret] = {}
    credential = _credential(config)
    try:
        for vault_url, refs in by_vault.items():
            options: dict[str, Any] = {
                "verify_challenge_resource": _is_key_vault_host(vault_url),
                "api_version": API_VERSION,
                "connection_timeout": _CONNECT_TIMEOUT_SECONDS,
                "read_timeout": _READ_TIMEOUT_SECONDS,
            }
            if config.ca_bundle is not None:
                options["connection_verify"] = str(config.ca_bundle)
            with SecretClient(vault_url, credential, **options) as client:
                for ref in refs:
                    fetched[ref] = _fetch(client, ref, config)
    finally:
        credential.close()
    return fetched


def _fetch(client: Any, ref: SecretReference, config: KeyVaultConfig) -> Secret:
    from azure.core.exceptions import (
        ClientAuthenticationError,
        HttpResponseError,
        ResourceNotFoundError,
        ServiceRequestError,
    )

    try:
        secret = client.get_secret(ref.name, ref.version)
    except ResourceNotFoundError:
        raise SecretFetchError(f"{ref.describe()}: not found", reference=ref) from None
    except ClientAuthenticationError as exc:
        # From the authority (wrong secret, no managed identity) or from the vault (a 401
        # after the challenge): either way the identity is what to fix.
        reason = first_line(exc.message or str(exc))
        raise SecretFetchError(
            f"{ref.describe()}: the [keyvault] identity was refused: {reason}", reference=ref
        ) from None
    except ServiceRequestError as exc:
        raise SecretFetchError(
            f"{ref.describe()}: {_unreachable(exc, ref, config)}", reference=ref
        ) from None
    except HttpResponseError as exc:
        detail = first_line(exc.message or "")
        if exc.status_code == 403:
            reason = f"{_ACCESS_DENIED}: {detail}" if detail else _ACCESS_DENIED
        else:
            reason = f"the vault answered HTTP {exc.status_code}: {detail}"
        raise SecretFetchError(f"{ref.describe()}: {reason}", reference=ref) from None
    if not secret.value:
        raise SecretFetchError(f"{ref.describe()}: the secret is empty", reference=ref)
    return Secret(secret.value, source=ref.text)


def _credential(config: KeyVaultConfig) -> Any:
    """The azure-identity credential ``[keyvault]`` names."""
    try:
        return build_credential(config)
    except (ValueError, OSError) as exc:
        raise SecretFetchError(
            f"cannot use the certificate: {first_line(str(exc))}",
            reference=None,
            setting="keyvault.certificate_path",
        ) from None


def _is_key_vault_host(vault_url: str) -> bool:
    host = (urlsplit(vault_url).hostname or "").lower()
    return any(host.endswith(f".{suffix}") for suffix in _KEY_VAULT_SUFFIXES)


def _unreachable(exc: Exception, ref: SecretReference, config: KeyVaultConfig) -> str:
    text = str(exc)
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return "vault unreachable: its TLS certificate is not trusted; set [keyvault] ca_bundle"
    authority = urlsplit(config.authority_host).hostname or ""
    vault = urlsplit(ref.vault_url).hostname or ""
    if authority and authority != vault and authority in text:
        return f"cannot reach the authority {config.authority_host}: {first_line(text)}"
    return f"vault unreachable: {first_line(text)}"

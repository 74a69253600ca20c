"""Credentials to bearer tokens, cached per scope and refreshed early.

Owns token acquisition for a tenant (azure-identity: client secret or certificate) and the
conversion of azure-core errors into ours. Tokens are refreshed 5 minutes before they expire
(or halfway through a shorter lifetime), and ``invalidate`` forces a new one after a 401.
May import ``config`` and ``errors`` only.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from endpoint_forensics.config import AppIdentity, Secret, TenantConfig
from endpoint_forensics.errors import (
    CertificateUntrusted,
    ConfigError,
    CredentialRefused,
    TransientError,
)

__all__ = [
    "REFRESH_EARLY_SECONDS",
    "CredentialTokenProvider",
    "StaticToken",
    "TokenProvider",
    "build_credential",
    "first_line",
]

log = logging.getLogger(__name__)

REFRESH_EARLY_SECONDS = 300


class TokenProvider(Protocol):
    def get_token(self, scope: str) -> str: ...

    def invalidate(self, scope: str) -> None: ...


class StaticToken:
    """A token that is what it is: a Defender for IoT access token (C.1) does not expire and
    cannot be renewed by the collector."""

    def __init__(self, token: Secret) -> None:
        self._token = token

    def get_token(self, scope: str) -> str:
        return self._token.reveal()

    def invalidate(self, scope: str) -> None:
        pass


@dataclass
class _Cached:
    token: str
    expires_on: float
    acquired_at: float

    def fresh(self, now: float) -> bool:
        lifetime = self.expires_on - self.acquired_at
        margin = min(REFRESH_EARLY_SECONDS, lifetime / 2)
        return now < self.expires_on - margin


class CredentialTokenProvider:
    """Tokens for one tenant from an azure-identity credential, cached per scope."""

    def __init__(self, tenant: TenantConfig, *, clock: Callable[[], float] = time.time) -> None:
        self._tenant = tenant
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: dict[str, _Cached] = {}
        self._credential: Any = None
        self.acquired = 0  # tokens fetched from the authority, for the run record

    def get_token(self, scope: str) -> str:
        """Return a bearer token for ``scope``, from the cache while it is fresh.

        Raises:
            CredentialRefused: the authority refused the credential (wrong secret, unknown app).
            CertificateUntrusted: the authority's TLS certificate is not trusted (ca_bundle).
            TransientError: the authority could not be reached.
        """
        with self._lock:
            cached = self._cache.get(scope)
            now = self._clock()
            if cached is not None and cached.fresh(now):
                return cached.token
            token, expires_on = self._acquire(scope)
            self._cache[scope] = _Cached(token, float(expires_on), now)
            self.acquired += 1
            return token

    def invalidate(self, scope: str) -> None:
        """Forget the cached token for ``scope`` (the API answered 401)."""
        with self._lock:
            self._cache.pop(scope, None)
            # azure-identity keeps its own cache; a new credential object starts empty.
            self._credential = None

    def close(self) -> None:
        with self._lock:
            if self._credential is not None:
                self._credential.close()
                self._credential = None

    def _acquire(self, scope: str) -> tuple[str, int]:
        from azure.core.exceptions import ClientAuthenticationError, ServiceRequestError

        if self._credential is None:
            try:
                self._credential = build_credential(self._tenant)
            except (ValueError, OSError) as exc:
                # azure-identity reads the certificate here: a file it cannot use is the config's.
                raise ConfigError(
                    f"tenant {self._tenant.name!r}: certificate_path: {first_line(str(exc))}"
                ) from exc
        try:
            access = self._credential.get_token(scope)
        except (ClientAuthenticationError, ServiceRequestError) as exc:
            if "CERTIFICATE_VERIFY_FAILED" in str(exc):
                raise CertificateUntrusted(
                    f"tenant {self._tenant.name!r}: the TLS certificate of the authority "
                    f"{self._tenant.authority_host} is not trusted; set ca_bundle to the CA "
                    "that issued it"
                ) from exc
            if isinstance(exc, ServiceRequestError):
                raise TransientError(
                    f"tenant {self._tenant.name!r}: cannot reach the authority "
                    f"{self._tenant.authority_host}: {first_line(str(exc))}"
                ) from exc
            raise CredentialRefused(
                f"tenant {self._tenant.name!r}: the authority refused the app's credentials: "
                f"{first_line(exc.message or str(exc))}"
            ) from exc
        return access.token, access.expires_on


def build_credential(identity: AppIdentity) -> Any:
    """The azure-identity credential a config names: a client secret, a certificate, or the
    host's managed identity.

    Raises:
        ValueError, OSError: azure-identity cannot use the certificate file.
    """
    from azure.identity import CertificateCredential, ClientSecretCredential

    if identity.managed_identity:
        from azure.identity import ManagedIdentityCredential

        return ManagedIdentityCredential(client_id=identity.managed_identity_client_id or None)
    options: dict[str, Any] = {
        "authority": identity.authority_host,
        "retry_policy_class": _trust_failures_not_retried(),
        # Instance discovery asks login.microsoftonline.com about the authority; a sovereign
        # or emulated authority host answers for itself.
        "disable_instance_discovery": not identity.authority_is_known,
    }
    if identity.ca_bundle is not None:
        options["connection_verify"] = str(identity.ca_bundle)
    if identity.client_secret is not None:
        return ClientSecretCredential(
            identity.tenant_id, identity.client_id, identity.client_secret.reveal(), **options
        )
    assert identity.certificate_path is not None  # guaranteed by AppIdentity
    password = identity.certificate_password.reveal() if identity.certificate_password else None
    return CertificateCredential(
        identity.tenant_id,
        identity.client_id,
        str(identity.certificate_path),
        password=password,
        **options,
    )


@functools.cache
def _trust_failures_not_retried() -> type:
    """azure-core's retry policy, except that an untrusted certificate is not retried: it is
    configuration, and each retry only adds its backoff (seconds) before the same answer."""
    from azure.core.pipeline.policies import RetryPolicy

    class TrustFailuresNotRetried(RetryPolicy):  # type: ignore[type-arg]
        def increment(self, settings: Any, response: Any = None, error: Any = None) -> bool:
            if error is not None and "CERTIFICATE_VERIFY_FAILED" in str(error):
                return False
            return bool(super().increment(settings, response=response, error=error))

    return TrustFailuresNotRetried


def first_line(text: str) -> str:
    """The useful part of an Entra error: its first line, without trace and correlation ids."""
    for marker in ("\r\n", "\n", " Trace ID:"):
        text = text.split(marker)[0]
    text = text.strip()
    # azure-identity prefixes "Authentication failed: " or the credential name.
    for prefix in ("ClientSecretCredential.get_token failed: ", "Authentication failed: "):
        text = text.removeprefix(prefix)
    return text[:300]

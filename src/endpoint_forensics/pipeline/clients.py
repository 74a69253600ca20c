"""The HTTP clients a run uses: a Defender tenant's (Entra tokens, the configured trust
store), an IoT appliance's (a raw token, a CA bundle or a pinned certificate) and the threat
feeds' (no credentials; the system's trust store or a CA bundle). May import
``http``, ``identity`` and ``config``.
"""

from __future__ import annotations

import ssl

from endpoint_forensics.config import ConsoleConfig, FeedsConfig, SensorConfig, TenantConfig
from endpoint_forensics.http.client import RAW_TOKEN, ApiClient
from endpoint_forensics.http.tls import client_ssl_context
from endpoint_forensics.identity.credentials import CredentialTokenProvider, StaticToken

__all__ = ["appliance_client", "feed_client", "tenant_client"]


def tenant_client(tenant: TenantConfig) -> ApiClient:
    # A configured bundle replaces the default trust store, as `curl --cacert` and the Azure
    # SDK's connection_verify do, so the token endpoint and the APIs trust the same CAs.
    verify = ssl.create_default_context(cafile=str(tenant.ca_bundle)) if tenant.ca_bundle else True
    return ApiClient(
        CredentialTokenProvider(tenant),
        verify=verify,
        timeout_seconds=tenant.timeout_seconds,
        max_retries=tenant.max_retries,
    )


def appliance_client(appliance: SensorConfig | ConsoleConfig) -> ApiClient:
    verify = client_ssl_context(
        ca_bundle=appliance.ca_bundle, fingerprint=appliance.certificate_fingerprint
    )
    return ApiClient(
        StaticToken(appliance.token),
        verify=verify,
        timeout_seconds=appliance.timeout_seconds,
        max_retries=appliance.max_retries,
        auth_style=RAW_TOKEN,
    )


class _NoToken:
    """The feeds are public: nothing to authenticate with (the client only downloads)."""

    def get_token(self, scope: str) -> str:
        raise AssertionError("the feeds' client sends no authenticated request")

    def invalidate(self, scope: str) -> None:
        return None


def feed_client(feeds: FeedsConfig) -> ApiClient:
    verify = ssl.create_default_context(cafile=str(feeds.ca_bundle)) if feeds.ca_bundle else True
    return ApiClient(
        _NoToken(),
        verify=verify,
        timeout_seconds=feeds.timeout_seconds,
        max_retries=feeds.max_retries,
    )

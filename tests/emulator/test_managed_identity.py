"""The emulated App Service / Functions managed identity endpoint, and azure-identity against it."""

from __future__ import annotations

import time

import httpx
import pytest
from azure.core.exceptions import ClientAuthenticationError, ServiceRequestError
from azure.identity import ManagedIdentityCredential

from epf_emulator import Emulator, EmulatorSettings

from .conftest import MDE, bearer, claims_of, client_for

MONITOR = "https://monitor.azure.com"


@pytest.fixture
def identity_env(emu: Emulator, monkeypatch: pytest.MonkeyPatch) -> Emulator:
    """The environment the Functions host gives a worker with a managed identity."""
    monkeypatch.setenv("IDENTITY_ENDPOINT", emu.managed_identity_endpoint)
    monkeypatch.setenv("IDENTITY_HEADER", emu.managed_identity_header)
    monkeypatch.delenv("IDENTITY_SERVER_THUMBPRINT", raising=False)  # that is Service Fabric
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    return emu


def _get(emu: Emulator, *, header: str | None = None, **params: str) -> httpx.Response:
    query = {"api-version": "2019-08-01", "resource": MONITOR, **params}
    headers = {} if header is None else {"X-IDENTITY-HEADER": header}
    with client_for(emu) as client:
        return client.get(emu.managed_identity_endpoint, params=query, headers=headers)


def test_the_endpoint_answers_the_app_service_shape(emu: Emulator) -> None:
    before = emu.stats()["tokens_issued"]
    response = _get(emu, header=emu.managed_identity_header)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"access_token", "expires_on", "resource", "token_type", "client_id"}
    assert body["resource"] == MONITOR and body["token_type"] == "Bearer"
    assert isinstance(body["expires_on"], str)  # epoch seconds as a string, as App Service
    claims = claims_of(body["access_token"])
    assert int(body["expires_on"]) == claims["exp"] > time.time() + 3000
    assert claims["aud"] == MONITOR
    assert claims["tid"] == emu.tenant_id and claims["appid"] == emu.client_id
    assert emu.stats()["tokens_issued"] == before + 1


@pytest.mark.parametrize("header", [None, "", "not-the-header"])
def test_a_missing_or_wrong_header_is_refused(emu: Emulator, header: str | None) -> None:
    before = emu.stats()["tokens_issued"]
    response = _get(emu, header=header)
    assert response.status_code == 401
    body = response.json()
    assert body["statusCode"] == 401 and "X-IDENTITY-HEADER" in body["message"]
    assert "access_token" not in body
    assert emu.stats()["tokens_issued"] == before


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"api-version": "2017-09-01"}, "api-version"),
        ({"resource": "https://unknown.example.com"}, "not a known resource"),
        ({"client_id": "00000000-0000-0000-0000-000000000000"}, "No Managed Identity found"),
        ({"mi_res_id": "/subscriptions/x/resourceGroups/y"}, "No Managed Identity found"),
    ],
)
def test_bad_requests_get_the_platform_error_shape(
    emu: Emulator, params: dict[str, str], fragment: str
) -> None:
    response = _get(emu, header=emu.managed_identity_header, **params)
    assert response.status_code == 400
    body = response.json()
    assert body["statusCode"] == 400 and fragment in body["message"]
    assert body["correlationId"]


def test_only_get_is_served(emu: Emulator) -> None:
    with client_for(emu) as client:
        response = client.post(
            emu.managed_identity_endpoint,
            params={"api-version": "2019-08-01", "resource": MONITOR},
            headers={"X-IDENTITY-HEADER": emu.managed_identity_header},
        )
    assert response.status_code == 405


def test_azure_identity_gets_a_token_trusting_the_ca_through_requests_ca_bundle(
    identity_env: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    emu = identity_env
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(emu.ca_path))
    credential = ManagedIdentityCredential()
    try:
        access = credential.get_token(f"{MDE}/.default")
    finally:
        credential.close()
    claims = claims_of(access.token)
    assert claims["aud"] == MDE and claims["appid"] == emu.client_id
    assert access.expires_on == claims["exp"]
    # The emulated APIs take it like any token of the app.
    with client_for(emu) as client:
        response = client.get(
            f"{emu.base_url}/api/machines", params={"$top": "1"}, headers=bearer(access.token)
        )
    assert response.status_code == 200, response.text


def test_azure_identity_takes_the_ca_as_connection_verify_for_a_user_assigned_identity(
    identity_env: Emulator,
) -> None:
    emu = identity_env
    credential = ManagedIdentityCredential(
        client_id=emu.client_id, connection_verify=str(emu.ca_path)
    )
    try:
        access = credential.get_token(f"{MONITOR}/.default")
    finally:
        credential.close()
    assert claims_of(access.token)["aud"] == MONITOR


def test_another_user_assigned_identity_is_refused_through_azure_identity(
    identity_env: Emulator,
) -> None:
    credential = ManagedIdentityCredential(
        client_id="11111111-2222-3333-4444-555555555555",
        connection_verify=str(identity_env.ca_path),
    )
    try:
        with pytest.raises(ClientAuthenticationError, match="No Managed Identity found"):
            credential.get_token(f"{MONITOR}/.default")
    finally:
        credential.close()


def test_without_the_test_ca_azure_identity_does_not_trust_the_endpoint(
    identity_env: Emulator,
) -> None:
    # The system trust store does not know the emulator's CA: the flow needs one of the above.
    credential = ManagedIdentityCredential(retry_total=0)
    try:
        with pytest.raises(ServiceRequestError, match="CERTIFICATE_VERIFY_FAILED"):
            credential.get_token(f"{MONITOR}/.default")
    finally:
        credential.close()


def test_a_configured_header_secret_is_the_one_served() -> None:
    settings = EmulatorSettings(devices=5, iot_sensors=0, managed_identity_header="fixed-secret")
    with Emulator(settings) as emu:
        assert emu.managed_identity_header == "fixed-secret"
        assert _get(emu, header="fixed-secret").status_code == 200
        assert emu.managed_identity_endpoint == f"{emu.base_url}/msi/token"


def test_each_start_has_its_own_header_secret() -> None:
    settings = EmulatorSettings(devices=5, iot_sensors=0)
    with Emulator(settings) as first:
        secret = first.managed_identity_header
        assert len(secret) >= 24
    with Emulator(settings) as second:
        assert second.managed_identity_header != secret
        assert _get(second, header=secret).status_code == 401

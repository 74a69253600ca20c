"""The emulated Entra token endpoint, azure-identity against it, and token checks on the APIs."""

from __future__ import annotations

import base64
import time
from typing import Any

import httpx
import pytest
from azure.core.exceptions import ClientAuthenticationError
from azure.identity import ClientSecretCredential

from epf_emulator import Emulator, EmulatorSettings

from .conftest import GRAPH, MDE, bearer, claims_of, client_for, get_token, hunt

ROLES = {
    "Machine.Read.All",
    "Vulnerability.Read.All",
    "Software.Read.All",
    "SecurityRecommendation.Read.All",
    "AdvancedQuery.Read.All",
    "ThreatHunting.Read.All",
    "Score.Read.All",
}


def _token_request(
    client: httpx.Client, emu: Emulator, *, tenant: str | None = None, **form: str
) -> httpx.Response:
    data = {
        "grant_type": "client_credentials",
        "client_id": emu.client_id,
        "client_secret": emu.client_secret,
        "scope": f"{MDE}/.default",
    }
    data.update(form)
    return client.post(f"{emu.base_url}/{tenant or emu.tenant_id}/oauth2/v2.0/token", data=data)


def _assert_entra_error(
    response: httpx.Response, status: int, error: str, code: int
) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["error"] == error
    assert body["error_description"].startswith(f"AADSTS{code}:")
    assert body["error_codes"] == [code]
    for key in ("timestamp", "trace_id", "correlation_id"):
        assert body[key]
    return body


def test_client_credentials_token(emu: Emulator, client: httpx.Client) -> None:
    response = _token_request(client, emu)
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3599 and isinstance(body["expires_in"], int)
    assert body["ext_expires_in"] == 3599
    claims = claims_of(body["access_token"])
    assert body["access_token"].startswith("eyJ") and body["access_token"].count(".") == 2
    assert claims["aud"] == MDE
    assert claims["tid"] == emu.tenant_id
    assert claims["appid"] == emu.client_id
    assert set(claims["roles"]) == ROLES
    assert claims["exp"] - claims["iat"] == 3599
    assert claims["nbf"] <= claims["iat"]


@pytest.mark.parametrize(
    ("scope", "audience"),
    [
        (
            "https://api.securitycenter.microsoft.com/.default",
            "https://api.securitycenter.microsoft.com",
        ),
        ("https://api.security.microsoft.com/.default", "https://api.security.microsoft.com"),
        (
            "https://securitycenter.onmicrosoft.com/windowsatpservice/.default",
            "https://securitycenter.onmicrosoft.com/windowsatpservice",
        ),
        ("https://graph.microsoft.com/.default", "https://graph.microsoft.com"),
        ("https://monitor.azure.com/.default", "https://monitor.azure.com"),
        # Entra keeps the resource as asked for: the tutorial's "//" scope gives a trailing slash.
        ("https://monitor.azure.com//.default", "https://monitor.azure.com/"),
        (
            "00000003-0000-0000-c000-000000000000/.default",
            "00000003-0000-0000-c000-000000000000",
        ),
    ],
)
def test_every_documented_resource_gets_a_token(
    emu: Emulator, client: httpx.Client, scope: str, audience: str
) -> None:
    response = _token_request(client, emu, scope=scope)
    assert response.status_code == 200, response.text
    assert claims_of(response.json()["access_token"])["aud"] == audience


def test_http_basic_client_authentication(emu: Emulator, client: httpx.Client) -> None:
    credentials = base64.b64encode(f"{emu.client_id}:{emu.client_secret}".encode()).decode()
    response = client.post(
        f"{emu.base_url}/{emu.tenant_id}/oauth2/v2.0/token",
        data={"grant_type": "client_credentials", "scope": f"{GRAPH}/.default"},
        headers={"Authorization": f"Basic {credentials}"},
    )
    assert response.status_code == 200, response.text
    assert claims_of(response.json()["access_token"])["aud"] == GRAPH


def test_token_errors_in_the_entra_shape(emu: Emulator, client: httpx.Client) -> None:
    body = _assert_entra_error(
        _token_request(client, emu, tenant="00000000-0000-0000-0000-000000000000"),
        400,
        "invalid_request",
        90002,
    )
    assert "not found" in body["error_description"]
    _assert_entra_error(
        _token_request(client, emu, client_id="11111111-1111-1111-1111-111111111111"),
        400,
        "unauthorized_client",
        700016,
    )
    body = _assert_entra_error(
        _token_request(client, emu, client_secret="not-the-secret"), 401, "invalid_client", 7000215
    )
    assert "Invalid client secret provided" in body["error_description"]
    _assert_entra_error(
        _token_request(client, emu, scope="https://example.com/.default"),
        400,
        "invalid_scope",
        70011,
    )
    _assert_entra_error(
        _token_request(client, emu, scope=MDE), 400, "invalid_scope", 70011
    )  # no /.default
    _assert_entra_error(
        _token_request(client, emu, grant_type="password"), 400, "unsupported_grant_type", 70003
    )


def test_the_discovery_document_points_back_at_the_emulator(
    emu: Emulator, client: httpx.Client
) -> None:
    response = client.get(f"{emu.base_url}/{emu.tenant_id}/v2.0/.well-known/openid-configuration")
    assert response.status_code == 200
    document = response.json()
    assert document["token_endpoint"] == f"{emu.base_url}/{emu.tenant_id}/oauth2/v2.0/token"
    assert document["issuer"] == f"{emu.base_url}/{emu.tenant_id}/v2.0"
    assert document["authorization_endpoint"].startswith(f"{emu.base_url}/{emu.tenant_id}/")


def test_legacy_v1_token_endpoint(emu: Emulator, client: httpx.Client) -> None:
    response = client.post(
        f"{emu.base_url}/{emu.tenant_id}/oauth2/token",
        data={
            "grant_type": "client_credentials",
            "client_id": emu.client_id,
            "client_secret": emu.client_secret,
            "resource": MDE,
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["expires_in"] == "3599"  # strings in v1
    assert claims_of(body["access_token"])["aud"] == MDE


def test_azure_identity_client_secret_credential(emu: Emulator) -> None:
    credential = ClientSecretCredential(
        emu.tenant_id,
        emu.client_id,
        emu.client_secret,
        authority=emu.base_url,
        disable_instance_discovery=True,
        connection_verify=str(emu.ca_path),
    )
    with credential:
        token = credential.get_token("https://api.securitycenter.microsoft.com/.default")
    assert claims_of(token.token)["aud"] == MDE
    assert token.expires_on > time.time() + 3000


def test_azure_identity_wrong_secret_raises_with_the_aadsts_code(emu: Emulator) -> None:
    credential = ClientSecretCredential(
        emu.tenant_id,
        emu.client_id,
        "wrong-secret",
        authority=emu.base_url,
        disable_instance_discovery=True,
        connection_verify=str(emu.ca_path),
    )
    with credential, pytest.raises(ClientAuthenticationError) as info:
        credential.get_token("https://api.securitycenter.microsoft.com/.default")
    assert "AADSTS7000215" in str(info.value)


def test_tokens_issued_are_counted(emu: Emulator, client: httpx.Client) -> None:
    before = emu.stats()["tokens_issued"]
    get_token(client, emu)
    _token_request(client, emu, client_secret="wrong")
    assert emu.stats()["tokens_issued"] == before + 1


def test_missing_forged_and_foreign_tokens_get_401(emu: Emulator, client: httpx.Client) -> None:
    url = f"{emu.base_url}/api/machines"
    missing = client.get(url)
    assert missing.status_code == 401
    assert missing.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    error = missing.json()["error"]
    assert error["code"] == "Unauthorized" and error["message"] and len(error["target"]) == 36
    token = get_token(client, emu)
    header, payload, signature = token.split(".")
    forged = f"{header}.{payload}.{signature[:-4]}AAAA"
    assert client.get(url, headers=bearer(forged)).status_code == 401
    assert client.get(url, headers=bearer("not-a-jwt")).status_code == 401
    other_tenant = emu.token(MDE, tenant_id="00000000-0000-0000-0000-000000000000")
    assert client.get(url, headers=bearer(other_tenant)).status_code == 401


def test_wrong_audience_is_refused_on_each_api(emu: Emulator, client: httpx.Client) -> None:
    graph_token = get_token(client, emu, GRAPH)
    monitor_token = get_token(client, emu, "https://monitor.azure.com")
    mde_token = get_token(client, emu, MDE)
    for token in (graph_token, monitor_token):
        # The MDE API answers a token for another resource with 403, as for a missing
        # permission (MicrosoftDocs/microsoft-365-docs#9246).
        response = client.get(f"{emu.base_url}/api/machines", headers=bearer(token))
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "Forbidden"
        assert hunt(client, emu, token, "DeviceInfo | take 1").status_code == 403
    response = hunt(client, emu, mde_token, "DeviceInfo | take 1", graph=True)
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["code"] == "InvalidAuthenticationToken"
    assert set(error["innerError"]) >= {"request-id", "date"}
    assert response.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    # Both WindowsDefenderATP App ID URIs work on the MDE API; the Threat Protection one (the
    # documented host, not an MDE audience) does not.
    other_mde = get_token(client, emu, "https://securitycenter.onmicrosoft.com/windowsatpservice")
    assert (
        client.get(f"{emu.base_url}/api/machines?$top=1", headers=bearer(other_mde)).status_code
        == 200
    )
    xdr = get_token(client, emu, "https://api.security.microsoft.com")
    assert client.get(f"{emu.base_url}/api/machines", headers=bearer(xdr)).status_code == 403


def test_missing_role_is_403(emu: Emulator, client: httpx.Client) -> None:
    no_machine_role = emu.token(MDE, roles=["AdvancedQuery.Read.All"])
    response = client.get(f"{emu.base_url}/api/machines", headers=bearer(no_machine_role))
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "Forbidden"
    assert hunt(client, emu, no_machine_role, "DeviceInfo | take 1").status_code == 200
    no_hunting = emu.token(GRAPH, roles=["Machine.Read.All"])
    response = hunt(client, emu, no_hunting, "DeviceInfo | take 1", graph=True)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "Forbidden"


def test_an_expired_token_is_401() -> None:
    with (
        Emulator(
            EmulatorSettings(iot_sensors=0, devices=5, seed=3, token_lifetime_seconds=1)
        ) as emu,
        client_for(emu) as client,
    ):
        token = get_token(client, emu)
        assert client.get(f"{emu.base_url}/api/machines", headers=bearer(token)).status_code == 200
        time.sleep(max(0.0, claims_of(token)["exp"] - time.time()) + 0.2)
        response = client.get(f"{emu.base_url}/api/machines", headers=bearer(token))
        assert response.status_code == 401
        assert "expired" in response.json()["error"]["message"]
        assert response.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'

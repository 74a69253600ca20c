"""Token audiences (defender-apis.md A.2, A.5, A.7, D.1): Entra writes the resource as asked for
into ``aud``, and each emulated API takes only the audiences the real one takes; every other
token is refused in that API's dialect: 401, except the MDE API's 403 (users report it answers a
token for another resource like a missing permission, MicrosoftDocs/microsoft-365-docs#9246).
The collector's default scopes all work."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from endpoint_forensics.config import SentinelConfig, TenantConfig, load_settings
from endpoint_forensics.identity.credentials import build_credential
from endpoint_forensics.identity.keyvault import fetch_secrets, parse_reference
from epf_emulator import Emulator, EmulatorSettings
from epf_emulator.identity.managed_identity import HEADER, PATH

from .conftest import bearer, client_for

MDE = "https://api.securitycenter.microsoft.com"
MDE_ALT = "https://securitycenter.onmicrosoft.com/windowsatpservice"
XDR = "https://api.security.microsoft.com"  # Microsoft Threat Protection: the host, not MDE's aud
MDE_APP_ID = "fc780465-2017-40d4-a0c5-307022471b92"
GRAPH = "https://graph.microsoft.com"
GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
MONITOR = "https://monitor.azure.com"
VAULT = "https://vault.azure.net"
# The scope asked for -> the resource (aud) Entra issues: as asked, "//" keeping its slash.
SCOPES = {
    f"{MDE}/.default": MDE,
    f"{MDE_ALT}/.default": MDE_ALT,
    f"{MDE}//.default": f"{MDE}/",
    f"{MDE_APP_ID}/.default": MDE_APP_ID,
    f"{XDR}/.default": XDR,
    f"{GRAPH}/.default": GRAPH,
    f"{GRAPH}//.default": f"{GRAPH}/",
    f"{GRAPH_APP_ID}/.default": GRAPH_APP_ID,
    f"{MONITOR}/.default": MONITOR,
    f"{MONITOR}//.default": f"{MONITOR}/",
    f"{VAULT}/.default": VAULT,
    f"{VAULT}//.default": f"{VAULT}/",
}
# What each API takes: only what its docs request tokens for (or users report working).
ACCEPTED = {
    "mde machines": {MDE, MDE_ALT},
    "mde hunting": {MDE, MDE_ALT},
    "graph hunting": {GRAPH, GRAPH_APP_ID},
    "logs ingestion": {MONITOR, f"{MONITOR}/"},
    "key vault": {VAULT},
}


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    with Emulator(EmulatorSettings(iot_sensors=0, devices=5, seed=41)) as emulator:
        yield emulator


@pytest.fixture(scope="module")
def http(emu: Emulator) -> Iterator[httpx.Client]:
    with client_for(emu) as client:
        yield client


class Tokens:
    """Tokens from the emulated token endpoint, one per scope, each asked for once."""

    def __init__(self, emu: Emulator, http: httpx.Client) -> None:
        self._emu, self._http = emu, http
        self._issued: dict[str, str] = {}

    def __getitem__(self, scope: str) -> str:
        if scope not in self._issued:
            response = self._http.post(
                f"{self._emu.base_url}/{self._emu.tenant_id}/oauth2/v2.0/token",
                data={
                    "grant_type": "client_credentials",
                    "client_id": self._emu.client_id,
                    "client_secret": self._emu.client_secret,
                    "scope": scope,
                },
            )
            assert response.status_code == 200, (scope, response.text)
            self._issued[scope] = response.json()["access_token"]
        return self._issued[scope]


@pytest.fixture(scope="module")
def tokens(emu: Emulator, http: httpx.Client) -> Tokens:
    return Tokens(emu, http)


def aud(token: str) -> str:
    payload = token.split(".")[1]
    value: str = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["aud"]
    return value


def call(api: str, emu: Emulator, http: httpx.Client, token: str) -> httpx.Response:
    base, auth = emu.base_url, bearer(token)
    if api == "mde machines":
        return http.get(f"{base}/api/machines", params={"$top": "1"}, headers=auth)
    if api == "mde hunting":
        body = {"Query": "DeviceInfo | take 1"}
        return http.post(f"{base}/api/advancedqueries/run", json=body, headers=auth)
    if api == "graph hunting":
        body = {"Query": "DeviceInfo | take 1"}
        return http.post(f"{base}/v1.0/security/runHuntingQuery", json=body, headers=auth)
    if api == "logs ingestion":
        url = f"{base}/dataCollectionRules/{emu.dcr_for('EPF_Runs_CL')}/streams/Custom-EPF_Runs_CL"
        return http.post(url, json=[], headers=auth, params={"api-version": "2023-01-01"})
    assert api == "key vault"
    params = {"api-version": "7.4"}
    return http.get(f"{base}/secrets/epf-client-secret", params=params, headers=auth)


@pytest.mark.parametrize("scope", list(SCOPES))
def test_the_audience_is_the_resource_as_asked_for(tokens: Tokens, scope: str) -> None:
    assert aud(tokens[scope]) == SCOPES[scope]


@pytest.mark.parametrize("scope", list(SCOPES))
@pytest.mark.parametrize("api", list(ACCEPTED))
def test_each_api_takes_only_its_audiences(
    emu: Emulator, http: httpx.Client, tokens: Tokens, api: str, scope: str
) -> None:
    response = call(api, emu, http, tokens[scope])
    if SCOPES[scope] in ACCEPTED[api]:
        assert response.status_code in (200, 204), (api, scope, response.text)
        return
    expected = 403 if api.startswith("mde") else 401
    assert response.status_code == expected, (api, scope, response.text)
    error = response.json()["error"]
    if api.startswith("mde"):  # MDE: {"error": {code, message, target}} (B.0)
        assert error["code"] == "Forbidden" and set(error) == {"code", "message", "target"}
        assert "IDX10214" in error["message"]
    elif api == "graph hunting":
        assert error["code"] == "InvalidAuthenticationToken"
        assert error["message"] == "Access token validation failure. Invalid audience."
        assert response.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    elif api == "logs ingestion":
        assert error == {"code": "InvalidToken", "message": error["message"]}
        assert "Audience validation failed" in error["message"]
    else:  # Key Vault answers with its challenge, naming the resource it takes
        assert error["code"] == "Unauthorized" and "AKV10022" in error["message"]
        challenge = response.headers["WWW-Authenticate"]
        assert f'resource="{VAULT}"' in challenge


def test_the_v1_endpoint_keeps_the_resource_as_asked_for(emu: Emulator, http: httpx.Client) -> None:
    def v1(resource: str) -> httpx.Response:
        return http.post(
            f"{emu.base_url}/{emu.tenant_id}/oauth2/token",
            data={
                "grant_type": "client_credentials",
                "client_id": emu.client_id,
                "client_secret": emu.client_secret,
                "resource": resource,
            },
        )

    slash = v1(f"{MONITOR}/").json()
    assert slash["resource"] == f"{MONITOR}/" and aud(slash["access_token"]) == f"{MONITOR}/"
    assert call("logs ingestion", emu, http, slash["access_token"]).status_code == 204
    assert call("mde machines", emu, http, v1(MDE).json()["access_token"]).status_code == 200
    unknown = v1("https://unknown.example.com")
    assert unknown.status_code == 400 and "AADSTS500011" in unknown.json()["error_description"]


def test_the_managed_identity_takes_a_resource_not_a_scope(
    emu: Emulator, http: httpx.Client
) -> None:
    def msi(resource: str) -> httpx.Response:
        return http.get(
            f"{emu.base_url}{PATH}",
            params={"api-version": "2019-08-01", "resource": resource},
            headers={HEADER: emu.managed_identity_header},
        )

    slash = msi(f"{MONITOR}/")
    assert slash.status_code == 200 and aud(slash.json()["access_token"]) == f"{MONITOR}/"
    assert call("logs ingestion", emu, http, slash.json()["access_token"]).status_code == 204
    xdr = msi(XDR).json()["access_token"]
    assert aud(xdr) == XDR and call("mde machines", emu, http, xdr).status_code == 403
    scope = msi(f"{MONITOR}/.default")  # azure-identity strips it; a resource never has it
    assert scope.status_code == 400 and "not a known resource" in scope.json()["message"]


def test_the_collectors_default_scopes_work(emu: Emulator, tmp_path: Path) -> None:
    config = tmp_path / "epf.toml"
    emu.write_config(config, iot="none")
    keyvault = {
        "tenant_id": emu.tenant_id,
        "client_id": emu.client_id,
        "client_secret": emu.client_secret,
        "authority_host": emu.base_url,
        "ca_bundle": str(emu.ca_path),
    }
    block = "".join(f'{key} = "{value}"\n' for key, value in keyvault.items())
    with config.open("a", encoding="utf-8") as file:
        file.write("\n[keyvault]\n" + block)
    settings = load_settings(config, environ={}, overrides={"state.dir": str(tmp_path / "s")})
    tenant, sentinel = settings.tenants[0], settings.sentinel
    assert sentinel is not None and settings.keyvault is not None
    # The defaults, untouched by the emulator's config.
    assert tenant.mde_scope == TenantConfig.model_fields["mde_scope"].default
    assert tenant.graph_scope == TenantConfig.model_fields["graph_scope"].default
    assert sentinel.scope == SentinelConfig.model_fields["scope"].default
    credential = build_credential(tenant)
    monitor = build_credential(sentinel)
    try:
        mde_token = credential.get_token(tenant.mde_scope).token
        graph_token = credential.get_token(tenant.graph_scope).token
        monitor_token = monitor.get_token(sentinel.scope).token
    finally:
        credential.close()
        monitor.close()
    with client_for(emu) as http:
        assert call("mde machines", emu, http, mde_token).status_code == 200
        assert call("mde hunting", emu, http, mde_token).status_code == 200
        assert call("graph hunting", emu, http, graph_token).status_code == 200
        assert call("logs ingestion", emu, http, monitor_token).status_code == 204
    # Key Vault: the SDK asks for the scope the vault's challenge names.
    ref = parse_reference(f"keyvault:{emu.keyvault_url}/epf-client-secret")
    secret = fetch_secrets(settings.keyvault, [ref])[ref]
    assert secret.reveal() == emu.client_secret

"""keyvault: secret references: the syntax, the config rules, and reads from the emulated vault."""

import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from endpoint_forensics.config import Secret, SecretReferenceError, Settings, load_settings
from endpoint_forensics.errors import ConfigError
from endpoint_forensics.identity.keyvault import (
    SecretReference,
    parse_reference,
    resolve_references,
)
from endpoint_forensics.pipeline.run import run_sync
from endpoint_forensics.sinks.duckdb import DuckDBSink
from epf_emulator import Emulator, EmulatorSettings, Fault

VERSION = "4387e9f3d6e14c459867679a90fd0f79"
TOKEN_VALUE = "contoso-token-value-7d1f"
VAULT_AUDIENCE = "https://vault.azure.net"


def _trusting(emu: Emulator) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(emu.ca_path))


# --- the reference syntax ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("keyvault:MyVault/name", SecretReference("https://myvault.vault.azure.net", "name")),
        (
            f"keyvault:my-vault-01/db-pass/{VERSION}",
            SecretReference("https://my-vault-01.vault.azure.net", "db-pass", VERSION),
        ),
        (
            "keyvault:https://v1.vault.azure.cn/name",
            SecretReference("https://v1.vault.azure.cn", "name"),
        ),
        (
            "keyvault:https://myvault.vault.azure.net/secrets/name",
            SecretReference("https://myvault.vault.azure.net", "name"),
        ),
        (
            f"keyvault:https://127.0.0.1:8443/secrets/name/{VERSION.upper()}/",
            SecretReference("https://127.0.0.1:8443", "name", VERSION),
        ),
    ],
)
def test_every_documented_form_parses_to_the_vault_url(text, expected):
    assert parse_reference(text) == expected


def test_the_canonical_text_is_the_secret_identifier():
    ref = parse_reference(f"keyvault:myvault/name/{VERSION}")
    assert ref.text == f"keyvault:https://myvault.vault.azure.net/secrets/name/{VERSION}"


@pytest.mark.parametrize(
    "text",
    [
        "keyvault:ab/name",  # vault names are 3-24 characters
        "keyvault:1vault/name",  # and start with a letter
        "keyvault:my--vault/name",
        "keyvault:myvault",
        "keyvault:myvault/",
        "keyvault:myvault/under_score",
        "keyvault:myvault/name/not-a-version",
        "keyvault:myvault/a/b/c",
        "keyvault:http://myvault.vault.azure.net/name",
        "keyvault:https://myvault.vault.azure.net/",
        "keyvault:https://myvault.vault.azure.net/name?x=1",
    ],
)
def test_malformed_references_are_refused(text):
    with pytest.raises(ValueError, match="keyvault:"):
        parse_reference(text)


# --- config rules that need no vault -------------------------------------------------------------
TENANT = """
[[tenants]]
name = "contoso"
tenant_id = "11111111-2222-3333-4444-555555555555"
client_id = "66666666-7777-8888-9999-000000000000"
client_secret = "{secret}"
"""
VAULT_APP = """
[keyvault]
tenant_id = "11111111-2222-3333-4444-555555555555"
client_id = "66666666-7777-8888-9999-000000000000"
client_secret = "{secret}"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "epf.toml"
    path.write_text(text)
    return path


def test_a_reference_without_a_keyvault_section_names_the_key(tmp_path):
    path = write(tmp_path, TENANT.format(secret="keyvault:myvault/name"))
    with pytest.raises(ConfigError, match=r"tenants\[0\]\.client_secret: .*needs a \[keyvault\]"):
        load_settings(path, environ={})


def test_the_keyvault_credential_cannot_come_from_key_vault(tmp_path):
    text = TENANT.format(secret="keyvault:myvault/a") + VAULT_APP.format(secret="keyvault:v2/b")
    with pytest.raises(ConfigError, match=r"keyvault\.client_secret: .*cannot come from Key Vault"):
        load_settings(write(tmp_path, text), environ={})


def test_a_malformed_reference_names_the_key(tmp_path):
    path = write(tmp_path, TENANT.format(secret="keyvault:myvault/bad_name") + VAULT_APP)
    with pytest.raises(ConfigError, match=r"tenants\[0\]\.client_secret: 'keyvault:myvault/bad"):
        load_settings(path, environ={}, keyvault_resolver=resolve_references)


def test_the_keyvault_section_is_validated_like_the_others(tmp_path):
    text = TENANT.format(secret="keyvault:myvault/a") + "[keyvault]\nmanaged_identity = true\n"
    text += 'client_secret = "literal"\n'
    with pytest.raises(ConfigError, match=r"keyvault: set exactly one of client_secret"):
        load_settings(write(tmp_path, text), environ={})


def test_a_loader_given_no_resolver_refuses_references(tmp_path):
    path = write(tmp_path, TENANT.format(secret="keyvault:myvault/name") + VAULT_APP)
    with pytest.raises(ConfigError, match=r"tenants\[0\]\.client_secret: .*no keyvault_resolver"):
        load_settings(path, environ={})


def test_the_resolver_gets_the_section_and_the_references_as_written(tmp_path):
    calls = []

    def resolver(vault, texts):
        calls.append((vault.client_id, list(texts)))
        return {text: Secret(f"value of {text}", source=text) for text in texts}

    path = write(tmp_path, TENANT.format(secret="keyvault:myvault/name") + VAULT_APP)
    settings = load_settings(path, environ={}, keyvault_resolver=resolver)
    assert calls == [("66666666-7777-8888-9999-000000000000", ["keyvault:myvault/name"])]
    secret = settings.tenants[0].client_secret
    assert secret is not None and secret.reveal() == "value of keyvault:myvault/name"


def test_a_resolver_failure_names_the_keys_of_the_failed_reference(tmp_path):
    def resolver(vault, texts):
        raise SecretReferenceError("secret name: not found", references=texts)

    path = write(tmp_path, TENANT.format(secret="keyvault:myvault/name") + VAULT_APP)
    with pytest.raises(ConfigError, match=r"tenants\[0\]\.client_secret: secret name: not found"):
        load_settings(path, environ={}, keyvault_resolver=resolver)


def test_settings_without_references_need_no_keyvault_section(tmp_path):
    settings = load_settings(write(tmp_path, TENANT.format(secret="literal")), environ={})
    assert settings.keyvault is None


# --- against the emulated vault ------------------------------------------------------------------
@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    settings = EmulatorSettings(
        iot_sensors=0,
        devices=40,
        seed=5,
        keyvault_secrets={"Contoso-Token": TOKEN_VALUE},
        faults=(Fault("/secrets/locked", 403, times=1000),),
    )
    with Emulator(settings) as emulator:
        yield emulator


def vault_config(emu: Emulator, tmp_path: Path, secret_ref: str, *, sentinel: bool = False) -> Path:
    """The emulator's config, its secrets read from its vault with its own app (secret via env:)."""
    path = tmp_path / "epf.toml"
    emu.write_config(path, iot="none", sentinel=sentinel)
    text = path.read_text().replace(f'"{emu.client_secret}"', f'"{secret_ref}"')
    assert emu.client_secret not in text
    text += (
        "[keyvault]\n"
        f'tenant_id = "{emu.tenant_id}"\n'
        f'client_id = "{emu.client_id}"\n'
        'client_secret = "env:VAULT_APP_SECRET"\n'
        f'authority_host = "{emu.base_url}"\n'
        f'ca_bundle = "{emu.ca_path}"\n'
    )
    path.write_text(text)
    return path


def load(emu: Emulator, path: Path, tmp_path: Path, *, app_secret: str | None = None) -> Settings:
    overrides = {"store.path": str(tmp_path / "ws.duckdb"), "state.dir": str(tmp_path / "state")}
    environ = {"VAULT_APP_SECRET": app_secret or emu.client_secret}
    return load_settings(
        path, environ=environ, overrides=overrides, keyvault_resolver=resolve_references
    )


def vault_reads(emu: Emulator, name: str) -> int:
    """Successful reads of the current version (the SDK asks for "/secrets/<name>/")."""
    requests = emu.stats()["requests"]
    return sum(
        int(requests.get(path, {}).get("200", 0))
        for path in (f"/secrets/{name}", f"/secrets/{name}/")
    )


@pytest.mark.e2e
def test_a_config_reads_its_client_secret_from_the_vault_and_syncs(emu, tmp_path):
    ref = f"keyvault:{emu.keyvault_url}/epf-client-secret"
    before = vault_reads(emu, "epf-client-secret")
    settings = load(emu, vault_config(emu, tmp_path, ref, sentinel=True), tmp_path)
    tenant_secret = settings.tenants[0].client_secret
    assert tenant_secret is not None and tenant_secret.reveal() == emu.client_secret
    assert settings.sentinel is not None and settings.sentinel.client_secret == tenant_secret
    assert tenant_secret.source == f"keyvault:{emu.keyvault_url}/secrets/epf-client-secret"
    # Two keys, one secret: one read.
    assert vault_reads(emu, "epf-client-secret") - before == 1
    assert emu.client_secret not in repr(settings) and emu.client_secret not in str(tenant_secret)

    settings = settings.model_copy(update={"sentinel": None})
    settings = settings.model_copy(
        update={"tenants": (settings.tenants[0].model_copy(update={"datasets": ("machines",)}),)}
    )
    sink = DuckDBSink(settings.store.path)
    try:
        summary = run_sync(settings, [sink])
    finally:
        sink.close()
    assert summary.exit_code == 0, summary.errors()
    assert emu.stats()["truth"]["EPF_Devices_CL"] == 40
    assert sum(1 for _ in _device_rows(settings)) == 40


def _device_rows(settings: Settings) -> list[tuple[object, ...]]:
    import duckdb

    con = duckdb.connect(str(settings.store.path), read_only=True)
    try:
        return con.execute('SELECT DeviceId FROM "EPF_Devices_CL"').fetchall()
    finally:
        con.close()


@pytest.mark.e2e
def test_a_configured_secret_reads_by_identifier_and_version_case_insensitively(emu, tmp_path):
    with httpx.Client(verify=_trusting(emu), trust_env=False) as client:
        response = client.get(
            f"{emu.keyvault_url}/secrets/contoso-token",
            params={"api-version": "7.4"},
            headers={"Authorization": f"Bearer {emu.token(VAULT_AUDIENCE)}"},
        )
    assert response.status_code == 200, response.text
    secret_id = response.json()["id"]
    version = secret_id.rsplit("/", 1)[1]
    assert secret_id == f"{emu.keyvault_url}/secrets/Contoso-Token/{version}"
    path = vault_config(emu, tmp_path, f"keyvault:{secret_id}")
    secret = load(emu, path, tmp_path).tenants[0].client_secret
    assert secret is not None and secret.reveal() == TOKEN_VALUE


@pytest.mark.e2e
def test_an_unknown_secret_names_the_key_and_the_secret_never_a_value(emu, tmp_path):
    path = vault_config(emu, tmp_path, f"keyvault:{emu.keyvault_url}/no-such-secret")
    with pytest.raises(ConfigError) as info:
        load(emu, path, tmp_path)
    message = str(info.value)
    assert (
        f"tenants[0].client_secret: Key Vault {emu.keyvault_url} secret no-such-secret: not found"
        in message
    )
    assert emu.client_secret not in message


@pytest.mark.e2e
def test_an_unknown_version_is_not_found(emu, tmp_path):
    path = vault_config(emu, tmp_path, f"keyvault:{emu.keyvault_url}/epf-client-secret/{VERSION}")
    with pytest.raises(ConfigError, match=f"secret epf-client-secret version {VERSION}: not found"):
        load(emu, path, tmp_path)


@pytest.mark.e2e
def test_a_forbidden_read_says_which_role_to_grant(emu, tmp_path):
    path = vault_config(emu, tmp_path, f"keyvault:{emu.keyvault_url}/locked")
    with pytest.raises(ConfigError) as info:
        load(emu, path, tmp_path)
    assert "secret locked: access denied (grant 'Key Vault Secrets User'" in str(info.value)


@pytest.mark.e2e
def test_a_refused_vault_identity_is_reported_without_its_secret(emu, tmp_path):
    wrong = "wrong-app-secret-9f3e2d"
    path = vault_config(emu, tmp_path, f"keyvault:{emu.keyvault_url}/epf-client-secret")
    with pytest.raises(ConfigError) as info:
        load(emu, path, tmp_path, app_secret=wrong)
    message = str(info.value)
    assert "tenants[0].client_secret: Key Vault" in message
    assert "[keyvault] identity was refused" in message
    assert wrong not in message and emu.client_secret not in message


@pytest.mark.e2e
def test_an_unreachable_vault_is_reported(emu, tmp_path):
    import socket

    with socket.socket() as free:  # a port nobody listens on
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    path = vault_config(emu, tmp_path, f"keyvault:https://127.0.0.1:{port}/epf-client-secret")
    with pytest.raises(ConfigError, match=r"secret epf-client-secret: vault unreachable"):
        load(emu, path, tmp_path)


# --- the emulated vault on the wire --------------------------------------------------------------
@pytest.fixture(scope="module")
def vault(emu: Emulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emu.keyvault_url, verify=_trusting(emu), trust_env=False) as c:
        yield c


@pytest.mark.e2e
def test_an_unauthenticated_read_gets_the_challenge(emu, vault):
    response = vault.get("/secrets/epf-client-secret", params={"api-version": "7.4"})
    assert response.status_code == 401
    challenge = response.headers["WWW-Authenticate"]
    assert challenge == (
        f'Bearer authorization="{emu.base_url}/{emu.tenant_id}", resource="{VAULT_AUDIENCE}"'
    )
    assert response.json()["error"]["code"] == "Unauthorized"
    assert emu.client_secret not in response.text


@pytest.mark.e2e
def test_a_token_for_another_resource_gets_the_challenge_again(emu, vault):
    headers = {"Authorization": f"Bearer {emu.token('https://graph.microsoft.com')}"}
    response = vault.get("/secrets/epf-client-secret?api-version=7.4", headers=headers)
    assert response.status_code == 401 and "WWW-Authenticate" in response.headers


@pytest.mark.e2e
def test_the_token_endpoint_issues_vault_tokens_and_the_vault_takes_them(emu, vault):
    form = {
        "grant_type": "client_credentials",
        "client_id": emu.client_id,
        "client_secret": emu.client_secret,
        "scope": f"{VAULT_AUDIENCE}/.default",
    }
    token = vault.post(f"/{emu.tenant_id}/oauth2/v2.0/token", data=form).json()["access_token"]
    response = vault.get(
        "/secrets/epf-client-secret",
        params={"api-version": "2025-07-01"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 200
    body = response.json()
    assert body["value"] == emu.client_secret
    assert set(body) == {"value", "id", "attributes"}
    assert body["attributes"]["enabled"] is True
    assert body["attributes"]["recoveryLevel"] == "Recoverable+Purgeable"
    assert isinstance(body["attributes"]["created"], int)


@pytest.mark.e2e
def test_unknown_names_and_old_api_versions_are_refused_in_key_vaults_shape(emu, vault):
    headers = {"Authorization": f"Bearer {emu.token(VAULT_AUDIENCE)}"}
    missing = vault.get("/secrets/nope", params={"api-version": "7.4"}, headers=headers)
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "SecretNotFound"
    assert set(missing.json()["error"]) == {"code", "message"}
    old = vault.get("/secrets/epf-client-secret", params={"api-version": "7.3"}, headers=headers)
    assert old.status_code == 400 and old.json()["error"]["code"] == "BadParameter"
    assert emu.client_secret not in old.text


def test_emulator_settings_refuse_names_key_vault_would_refuse():
    with pytest.raises(ValueError, match="keyvault_secrets"):
        EmulatorSettings(keyvault_secrets={"under_score": "x"})

"""Certificate credentials: the app's client certificate and client assertions at the token endpoint."""

from __future__ import annotations

import base64
import hashlib
import time
import tomllib
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from azure.core.exceptions import ClientAuthenticationError
from azure.identity import CertificateCredential
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from epf_emulator import Emulator

from .conftest import MDE, bearer, claims_of

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def _credential(emu: Emulator, path: Path) -> CertificateCredential:
    return CertificateCredential(
        emu.tenant_id,
        emu.client_id,
        str(path),
        authority=emu.base_url,
        disable_instance_discovery=True,
        connection_verify=str(emu.ca_path),
    )


def _other_certificate(path: Path) -> tuple[Any, x509.Certificate]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "someone else")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ) + cert.public_bytes(serialization.Encoding.PEM)
    path.write_bytes(pem)
    return key, cert


def _registered(emu: Emulator) -> tuple[Any, x509.Certificate]:
    pem = emu.client_certificate_path.read_bytes()
    key = serialization.load_pem_private_key(pem, password=None)
    return key, x509.load_pem_x509_certificate(pem)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _assertion(
    emu: Emulator,
    key: Any,
    cert: x509.Certificate,
    *,
    alg: str = "RS256",
    audience: str | None = None,
    issuer: str | None = None,
    lifetime: int = 600,
    sha256: bool = False,
) -> str:
    der = cert.public_bytes(serialization.Encoding.DER)
    headers = (
        {"x5t#S256": _b64(hashlib.sha256(der).digest())}
        if sha256
        else {"x5t": _b64(hashlib.sha1(der).digest())}
    )
    now = int(time.time())
    claims = {
        "aud": audience or f"{emu.base_url}/{emu.tenant_id}/oauth2/v2.0/token",
        "iss": issuer or emu.client_id,
        "sub": issuer or emu.client_id,
        "jti": str(uuid.uuid4()),
        "nbf": now - 1000 if lifetime < 0 else now,
        "exp": now + lifetime,
    }
    return jwt.encode(claims, key, algorithm=alg, headers=headers)


def _post(client: httpx.Client, emu: Emulator, assertion: str) -> httpx.Response:
    return client.post(
        f"{emu.base_url}/{emu.tenant_id}/oauth2/v2.0/token",
        data={
            "grant_type": "client_credentials",
            "client_id": emu.client_id,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion,
            "scope": f"{MDE}/.default",
        },
    )


def test_the_client_certificate_is_a_pem_with_key_and_certificate(emu: Emulator) -> None:
    path = emu.client_certificate_path
    assert path.parent == emu.ca_path.parent and path.name == "client-cert.pem"
    text = path.read_text()
    assert "PRIVATE KEY-----" in text and "BEGIN CERTIFICATE-----" in text
    key, cert = _registered(emu)
    assert isinstance(key, rsa.RSAPrivateKey)
    assert cert.public_key().public_numbers() == key.public_key().public_numbers()


def test_certificate_credential_gets_a_token(emu: Emulator, client: httpx.Client) -> None:
    credential = _credential(emu, emu.client_certificate_path)
    try:
        token = credential.get_token(f"{MDE}/.default")
    finally:
        credential.close()
    claims = claims_of(token.token)
    assert claims["aud"] == MDE and claims["appid"] == emu.client_id
    response = client.get(f"{emu.base_url}/api/machines?$top=1", headers=bearer(token.token))
    assert response.status_code == 200


def test_a_certificate_the_app_does_not_have_is_refused(emu: Emulator, tmp_path: Path) -> None:
    _other_certificate(tmp_path / "other.pem")
    credential = _credential(emu, tmp_path / "other.pem")
    try:
        with pytest.raises(ClientAuthenticationError, match="AADSTS700027"):
            credential.get_token(f"{MDE}/.default")
    finally:
        credential.close()


@pytest.mark.parametrize("alg", ["RS256", "PS256"])
@pytest.mark.parametrize("sha256", [False, True])
def test_both_algorithms_and_thumbprints_are_accepted(
    emu: Emulator, client: httpx.Client, alg: str, sha256: bool
) -> None:
    key, cert = _registered(emu)
    response = _post(client, emu, _assertion(emu, key, cert, alg=alg, sha256=sha256))
    assert response.status_code == 200, response.text
    assert response.json()["token_type"] == "Bearer"


def test_bad_assertions_are_refused_with_entra_codes(
    emu: Emulator, client: httpx.Client, tmp_path: Path
) -> None:
    key, cert = _registered(emu)
    other_key, _ = _other_certificate(tmp_path / "other.pem")
    cases = {
        # the registered certificate's thumbprint, someone else's signature
        "signature": (_assertion(emu, other_key, cert), 700027),
        "audience": (_assertion(emu, key, cert, audience="https://example.com/token"), 700027),
        "issuer": (_assertion(emu, key, cert, issuer=str(uuid.uuid4())), 700021),
        "expired": (_assertion(emu, key, cert, lifetime=-900), 700024),
        "garbage": ("not.a.jwt", 50027),
    }
    for name, (assertion, code) in cases.items():
        response = _post(client, emu, assertion)
        body = response.json()
        assert response.status_code == 401, name
        assert body["error_codes"] == [code], (name, body)
        assert body["error"] == "invalid_client", name
        assert body["error_description"].startswith(f"AADSTS{code}:"), name


def test_write_config_with_a_certificate(emu: Emulator, tmp_path: Path) -> None:
    path = tmp_path / "epf.toml"
    emu.write_config(path, credential="certificate")
    (tenant,) = tomllib.loads(path.read_text(encoding="utf-8"))["tenants"]
    assert "client_secret" not in tenant
    assert Path(tenant["certificate_path"]) == emu.client_certificate_path.resolve()
    assert Path(tenant["certificate_path"]).is_absolute()
    with pytest.raises(ValueError, match="credential"):
        emu.write_config(path, credential="password")  # type: ignore[arg-type]

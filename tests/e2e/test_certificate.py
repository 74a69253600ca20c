import pytest

from endpoint_forensics.config import load_settings
from endpoint_forensics.workspace import store

from .conftest import sync

pytestmark = pytest.mark.e2e


def certificate_settings(emu, tmp_path, **overrides):
    config = tmp_path / "epf.toml"
    emu.write_config(config, credential="certificate", iot="none")
    values = {
        "store.path": str(tmp_path / "ws.duckdb"),
        "state.dir": str(tmp_path / "state"),
        "tenants.0.datasets": ["machines"],
        **overrides,
    }
    return load_settings(config, environ={}, overrides=values)


def test_a_certificate_credential_syncs(small_tenant, tmp_path):
    settings = certificate_settings(small_tenant, tmp_path)
    text = (tmp_path / "epf.toml").read_text()
    assert "certificate_path" in text and "client_secret" not in text
    summary = sync(settings)
    assert summary.exit_code == 0, summary.errors()
    assert store.run_query(settings.store.path, "EPF_Devices_CL | count").rows == [(250,)]


def test_a_certificate_the_app_does_not_have_is_refused(small_tenant, tmp_path):
    other = tmp_path / "other.pem"
    other.write_bytes(_rsa_certificate_pem())
    settings = certificate_settings(
        small_tenant, tmp_path, **{"tenants.0.certificate_path": str(other)}
    )
    summary = sync(settings)
    assert summary.exit_code == 1
    assert "refused the app's credentials" in summary.errors()[0]
    assert "AADSTS700027" in summary.errors()[0]


def _rsa_certificate_pem() -> bytes:
    """A self-signed RSA certificate and key, as an app registration would have."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "not-the-app")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    pem_key = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return pem_key + cert.public_bytes(serialization.Encoding.PEM)


def test_a_certificate_without_an_rsa_key_is_a_config_error(small_tenant, tmp_path):
    import trustme

    ec = tmp_path / "ec.pem"
    trustme.CA().issue_cert("epf-app").private_key_and_cert_chain_pem.write_to_path(str(ec))
    settings = certificate_settings(
        small_tenant, tmp_path, **{"tenants.0.certificate_path": str(ec)}
    )
    summary = sync(settings)
    assert summary.exit_code == 1
    assert "certificate_path: The certificate must have an RSA private key" in summary.errors()[0]

"""Client authentication at the emulated token endpoint: secrets and certificate assertions.

Owns who may ask for a token (defender-apis.md A.1, A.4): the tenant and grant checks, the
client secret (form or HTTP Basic), and the certificate credential: the emulated app's
client certificate (an RSA key and a self-signed certificate, written as one PEM, as
``CertificateCredential`` reads it) and the verification of a posted ``client_assertion``
JWT: RS256 or PS256, ``x5t`` or ``x5t#S256`` naming the registered certificate, a signature
made by its key, ``aud`` = this token endpoint, ``iss`` = ``sub`` = the client id, and a
current ``nbf``/``exp``. Every refusal is Entra's error body with its AADSTS code.

Imports only ``common.responses`` of the emulator: it shares no code with the collector.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import orjson
from starlette.requests import Request
from starlette.responses import Response

from epf_emulator.common.responses import entra_error

__all__ = [
    "ASSERTION_TYPE",
    "CERTIFICATE_FILE",
    "CertificateSource",
    "ClientAuthenticator",
    "ClientCertificate",
    "load_or_create_certificate",
]

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
_CLOCK_SKEW_SECONDS = 300  # Entra tolerates five minutes of clock skew
CERTIFICATE_FILE = "client-cert.pem"


@dataclass(frozen=True)
class ClientCertificate:
    """The registered certificate: its DER bytes and where its PEM (key + cert) lives."""

    path: Path
    der: bytes

    @property
    def sha1_thumbprint(self) -> str:
        return _b64(hashlib.sha1(self.der).digest())  # x5t is SHA-1 by definition (RFC 7515)

    @property
    def sha256_thumbprint(self) -> str:
        return _b64(hashlib.sha256(self.der).digest())

    def public_key(self) -> Any:
        from cryptography import x509

        return x509.load_der_x509_certificate(self.der).public_key()


#: The registered certificate, or a callable giving it (None while the app has none yet): an
#: emulator of many tenants issues each one's certificate only once it is asked for, as an RSA
#: key takes a tenth of a second to make.
CertificateSource = ClientCertificate | Callable[[], ClientCertificate | None] | None


def load_or_create_certificate(state_dir: Path, *, common_name: str) -> ClientCertificate:
    """The app's client certificate in ``state_dir/client-cert.pem``, created if missing.

    Kept across restarts with the same state directory, like the CA, so a written config
    keeps working.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    path = state_dir / CERTIFICATE_FILE
    if path.is_file():
        try:
            cert = x509.load_pem_x509_certificate(path.read_bytes())
            return ClientCertificate(path, cert.public_bytes(serialization.Encoding.DER))
        except ValueError:
            pass  # unreadable: issue a new one
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)  # self-signed, as Entra app certificates usually are
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=365))
        .sign(key, hashes.SHA256())
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ) + cert.public_bytes(serialization.Encoding.PEM)
    path.write_bytes(pem)
    path.chmod(0o600)
    return ClientCertificate(path, cert.public_bytes(serialization.Encoding.DER))


class _Rejected(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class ClientAuthenticator:
    """Checks the client of a token request; ``check`` returns None or Entra's refusal."""

    def __init__(
        self,
        *,
        tenant_id: str,
        client_id: str,
        client_secret: str,
        certificate: CertificateSource,
    ) -> None:
        self.tenant_id = tenant_id
        self.client_id = client_id
        self._secret = client_secret
        self._certificate = certificate
        # The signature part of every client assertion received: a secret as good as the key
        # for its few minutes, which a check that nothing leaks looks for.
        self.assertion_signatures: set[str] = set()

    def check(self, request: Request, form: dict[str, str]) -> Response | None:
        tenant = request.path_params["tenant"]
        if tenant != self.tenant_id:
            return unknown_tenant(tenant)
        if form.get("grant_type") != "client_credentials":
            return entra_error(
                400,
                "unsupported_grant_type",
                70003,
                f"The app requested an unsupported grant type '{form.get('grant_type', '')}'."
                " This emulator supports client_credentials.",
            )
        client_id, secret = form.get("client_id"), form.get("client_secret")
        basic_id, basic_secret = _basic_credentials(request)
        client_id, secret = client_id or basic_id, secret or basic_secret
        if not client_id:
            return entra_error(
                400,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'client_id'.",
            )
        if client_id != self.client_id:
            return entra_error(
                400,
                "unauthorized_client",
                700016,
                f"Application with identifier '{client_id}' was not found in the directory '{tenant}'."
                " This can happen if the application has not been installed by the administrator of"
                " the tenant or consented to by any user in the tenant. You may have sent your"
                " authentication request to the wrong tenant.",
            )
        assertion = form.get("client_assertion")
        if assertion is not None and not secret:
            return self._check_assertion(request, form, assertion)
        if not secret:
            return entra_error(
                401,
                "invalid_client",
                7000216,
                "'client_assertion', 'client_secret' or 'request' is required for the"
                " 'client_credentials' grant type.",
            )
        if not hmac.compare_digest(secret.encode(), self._secret.encode()):
            return entra_error(
                401,
                "invalid_client",
                7000215,
                "Invalid client secret provided. Ensure the secret being sent in the request is the"
                f" client secret value, not the client secret ID, for a secret added to app"
                f" '{self.client_id}'.",
            )
        return None

    def _check_assertion(
        self, request: Request, form: dict[str, str], assertion: str
    ) -> Response | None:
        if form.get("client_assertion_type") != ASSERTION_TYPE:
            return entra_error(
                400,
                "invalid_request",
                50027,
                "Invalid client_assertion_type: expected"
                f" '{ASSERTION_TYPE}', got '{form.get('client_assertion_type', '')}'.",
            )
        base = str(request.base_url).rstrip("/")
        tenant = self.tenant_id
        audiences = {
            f"{host}/{tenant}/oauth2/{version}token"
            for host in (base, "https://login.microsoftonline.com")
            for version in ("v2.0/", "")
        }
        self.assertion_signatures.add(assertion.rpartition(".")[2])
        try:
            self._verify(assertion, audiences)
        except _Rejected as exc:
            return entra_error(401, "invalid_client", exc.code, str(exc))
        return None

    def _verify(self, assertion: str, audiences: set[str]) -> None:
        """Raise ``_Rejected`` unless the assertion is one the registered certificate signed."""
        parts = assertion.split(".")
        if len(parts) != 3:
            raise _Rejected(50027, "JWT token is invalid or malformed.")
        try:
            header = orjson.loads(_unb64(parts[0]))
            claims = orjson.loads(_unb64(parts[1]))
            signature = _unb64(parts[2])
        except (binascii.Error, ValueError, orjson.JSONDecodeError):
            raise _Rejected(50027, "JWT token is invalid or malformed.") from None
        if not isinstance(header, dict) or not isinstance(claims, dict):
            raise _Rejected(50027, "JWT token is invalid or malformed.")
        cert = self._certificate() if callable(self._certificate) else self._certificate
        presented = header.get("x5t#S256") or header.get("x5t")
        # MSAL keeps the base64 padding of the thumbprint; JOSE (RFC 7515) drops it.
        thumbprint = presented.rstrip("=") if isinstance(presented, str) else None
        if cert is None or thumbprint not in (cert.sha256_thumbprint, cert.sha1_thumbprint):
            raise _Rejected(
                700027,
                "The certificate with identifier used to sign the client assertion is not"
                f" registered on application. [Reason - The key was not found., Thumbprint of key"
                f" used by client: '{presented}', Please visit the Azure Portal, Graph Explorer or"
                " directly use MS Graph to see configured keys for app Id"
                f" '{self.client_id}'.]",
            )
        alg = header.get("alg")
        if alg not in ("RS256", "PS256") or not _signature_ok(
            cert, alg, f"{parts[0]}.{parts[1]}".encode(), signature
        ):
            raise _Rejected(700027, "Client assertion failed signature validation.")
        if claims.get("aud") not in audiences:
            raise _Rejected(
                700027,
                f"Client assertion failed signature validation. The audience"
                f" '{claims.get('aud')}' is not this token endpoint.",
            )
        if claims.get("iss") != self.client_id or claims.get("sub") != self.client_id:
            raise _Rejected(
                700021,
                "Client assertion application identifier doesn't match 'client_id' parameter.",
            )
        now = time.time()
        exp, nbf = claims.get("exp"), claims.get("nbf", claims.get("iat"))
        if not isinstance(exp, int | float) or exp + _CLOCK_SKEW_SECONDS <= now:
            raise _Rejected(
                700024,
                f"Client assertion is not within its valid time range. Current time: {_utc(now)},"
                f" expiry time of assertion {_utc(exp) if isinstance(exp, int | float) else exp}.",
            )
        if isinstance(nbf, int | float) and nbf - _CLOCK_SKEW_SECONDS > now:
            raise _Rejected(
                700024,
                f"Client assertion is not within its valid time range. Current time: {_utc(now)},"
                f" assertion valid from {_utc(nbf)}.",
            )


def unknown_tenant(tenant: str) -> Response:
    return entra_error(
        400,
        "invalid_request",
        90002,
        f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are"
        " signing into the correct cloud. Check with your subscription administrator, this may"
        " happen if there are no active subscriptions for the tenant.",
    )


def _signature_ok(cert: ClientCertificate, alg: str, signed: bytes, signature: bytes) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    key = cert.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        return False
    # JWA (RFC 7518 3.5): PS256 is PSS with MGF1-SHA256 and a salt as long as the hash.
    pad: padding.AsymmetricPadding = (
        padding.PKCS1v15()
        if alg == "RS256"
        else padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
    )
    try:
        key.verify(signature, signed, pad, hashes.SHA256())
    except InvalidSignature:
        return False
    return True


def _basic_credentials(request: Request) -> tuple[str | None, str | None]:
    """RFC 6749 2.3.1: ``Authorization: Basic base64(urlencode(id):urlencode(secret))``."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None, None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None, None
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        return None, None
    return unquote_plus(client_id), unquote_plus(secret)


def _utc(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%m/%d/%Y %H:%M:%S")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))

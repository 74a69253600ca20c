"""TLS trust for the collector's connections: the system store, a CA bundle, or a pinned
certificate.

On-premises Defender for IoT appliances present self-signed certificates as a rule. Such a
certificate is trusted either through a CA bundle holding it (or its issuer), or by pinning its
SHA-256 fingerprint: the handshake then checks the fingerprint before a single byte of the
request (and its access token) is sent. Verification is never simply switched off.
May import nothing of ours.
"""

from __future__ import annotations

import hashlib
import ssl
from pathlib import Path
from typing import Any

__all__ = ["PIN_MISMATCH", "client_ssl_context"]

# Marks the handshake failure of a pinned connection, so the HTTP layer can name it.
PIN_MISMATCH = "PINNED_CERTIFICATE_MISMATCH"


def client_ssl_context(
    *, ca_bundle: Path | None = None, fingerprint: str | None = None
) -> ssl.SSLContext:
    """A client context trusting ``ca_bundle``, or only the certificate with ``fingerprint``
    (64 lower-case hex digits), or else the system's trust store."""
    if fingerprint is not None:
        return _pinned_context(fingerprint)
    # A configured bundle replaces the default trust store, as `curl --cacert` and the Azure
    # SDK's connection_verify do.
    return ssl.create_default_context(cafile=str(ca_bundle) if ca_bundle else None)


def certificate_fingerprint(der: bytes) -> str:
    """The SHA-256 fingerprint of a DER certificate, as lower-case hex."""
    return hashlib.sha256(der).hexdigest()


def _pinned_context(fingerprint: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # The pin replaces chain and name checks: a self-signed certificate has no chain, and
    # appliances are often reached by an address their certificate does not name.
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE

    class PinnedSocket(ssl.SSLSocket):
        def do_handshake(self, *args: Any, **kwargs: Any) -> None:
            super().do_handshake(*args, **kwargs)
            der = self.getpeercert(binary_form=True)
            presented = certificate_fingerprint(der) if der else "none"
            if presented != fingerprint:
                raise ssl.SSLCertVerificationError(
                    f"{PIN_MISMATCH}: the server presented a certificate with SHA-256 "
                    f"fingerprint {presented}"
                )

    context.sslsocket_class = PinnedSocket
    return context

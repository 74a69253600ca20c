"""What one start of the emulator issues: fresh secrets, the state directory, the TLS chain.

Owns the settings as one start serves them (a managed identity header fresh per start unless
given, and the Key Vault holding the app's client secret as ``epf-client-secret``), the state
directory (a temporary one the emulator owns and deletes, or the given one, kept), and the MDE
server's TLS: a test certificate authority ``ca.pem`` with its key ``ca-key.pem`` (reused when
present, so a restart with the same state directory keeps clients' trust) and ``server.pem``
(key and chain, issued anew each start for loopback and the bound host). trustme and Starlette
load only when called. The client certificate is ``identity.client_auth``'s; the Defender for
IoT appliances' self-signed certificates are ``iot.server``'s.

Imports only ``common.listen``, ``common.settings`` and ``azure.keyvault`` (lazily) of the
emulator: it shares no code with the collector.
"""

from __future__ import annotations

import secrets
import tempfile
from dataclasses import replace
from pathlib import Path

from epf_emulator.common.listen import certificate_names
from epf_emulator.common.settings import EmulatorSettings

__all__ = ["issue_server_certificate", "open_state_dir", "settings_of_this_start"]


def settings_of_this_start(settings: EmulatorSettings, client_secret: str) -> EmulatorSettings:
    """``settings`` with what is fresh per start: the managed identity header (unless given)
    and the vault's copy of the client secret."""
    from epf_emulator.azure.keyvault import CLIENT_SECRET_NAME as KEYVAULT_CLIENT_SECRET

    if not settings.managed_identity_header:  # like the client secret: fresh per start
        settings = replace(settings, managed_identity_header=secrets.token_urlsafe(24))
    # The vault holds the app's own secret, so a config can read that from Key Vault.
    vault = {**settings.keyvault_secrets, KEYVAULT_CLIENT_SECRET: client_secret}
    return replace(settings, keyvault_secrets=vault)


def open_state_dir(state_dir: Path | None) -> tuple[Path, bool]:
    """(the state directory, whether the emulator owns it): a new temporary one without."""
    if state_dir is None:
        return Path(tempfile.mkdtemp(prefix="epf-emulator-")), True
    path = Path(state_dir).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path, False


def issue_server_certificate(state_dir: Path, host: str) -> tuple[Path, Path]:
    """(``ca.pem``, ``server.pem``): the test CA (reusing one already in ``state_dir``) and a
    server certificate it issued for ``host``."""
    import trustme

    ca_path, ca_key_path = state_dir / "ca.pem", state_dir / "ca-key.pem"
    if ca_path.is_file() and ca_key_path.is_file():
        ca = trustme.CA.from_pem(ca_path.read_bytes(), ca_key_path.read_bytes())
    else:
        ca = trustme.CA(organization_name="epf emulator test CA")
        ca.cert_pem.write_to_path(str(ca_path))
        ca.private_key_pem.write_to_path(str(ca_key_path))
        ca_key_path.chmod(0o600)
    cert_path = state_dir / "server.pem"
    names = certificate_names(host)
    ca.issue_cert(*names).private_key_and_cert_chain_pem.write_to_path(str(cert_path))
    cert_path.chmod(0o600)
    return ca_path, cert_path

"""An untrusted certificate is configuration: the source stops at the first refusal.

A TCP relay in front of the emulator counts the connections the collector opens, so the test
shows how many times it tried, without timing anything.
"""

import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import trustme

from endpoint_forensics.config import Secret
from endpoint_forensics.errors import CertificateUntrusted, ConfigError
from endpoint_forensics.http.client import ApiClient
from endpoint_forensics.http.ratelimit import RateBudget, RateLimit
from endpoint_forensics.identity.credentials import StaticToken
from epf_emulator import Emulator

from .conftest import settings_for, sync


class _CountingRelay:
    """Accepts on a loopback port and pipes every connection to ``target``, counting them."""

    def __init__(self, target: tuple[str, int]) -> None:
        self._target = target
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self.connections = 0
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            self.connections += 1
            upstream = socket.create_connection(self._target)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pipe, args=(a, b), daemon=True).start()

    def close(self) -> None:
        self._server.close()


def _pipe(source: socket.socket, dest: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            dest.sendall(data)
    except OSError:
        pass
    finally:
        for s in (source, dest):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        # Each socket is the source of one pipe: that pipe closes it, or it is left for the
        # garbage collector to report as unclosed during some later test.
        source.close()


@pytest.fixture
def relay(small_tenant: Emulator) -> Iterator[_CountingRelay]:
    parts = urlsplit(small_tenant.base_url)
    relay = _CountingRelay((parts.hostname or "127.0.0.1", parts.port or 443))
    yield relay
    relay.close()


def test_an_untrusted_certificate_stops_the_tenant_at_the_first_refusal(
    small_tenant: Emulator, relay: _CountingRelay, tmp_path: Path
) -> None:
    other_ca = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other_ca))
    via_relay = f"https://127.0.0.1:{relay.port}"
    settings = settings_for(
        small_tenant,
        tmp_path,
        ca_bundle=str(other_ca),
        authority_host=via_relay,
        mde_base_url=via_relay,
        graph_base_url=via_relay + "/v1.0",
    )
    summary = sync(settings)

    # One connection: the token request's handshake failed and nothing was tried again,
    # neither by the SDK's retries nor by the datasets after the first.
    assert relay.connections == 1
    assert summary.exit_code == 1
    assert len(summary.outcomes) == len(settings.tenants[0].datasets) > 1
    assert all(o.outcome == "Failed" for o in summary.outcomes)
    [line] = summary.errors()
    assert "not trusted; set ca_bundle" in line
    assert small_tenant.client_secret not in line
    assert issubclass(CertificateUntrusted, ConfigError)  # exit code 2 wherever it is raised


def test_an_untrusted_api_certificate_is_not_retried(
    small_tenant: Emulator, relay: _CountingRelay, tmp_path: Path
) -> None:
    other_ca = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other_ca))
    client = ApiClient(
        StaticToken(Secret("t", source="literal")),
        verify=ssl.create_default_context(cafile=str(other_ca)),
        max_retries=6,
    )
    with client, pytest.raises(CertificateUntrusted, match="not trusted; set ca_bundle"):
        client.request_json(
            "GET",
            f"https://127.0.0.1:{relay.port}/api/machines",
            scope="",
            budget=RateBudget(RateLimit("machines", per_minute=100, per_hour=1_500)),
        )
    assert relay.connections == 1

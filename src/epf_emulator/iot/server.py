"""The Defender for IoT appliances' listeners: one HTTPS server per sensor and for the console.

Owns each appliance's self-signed certificate (not issued by the test CA: on premises the
norm is self-signed, defender-apis.md C.1; kept in the state directory as ``iot-<name>.pem``
with its key and reused on restart, plus ``iot-<name>-cert.pem`` without the key), its access
token (32 hex characters, new each start), the gate in front of its routes (injected faults
first, like the MDE app, then the raw-token ``Authorization`` check, then request counting),
and starting and stopping the uvicorn servers, each on its own port in a daemon thread
(``common.listen``). The routes are ``iot.sensor_api``'s and ``iot.console_api``'s.

Imports only ``common`` (clock, limits, listen) and ``iot`` modules of the emulator: it shares
no code with the collector.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import logging
import secrets
import socket
import threading
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from epf_emulator.common.chaos import ChaosInjector, serve_struck
from epf_emulator.common.clock import EmulatedClock
from epf_emulator.common.limits import FaultInjector, RequestStats
from epf_emulator.common.listen import (
    bind,
    certificate_names,
    make_server,
    start_serving,
    stop_serving,
    url_host,
    wait_started,
)
from epf_emulator.iot.console_api import ConsoleApi
from epf_emulator.iot.render import FAILURE_BODY, IotFailure, failure, text
from epf_emulator.iot.sensor_api import SensorApi
from epf_emulator.iot.state import CONSOLE_NAME, IotAppliance, IotState

__all__ = ["IotListeners", "load_or_create_appliance_certificate"]

_log = logging.getLogger(__name__)
_CERTIFICATE_DAYS = 825
_BEGIN_CERTIFICATE = "-----BEGIN CERTIFICATE-----"


def load_or_create_appliance_certificate(
    state_dir: Path, name: str, host: str
) -> tuple[Path, Path, str]:
    """(key and certificate PEM, certificate-only PEM, SHA-256 fingerprint) of ``name``.

    An existing ``iot-<name>.pem`` is reused while it is valid and names ``host``, so clients
    that pinned or trusted it keep working across restarts with the same state directory.
    """
    from cryptography.hazmat.primitives import serialization

    combined = state_dir / f"iot-{name}.pem"
    cert_only = state_dir / f"iot-{name}-cert.pem"
    names = certificate_names(host)
    certificate = _reusable(combined, names) if combined.is_file() else None
    if certificate is None:
        key, certificate = _self_signed(name, names)
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        combined.write_bytes(key_pem + certificate.public_bytes(serialization.Encoding.PEM))
        combined.chmod(0o600)
    cert_only.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    fingerprint = hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).hexdigest()
    return combined, cert_only, fingerprint


def _self_signed(name: str, names: list[str]) -> tuple[Any, Any]:
    """(key, certificate): a new P-256 key and a server certificate for ``names`` it signs."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, f"epf-iot-{name}"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "epf emulator (Defender for IoT)"),
        ]
    )
    now = dt.datetime.now(dt.UTC)
    public = key.public_key()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)  # self-signed
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=_CERTIFICATE_DAYS))
        .add_extension(x509.SubjectAlternativeName(_general_names(names)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, certificate


def _general_names(names: list[str]) -> list[Any]:
    from cryptography import x509

    result: list[Any] = []
    for value in names:
        try:
            result.append(x509.IPAddress(ipaddress.ip_address(value)))
        except ValueError:
            result.append(x509.DNSName(value))
    return result


def _reusable(path: Path, names: list[str]) -> Any:
    """The certificate in ``path`` if it still serves: valid for a day more, names ``names``."""
    from cryptography import x509

    try:
        pem = path.read_text(encoding="ascii")
        certificate = x509.load_pem_x509_certificate(
            pem[pem.index(_BEGIN_CERTIFICATE) :].encode("ascii")
        )
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, UnicodeDecodeError, x509.ExtensionNotFound):
        return None
    if certificate.not_valid_after_utc < dt.datetime.now(dt.UTC) + dt.timedelta(days=1):
        return None
    present = {str(v) for v in san.get_values_for_type(x509.IPAddress)}
    present |= set(san.get_values_for_type(x509.DNSName))
    wanted = {str(ipaddress.ip_address(n)) if _is_ip(n) else n for n in names}
    return certificate if wanted <= present else None


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


class _Gate:
    """Outermost layer of an appliance: faults, then the raw-token check, then counting."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        token: str,
        faults: FaultInjector,
        chaos: ChaosInjector,
        stats: RequestStats,
    ) -> None:
        self._app = app
        self._token = token.encode("ascii")
        self._faults = faults
        self._chaos = chaos
        self._stats = stats

    def revoke_token(self) -> None:
        """The token was deleted on the appliance's console: it is refused from now on."""
        self._token = secrets.token_hex(16).encode("ascii")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        path: str = scope["path"]
        seen: dict[str, int] = {}

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                seen["status"] = int(message["status"])
            await send(message)

        fault = self._faults.check(path)  # shared with the MDE app: same counters
        struck = (
            None if fault is not None else self._chaos.strike(path, scope["method"], appliance=True)
        )
        try:
            if struck is not None:

                def appliance_error(status: int, message: str, retry_after: int | None) -> Any:
                    response = text(FAILURE_BODY, status)
                    if retry_after is not None:
                        response.headers["Retry-After"] = str(retry_after)
                    return response

                await serve_struck(
                    struck, self._chaos, scope, receive, counting_send, self._app, appliance_error
                )
            elif fault is not None:
                # Without a body, the appliances' documented failure text (C.1).
                body = fault.body if fault.body is not None else FAILURE_BODY
                response = text(body, fault.status)
                if fault.effective_retry_after is not None:
                    response.headers["Retry-After"] = str(fault.effective_retry_after)
                await response(scope, receive, counting_send)
            elif not self._authorized(scope):
                # Undocumented: what a sensor answers without a valid token. A plain-text 401,
                # for a missing or wrong token and for "Bearer <token>" alike.
                await text("Unauthorized", 401)(scope, receive, counting_send)
            else:
                await self._app(scope, receive, counting_send)
        finally:
            if "status" in seen:
                self._stats.record(path, seen["status"])

    def _authorized(self, scope: Scope) -> bool:
        for name, value in scope["headers"]:
            if name == b"authorization":
                return secrets.compare_digest(value.strip(), self._token)
        return False


def _appliance_app(routes: list[Route], gate: dict[str, Any]) -> _Gate:
    async def iot_failure(request: Request, exc: Exception) -> Response:
        return failure(500)

    async def http_error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        return text(str(getattr(exc, "detail", "")) or "Not Found", status)

    async def unexpected(request: Request, exc: Exception) -> Response:
        _log.exception("IoT appliance error on %s %s", request.method, request.url.path)
        return failure(500)

    handlers = {IotFailure: iot_failure, HTTPException: http_error, Exception: unexpected}
    return _Gate(Starlette(routes=routes, exception_handlers=handlers), **gate)


class IotListeners:
    """The running appliances of ``state``; ``start`` returns their public facts."""

    def __init__(
        self,
        state: IotState,
        *,
        clock: EmulatedClock,
        faults: FaultInjector,
        chaos: ChaosInjector,
        host: str,
        state_dir: Path,
        seed: int,
    ) -> None:
        self._state = state
        self._clock = clock
        self._faults = faults
        self._chaos = chaos
        self._host = host
        self._state_dir = state_dir
        self._seed = seed
        self._running: list[tuple[Any, threading.Thread]] = []  # (uvicorn.Server, its thread)
        self._gates: dict[str, _Gate] = {}
        self.appliances: list[IotAppliance] = []

    def start(self) -> list[IotAppliance]:
        """Serve every appliance in its own daemon thread; return once all accept connections."""
        sockets: dict[str, socket.socket] = {}
        try:
            facts: dict[str, tuple[Path, IotAppliance]] = {}
            for name in self._state.appliance_names():
                key_path, cert_path, fingerprint = load_or_create_appliance_certificate(
                    self._state_dir, name, self._host
                )
                sockets[name] = bind(self._host, 0)
                port = sockets[name].getsockname()[1]
                facts[name] = (key_path, self._appliance(name, port, cert_path, fingerprint))
            urls = {name: appliance.base_url for name, (_, appliance) in facts.items()}
            for name, (key_path, appliance) in facts.items():
                gate = {
                    "token": appliance.token,
                    "faults": self._faults,
                    "chaos": self._chaos,
                    "stats": self._state.requests[name],
                }
                self._gates[name] = _appliance_app(self._routes(appliance, urls), gate)
                server = make_server(
                    self._gates[name],
                    host=self._host,
                    port=sockets[name].getsockname()[1],
                    certfile=str(key_path),
                )
                # The thread closes the socket from now on.
                thread = start_serving(server, sockets.pop(name), name=f"epf-emulator-iot-{name}")
                self._running.append((server, thread))
                self.appliances.append(appliance)
        finally:
            for sock in sockets.values():
                sock.close()
        wait_started(self._running)
        return list(self.appliances)

    def stop(self) -> None:
        """Stop every appliance; safe to call twice."""
        stop_serving(self._running)
        self._running.clear()
        self._gates.clear()
        self.appliances.clear()

    def revoke_token(self, name: str) -> None:
        """Delete appliance ``name``'s access token, as its console's user would: every call
        with the old token is answered 401 from now on (until the emulator restarts).

        Raises:
            KeyError: no running appliance has that name.
        """
        self._gates[name].revoke_token()

    def _appliance(self, name: str, port: int, cert_path: Path, fingerprint: str) -> IotAppliance:
        sensor = next((s for s in self._state.sensors if s.name == name), None)
        return IotAppliance(
            name=name,
            kind="console" if name == CONSOLE_NAME else "sensor",
            base_url=f"https://{url_host(self._host)}:{port}",
            token=secrets.token_hex(16),
            certificate_path=cert_path,
            fingerprint_sha256=fingerprint,
            sensor_id=sensor.number if sensor is not None else None,
        )

    def _routes(self, appliance: IotAppliance, urls: dict[str, str]) -> list[Route]:
        if appliance.sensor_id is None:
            return ConsoleApi(self._state, clock=self._clock, urls=urls, seed=self._seed).routes()
        sensor = next(s for s in self._state.sensors if s.number == appliance.sensor_id)
        api = SensorApi(
            sensor,
            clock=self._clock,
            alerts=self._state.alerts[sensor.number],
            events=self._state.events[sensor.number],
        )
        return api.routes()

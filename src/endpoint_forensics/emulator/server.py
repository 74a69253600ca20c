"""The running emulator: HTTPS on loopback with a generated test CA, in a background thread.

Owns ``Emulator``'s lifecycle (build the tenant, issue the TLS certificate, bind, serve with
uvicorn in a daemon thread, stop cleanly), its public facts (``base_url``, ``ca_path``,
credentials: the secret and ``client_certificate_path``), the emulated clock (``now``,
``advance``), ``serve_forever`` for ``epf emulator``, and ``write_config``, the collector
config that points at it. The state directory keeps ``ca.pem`` (and the CA key, so a restart
with the same ``state_dir`` keeps clients' trust), the server certificate, the app's client
certificate ``client-cert.pem`` (key and certificate; kept across restarts too) and, while
running, the export files. With IoT sensors it also starts and stops the Defender for IoT
appliances' listeners (``iot_server``: one HTTPS server per sensor and for the console, each
with its own self-signed certificate ``iot-<name>.pem``, kept across restarts too) and exposes
their facts (``iot_appliances``), the plain-text passwords they serve and the console's delta
counts (for tests), and ``write_config`` writes their ``[[sensors]]``/``[[consoles]]`` blocks.
The Logs Ingestion side: the DCRs (``dcrs``, ``dcr_for``; ``dcr_immutable_id`` is the first),
``ingested_rows`` and the ``[sentinel]`` block with one ``[[sentinel.dcrs]]`` entry per DCR.
The App Service managed identity endpoint: ``managed_identity_endpoint`` and its
``managed_identity_header`` (``IDENTITY_ENDPOINT`` and ``IDENTITY_HEADER`` for azure-identity).
Key Vault: ``keyvault_url``; the vault always holds the client secret as ``epf-client-secret``.

Imports only emulator modules: it shares no code with the collector.
"""

from __future__ import annotations

import logging
import secrets
import shutil
import signal
import tempfile
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any, Literal

from .config_text import collector_config
from .fleet import tenant_ids
from .ingestion_rules import emulated_rules
from .iot_state import IotAppliance
from .listen import bind, make_server, serve, url_host
from .settings import EmulatorSettings

if TYPE_CHECKING:
    from collections.abc import Collection

    from .iot_server import IotListeners
    from .tenant import Tenant

__all__ = ["Emulator"]

_log = logging.getLogger(__name__)
_START_TIMEOUT_SECONDS = 30.0
_STOP_TIMEOUT_SECONDS = 10.0
_MDE_AUDIENCE = "https://api.securitycenter.microsoft.com"
_DEFAULT_SETTINGS = EmulatorSettings()  # frozen, so one shared default is safe


class Emulator:
    """The emulated Defender tenant over HTTPS; use as ``with Emulator(settings) as emu:``."""

    def __init__(self, settings: EmulatorSettings = _DEFAULT_SETTINGS) -> None:
        self.settings = settings
        self.tenant_id, self.client_id = tenant_ids(settings.seed)
        self.client_secret = ""
        self._tenant: Tenant | None = None
        self._server: Any = None  # uvicorn.Server
        self._thread: threading.Thread | None = None
        self._state_dir: Path | None = None
        self._owns_state_dir = False
        self._base_url: str | None = None
        self._ca_path: Path | None = None
        self._client_certificate_path: Path | None = None
        self._iot_listeners: IotListeners | None = None
        # stop() may run from serve_forever's thread and from another at the same time.
        self._lifecycle = threading.RLock()

    # --- lifecycle -----------------------------------------------------------------------
    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> Emulator:
        """Build the fleet, start HTTPS in a daemon thread, return once it accepts connections."""
        with self._lifecycle:
            if self._thread is not None:
                raise RuntimeError("the emulator is already running")
            try:
                self._start()
            except BaseException:
                self.stop()
                raise
            return self

    def stop(self) -> None:
        """Stop serving and release everything; safe to call twice, from any thread."""
        with self._lifecycle:
            if self._server is not None:
                self._server.should_exit = True
            if self._thread is not None and self._thread is not threading.current_thread():
                self._thread.join(_STOP_TIMEOUT_SECONDS)
                if self._thread.is_alive():
                    self._server.force_exit = True
                    self._thread.join(_STOP_TIMEOUT_SECONDS)
                    if self._thread.is_alive():
                        _log.warning("the emulator's server thread did not stop in time")
            self._thread = None
            self._server = None
            self._base_url = None
            if self._iot_listeners is not None:
                self._iot_listeners.stop()
                self._iot_listeners = None
            if self._tenant is not None:
                self._tenant.close()
                self._tenant = None
            if self._owns_state_dir and self._state_dir is not None:
                shutil.rmtree(self._state_dir, ignore_errors=True)
                self._ca_path = None
                self._client_certificate_path = None
            self._state_dir = None
            self._owns_state_dir = False

    def serve_forever(self) -> None:
        """Serve until Ctrl-C (or SIGTERM in the main thread), then stop cleanly."""
        if self._thread is None:
            self.start()
        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
        try:
            while self._thread is not None and self._thread.is_alive():
                self._thread.join(0.5)
        except KeyboardInterrupt:
            pass
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
            self.stop()

    # --- public facts --------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        """``https://HOST:PORT`` of the running emulator."""
        if self._base_url is None:
            raise RuntimeError("the emulator is not running; call start() first")
        return self._base_url

    @property
    def ca_path(self) -> Path:
        """PEM of the test CA that clients must trust."""
        if self._ca_path is None:
            raise RuntimeError("the emulator is not running; call start() first")
        return self._ca_path

    @property
    def keyvault_url(self) -> str:
        """The emulated Key Vault's URL (the base URL): ``keyvault:<it>/epf-client-secret``
        reads the app's client secret (defender-apis.md A.7)."""
        return self.base_url

    @property
    def client_certificate_path(self) -> Path:
        """PEM (private key and certificate) of the emulated app's client certificate.

        ``azure.identity.CertificateCredential`` reads it as is; the token endpoint accepts
        client assertions signed with its key (defender-apis.md A.4).
        """
        if self._client_certificate_path is None:
            raise RuntimeError("the emulator is not running; call start() first")
        return self._client_certificate_path

    @property
    def now(self) -> datetime:
        """The emulated clock: the start time plus every ``advance``."""
        return self._running_tenant().clock.now()

    def advance(self, hours: float) -> None:
        """Move the emulated clock forward by ``hours`` (>= 0).

        Posture changes scheduled in that interval take effect: snapshots, exports and the
        delta show them; export files made before are stale (the next request makes new
        ones). The same as ``POST /_emulator/advance?hours=H``.

        Raises:
            ValueError: ``hours`` is negative or not finite.
        """
        self._running_tenant().clock.advance(hours)

    @property
    def app(self) -> Any:
        """The ASGI app (for in-process transports); only while running."""
        if self._server is None:
            raise RuntimeError("the emulator is not running; call start() first")
        return self._server.config.app

    def stats(self) -> dict[str, Any]:
        """The same document as ``GET /_emulator/stats``."""
        return self._running_tenant().stats_document()

    @property
    def iot_appliances(self) -> list[IotAppliance]:
        """The running Defender for IoT appliances (sensors, then the console); [] without."""
        self._running_tenant()
        return list(self._iot_listeners.appliances) if self._iot_listeners is not None else []

    def iot_plaintext_passwords(self) -> set[str]:
        """Every plain-text password the sensors' reports show (distinct, 8+ characters)."""
        iot = self._running_tenant().iot
        return set(iot.model.passwords.issued) if iot is not None else set()

    def iot_changes_after(
        self, after_ms: int, sensors: Collection[int] | None = None
    ) -> dict[str, int]:
        """The console's v3 counts strictly after ``after_ms`` (epoch ms) as of now: devices
        (new and updated), deleted devices, connections and (device, CVE) pairs; of the
        sensors numbered ``sensors`` only, if given."""
        from .iot_truth import changes_after

        tenant = self._running_tenant()
        if tenant.iot is None:
            return {"devices": 0, "deleted": 0, "connections": 0, "cves": 0}
        return changes_after(tenant.iot, after_ms, tenant.clock.now_us() // 1000, sensors)

    @property
    def dcrs(self) -> list[tuple[str, tuple[str, ...]]]:
        """(immutable id, tables) of each emulated DCR, as an ``epf deploy arm`` template would
        deploy them: the registry's tables by profile, at most 10 to a DCR (defender-apis.md
        D.5). Deterministic from the seed; no need to be running."""
        return [(rule.immutable_id, rule.tables) for rule in emulated_rules(self.settings.seed)]

    @property
    def dcr_immutable_id(self) -> str:
        """The first DCR's ``immutableId``: it declares the first 10 core tables
        (``EPF_Devices_CL``, ``EPF_AgentHealth_CL``, ``EPF_AvHealth_CL``...) and no other."""
        return self.dcrs[0][0]

    def dcr_for(self, table: str) -> str:
        """The ``immutableId`` of the DCR that declares ``table``'s stream.

        Raises:
            KeyError: no emulated DCR declares ``table`` (it is not in the registry).
        """
        for immutable_id, tables in self.dcrs:
            if table in tables:
                return immutable_id
        raise KeyError(f"no emulated DCR declares a stream for {table}")

    def ingested_rows(self, table: str) -> list[dict[str, Any]]:
        """The rows the Logs Ingestion endpoint accepted into ``table`` (its stream
        ``Custom-<table>``), in arrival order, every column of the stream present: strings,
        ints, floats, bools, aware UTC datetimes and parsed JSON (dynamic)."""
        return self._running_tenant().ingested.rows(table)

    @property
    def managed_identity_endpoint(self) -> str:
        """``IDENTITY_ENDPOINT`` of the app's managed identity (App Service / Functions flow).

        HTTPS with the test CA: azure-identity takes no CA option from the environment for it,
        so clients trust ``ca_path`` through ``REQUESTS_CA_BUNDLE`` (its transport is requests)
        or ``ManagedIdentityCredential(connection_verify=...)``.
        """
        from .managed_identity import PATH  # imports Starlette: only once running

        return f"{self.base_url}{PATH}"

    @property
    def managed_identity_header(self) -> str:
        """``IDENTITY_HEADER``: the secret the endpoint expects as ``X-IDENTITY-HEADER``."""
        return self._running_tenant().settings.managed_identity_header

    def token(self, audience: str = _MDE_AUDIENCE, **options: Any) -> str:
        """Mint a token directly (tests: other roles, lifetimes or tenants via ``options``)."""
        if self._tenant is None:
            raise RuntimeError("the emulator is not running; call start() first")
        return self._tenant.identity.mint(audience, **options)

    def write_config(
        self,
        path: Path,
        *,
        credential: Literal["secret", "certificate"] = "secret",
        iot: Literal["pin", "ca", "none"] = "pin",
        mde: bool = True,
        sentinel: bool = True,
    ) -> None:
        """Write the collector config (TOML) for syncing from this emulator to ``path``.

        ``credential="certificate"`` writes ``certificate_path`` (the absolute path of
        ``client_certificate_path``) instead of ``client_secret``. After the ``[[tenants]]``
        block (none with ``mde=False``: an IoT-only config), one ``[[sensors]]`` block per
        sensor and a ``[[consoles]]`` block, each trusting its self-signed certificate by
        ``certificate_fingerprint`` (``iot="pin"``) or as ``ca_bundle`` (``"ca"``); ``"none"``
        writes no IoT blocks. With ``sentinel`` a ``[sentinel]`` block follows: the Logs
        Ingestion endpoint of this emulator, with the same app credential, and one
        ``[[sentinel.dcrs]]`` entry per DCR naming its tables, so every table is routed.
        """
        if credential not in ("secret", "certificate"):
            raise ValueError(f"credential must be 'secret' or 'certificate': {credential!r}")
        if iot not in ("pin", "ca", "none"):
            raise ValueError(f"iot must be 'pin', 'ca' or 'none': {iot!r}")
        if credential == "certificate":
            secret = ("certificate_path", str(self.client_certificate_path.resolve()))
        else:
            secret = ("client_secret", self.client_secret)
        text = collector_config(
            base_url=self.base_url,
            tenant_id=self.tenant_id,
            client_id=self.client_id,
            secret=secret,
            ca_path=self.ca_path.resolve(),
            dcrs=self.dcrs,
            appliances=self.iot_appliances if iot != "none" else [],
            iot_trust="ca" if iot == "ca" else "pin",
            mde=mde,
            sentinel=sentinel,
        )
        Path(path).write_text(text, encoding="utf-8")

    # --- internals -----------------------------------------------------------------------
    def _running_tenant(self) -> Tenant:
        if self._tenant is None:
            raise RuntimeError("the emulator is not running; call start() first")
        return self._tenant

    def _start(self) -> None:
        # Imported here: the server stack (uvicorn, Starlette, DuckDB) loads only when needed.

        from .app import build_app
        from .client_auth import load_or_create_certificate
        from .keyvault import CLIENT_SECRET_NAME as KEYVAULT_CLIENT_SECRET
        from .tenant import Tenant

        settings = self.settings
        started = time.perf_counter()
        self.client_secret = secrets.token_urlsafe(32)
        if not settings.managed_identity_header:  # like the client secret: fresh per start
            settings = replace(settings, managed_identity_header=secrets.token_urlsafe(24))
        # The vault holds the app's own secret, so a config can read that from Key Vault.
        vault = {**settings.keyvault_secrets, KEYVAULT_CLIENT_SECRET: self.client_secret}
        settings = replace(settings, keyvault_secrets=vault)
        anchor = datetime.now(UTC)
        if settings.state_dir is None:
            self._state_dir = Path(tempfile.mkdtemp(prefix="epf-emulator-"))
            self._owns_state_dir = True
        else:
            self._state_dir = Path(settings.state_dir).resolve()
            self._state_dir.mkdir(parents=True, exist_ok=True)
        certificate = load_or_create_certificate(
            self._state_dir, common_name=f"epf-emulator-{self.client_id}"
        )
        self._client_certificate_path = certificate.path
        self._tenant = Tenant(
            settings,
            anchor=anchor,
            client_secret=self.client_secret,
            state_dir=self._state_dir,
            certificate=certificate,
        )
        self._ca_path, cert_path = _issue_tls(self._state_dir, settings.host)
        sock = bind(settings.host, settings.port)
        port = sock.getsockname()[1]
        host = url_host(settings.host)
        try:
            server = make_server(
                build_app(self._tenant), host=settings.host, port=port, certfile=str(cert_path)
            )
            self._server = server
            self._thread = threading.Thread(
                target=serve, args=(server, sock), name="epf-emulator", daemon=True
            )
            self._thread.start()
        except BaseException:
            if self._thread is None:
                sock.close()  # otherwise the server thread closes it
            raise
        deadline = time.monotonic() + _START_TIMEOUT_SECONDS
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the emulator's HTTPS server did not start")
            time.sleep(0.01)
        self._base_url = f"https://{host}:{port}"
        if self._tenant.iot is not None:
            from .iot_server import IotListeners

            self._iot_listeners = IotListeners(
                self._tenant.iot,
                clock=self._tenant.clock,
                faults=self._tenant.faults,
                host=settings.host,
                state_dir=self._state_dir,
                seed=settings.seed,
            )
            self._iot_listeners.start()
        _log.info(
            "emulator for %d devices serving at %s (started in %.2fs)",
            settings.devices,
            self._base_url,
            time.perf_counter() - started,
        )


def _issue_tls(state_dir: Path, host: str) -> tuple[Path, Path]:
    """Write ``ca.pem`` (reusing a CA already in ``state_dir``) and a server certificate."""
    import trustme

    ca_path, ca_key_path = state_dir / "ca.pem", state_dir / "ca-key.pem"
    if ca_path.is_file() and ca_key_path.is_file():
        ca = trustme.CA.from_pem(ca_path.read_bytes(), ca_key_path.read_bytes())
    else:
        ca = trustme.CA(organization_name="epf emulator test CA")
        ca.cert_pem.write_to_path(str(ca_path))
        ca.private_key_pem.write_to_path(str(ca_key_path))
        ca_key_path.chmod(0o600)
    names = ["127.0.0.1", "localhost", "::1"]
    if host not in names and host not in ("0.0.0.0", "::"):
        names.append(host)
    cert_path = state_dir / "server.pem"
    ca.issue_cert(*names).private_key_and_cert_chain_pem.write_to_path(str(cert_path))
    cert_path.chmod(0o600)
    return ca_path, cert_path


def _raise_keyboard_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt

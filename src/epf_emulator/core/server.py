"""The running emulator: ``Emulator``, HTTPS on loopback with a test CA, in a background thread.

Owns ``Emulator``'s lifecycle (make the tenants' seats and build the home tenant, issue the
TLS certificate, bind one listener for every tenant, serve with uvicorn in a daemon thread,
stop cleanly; ``serve_forever`` for ``epf emulator``) and its public facts: ``base_url``,
``ca_path``, the credentials (tenant 0's client secret, fresh each start, and
``client_certificate_path``; every tenant's in ``tenants`` and ``tenant_certificate_path``),
the emulated clock (``now``, ``advance``), ``stats``, the Defender for IoT appliances
(``iot_appliances``, the plain-text passwords they serve, the console's delta counts), the
Logs Ingestion DCRs (``dcrs``, ``dcr_for``, ``dcr_immutable_id``) and ``ingested_rows``, the
managed identity endpoint and header, ``keyvault_url`` (the vault holds the client secret as
``epf-client-secret``) and ``write_config``, the collector config that points at it
(``core.config_text``). The appliances, DCRs, ingested rows, managed identity and vault are
tenant 0's. The state directory (``core.credentials``) keeps the test CA, the client
certificate (``identity.client_auth``), each appliance's certificate (``iot.server``), the
other tenants' under ``tenants/<name>/`` and, while running, the export and spill files. The
server stack loads on start.

Imports only emulator modules: it shares no code with the collector.
"""

from __future__ import annotations

import logging
import shutil
import signal
import threading
from datetime import datetime
from pathlib import Path
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any, Literal

from epf_emulator.common.chaos import Chaos
from epf_emulator.common.clock import WORLD_ANCHOR
from epf_emulator.common.listen import (
    bind,
    make_server,
    start_serving,
    stop_serving,
    url_host,
    wait_started,
)
from epf_emulator.common.settings import EmulatorSettings
from epf_emulator.core.config_text import ConfigTenant, collector_config
from epf_emulator.core.credentials import issue_server_certificate, open_state_dir
from epf_emulator.core.facts import RunningFacts
from epf_emulator.world.fleet import tenant_ids

if TYPE_CHECKING:
    from epf_emulator.core.seats import Seat, Seats, TenantCredentials
    from epf_emulator.core.tenant import Tenant
    from epf_emulator.iot.server import IotListeners

__all__ = ["Emulator"]

_log = logging.getLogger(__name__)
_MDE_AUDIENCE = "https://api.securitycenter.microsoft.com"
_DEFAULT_SETTINGS = EmulatorSettings()  # frozen, so one shared default is safe


class Emulator(RunningFacts):
    """The emulated Defender tenant over HTTPS; use as ``with Emulator(settings) as emu:``."""

    def __init__(self, settings: EmulatorSettings = _DEFAULT_SETTINGS) -> None:
        self.settings = settings
        self.tenant_id, self.client_id = tenant_ids(settings.seed)
        self.client_secret = ""
        self._seats: Seats | None = None
        self._tenant: Tenant | None = None  # the home tenant's world
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
            if self._server is not None and self._thread is not None:
                stop_serving([(self._server, self._thread)])
            self._thread = None
            self._server = None
            self._base_url = None
            if self._iot_listeners is not None:
                self._iot_listeners.stop()
                self._iot_listeners = None
            if self._seats is not None:
                self._seats.close()
                self._seats = None
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
    def tenants(self) -> list[TenantCredentials]:
        """Every tenant's name and app credentials, tenant 0 (``tenant_id``, ``client_id``,
        ``client_secret``) first; one entry unless ``EmulatorSettings.tenants`` says more."""
        return [seat.credentials for seat in self._running_seats().seats]

    def tenant_certificate_path(self, tenant: str) -> Path:
        """PEM of the client certificate of ``tenant`` (its id or name), issued now if it had
        none (tenant 0's is ``client_certificate_path``).

        Raises:
            KeyError: no tenant of this emulator has that id or name.
        """
        return self._seat(tenant).certificate().path

    @property
    def now(self) -> datetime:
        """The emulated clock (tenant 0's): the start time plus every ``advance``."""
        return self._running_tenant().clock.now()

    def advance(self, hours: float, tenant: str | None = None) -> None:
        """Move the emulated clock forward by ``hours`` (>= 0): every tenant's, or only that
        of ``tenant`` (its id or name).

        Posture changes scheduled in that interval take effect: snapshots, exports and the
        delta show them; export files made before are stale (the next request makes new
        ones). The same as ``POST /_emulator/advance?hours=H[&tenant=T]``.

        Raises:
            ValueError: ``hours`` is negative or not finite.
            KeyError: no tenant of this emulator has that id or name.
        """
        if tenant is None:
            self._running_seats().advance(hours)
        else:
            self._seat(tenant).clock.advance(hours)

    @property
    def app(self) -> Any:
        """The ASGI app (for in-process transports); only while running."""
        if self._server is None:
            raise RuntimeError("the emulator is not running; call start() first")
        return self._server.config.app

    def stats(self, tenant: str | None = None) -> dict[str, Any]:
        """The same document as ``GET /_emulator/stats[?tenant=T]``: with ``tenant`` (an id
        or name) that tenant's alone, its world built first if need be.

        Raises:
            KeyError: no tenant of this emulator has that id or name.
        """
        if tenant is None:
            return self._running_seats().document()
        return self._seat(tenant).document()

    def set_chaos(self, chaos: Chaos | None) -> None:
        """Inject ``chaos`` from now on (None: none): a kind of fault in a share of requests
        (``common.chaos``), on every tenant's services and the IoT appliances alike."""
        self._running_tenant().chaos.set(chaos)

    @property
    def managed_identity_endpoint(self) -> str:
        """``IDENTITY_ENDPOINT`` of the app's managed identity (App Service / Functions flow).

        HTTPS with the test CA: azure-identity takes no CA option from the environment for it,
        so clients trust ``ca_path`` through ``REQUESTS_CA_BUNDLE`` (its transport is requests)
        or ``ManagedIdentityCredential(connection_verify=...)``.
        """
        from epf_emulator.identity.managed_identity import (
            PATH,  # imports Starlette: only once running
        )

        return f"{self.base_url}{PATH}"

    @property
    def managed_identity_header(self) -> str:
        """``IDENTITY_HEADER``: the secret the endpoint expects as ``X-IDENTITY-HEADER``."""
        return self._running_tenant().settings.managed_identity_header

    def token(
        self, audience: str = _MDE_AUDIENCE, *, tenant: str | None = None, **options: Any
    ) -> str:
        """Mint a token directly, as tenant 0's identity or that of ``tenant`` (its id or name)
        would (tests: other roles, lifetimes or a forged ``tenant_id`` via ``options``)."""
        seat = self._running_seats().home if tenant is None else self._seat(tenant)
        return seat.identity.mint(audience, **options)

    def write_config(
        self,
        path: Path,
        *,
        credential: Literal["secret", "certificate"] = "secret",
        iot: Literal["pin", "ca", "none"] = "pin",
        mde: bool = True,
        sentinel: bool = True,
        feeds: bool = False,
    ) -> None:
        """Write the collector config (TOML) for syncing from this emulator to ``path``.

        One ``[[tenants]]`` entry per tenant (named ``emulated`` alone, else ``t000``,
        ``t001``..., each with its own credentials, all at this emulator; none with
        ``mde=False``: an IoT-only config). ``credential="certificate"`` writes each tenant's
        ``certificate_path`` (absolute; tenant 0's is ``client_certificate_path``, the others'
        are issued now) instead of ``client_secret``. Then one ``[[sensors]]`` block per
        sensor and a ``[[consoles]]`` block, each trusting its self-signed certificate by
        ``certificate_fingerprint`` (``iot="pin"``) or as ``ca_bundle`` (``"ca"``); ``"none"``
        writes no IoT blocks (the appliances are tenant 0's). With ``sentinel`` a
        ``[sentinel]`` block follows: the Logs Ingestion endpoint of this emulator, with
        tenant 0's app credential (its workspace receives every tenant's rows), and one
        ``[[sentinel.dcrs]]`` entry per DCR naming its tables, so every table is routed. With
        ``feeds`` a ``[feeds]`` block reads every threat feed from this emulator's mirrors.

        Raises:
            ValueError: ``credential`` or ``iot`` is none of its choices.
        """
        tenants = [
            ConfigTenant(
                seat.name,
                seat.tenant_id,
                seat.client_id,
                seat.client_secret,
                seat.certificate().path if credential == "certificate" else None,
            )
            for seat in self._running_seats().seats
        ]
        text = collector_config(
            base_url=self.base_url,
            tenants=tenants,
            credential=credential,
            ca_path=self.ca_path,
            dcrs=self.dcrs,
            appliances=self.iot_appliances,
            iot=iot,
            mde=mde,
            sentinel=sentinel,
            feeds=feeds,
        )
        Path(path).write_text(text, encoding="utf-8")

    # --- internals -----------------------------------------------------------------------
    def _running_tenant(self) -> Tenant:
        if self._tenant is None:
            raise RuntimeError("the emulator is not running; call start() first")
        return self._tenant

    def _running_seats(self) -> Seats:
        if self._seats is None:
            raise RuntimeError("the emulator is not running; call start() first")
        return self._seats

    def _seat(self, tenant: str) -> Seat:
        seat = self._running_seats().find(tenant)
        if seat is None:
            raise KeyError(f"no tenant {tenant} in this emulator")
        return seat

    def _start(self) -> None:
        # Imported here: the server stack (uvicorn, Starlette, DuckDB) loads only when needed.
        from epf_emulator.core.seats import Seats
        from epf_emulator.core.startup import Startup
        from epf_emulator.identity.client_auth import load_or_create_certificate

        startup = Startup()
        settings = self.settings
        self._state_dir, self._owns_state_dir = open_state_dir(settings.state_dir)
        certificate = load_or_create_certificate(
            self._state_dir, common_name=f"epf-emulator-{self.client_id}"
        )
        self._client_certificate_path = certificate.path
        self._seats = Seats(
            settings,
            anchor=WORLD_ANCHOR,  # a fixed calendar: the clock starts at settings.start
            state_dir=self._state_dir,
            startup=startup,
            home_certificate=certificate,
        )
        home = self._seats.home
        self.client_secret = home.client_secret
        # The home tenant is built now; the others on their first request.
        self._tenant = home.build_now(startup)
        self._ca_path, cert_path = issue_server_certificate(self._state_dir, settings.host)
        self._serve_https(self._seats, settings.host, settings.port, cert_path)
        if self._tenant.iot is not None:
            from epf_emulator.iot.server import IotListeners

            self._iot_listeners = IotListeners(
                self._tenant.iot,
                clock=self._tenant.clock,
                faults=self._tenant.faults,
                chaos=self._tenant.chaos,
                host=settings.host,
                state_dir=self._state_dir,
                seed=settings.seed,
            )
            self._iot_listeners.start()
        startup.serving()
        _log.info(
            "emulator for %d tenant(s) of %d devices serving at %s (started in %.2fs, %.2fs"
            " after its process started)",
            settings.tenants,
            settings.devices,
            self._base_url,
            startup.serving_seconds,
            startup.start_seconds,
        )

    def _serve_https(self, seats: Seats, host: str, port: int, cert_path: Path) -> None:
        """Serve every tenant of ``seats`` in a daemon thread; return once it accepts
        connections."""
        from epf_emulator.core.front import Front

        sock = bind(host, port)
        port = sock.getsockname()[1]
        try:
            server = make_server(Front(seats), host=host, port=port, certfile=str(cert_path))
        except BaseException:
            sock.close()
            raise
        self._server = server
        self._thread = start_serving(server, sock, name="epf-emulator")
        wait_started([(server, self._thread)])
        self._base_url = f"https://{url_host(host)}:{port}"


def _raise_keyboard_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt

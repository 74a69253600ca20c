"""The running emulator: ``Emulator``, HTTPS on loopback with a test CA, in a background thread.

Owns ``Emulator``'s lifecycle (build the tenant, issue the TLS certificate, bind, serve with
uvicorn in a daemon thread, stop cleanly; ``serve_forever`` for ``epf emulator``) and its
public facts: ``base_url``, ``ca_path``, the credentials (the client secret, fresh each start,
and ``client_certificate_path``), the emulated clock (``now``, ``advance``), ``stats``, the
Defender for IoT appliances (``iot_appliances``, the plain-text passwords they serve, the
console's delta counts), the Logs Ingestion DCRs (``dcrs``, ``dcr_for``, ``dcr_immutable_id``)
and ``ingested_rows``, the managed identity endpoint and header, ``keyvault_url`` (the vault
holds the client secret as ``epf-client-secret``) and ``write_config``, the collector config
that points at it (``core.config_text``). The state directory (``core.credentials``) keeps the
test CA, the client certificate (``identity.client_auth``), each appliance's certificate
(``iot.server``) and, while running, the export and spill files. The server stack loads on start.

Imports only emulator modules: it shares no code with the collector.
"""

from __future__ import annotations

import logging
import secrets
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
from epf_emulator.core.config_text import collector_config
from epf_emulator.core.credentials import (
    issue_server_certificate,
    open_state_dir,
    settings_of_this_start,
)
from epf_emulator.ingestion.rules import emulated_rules
from epf_emulator.iot.state import IotAppliance
from epf_emulator.world.fleet import tenant_ids

if TYPE_CHECKING:
    from collections.abc import Collection

    from epf_emulator.core.tenant import Tenant
    from epf_emulator.iot.server import IotListeners

__all__ = ["Emulator"]

_log = logging.getLogger(__name__)
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
            if self._server is not None and self._thread is not None:
                stop_serving([(self._server, self._thread)])
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

    def issued_token_signatures(self) -> set[str]:
        """The signature part of every access token the tenant's identity minted (a token
        found anywhere in the collector's output shows it)."""
        return set(self._running_tenant().identity.issued_signatures)

    def received_assertion_signatures(self) -> set[str]:
        """The signature part of every client assertion (certificate credential) the token
        endpoint received: like a token, found anywhere in the collector's output it leaks."""
        return set(self._running_tenant().identity.assertion_signatures)

    def issued_sas_signatures(self) -> set[str]:
        """Every SAS signature of an export link handed out so far (secrets: a check that the
        collector never writes one anywhere looks for these)."""
        exports = self._running_tenant().exports
        return set(exports.signatures)

    def set_chaos(self, chaos: Chaos | None) -> None:
        """Inject ``chaos`` from now on (None: none): a kind of fault in a share of requests
        (``common.chaos``), on the tenant's services and the IoT appliances alike."""
        self._running_tenant().chaos.set(chaos)

    def ingested_counts(self) -> dict[str, dict[str, int]]:
        """Per table, the rows the Logs Ingestion endpoint accepted: ``raw``, and ``distinct``
        (one per identical row: an upload re-sent after a lost answer carries the same
        ``BatchId`` and values, so this is the count after the documented dedup)."""
        return self._running_tenant().ingested.counts_with_distinct()

    def revoke_iot_token(self, name: str) -> None:
        """Delete the access token of the running appliance ``name`` (a sensor or the
        console), as its console's user would: calls with it are refused (401) from now on.

        Raises:
            KeyError: no running appliance has that name.
        """
        self._running_tenant()
        if self._iot_listeners is None:
            raise KeyError(name)
        self._iot_listeners.revoke_token(name)

    def iot_plaintext_passwords(self) -> set[str]:
        """Every plain-text password the sensors' reports show (distinct, 8+ characters)."""
        iot = self._running_tenant().iot
        return set(iot.model.passwords.issued) if iot is not None else set()

    def iot_open_cves(self) -> set[tuple[str, str, str]]:
        """(sensor name, device address, CVE id) of every CVE the sensors list now."""
        tenant = self._running_tenant()
        if tenant.iot is None:
            return set()
        now_ms = tenant.clock.now_us() // 1000
        return {
            (sensor.name, device.ips[0], cve.cve_id)
            for sensor in tenant.iot.sensors
            for device in sensor.alive_devices(now_ms)
            for cve in device.cves
        }

    def iot_changes_after(
        self, after_ms: int, sensors: Collection[int] | None = None
    ) -> dict[str, int]:
        """The console's v3 counts strictly after ``after_ms`` (epoch ms) as of now: devices
        (new and updated), deleted devices, connections and (device, CVE) pairs; of the
        sensors numbered ``sensors`` only, if given."""
        from epf_emulator.iot.truth import changes_after

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
        from epf_emulator.identity.managed_identity import (
            PATH,  # imports Starlette: only once running
        )

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
        feeds: bool = False,
    ) -> None:
        """Write the collector config (TOML) for syncing from this emulator to ``path``.

        ``credential="certificate"`` writes ``certificate_path`` (the absolute path of
        ``client_certificate_path``) instead of ``client_secret``. After the ``[[tenants]]``
        block (none with ``mde=False``: an IoT-only config), one ``[[sensors]]`` block per
        sensor and a ``[[consoles]]`` block, each trusting its self-signed certificate by
        ``certificate_fingerprint`` (``iot="pin"``) or as ``ca_bundle`` (``"ca"``); ``"none"``
        writes no IoT blocks. With ``sentinel`` a ``[sentinel]`` block follows: the Logs
        Ingestion endpoint of this emulator, with the same app credential, and one
        ``[[sentinel.dcrs]]`` entry per DCR naming its tables, so every table is routed. With
        ``feeds`` a ``[feeds]`` block reads every threat feed from this emulator's mirrors.

        Raises:
            ValueError: ``credential`` or ``iot`` is none of its choices.
        """
        text = collector_config(
            base_url=self.base_url,
            tenant_id=self.tenant_id,
            client_id=self.client_id,
            credential=credential,
            client_secret=self.client_secret,
            certificate_path=self.client_certificate_path,
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

    def _start(self) -> None:
        # Imported here: the server stack (uvicorn, Starlette, DuckDB) loads only when needed.
        from epf_emulator.core.startup import Startup
        from epf_emulator.core.tenant import Tenant
        from epf_emulator.identity.client_auth import load_or_create_certificate

        startup = Startup()
        self.client_secret = secrets.token_urlsafe(32)
        settings = settings_of_this_start(self.settings, self.client_secret)
        anchor = WORLD_ANCHOR  # a fixed calendar: the clock starts at settings.start
        self._state_dir, self._owns_state_dir = open_state_dir(settings.state_dir)
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
            startup=startup,
        )
        self._ca_path, cert_path = issue_server_certificate(self._state_dir, settings.host)
        self._serve_https(self._tenant, settings.host, settings.port, cert_path)
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
            "emulator for %d devices serving at %s (started in %.2fs, %.2fs after its"
            " process started)",
            settings.devices,
            self._base_url,
            startup.serving_seconds,
            startup.start_seconds,
        )

    def _serve_https(self, tenant: Tenant, host: str, port: int, cert_path: Path) -> None:
        """Serve ``tenant``'s app in a daemon thread; return once it accepts connections."""
        from epf_emulator.core.app import build_app

        sock = bind(host, port)
        port = sock.getsockname()[1]
        try:
            server = make_server(build_app(tenant), host=host, port=port, certfile=str(cert_path))
        except BaseException:
            sock.close()
            raise
        self._server = server
        self._thread = start_serving(server, sock, name="epf-emulator")
        wait_started([(server, self._thread)])
        self._base_url = f"https://{url_host(host)}:{port}"


def _raise_keyboard_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt

"""Emulator settings: what to emulate (fleet size, seed, limits) and which faults to inject.

Owns ``EmulatorSettings``, ``Fault`` and the ``--faults`` CLI syntax (``parse_faults``).
Pure data, nothing heavy, so the CLI can build settings cheaply.

Imports only ``common.clock`` (the world's calendar) of the emulator: it shares no code with the
collector.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from epf_emulator.common.chaos import Chaos
from epf_emulator.common.clock import CLOCK_EARLIEST, TIMELINE_END, WORLD_ANCHOR

__all__ = ["RATE_LIMIT_NAMES", "EmulatorSettings", "Fault", "parse_faults"]

#: The emulated rate-limit buckets, one per documented endpoint limit (defender-apis.md B.1-B.6);
#: both hunting endpoints share one.
RATE_LIMIT_NAMES = (
    "machines",
    "advanced_hunting",
    "deviceavinfo",
    "info_gathering_export",
    "software_vulnerabilities_by_machine",
    "software_vulnerabilities_export",
    "software_vulnerability_changes",
    "secure_config_by_machine",
    "secure_config_export",
    "software_inventory_by_machine",
    "software_inventory_export",
    "recommendations",
    "vulnerabilities",
    "scores",
)

_MAX_IOT_SENSORS = 16
_MAX_TENANTS = 10_000
_MAX_IOT_DEVICES = 2000
_KEYVAULT_NAME = re.compile(r"^[0-9A-Za-z-]{1,127}$")
_FAULT_SYNTAX = "STATUS@PATH[*TIMES][+AFTER][=BODY]"
_FAULT_EXAMPLE = "429@/api/machines*2,500@/v1.0/security/runHuntingQuery+1,200@/api/deviceavinfo="
_FAULT_PATTERN = re.compile(
    r"^(?P<status>\d{3})@(?P<path>/[^*+@,=\s]*)(?:\*(?P<times>\d+))?(?:\+(?P<after>\d+))?"
    r"(?:=(?P<body>.*))?$"
)


@dataclass(frozen=True)
class Fault:
    """Answer ``status`` to requests whose path starts with ``path``.

    The first ``after`` matching requests go through; the next ``times`` get the fault. With
    ``body`` the fault answers exactly that body (any status 200-599: ``Fault(path, 200,
    body="")`` is the documented empty 200 a client must retry); without it, the service's
    error body for ``status`` (400-599 only).

    With ``ignore_skip`` (status 200, no body) the request is served as if it had no
    ``$skip``: the collection's first page comes again, as from a service that ignores
    ``$skip`` or loops its next link (defender-apis.md F). Not in the CLI syntax.
    """

    path: str
    status: int
    times: int = 1
    after: int = 0
    retry_after: int | None = None
    body: str | None = None
    ignore_skip: bool = False

    def __post_init__(self) -> None:
        if not self.path.startswith("/"):
            raise ValueError(f"fault path must start with '/': {self.path!r}")
        if self.ignore_skip:
            if self.status != 200 or self.body is not None:
                raise ValueError("an ignore_skip fault answers the API's own 200: no body")
        elif self.body is not None:
            if not 200 <= self.status <= 599:
                raise ValueError(f"fault status with a body must be 200-599: {self.status}")
        elif not 400 <= self.status <= 599:
            raise ValueError(
                f"fault status must be an HTTP error status (400-599), or give a body: {self.status}"
            )
        if self.times < 1:
            raise ValueError(f"fault times must be at least 1: {self.times}")
        if self.after < 0:
            raise ValueError(f"fault after must not be negative: {self.after}")
        if self.retry_after is not None and self.retry_after < 0:
            raise ValueError(f"fault retry_after must not be negative: {self.retry_after}")

    @property
    def effective_retry_after(self) -> int | None:
        """Seconds to send as ``Retry-After``: explicit, else 1 for a 429, else none."""
        if self.retry_after is not None:
            return self.retry_after
        return 1 if self.status == 429 else None


def parse_faults(spec: str) -> tuple[Fault, ...]:
    """Parse the CLI fault syntax: comma-separated ``STATUS@PATH[*TIMES][+AFTER][=BODY]``.

    Example: ``"429@/api/machines*2,500@/v1.0/security/runHuntingQuery+1"``. ``=BODY`` answers
    exactly the rest of the item as the body (it cannot contain a comma; ``200@/api/x=`` is an
    empty 200). An empty or blank spec means no faults.

    Raises:
        ValueError: an item does not follow the syntax, or its values are out of range.
    """
    faults: list[Fault] = []
    for raw in spec.split(","):
        item = raw.strip()
        if not item:
            if spec.strip():
                message = (
                    f"empty fault in {spec!r}: expected {_FAULT_SYNTAX}, e.g. {_FAULT_EXAMPLE}"
                )
                raise ValueError(message)
            continue
        match = _FAULT_PATTERN.match(item)
        if match is None:
            raise ValueError(f"bad fault {item!r}: expected {_FAULT_SYNTAX}, e.g. {_FAULT_EXAMPLE}")
        try:
            faults.append(
                Fault(
                    path=match["path"],
                    status=int(match["status"]),
                    times=int(match["times"]) if match["times"] is not None else 1,
                    after=int(match["after"]) if match["after"] is not None else 0,
                    body=match["body"],
                )
            )
        except ValueError as exc:
            raise ValueError(f"bad fault {item!r}: {exc}") from exc
    return tuple(faults)


@dataclass(frozen=True)
class EmulatorSettings:
    """What the emulated tenant looks like and how it misbehaves.

    ``rate_limits`` overrides replace the per-minute window of a named limit (one of
    ``RATE_LIMIT_NAMES``) with ``(calls, window_seconds)``; the hourly window stays as
    documented. ``vulnerabilities_per_device`` is the average number of CVE rows per device
    in the vulnerability export; ``export_part_rows`` the rows per via-files part;
    ``sas_valid_seconds`` overrides the validity of the download links (tests make them expire
    in seconds); None keeps ``sasValidHours`` or the documented default.

    Defender for IoT (OT, defender-apis.md C): ``iot_sensors`` sensors (0: no IoT listener at
    all), each monitoring ``iot_devices_per_sensor`` OT devices, and with ``iot_console`` an
    on-premises management console over all of them. Per sensor, events are a Poisson process
    at ``iot_events_per_hour`` from ``iot_event_backlog_minutes`` before the start, alerts one
    at ``iot_alerts_per_hour`` from ``iot_alert_history_hours`` before it.
    ``iot_event_storms``: hours when a sensor sees far more events, as ``(sensor number, start,
    events per hour)`` (an address scan, a misbehaving controller): the emulated hour holding
    ``start`` runs at that rate instead.

    Advanced hunting (B.3): ``hunting_row_limit`` and ``hunting_timeout_seconds`` are the MDE
    API's (100,000 rows, 200 s a request), ``graph_hunting_row_limit`` and
    ``graph_hunting_timeout_seconds`` Graph's (100,000 rows per the Graph security API
    overview; "more than three minutes" times out); past its row limit an API truncates
    silently. A query's simulated execution time is ``hunting_delay_seconds`` plus
    ``hunting_seconds_per_row`` per row of its full result; one whose time passes the limit
    answers as timed out once the limit has passed (tests use limits of a few seconds).

    Logs Ingestion (defender-apis.md D): ``ingestion_rate_limit`` is the DCR's request limit
    as ``(calls, window_seconds)``; None keeps the documented 12,000 per minute.

    ``app_roles``: the application permissions the app registration's tokens carry (A.6);
    None grants every one the collector uses (``identity.APP_ROLES``).

    Managed identity (App Service / Functions, ``managed_identity``): ``managed_identity_header``
    is the secret clients send as ``X-IDENTITY-HEADER``; empty: a fresh one per start.

    Key Vault (A.7): ``keyvault_secrets`` are the emulated vault's secrets (name: value; names
    1-127 letters, digits and hyphens, case-insensitive); it also always holds
    ``epf-client-secret``, the app's own client secret (that one wins over a given value).

    ``start``: where the emulated clock starts (an aware datetime, by default the world's
    anchor, ``common.clock.WORLD_ANCHOR``); anywhere from ``CLOCK_EARLIEST`` (90 days before
    the anchor) to ``TIMELINE_END`` (14 days after it). What the tenant serves at a clock time
    does not depend on where the clock started.

    ``tenants``: how many tenants the one listener serves (an MSSP's customers), each with
    ``devices`` devices of its own. Tenant 0 is the one the settings describe (its seed is
    ``seed``, and it alone has the IoT appliances, ``extra_machine_records``, the managed
    identity, the vault and the feeds); tenant i's seed is derived from ``seed`` and i
    (``core.seats``), so its ids, credentials and fleet are its own and reproducible.
    """

    devices: int = 2000
    seed: int = 1
    host: str = "127.0.0.1"
    port: int = 0
    token_lifetime_seconds: int = 3599
    state_dir: Path | None = None
    faults: tuple[Fault, ...] = ()
    # One kind of fault at random in a share of requests (common.chaos): the reliability
    # harness's; settable while running (Emulator.set_chaos).
    chaos: Chaos | None = None
    rate_limits: Mapping[str, tuple[int, float]] = field(default_factory=dict)
    hunting_row_limit: int = 100_000
    graph_hunting_row_limit: int = 100_000
    hunting_timeout_seconds: float = 200.0
    graph_hunting_timeout_seconds: float = 180.0
    hunting_delay_seconds: float = 0.0
    hunting_seconds_per_row: float = 0.0
    extra_machine_records: tuple[Mapping[str, Any], ...] = ()
    vulnerabilities_per_device: float = 30.0
    export_part_rows: int = 100_000
    sas_valid_seconds: float | None = None
    iot_sensors: int = 2
    iot_console: bool = True
    iot_devices_per_sensor: int = 60
    iot_events_per_hour: float = 120.0
    iot_event_backlog_minutes: float = 30.0
    iot_event_storms: tuple[tuple[int, datetime, float], ...] = ()
    iot_alerts_per_hour: float = 3.0
    iot_alert_history_hours: float = 48.0
    ingestion_rate_limit: tuple[int, float] | None = None
    managed_identity_header: str = ""
    app_roles: tuple[str, ...] | None = None
    keyvault_secrets: Mapping[str, str] = field(default_factory=dict)
    start: datetime = WORLD_ANCHOR
    tenants: int = 1

    def __post_init__(self) -> None:
        self._validate_start()
        if self.devices < 0:
            raise ValueError(f"devices must not be negative: {self.devices}")
        if not 1 <= self.tenants <= _MAX_TENANTS:
            raise ValueError(f"tenants must be 1-{_MAX_TENANTS}: {self.tenants}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be 0-65535: {self.port}")
        if self.token_lifetime_seconds < 1:
            lifetime = self.token_lifetime_seconds
            raise ValueError(f"token_lifetime_seconds must be at least 1: {lifetime}")
        for name in ("hunting_row_limit", "graph_hunting_row_limit"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1: {getattr(self, name)}")
        for name in ("hunting_timeout_seconds", "graph_hunting_timeout_seconds"):
            if not 0 < getattr(self, name) < math.inf:
                raise ValueError(f"{name} must be positive: {getattr(self, name)}")
        for name in ("hunting_delay_seconds", "hunting_seconds_per_row"):
            if not 0 <= getattr(self, name) < math.inf:
                raise ValueError(f"{name} must not be negative: {getattr(self, name)}")
        if not 0 <= self.vulnerabilities_per_device <= 1000:
            per_device = self.vulnerabilities_per_device
            raise ValueError(f"vulnerabilities_per_device must be 0-1000: {per_device}")
        if self.export_part_rows < 1:
            raise ValueError(f"export_part_rows must be at least 1: {self.export_part_rows}")
        if self.sas_valid_seconds is not None and self.sas_valid_seconds <= 0:
            raise ValueError(f"sas_valid_seconds must be positive: {self.sas_valid_seconds}")
        for name, (calls, window) in self.rate_limits.items():
            if name not in RATE_LIMIT_NAMES:
                known = ", ".join(RATE_LIMIT_NAMES)
                raise ValueError(f"unknown rate limit {name!r}; known: {known}")
            if calls < 1 or window <= 0:
                message = f"rate limit {name!r} needs calls >= 1 and window > 0: {(calls, window)}"
                raise ValueError(message)
        if self.ingestion_rate_limit is not None:
            calls, window = self.ingestion_rate_limit
            if calls < 1 or not window > 0:
                limit = self.ingestion_rate_limit
                raise ValueError(f"ingestion_rate_limit needs calls >= 1 and window > 0: {limit}")
        for name, value in self.keyvault_secrets.items():
            if not _KEYVAULT_NAME.match(name) or not isinstance(value, str):
                message = f"keyvault_secrets: {name!r} needs a Key Vault name and a str value"
                raise ValueError(message)
        self._validate_iot()
        for fault in self.faults:
            if not isinstance(fault, Fault):
                raise TypeError(f"faults must be Fault instances, got {type(fault).__name__}")

    def _validate_start(self) -> None:
        if not isinstance(self.start, datetime) or self.start.tzinfo is None:
            raise ValueError(f"start must be an aware datetime: {self.start!r}")
        if not CLOCK_EARLIEST <= self.start <= TIMELINE_END:
            raise ValueError(
                f"start must be from {CLOCK_EARLIEST:%Y-%m-%dT%H:%M:%SZ} to"
                f" {TIMELINE_END:%Y-%m-%dT%H:%M:%SZ} (the emulated timeline): {self.start}"
            )

    def _validate_iot(self) -> None:
        # Bounded so the OT model stays cheap (a few thousand devices) and every sensor's
        # addresses fit in its share of the 10.x.64-127.x ranges.
        if not 0 <= self.iot_sensors <= _MAX_IOT_SENSORS:
            raise ValueError(f"iot_sensors must be 0-{_MAX_IOT_SENSORS}: {self.iot_sensors}")
        if not 0 <= self.iot_devices_per_sensor <= _MAX_IOT_DEVICES:
            per_sensor = self.iot_devices_per_sensor
            raise ValueError(f"iot_devices_per_sensor must be 0-{_MAX_IOT_DEVICES}: {per_sensor}")
        rates = {
            "iot_events_per_hour": (self.iot_events_per_hour, 20_000.0),
            "iot_event_backlog_minutes": (self.iot_event_backlog_minutes, 4320.0),
            "iot_alerts_per_hour": (self.iot_alerts_per_hour, 1000.0),
            "iot_alert_history_hours": (self.iot_alert_history_hours, 24.0 * 90),
        }
        for name, (value, limit) in rates.items():
            if not 0 <= value <= limit:  # also refuses NaN
                raise ValueError(f"{name} must be 0-{limit:g}: {value}")
        for storm in self.iot_event_storms:
            sensor, start, per_hour = storm
            if not (
                isinstance(sensor, int)
                and 1 <= sensor <= self.iot_sensors
                and isinstance(start, datetime)
                and start.tzinfo is not None
                and 0 <= per_hour <= rates["iot_events_per_hour"][1]
            ):
                raise ValueError(
                    "iot_event_storms: each is (sensor 1-iot_sensors, an aware start,"
                    f" events per hour 0-20000): {storm!r}"
                )

"""The emulated OT sensor's REST API (defender-apis.md C.2), served as of the emulated clock.

Owns the sensor routes: devices (``authorized`` filter), connections (all or per device;
``lastActiveInMinutes``, ``discoveredBefore``, ``discoveredAfter``), CVEs (all or per address;
``top`` per address, default 100, highest score first), alerts v1 and v2 (``fromTime`` and
``toTime`` inclusive, ``state``, ``type``; by id ascending, undocumented), events (the latest
100 of ``minutesTimeFrame``, at most 4320, newest first, with the one-hour cache of identical
calls) and the four vulnerability reports. Deleted devices vanish from every list once deleted.
Authentication and faults are answered by the gate in ``iot.server`` before these routes;
the report rows are ``iot.reports``'s, the alerts and events ``iot.timeline``'s.

Imports only ``common.clock``, ``iot.model``, ``iot.render``, ``iot.reports`` and ``iot.timeline``
of the emulator: it shares no code with the collector.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from epf_emulator.common.clock import EmulatedClock
from epf_emulator.iot.model import HOUR_MS, MINUTE_MS, OtDevice, OtSensor
from epf_emulator.iot.render import (
    IotFailure,
    alert_json,
    bool_param,
    connection_json,
    cve_json,
    device_json,
    event_json,
    int_param,
    iot_json,
)
from epf_emulator.iot.reports import mitigation_report, operational_rows, security_rows
from epf_emulator.iot.timeline import AlertStream, EventStream, OtAlert

__all__ = ["MAX_EVENT_MINUTES", "SensorApi", "alert_filter", "report_device_json"]

MAX_EVENT_MINUTES = 4320
_EVENT_LIMIT = 100
_CACHE_MS = HOUR_MS
_ALERT_TYPES = ("unexpected new devices", "disconnections")


def alert_filter(request: Request) -> Callable[[OtAlert], bool]:
    """``fromTime``/``toTime`` (inclusive), ``state`` and ``type``; unknown values ignored."""
    lo = int_param(request, "fromTime")
    hi = int_param(request, "toTime")
    state = (request.query_params.get("state") or "").lower()
    handled = {"handled": True, "unhandled": False}.get(state)
    kind = (request.query_params.get("type") or "").lower()
    kind = kind if kind in _ALERT_TYPES else ""  # "other values are ignored" (C.2)

    def keep(alert: OtAlert) -> bool:
        return (
            (lo is None or alert.time_ms >= lo)
            and (hi is None or alert.time_ms <= hi)
            and (handled is None or alert.handled == handled)
            and (not kind or alert.kind == kind)
        )

    return keep


def report_device_json(device: OtDevice) -> dict[str, object]:
    """One entry of the devices vulnerability report; ``cves[].score`` is a number here."""
    e = device.exposure
    assert e is not None
    return {
        "name": device.name,
        "ipAddresses": device.ips,
        "securityScore": e.security_score,
        "vendor": device.record["vendor"],
        "firmwareVersion": e.firmware_version,
        "model": e.model,
        "operatingSystem": dict(e.operating_system),
        "vulnerabilities": {
            "antiViruses": list(e.anti_viruses),
            "plainTextPasswords": [
                {"password": p, "protocol": proto, "strength": s} for p, proto, s in e.passwords
            ],
            "remoteAccess": [
                {"port": port, "transport": t, "clientSoftware": sw, "client": client}
                for port, t, sw, client in e.remote_access
            ],
            "isBackupServer": e.backup_server,
            "openedPorts": [
                {"port": port, "transport": t, "protocol": p, "isConflictingWithFirewall": c}
                for port, t, p, c in e.opened_ports
            ],
            "isEngineeringStation": e.engineering_station,
            "isKnownScanner": e.scanner,
            "cves": [
                {"id": c.cve_id, "score": c.tenths / 10, "description": c.description}
                for c in e.cves
            ],
            "isUnauthorized": e.unauthorized,
            "malwareIndicationsDetected": e.malware,
            "isWirelessAccessPoint": e.wireless,
            "weakAuthentication": list(e.weak_authentication),
        },
    }


class SensorApi:
    """The routes of one sensor over its slice of the OT model."""

    def __init__(
        self, sensor: OtSensor, *, clock: EmulatedClock, alerts: AlertStream, events: EventStream
    ) -> None:
        self._sensor = sensor
        self._clock = clock
        self._alerts = alerts
        self._events = events
        self._cache: dict[tuple[str, tuple[tuple[str, str], ...]], tuple[int, bytes]] = {}
        self._cache_lock = threading.Lock()

    def routes(self) -> list[Route]:
        reports = "/api/v1/reports/vulnerabilities"
        # Plain (sync) endpoints: Starlette runs them in its thread pool.
        return [
            Route("/api/v1/devices", self.devices, methods=["GET"]),
            Route("/api/v1/devices/connections", self.connections, methods=["GET"]),
            Route("/api/v1/devices/cves", self.cves, methods=["GET"]),
            Route("/api/v1/devices/{device_id}/connections", self.connections, methods=["GET"]),
            Route("/api/v1/devices/{ip_address}/cves", self.cves, methods=["GET"]),
            Route("/api/v1/alerts", self.alerts, methods=["GET"]),
            Route("/api/v2/alerts", self.alerts, methods=["GET"]),
            Route("/api/v1/events", self.events, methods=["GET"]),
            Route(f"{reports}/devices", self.report_devices, methods=["GET"]),
            Route(f"{reports}/security", self.report_security, methods=["GET"]),
            Route(f"{reports}/operational", self.report_operational, methods=["GET"]),
            Route(f"{reports}/mitigation", self.report_mitigation, methods=["GET"]),
        ]

    def _now(self) -> int:
        return self._clock.now_us() // 1000

    def devices(self, request: Request) -> Response:
        authorized = bool_param(request, "authorized")
        return iot_json(
            [
                device_json(d)
                for d in self._sensor.alive_devices(self._now())
                if authorized is None or d.record["authorized"] == authorized
            ]
        )

    def connections(self, request: Request) -> Response:
        now = self._now()
        device_id = None
        if "device_id" in request.path_params:
            raw = str(request.path_params["device_id"])
            if not raw.isdigit():
                raise IotFailure("deviceId")
            device_id = int(raw)
        active = int_param(request, "lastActiveInMinutes")
        before = int_param(request, "discoveredBefore")
        after = int_param(request, "discoveredAfter")
        rows = []
        for c in self._sensor.alive_connections(now):
            if device_id is not None and device_id not in (c.first.id, c.second.id):
                continue
            # Undocumented: "before" and "after" are strict; activity counts back from now.
            if active is not None and c.last_seen(now) < now - active * MINUTE_MS:
                continue
            if before is not None and not c.discovered_ms < before:
                continue
            if after is not None and not c.discovered_ms > after:
                continue
            rows.append(connection_json(c, now))
        return iot_json(rows)

    def cves(self, request: Request) -> Response:
        top = int_param(request, "top", 100)
        assert top is not None
        address = request.path_params.get("ip_address")
        rows = []
        for d in self._sensor.alive_devices(self._now()):
            if address is not None and d.ips[0] != address:
                continue
            rows += [cve_json(d, c) for c in d.cves[: max(top, 0)]]  # already by score, desc
        return iot_json(rows)

    def alerts(self, request: Request) -> Response:
        keep = alert_filter(request)
        v2 = request.url.path.startswith("/api/v2/")
        alerts = self._alerts.upto(self._now())
        return iot_json([alert_json(a, v2=v2) for a in alerts if keep(a)])

    def events(self, request: Request) -> Response:
        now = self._now()
        key = (request.url.path, tuple(sorted(request.query_params.multi_items())))
        with self._cache_lock:
            # Expired entries go, so the cache stays small however long the emulator runs.
            for old in [k for k, (t, _) in self._cache.items() if now - t >= _CACHE_MS]:
                del self._cache[old]
            cached = self._cache.get(key)
        if cached is not None:
            return iot_json(cached[1])  # the first call's answer, byte for byte (C.2)
        minutes = int_param(request, "minutesTimeFrame", MAX_EVENT_MINUTES)
        assert minutes is not None
        minutes = min(minutes, MAX_EVENT_MINUTES)  # clamped silently
        kind = request.query_params.get("type") or None  # unknown types match nothing
        rows = []
        if minutes >= 0:
            for event in self._events.newest_first(now - minutes * MINUTE_MS, now):
                if kind is None or event.type == kind:
                    rows.append(event_json(event))
                    if len(rows) == _EVENT_LIMIT:
                        break
        response = iot_json(rows)
        with self._cache_lock:
            self._cache.setdefault(key, (now, bytes(response.body)))
            body = self._cache[key][1]
        return iot_json(body)

    def report_devices(self, request: Request) -> Response:
        devices = self._sensor.alive_devices(self._now())
        return iot_json([report_device_json(d) for d in devices if d.exposure is not None])

    def report_security(self, request: Request) -> Response:
        return iot_json(security_rows(self._sensor, self._now()))

    def report_operational(self, request: Request) -> Response:
        return iot_json(operational_rows(self._sensor, self._now()))

    def report_mitigation(self, request: Request) -> Response:
        return iot_json(mitigation_report())

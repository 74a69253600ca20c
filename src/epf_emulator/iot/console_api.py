"""The emulated on-premises management console's REST API (defender-apis.md C.3).

Owns the console routes over every sensor: ``/external/v1/devices`` (also ``/api/v1/devices``)
with the sensor's device object plus ``sensorId``, ``zoneId`` and ``siteId`` (the console's own
``id`` space), alerts v1/v2 (``handled``, ``remediationSteps``; v2 adds the sensor, zone and site
names), and the v3 integration APIs: the deltas after a ``{timestamp}`` path segment (devices,
connections, device CVEs; paged with ``page``/``size``, ordered by (``u_last_update``, ``u_id``)),
one device, the deleted devices and the sensors. One site (1); one zone per sensor.

Each route takes only the query parameters its reference page documents (``_PARAMS``):
comma lists only where documented (``/external/v1/devices``; ``deviceIds`` of the device CVEs),
one ``sensorId`` on the v3 devices and device CVEs, none on the v3 connections. How the console
answers anything else is not documented; the strict choice here is its documented failure, 500
``Failure - error`` (C.1), for an unknown, repeated or malformed parameter alike. Objects are
rendered by ``iot.render``; the alert filters are ``iot.sensor_api``'s.

Imports only ``common.clock``, ``iot.model``, ``iot.render``, ``iot.sensor_api`` and ``iot.state``
of the emulator: it shares no code with the collector.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from epf_emulator.common.clock import EmulatedClock
from epf_emulator.iot.model import OtDevice, OtSensor
from epf_emulator.iot.render import (
    IotFailure,
    alert_json,
    bool_param,
    device_json,
    int_list,
    int_param,
    iot_json,
)
from epf_emulator.iot.sensor_api import alert_filter
from epf_emulator.iot.state import IotState

__all__ = ["SITE_ID", "ConsoleApi", "sensor_states"]

SITE_ID = 1
_V3 = "/external/v3/integration"
_DEFAULT_PAGE_SIZE = 50

# The query parameters documented per route: azure-docs defender-for-iot/organizations/api/
# management-inventory-apis.md (v1 devices), management-integration-apis.md (v3).
_PAGING = frozenset({"page", "size"})
_PARAMS: dict[str, frozenset[str]] = {
    "v1_devices": frozenset({"authorized", "siteId", "zoneId", "sensorId"}),
    "v3_devices": frozenset({"sensorId", "notificationType"}) | _PAGING,
    "v3_connections": _PAGING,
    "v3_device_cves": frozenset({"sensorId", "score", "deviceIds"}) | _PAGING,
    "none": frozenset(),
}


def _only(request: Request, route: str) -> None:
    """Refuse a query parameter ``route`` does not document, or one given twice."""
    allowed = _PARAMS[route]
    for name in request.query_params:
        if name not in allowed or len(request.query_params.getlist(name)) > 1:
            raise IotFailure(name)


def sensor_states(sensors: list[OtSensor]) -> dict[int, str]:
    """``u_connection_state`` per sensor: sensor-2 is out of sync, so health has a finding."""
    return {s.number: "OUT_OF_SYNC" if s.number == 2 else "SYNCED" for s in sensors}


class ConsoleApi:
    """The console's routes over all sensors of ``state``."""

    def __init__(
        self, state: IotState, *, clock: EmulatedClock, urls: Mapping[str, str], seed: int
    ) -> None:
        self._state = state
        self._clock = clock
        self._urls = urls  # appliance name -> base URL
        self._seed = seed
        self._by_uid = {d.uid: d for d in state.model.all_devices()}
        self._sensors = {s.number: s for s in state.sensors}

    def routes(self) -> list[Route]:
        return [
            Route("/external/v1/devices", self.devices, methods=["GET"]),
            Route("/api/v1/devices", self.devices, methods=["GET"]),
            Route("/external/v1/alerts", self.alerts, methods=["GET"]),
            Route("/external/v2/alerts", self.alerts, methods=["GET"]),
            Route(f"{_V3}/devices/{{ts}}", self.v3_devices, methods=["GET"]),
            Route(f"{_V3}/connections/{{ts}}", self.v3_connections, methods=["GET"]),
            Route(f"{_V3}/device/{{device_id}}", self.v3_device, methods=["GET"]),
            Route(f"{_V3}/deleteddevices/{{ts}}", self.v3_deleted, methods=["GET"]),
            Route(f"{_V3}/sensors", self.v3_sensors, methods=["GET"]),
            Route(f"{_V3}/devicecves/{{ts}}", self.v3_device_cves, methods=["GET"]),
        ]

    def _now(self) -> int:
        return self._clock.now_us() // 1000

    def _alive(self, now: int) -> list[OtDevice]:
        return [d for s in self._state.sensors for d in s.alive_devices(now)]

    # --- v1/v2 ---------------------------------------------------------------------------
    def devices(self, request: Request) -> Response:
        _only(request, "v1_devices")
        authorized = bool_param(request, "authorized")
        sites, zones, sensors = (int_list(request, n) for n in ("siteId", "zoneId", "sensorId"))
        rows = []
        for d in self._alive(self._now()):
            if authorized is not None and d.record["authorized"] != authorized:
                continue
            if sites is not None and SITE_ID not in sites:
                continue
            if (zones is not None and d.sensor not in zones) or (
                sensors is not None and d.sensor not in sensors
            ):
                continue
            record = device_json(d)
            record["id"] = d.uid  # the console's own id space
            rows.append({"sensorId": d.sensor, "zoneId": d.sensor, "siteId": SITE_ID, **record})
        return iot_json(rows)

    def alerts(self, request: Request) -> Response:
        keep = alert_filter(request)
        sites, zones, wanted = (int_list(request, n) for n in ("siteId", "zoneId", "sensorId"))
        v2 = request.url.path.startswith("/external/v2/")
        now = self._now()
        rows: list[tuple[int, int, int, dict[str, Any]]] = []
        for sensor in self._state.sensors:
            if sites is not None and SITE_ID not in sites:
                break
            if (zones is not None and sensor.number not in zones) or (
                wanted is not None and sensor.number not in wanted
            ):
                continue
            for alert in self._state.alerts[sensor.number].upto(now):
                if not keep(alert):
                    continue
                body = alert_json(alert, v2=False, ids="console")
                body.update(
                    sensorId=sensor.number,
                    zoneId=sensor.number,
                    siteId=SITE_ID,
                    handled=alert.handled,
                    remediationSteps=list(alert.remediation),
                )
                if v2:
                    body.update(
                        sensorName=sensor.name,
                        zoneName=sensor.zone_name,
                        siteName=self._state.model.site_name,
                    )
                rows.append((alert.time_ms, sensor.number, alert.id, body))
        rows.sort(key=lambda r: r[:3])
        return iot_json([r[3] for r in rows])

    # --- v3 integration ------------------------------------------------------------------
    def _ts(self, request: Request) -> int:
        raw = str(request.path_params["ts"])
        if not raw.isdigit():
            raise IotFailure("timestamp")
        return int(raw)

    def _page(self, request: Request, items: list[Any]) -> list[Any]:
        page = int_param(request, "page", 0)
        size = int_param(request, "size", _DEFAULT_PAGE_SIZE)
        assert page is not None and size is not None
        if page < 0 or size < 1:
            raise IotFailure("page")
        return items[page * size : (page + 1) * size]

    def _device_v3(self, d: OtDevice, now: int) -> dict[str, Any]:
        sensor = self._sensors[d.sensor]
        record = d.record
        last_update = d.last_update(now)
        macs = list(record["macAddresses"] or [])
        return {
            "u_id": d.uid,
            "u_name": d.name,
            "u_vendor": record["vendor"] or "",
            "u_appliance": sensor.name,
            "u_site": self._state.model.site_name,
            "u_zone": sensor.zone_name,
            "u_device_type": {
                "u_category": d.category,
                "u_purdue_layer": d.purdue_layer,
                "u_name": record["type"],
            },
            "u_purdue_layer": d.purdue_layer,
            "u_first_discovered": d.first_ms,
            "u_last_activity": max(d.first_ms, last_update - d.uid * 7919 % 600_000),
            "u_last_update": last_update,
            "u_protocol_objects": [{"u_protocol": p["name"]} for p in record["protocols"]],
            "u_vlans": [{"u_vlan": "1"}],
            "u_sensor_ids": [{"u_sensor_id": d.sensor}],
            "u_groups": [sensor.zone_name],
            "u_firmwares": [
                {"u_firmware_version": f["firmwareVersion"], "u_model": f["model"]}
                for f in record["firmware"]
            ],
            "u_operating_system": record["operatingSystem"] or "",
            "u_ip_address_objects": self._ip_objects(d),
            "u_mac_address_objects": [{"u_mac_address": m} for m in macs],
            "u_cm_device_url": f"{self._urls.get('console', '')}/#/device-inventory/{d.uid}",
            "u_device_urls": [
                {"u_device_url": f"{self._urls.get(sensor.name, '')}/#/devices/{d.id}"}
            ],
        }

    @staticmethod
    def _ip_objects(d: OtDevice) -> list[dict[str, Any]]:
        macs = [{"u_mac_address": m} for m in (d.record["macAddresses"] or [])]
        return [{"u_ip_address": ip, "u_guessed_mac_addresses": macs} for ip in d.ips]

    def _changed(self, request: Request, keep: Callable[[OtDevice, int], bool]) -> list[OtDevice]:
        """Live devices of the sensor asked for (one id: not a list) for which ``keep``."""
        now = self._now()
        sensor = int_param(request, "sensorId")
        chosen = []
        for d in self._alive(now):
            if sensor is None or d.sensor == sensor:
                last = d.last_update(now)
                if keep(d, last):
                    chosen.append((last, d.uid, d))
        chosen.sort(key=lambda c: c[:2])  # stable order for paging
        return [c[2] for c in chosen]

    def v3_devices(self, request: Request) -> Response:
        _only(request, "v3_devices")
        ts = self._ts(request)
        kind = int_param(request, "notificationType", 0)
        if kind not in (0, 1, 2):
            raise IotFailure("notificationType")

        def keep(d: OtDevice, last: int) -> bool:
            new = d.first_ms > ts
            return last > ts and (kind == 0 or (kind == 1) == new)

        devices = self._changed(request, keep)
        now = self._now()
        page = [self._device_v3(d, now) for d in self._page(request, devices)]
        return iot_json({"u_count": len(devices), "u_devices": page})

    def v3_connections(self, request: Request) -> Response:
        _only(request, "v3_connections")  # no sensorId: every sensor's connections
        ts = self._ts(request)
        now = self._now()
        found = []
        for sensor in self._state.sensors:
            for c in sensor.alive_connections(now):
                if c.discovered_ms > ts:
                    found.append((c.discovered_ms, c.first.uid, c.second.uid, sensor, c))
        found.sort(key=lambda f: f[:3])
        rows = [
            {
                "u_src_device_id": c.first.uid,
                "u_src_device_name": c.first.name,
                "u_dest_device_id": c.second.uid,
                "u_dest_device_name": c.second.name,
                "u_appliance": sensor.name,
                "u_connection_type": c.kind,
            }
            for _, _, _, sensor, c in self._page(request, found)
        ]
        return iot_json({"u_count": len(found), "u_connections": rows})

    def v3_device(self, request: Request) -> Response:
        _only(request, "none")
        raw = str(request.path_params["device_id"])
        if not raw.isdigit():
            raise IotFailure("deviceId")
        now = self._now()
        device = self._by_uid.get(int(raw))
        if device is None or not device.alive(now):
            return iot_json([])
        return iot_json([self._device_v3(device, now)])

    def v3_deleted(self, request: Request) -> Response:
        _only(request, "none")
        ts, now = self._ts(request), self._now()
        gone = sorted(
            (d.deleted_ms, d.uid)
            for d in self._by_uid.values()
            if d.deleted_ms is not None and ts < d.deleted_ms <= now
        )
        return iot_json([{"u_id": uid} for _, uid in gone])

    def v3_sensors(self, request: Request) -> Response:
        _only(request, "none")
        now = self._now()
        states = sensor_states(self._state.sensors)
        rows = []
        for sensor in self._state.sensors:
            alerts = self._state.alerts[sensor.number].upto(now)
            digest = hashlib.sha256(f"epf-iot-sensor:{self._seed}:{sensor.number}".encode())
            rows.append(
                {
                    "u_id": sensor.number,
                    "u_name": sensor.name,
                    "u_uid": str(uuid.UUID(bytes=digest.digest()[:16], version=4)),
                    "u_connection_state": states[sensor.number],
                    "u_version": "22.3.8.2",
                    "u_alert_count": len(alerts),
                    "u_unhandled_alert_count": sum(1 for a in alerts if not a.handled),
                    "u_device_count": len(sensor.alive_devices(now)),
                    "u_is_activated": True,
                }
            )
        return iot_json(rows)

    def v3_device_cves(self, request: Request) -> Response:
        _only(request, "v3_device_cves")
        ts = self._ts(request)
        ids = int_list(request, "deviceIds")  # documented as a comma list
        raw_score = request.query_params.get("score")
        try:
            # ``score``: documented as a minimum; only the CVEs scoring at least that much.
            floor = round(float(raw_score) * 10) if raw_score else 0
        except ValueError:
            raise IotFailure("score") from None
        devices = self._changed(
            request,
            lambda d, last: (
                last > ts
                and (ids is None or d.uid in ids)
                and any(c.tenths >= floor for c in d.cves)
            ),
        )
        now = self._now()
        rows = []
        for d in self._page(request, devices):
            rows.append(
                {
                    "u_id": d.uid,
                    "u_name": d.name,
                    "u_ip_address_objects": self._ip_objects(d),
                    "u_last_update": d.last_update(now),
                    "u_cves": [
                        {
                            "u_cve_id": c.cve_id,
                            "u_score": c.score,  # a string, as on the sensor
                            "u_ip_address": d.ips[0],
                            "u_attack_vector": c.attack_vector,
                            "u_description": c.description,
                        }
                        for c in d.cves
                        if c.tenths >= floor
                    ],
                }
            )
        return iot_json({"u_count": len(devices), "u_device_cves": rows})

"""Defender for IoT sensor datasets (C.2): devices, connections, CVEs and alerts.

Each function takes a ``SensorContext`` for one sensor and yields one unit. Devices,
connections and CVEs are snapshots; alerts are incremental by ``fromTime`` / ``toTime``
with an overlap, de-duplicated by alert id. The event timeline is in ``iot_events``, the
vulnerability reports in ``iot_reports``. May import ``contracts``, ``errors``, ``tables`` and the other ``sources`` modules.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any
from urllib.parse import quote

from endpoint_forensics.contracts import Batch, Row, Unit, batch_of
from endpoint_forensics.errors import WireFormatError
from endpoint_forensics.sources import ApplianceContext, ConsoleContext, Fetched, SensorContext
from endpoint_forensics.sources.wire import (
    Fields,
    Invalid,
    as_bool,
    as_int,
    as_score,
    as_text,
    first_real,
    from_epoch_ms,
    list_of,
    text_list,
    to_epoch_ms,
)
from endpoint_forensics.tables import (
    IOT_ALERTS,
    IOT_CONNECTIONS,
    IOT_CVES,
    IOT_DEVICES,
    Table,
)

__all__ = [
    "alert_row",
    "device_row",
    "fetch_alerts",
    "fetch_connections",
    "fetch_cves",
    "fetch_devices",
    "rows_of",
]

_MAX_CVE_TOP = 100_000


def rows_of(table: Table, records: Any, to_row: Callable[[Fields], Row], what: str) -> Batch:
    """A batch of ``to_row`` over ``records``; a record that does not fit is quarantined."""
    if not isinstance(records, list):
        raise WireFormatError(
            f"{what}: expected a JSON array, got {type(records).__name__}",
            method="GET",
            url=what,
        )

    def convert(record: Any) -> Row | str:
        try:
            fields = Fields(record)
            row = to_row(fields)
        except Invalid as exc:
            return str(exc)
        row.setdefault("AdditionalFields", fields.rest())
        return row

    return batch_of(table, records, convert)


def _origin(ctx: ApplianceContext, source: str) -> Row:
    kind = "console" if source.startswith("console") else "sensor"
    return {"Appliance": ctx.appliance.name, "ApplianceKind": kind, "Source": source}


# --- devices -------------------------------------------------------------------------------


def device_row(f: Fields, origin: Row) -> Row:
    """A v1 device object (sensor or console) as an ``EPF_IotDevices_CL`` row."""
    device_id = f.get_as("id", as_int)
    if device_id is None:
        raise Invalid("id: missing")
    firmware = f.get("firmware")
    firmware = firmware if isinstance(firmware, list) else []
    return {
        **origin,
        "DeviceId": device_id,
        "DeviceName": as_text(f.get("name")),
        "Vendor": as_text(f.get("vendor")),
        "DeviceType": as_text(f.get("type")),
        "OperatingSystem": as_text(f.get("operatingSystem")),
        # The doc's table says ipAddresses, its sample says addresses (C.2): read both.
        "IpAddresses": text_list(f.get("ipAddresses", "addresses")),
        "MacAddresses": text_list(f.get("macAddresses")),
        "Protocols": text_list(f.get("protocols"), "name"),
        "Firmware": firmware or None,
        "FirmwareVersion": first_real(
            Fields(m).get("firmwareVersion") for m in firmware if isinstance(m, Mapping)
        ),
        "Authorized": f.get_as("authorized", as_bool),
        "EngineeringStation": f.get_as("engineeringStation", as_bool),
        "Scanner": f.get_as("scanner", as_bool),
        "HasDynamicAddress": f.get_as("hasDynamicAddress", as_bool),
        "SensorId": f.get_as("sensorId", as_int),
        "DeviceStatus": "Active",
    }


def fetch_devices(ctx: SensorContext) -> Iterator[Unit]:
    """``/api/v1/devices`` (optionally by ``authorized``), each with its security score."""
    appliance = ctx.appliance
    params = {}
    if appliance.authorized is not None:
        params["authorized"] = "true" if appliance.authorized else "false"
    records = ctx.get("/api/v1/devices", params or None)
    scores = _security_scores(ctx.get("/api/v1/reports/vulnerabilities/devices"))
    origin = _origin(ctx, "sensor/v1/devices")
    site, zone = appliance.site, appliance.zone

    def to_row(f: Fields) -> Row:
        row = device_row(f, origin)
        row["SensorName"] = appliance.name
        row["Site"], row["Zone"] = site or None, zone or None
        row["SecurityScore"] = next(
            (scores[a] for a in (row["DeviceName"], *row["IpAddresses"]) if a in scores), None
        )
        return row

    yield Unit("devices", iter([rows_of(IOT_DEVICES, records, to_row, "/api/v1/devices")]))


def _security_scores(report: Any) -> dict[str, int]:
    """Security score by device address and name, from the devices vulnerability report."""
    scores: dict[str, int] = {}
    for record in report if isinstance(report, list) else []:
        try:
            f = Fields(record)
            score = f.get_as("securityScore", as_int)
        except Invalid:
            continue
        if score is None:
            continue
        for address in text_list(f.get("ipAddresses", "addresses")):
            scores[address] = score
        name = f.get("name")
        if isinstance(name, str) and name:
            scores.setdefault(name, score)
    return scores


# --- connections ---------------------------------------------------------------------------


def fetch_connections(ctx: SensorContext) -> Iterator[Unit]:
    """``/api/v1/devices/connections``: every device pair with its ports and protocols."""
    records = ctx.get("/api/v1/devices/connections")
    origin = _origin(ctx, "sensor/v1/connections")

    def to_row(f: Fields) -> Row:
        first = f.get_as("firstDeviceId", as_int)
        second = f.get_as("secondDeviceId", as_int)
        if first is None or second is None:
            raise Invalid("firstDeviceId and secondDeviceId: both are required")
        ports = f.get("ports")
        protocols = f.get("protocols")
        return {
            **origin,
            "FirstDeviceId": first,
            "SecondDeviceId": second,
            "Ports": f.get_as("ports", list_of(as_int)) if isinstance(ports, list) else None,
            "Protocols": protocols if isinstance(protocols, list) else None,
            "FirstSeen": f.get_as("discovered", from_epoch_ms),
            "LastSeen": f.get_as("lastSeen", from_epoch_ms),
        }

    batch = rows_of(IOT_CONNECTIONS, records, to_row, "/api/v1/devices/connections")
    yield Unit("connections", iter([batch]))


# --- CVEs ----------------------------------------------------------------------------------


def attack_vector(value: Any) -> str | None:
    """NETWORK, ADJACENT_NETWORK, LOCAL or PHYSICAL, whichever spelling the API used."""
    text = as_text(value)
    return text.strip().upper().replace(" ", "_") if text else None


def fetch_cves(ctx: SensorContext) -> Iterator[Unit]:
    """``/api/v1/devices/cves`` with a large ``top``; an address that fills it is asked again
    on its own with a larger one, until its list is complete."""
    top = ctx.appliance.cve_top
    records = ctx.get("/api/v1/devices/cves", {"top": str(top)})
    if not isinstance(records, list):
        records = []
    per_address: dict[str, list[Any]] = {}
    for record in records:
        address = Fields(record).get("ipAddress") if isinstance(record, Mapping) else None
        per_address.setdefault(str(address), []).append(record)
    for address, found in list(per_address.items()):
        asked = top
        while len(found) >= asked and asked < _MAX_CVE_TOP and address != "None":
            asked = min(asked * 10, _MAX_CVE_TOP)
            found = ctx.get(f"/api/v1/devices/{quote(address, safe='')}/cves", {"top": str(asked)})
            found = found if isinstance(found, list) else []
        per_address[address] = found
    origin = _origin(ctx, "sensor/v1/cves")
    seen: set[tuple[str | None, str | None]] = set()

    def to_row(f: Fields) -> Row:
        cve = as_text(f.get("cveId", "id"))
        if not cve:
            raise Invalid("cveId: missing")
        address = as_text(f.get("ipAddress"))
        return {
            **origin,
            "IpAddress": address,
            "CveId": cve,
            "Score": f.get_as("score", as_score),
            "AttackVector": attack_vector(f.get("attackVector")),
            "Description": as_text(f.get("description")),
        }

    def unique(batch: Batch) -> Batch:
        rows = []
        for row in batch.rows:
            key = (row["IpAddress"], row["CveId"])
            if key not in seen:
                seen.add(key)
                rows.append(row)
        batch.rows = rows
        return batch

    everything = [r for found in per_address.values() for r in found]
    batch = unique(rows_of(IOT_CVES, everything, to_row, "/api/v1/devices/cves"))
    yield Unit("cves", iter([batch]))


# --- alerts --------------------------------------------------------------------------------


def alert_row(f: Fields, origin: Row) -> Row:
    """A sensor or console alert as an ``EPF_IotAlerts_CL`` row."""
    alert_id = as_text(f.get("id"))
    if not alert_id:
        raise Invalid("id: missing")
    sensor_id = f.get_as("sensorId", as_int)
    info = f.get("additionalInformation")  # any case: the doc also writes additionalinformation
    steps = f.get("remediationSteps")
    return {
        **origin,
        # Console alert ids are per sensor: qualify them so two sensors' alerts stay apart.
        "AlertId": alert_id if sensor_id is None else f"{sensor_id}-{alert_id}",
        "AlertTime": f.get_as("time", from_epoch_ms),
        "AlertTitle": as_text(f.get("title")),
        "Message": as_text(f.get("message")),
        "Severity": as_text(f.get("severity")),
        "Engine": as_text(f.get("engine")),
        "SourceDeviceId": f.get_as("sourceDevice", as_int),
        "DestinationDeviceId": f.get_as("destinationDevice", as_int),
        "SourceDeviceAddress": as_text(f.get("sourceDeviceAddress")),
        "DestinationDeviceAddress": as_text(f.get("destinationDeviceAddress")),
        "RemediationSteps": steps if isinstance(steps, list) else None,
        "AdditionalInformation": info if isinstance(info, Mapping | list) else None,
        "Handled": f.get_as("handled", as_bool),
        "SensorId": sensor_id,
        "SensorName": as_text(f.get("sensorName")),
        "SiteId": f.get_as("siteId", as_int),
        "SiteName": as_text(f.get("siteName")),
        "ZoneId": f.get_as("zoneId", as_int),
        "ZoneName": as_text(f.get("zoneName")),
    }


def incremental_alerts(ctx: SensorContext | ConsoleContext, path: str, source: str) -> Fetched:
    """Alerts raised since the last run (``fromTime``/``toTime``, epoch ms, with an overlap),
    each alert id once: ids already delivered inside the overlap are remembered."""
    cursor = ctx.cursor or {}
    now_ms = to_epoch_ms(ctx.now)
    overlap_ms = ctx.appliance.alerts_overlap_minutes * 60_000
    params = {"toTime": str(now_ms)}
    seen: dict[str, int] = dict(cursor.get("seen") or {})
    if cursor.get("to_ms") is not None:
        params["fromTime"] = str(max(0, int(cursor["to_ms"]) - overlap_ms))
    records = ctx.get(path, params)
    batch = rows_of(IOT_ALERTS, records, lambda f: alert_row(f, _origin(ctx, source)), path)
    fresh = []
    for row in batch.rows:
        if row["AlertId"] in seen:
            continue
        when = row["AlertTime"]
        seen[row["AlertId"]] = to_epoch_ms(when) if when is not None else now_ms
        fresh.append(row)
    batch.rows = fresh
    keep_after = now_ms - overlap_ms - 60_000
    yield Unit("alerts", iter([batch]))
    return {"to_ms": now_ms, "seen": {k: t for k, t in seen.items() if t >= keep_after}}


def fetch_alerts(ctx: SensorContext) -> Fetched:
    """``/api/v2/alerts`` (v2 adds addresses and remediation steps), or v1 as configured."""
    version = ctx.appliance.alerts_api
    return (
        yield from incremental_alerts(ctx, f"/api/{version}/alerts", f"sensor/{version}/alerts")
    )

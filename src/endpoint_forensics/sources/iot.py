"""Defender for IoT sensor datasets (C.2): devices, connections, CVEs and alerts.

Each function takes an ``ApplianceContext`` for one sensor and yields one unit. Devices,
connections and CVEs are snapshots; alerts are incremental by ``fromTime`` / ``toTime``
with an overlap, de-duplicated by alert id. The event timeline is in ``iot_events``, the
vulnerability reports in ``iot_reports``. May import ``sources.iot_records``, ``contracts`` and ``tables``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any
from urllib.parse import quote

from endpoint_forensics.contracts import Batch, Row, Unit, batch_of
from endpoint_forensics.errors import HttpStatusError
from endpoint_forensics.sources import ApplianceContext
from endpoint_forensics.sources.iot_records import (
    Fields,
    Invalid,
    as_bool,
    as_int,
    as_score,
    as_text,
    first_real,
    from_epoch_ms,
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
        raise HttpStatusError(
            f"{what}: expected a JSON array, got {type(records).__name__}",
            method="GET",
            url=what,
            status=200,
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
    device_id = as_int(f.get("id"), "id")
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
        "Authorized": as_bool(f.get("authorized"), "authorized"),
        "EngineeringStation": as_bool(f.get("engineeringStation"), "engineeringStation"),
        "Scanner": as_bool(f.get("scanner"), "scanner"),
        "HasDynamicAddress": as_bool(f.get("hasDynamicAddress"), "hasDynamicAddress"),
        "SensorId": as_int(f.get("sensorId"), "sensorId"),
        "DeviceStatus": "Active",
    }


def fetch_devices(ctx: ApplianceContext) -> Iterator[Unit]:
    """``/api/v1/devices`` (optionally by ``authorized``), each with its security score."""
    appliance = ctx.appliance
    params = {}
    authorized = getattr(appliance, "authorized", None)
    if authorized is not None:
        params["authorized"] = "true" if authorized else "false"
    records = ctx.get("/api/v1/devices", params or None)
    scores = _security_scores(ctx.get("/api/v1/reports/vulnerabilities/devices"))
    origin = _origin(ctx, "sensor/v1/devices")
    site, zone = getattr(appliance, "site", ""), getattr(appliance, "zone", "")

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
            score = as_int(f.get("securityScore"), "securityScore")
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


def fetch_connections(ctx: ApplianceContext) -> Iterator[Unit]:
    """``/api/v1/devices/connections``: every device pair with its ports and protocols."""
    records = ctx.get("/api/v1/devices/connections")
    origin = _origin(ctx, "sensor/v1/connections")

    def to_row(f: Fields) -> Row:
        first = as_int(f.get("firstDeviceId"), "firstDeviceId")
        second = as_int(f.get("secondDeviceId"), "secondDeviceId")
        if first is None or second is None:
            raise Invalid("firstDeviceId and secondDeviceId: both are required")
        ports = f.get("ports")
        protocols = f.get("protocols")
        return {
            **origin,
            "FirstDeviceId": first,
            "SecondDeviceId": second,
            "Ports": [as_int(p, "ports") for p in ports] if isinstance(ports, list) else None,
            "Protocols": protocols if isinstance(protocols, list) else None,
            "FirstSeen": from_epoch_ms(f.get("discovered"), "discovered"),
            "LastSeen": from_epoch_ms(f.get("lastSeen"), "lastSeen"),
        }

    batch = rows_of(IOT_CONNECTIONS, records, to_row, "/api/v1/devices/connections")
    yield Unit("connections", iter([batch]))


# --- CVEs ----------------------------------------------------------------------------------


def attack_vector(value: Any) -> str | None:
    """NETWORK, ADJACENT_NETWORK, LOCAL or PHYSICAL, whichever spelling the API used."""
    text = as_text(value)
    return text.strip().upper().replace(" ", "_") if text else None


def fetch_cves(ctx: ApplianceContext) -> Iterator[Unit]:
    """``/api/v1/devices/cves`` with a large ``top``; an address that fills it is asked again
    on its own with a larger one, until its list is complete."""
    top = int(getattr(ctx.appliance, "cve_top", 1_000))
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
            "Score": as_score(f.get("score"), "score"),
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
    sensor_id = as_int(f.get("sensorId"), "sensorId")
    info = f.get("additionalInformation")  # any case: the doc also writes additionalinformation
    steps = f.get("remediationSteps")
    return {
        **origin,
        # Console alert ids are per sensor: qualify them so two sensors' alerts stay apart.
        "AlertId": alert_id if sensor_id is None else f"{sensor_id}-{alert_id}",
        "AlertTime": from_epoch_ms(f.get("time"), "time"),
        "AlertTitle": as_text(f.get("title")),
        "Message": as_text(f.get("message")),
        "Severity": as_text(f.get("severity")),
        "Engine": as_text(f.get("engine")),
        "SourceDeviceId": as_int(f.get("sourceDevice"), "sourceDevice"),
        "DestinationDeviceId": as_int(f.get("destinationDevice"), "destinationDevice"),
        "SourceDeviceAddress": as_text(f.get("sourceDeviceAddress")),
        "DestinationDeviceAddress": as_text(f.get("destinationDeviceAddress")),
        "RemediationSteps": steps if isinstance(steps, list) else None,
        "AdditionalInformation": info if isinstance(info, Mapping | list) else None,
        "Handled": as_bool(f.get("handled"), "handled"),
        "SensorId": sensor_id,
        "SensorName": as_text(f.get("sensorName")),
        "SiteId": as_int(f.get("siteId"), "siteId"),
        "SiteName": as_text(f.get("siteName")),
        "ZoneId": as_int(f.get("zoneId"), "zoneId"),
        "ZoneName": as_text(f.get("zoneName")),
    }


def incremental_alerts(ctx: ApplianceContext, path: str, source: str) -> Iterator[Unit]:
    """Alerts raised since the last run (``fromTime``/``toTime``, epoch ms, with an overlap),
    each alert id once: ids already delivered inside the overlap are remembered."""
    cursor = ctx.cursor or {}
    now_ms = to_epoch_ms(ctx.now)
    overlap_ms = int(getattr(ctx.appliance, "alerts_overlap_minutes", 10)) * 60_000
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
    ctx.new_cursor = {
        "to_ms": now_ms,
        "seen": {k: t for k, t in seen.items() if t >= keep_after},
    }
    yield Unit("alerts", iter([batch]))


def fetch_alerts(ctx: ApplianceContext) -> Iterator[Unit]:
    """``/api/v2/alerts`` (v2 adds addresses and remediation steps), or v1 as configured."""
    version = getattr(ctx.appliance, "alerts_api", "v2")
    yield from incremental_alerts(ctx, f"/api/{version}/alerts", f"sensor/{version}/alerts")

"""Defender for IoT sensor datasets (C.2): devices, connections, CVEs, alerts and exposure.

Each function takes an ``ApplianceContext`` for one sensor and yields one unit. Devices,
connections, CVEs and the reports are snapshots; alerts are incremental by ``fromTime`` /
``toTime`` with an overlap, de-duplicated by alert id. The events timeline is in
``iot_events``. May import ``sources.iot_records``, ``contracts`` and ``tables``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from urllib.parse import quote

import orjson

from endpoint_forensics.contracts import Batch, Reject, Row, Unit, batch_of
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
    without_passwords,
)
from endpoint_forensics.tables import (
    IOT_ALERTS,
    IOT_CONNECTIONS,
    IOT_CVES,
    IOT_DEVICES,
    IOT_EXPOSURE,
    Table,
)

__all__ = [
    "alert_row",
    "device_row",
    "fetch_alerts",
    "fetch_connections",
    "fetch_cves",
    "fetch_devices",
    "fetch_exposure",
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


# --- vulnerability reports -----------------------------------------------------------------

_DEVICE_FINDINGS = (  # (key in the report's vulnerabilities, Section)
    ("remoteAccess", "RemoteAccess"),
    ("openedPorts", "OpenPort"),
    ("plainTextPasswords", "PlainTextPassword"),
    ("weakAuthentication", "WeakAuthentication"),
    ("antiViruses", "AntiVirus"),
)


def fetch_exposure(ctx: ApplianceContext) -> Iterator[Unit]:
    """The devices, security and operational vulnerability reports as exposure findings.

    Plain-text password findings keep their protocol and strength; the password itself is
    removed from the response before anything else reads it, so it cannot reach a table, a
    log or the quarantine.
    """
    origin = _origin(ctx, "sensor/v1/reports")
    devices = without_passwords(ctx.get("/api/v1/reports/vulnerabilities/devices"))
    batch = Batch(IOT_EXPOSURE)
    for record in devices if isinstance(devices, list) else []:
        try:
            batch.rows.extend(_device_findings(Fields(record), origin))
        except Invalid as exc:
            batch.rejects.append(Reject(str(exc), record))
    for report in ("security", "operational"):
        body = without_passwords(ctx.get(f"/api/v1/reports/vulnerabilities/{report}"))
        for section, rows in body.items() if isinstance(body, Mapping) else []:
            for record in rows if isinstance(rows, list) else [rows]:
                batch.rows.append(_report_row(origin, report, str(section), record))
    yield Unit("reports", iter([batch]))


def _device_findings(f: Fields, origin: Row) -> list[Row]:
    name = as_text(f.get("name"))
    addresses = text_list(f.get("ipAddresses", "addresses"))
    address = addresses[0] if addresses else None
    who = address or name or "?"
    vulns = f.get("vulnerabilities")
    v = Fields(vulns if isinstance(vulns, Mapping) else {})
    base = {**origin, "Report": "devices", "DeviceName": name, "IpAddress": address}
    flags = {
        k: v.get(k)
        for k in (
            "isBackupServer",
            "isEngineeringStation",
            "isKnownScanner",
            "isUnauthorized",
            "malwareIndicationsDetected",
            "isWirelessAccessPoint",
        )
    }
    cves = v.get("cves")
    score = as_int(f.get("securityScore"), "securityScore")
    rest = f.rest() or {}
    rows: list[Row] = [
        {
            **base,
            "Section": "Device",
            "FindingKey": f"{who}|Device",
            "SecurityScore": score,
            "Details": {
                **{k: val for k, val in rest.items() if k.lower() != "vulnerabilities"},
                **flags,
                "ipAddresses": addresses,
                "cveCount": len(cves) if isinstance(cves, list) else 0,
            },
        }
    ]
    for key, section in _DEVICE_FINDINGS:
        items = v.get(key)
        for index, item in enumerate(items if isinstance(items, list) else []):
            finding = Fields(item) if isinstance(item, Mapping) else None
            row: Row = {**base, "Section": section}
            if finding is None:  # weakAuthentication and antiViruses are lists of strings
                row["Protocol" if section == "WeakAuthentication" else "Details"] = (
                    as_text(item) if section == "WeakAuthentication" else {"name": item}
                )
            else:
                row["Port"] = as_int(finding.get("port"), f"{key}.port")
                row["Transport"] = as_text(finding.get("transport"))
                row["Protocol"] = as_text(finding.get("protocol", "clientSoftware"))
                row["Peer"] = as_text(finding.get("client"))
                row["Strength"] = as_text(finding.get("strength"))
                row["Details"] = dict(item)
            # Position, protocol and port only: never anything derived from a password.
            row["FindingKey"] = f"{who}|{section}|{index}|{row.get('Protocol')}|{row.get('Port')}"
            rows.append(row)
    return rows


def _report_row(origin: Row, report: str, section: str, record: Any) -> Row:
    f = Fields(record) if isinstance(record, Mapping) else Fields({"value": record})
    address = f.get("address", "ipAddress", "internalAddress", "server")
    digest = hashlib.sha1(orjson.dumps(record, option=orjson.OPT_SORT_KEYS, default=str))
    port = f.get("port")
    return {
        **origin,
        "Report": report,
        "Section": section,
        "FindingKey": digest.hexdigest()[:20],
        "DeviceName": as_text(f.get("name")),
        "IpAddress": as_text(address) if not isinstance(address, list) else None,
        "Peer": as_text(f.get("client")),
        "Port": port if isinstance(port, int) and not isinstance(port, bool) else None,
        "Transport": as_text(f.get("transport")),
        "Protocol": as_text(f.get("protocol")),
        "Details": record,
    }

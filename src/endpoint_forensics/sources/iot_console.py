"""Defender for IoT on-premises management console datasets (C.3).

``devices`` is the v1 inventory of every sensor (a full snapshot, daily by default); the v3
integration API brings what changed since the last poll: ``device_changes`` (devices new or
updated, and deletions), ``connections``, ``cves``; ``alerts`` is incremental by time like a
sensor's; ``sensors`` is the sensors' connection state, the sensor-health signal.

v3 answers ``{"u_count": N, "u_<items>": [...]}`` a page at a time (``page`` from 0, ``size``)
for everything *after* a timestamp in the path. The cursor keeps the newest ``u_last_update``
delivered (and the keys at that instant, in case the console counts the boundary in); lists
without a per-item time use the previous poll time less an overlap.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from typing import Any

from endpoint_forensics.contracts import Batch, Reject, Row, Unit
from endpoint_forensics.errors import HttpStatusError
from endpoint_forensics.sources import ApplianceContext
from endpoint_forensics.sources.iot import (
    attack_vector,
    device_row,
    incremental_alerts,
    rows_of,
)
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
from endpoint_forensics.tables import IOT_CONNECTIONS, IOT_CVES, IOT_DEVICES, IOT_SENSORS

__all__ = [
    "fetch_console_alerts",
    "fetch_console_connections",
    "fetch_console_cves",
    "fetch_console_devices",
    "fetch_device_changes",
    "fetch_sensors",
]

_V3 = "/external/v3/integration"
_OVERLAP_MS = 10 * 60_000


def _origin(ctx: ApplianceContext, source: str) -> Row:
    return {"Appliance": ctx.appliance.name, "ApplianceKind": "console", "Source": source}


def _sensor_filter(ctx: ApplianceContext) -> dict[str, str]:
    ids = getattr(ctx.appliance, "sensor_ids", ())
    return {"sensorId": ",".join(str(i) for i in ids)} if ids else {}


def fetch_console_devices(ctx: ApplianceContext) -> Iterator[Unit]:
    """``/external/v1/devices``: every sensor's devices with sensor, site and zone ids."""
    records = ctx.get("/external/v1/devices", _sensor_filter(ctx) or None)
    origin = _origin(ctx, "console/v1/devices")

    def to_row(f: Fields) -> Row:
        row = device_row(f, origin)
        site, zone = as_text(f.get("siteId")), as_text(f.get("zoneId"))
        row["Site"], row["Zone"] = site, zone
        return row

    yield Unit("devices", iter([rows_of(IOT_DEVICES, records, to_row, "/external/v1/devices")]))


def _pages(
    ctx: ApplianceContext, path: str, items: str, params: Mapping[str, str]
) -> Iterator[list[Any]]:
    """Each page of a v3 list, from page 0 to the end (``u_count`` items, or an empty page)."""
    size = int(getattr(ctx.appliance, "page_size", 200))
    page = 0
    while True:
        body = ctx.get(path, {**params, "page": str(page), "size": str(size)})
        if not isinstance(body, Mapping):
            raise HttpStatusError(
                f"GET {path}: expected an object with u_count and {items}, got "
                f"{type(body).__name__}",
                method="GET",
                url=path,
                status=200,
            )
        f = Fields(body)
        found = f.get(items)
        found = found if isinstance(found, list) else []
        total = as_int(f.get("u_count"), "u_count") or 0
        yield found
        page += 1
        # u_count is the total over all pages; a short or empty page also ends the list.
        if not found or len(found) < size or page * size >= total:
            return


def _after(cursor: Mapping[str, Any] | None, key: str) -> int:
    return int((cursor or {}).get(key) or 0)


def v3_device_row(f: Fields, origin: Row) -> Row:
    device_id = as_int(f.get("u_id"), "u_id")
    if device_id is None:
        raise Invalid("u_id: missing")
    kind = f.get("u_device_type")
    kind_f = Fields(kind if isinstance(kind, Mapping) else {})
    purdue = as_text(f.get("u_purdue_layer"))
    if purdue in (None, "", "N/A"):
        purdue = as_text(kind_f.get("u_purdue_layer"))
    addresses = f.get("u_ip_address_objects")
    sensors = text_list(f.get("u_sensor_ids"), "u_sensor_id")
    firmware = f.get("u_firmwares")
    f.mark("u_appliance", "u_cm_device_url", "u_device_urls", "u_vlans", "u_groups")
    return {
        **origin,
        "DeviceId": device_id,
        "DeviceName": as_text(f.get("u_name")),
        "Vendor": as_text(f.get("u_vendor")),
        "DeviceType": as_text(kind_f.get("u_name")),
        "DeviceCategory": as_text(kind_f.get("u_category")),
        "OperatingSystem": as_text(f.get("u_operating_system")) or None,
        "IpAddresses": text_list(addresses, "u_ip_address"),
        "MacAddresses": text_list(f.get("u_mac_address_objects"), "u_mac_address"),
        "Protocols": text_list(f.get("u_protocol_objects"), "u_protocol"),
        "Firmware": firmware if isinstance(firmware, list) and firmware else None,
        "FirmwareVersion": first_real(
            Fields(m).get("u_firmware_version", "firmwareVersion")
            for m in (firmware if isinstance(firmware, list) else [])
            if isinstance(m, Mapping)
        ),
        "Authorized": as_bool(f.get("u_authorized", "u_is_authorized"), "u_authorized"),
        "SensorId": int(sensors[0]) if sensors and sensors[0].isdigit() else None,
        "Site": as_text(f.get("u_site")),
        "Zone": as_text(f.get("u_zone")),
        "PurdueLevel": purdue,
        "FirstSeen": from_epoch_ms(f.get("u_first_discovered"), "u_first_discovered"),
        "LastActivity": from_epoch_ms(f.get("u_last_activity"), "u_last_activity"),
        "LastUpdate": from_epoch_ms(f.get("u_last_update"), "u_last_update"),
        "DeviceStatus": "Active",
    }


def _newest(
    rows: list[Row], after_ms: int, keys_at: list[str], key: str
) -> tuple[list[Row], int, list[str]]:
    """Rows not delivered yet, and the new (newest LastUpdate, keys at that instant)."""
    fresh = []
    newest, at_newest = after_ms, set(keys_at)
    for row in rows:
        stamp = to_epoch_ms(row["LastUpdate"]) if row.get("LastUpdate") else None
        ident = f"{row[key]}@{stamp}"
        if stamp is not None and stamp <= after_ms and ident in keys_at:
            continue
        fresh.append(row)
        if stamp is not None and stamp > newest:
            newest, at_newest = stamp, {ident}
        elif stamp is not None and stamp == newest:
            at_newest.add(ident)
    return fresh, newest, sorted(at_newest)


def fetch_device_changes(ctx: ApplianceContext) -> Iterator[Unit]:
    """v3 devices new or updated since the last poll, and devices deleted since then."""
    cursor = ctx.cursor or {}
    after = _after(cursor, "after_ms")
    keys_at = list(cursor.get("keys_at") or [])
    origin = _origin(ctx, "console/v3/devices")
    params = {"notificationType": "0", **_sensor_filter(ctx)}
    batch = Batch(IOT_DEVICES)
    for page in _pages(ctx, f"{_V3}/devices/{after}", "u_devices", params):
        part = rows_of(IOT_DEVICES, page, lambda f: v3_device_row(f, origin), "v3 devices")
        batch.rows.extend(part.rows)
        batch.rejects.extend(part.rejects)
    batch.rows, newest, at_newest = _newest(batch.rows, after, keys_at, "DeviceId")
    # Deletions carry no time: ask from the previous poll (less an overlap), skip ids known.
    now_ms = to_epoch_ms(ctx.now)
    deleted_after = max(0, _after(cursor, "polled_ms") - _OVERLAP_MS) if cursor else 0
    known_deleted = set(cursor.get("deleted") or [])
    deleted = ctx.get(f"{_V3}/deleteddevices/{deleted_after}")
    gone = []
    for record in deleted if isinstance(deleted, list) else []:
        ident = as_int(Fields(record).get("u_id"), "u_id") if isinstance(record, Mapping) else None
        if ident is None or ident in known_deleted:
            continue
        known_deleted.add(ident)
        gone.append(
            {
                **origin,
                "Source": "console/v3/deleteddevices",
                "DeviceId": ident,
                "DeviceStatus": "Deleted",
            }
        )
    batch.rows.extend(gone)
    ctx.new_cursor = {
        "after_ms": newest,
        "keys_at": at_newest,
        "polled_ms": now_ms,
        "deleted": sorted(known_deleted)[-10_000:],
    }
    yield Unit("device_changes", iter([batch]))


def fetch_console_cves(ctx: ApplianceContext) -> Iterator[Unit]:
    """v3 device CVEs of devices whose CVEs changed since the last poll (all, the first time)."""
    cursor = ctx.cursor or {}
    after = _after(cursor, "after_ms")
    keys_at = list(cursor.get("keys_at") or [])
    origin = _origin(ctx, "console/v3/devicecves")
    batch = Batch(IOT_CVES)
    devices: list[Row] = []
    for page in _pages(ctx, f"{_V3}/devicecves/{after}", "u_device_cves", _sensor_filter(ctx)):
        for record in page:
            try:
                f = Fields(record)
                device: Row = {
                    "DeviceId": as_int(f.get("u_id"), "u_id"),
                    "LastUpdate": from_epoch_ms(f.get("u_last_update"), "u_last_update"),
                    "record": f,
                }
            except Invalid as exc:
                batch.rejects.append(Reject(str(exc), record))
                continue
            devices.append(device)
    fresh, newest, at_newest = _newest(devices, after, keys_at, "DeviceId")
    for device in fresh:
        fields: Fields = device["record"]
        cves = fields.get("u_cves")
        part = rows_of(
            IOT_CVES,
            cves if isinstance(cves, list) else [],
            functools.partial(_cve_row, dev=fields, device=device, origin=origin),
            "v3 devicecves",
        )
        batch.rows.extend(part.rows)
        batch.rejects.extend(part.rejects)
    ctx.new_cursor = {"after_ms": newest, "keys_at": at_newest}
    yield Unit("cves", iter([batch]))


def _cve_row(c: Fields, dev: Fields, device: Row, origin: Row) -> Row:
    cve = as_text(c.get("u_cve_id"))
    if not cve:
        raise Invalid("u_cve_id: missing")
    return {
        **origin,
        "DeviceId": device["DeviceId"],
        "DeviceName": as_text(dev.get("u_name")),
        "IpAddress": as_text(c.get("u_ip_address")),
        "CveId": cve,
        "Score": as_score(c.get("u_score"), "u_score"),
        "AttackVector": attack_vector(c.get("u_attack_vector")),
        "Description": as_text(c.get("u_description")),
        "LastUpdate": device["LastUpdate"],
    }


def fetch_console_connections(ctx: ApplianceContext) -> Iterator[Unit]:
    """v3 connections new since the previous poll (less an overlap; all, the first time)."""
    cursor = ctx.cursor or {}
    now_ms = to_epoch_ms(ctx.now)
    after = max(0, _after(cursor, "polled_ms") - _OVERLAP_MS) if cursor else 0
    known = set(cursor.get("recent") or [])
    origin = _origin(ctx, "console/v3/connections")

    def to_row(f: Fields) -> Row:
        first = as_int(f.get("u_src_device_id"), "u_src_device_id")
        second = as_int(f.get("u_dest_device_id"), "u_dest_device_id")
        if first is None or second is None:
            raise Invalid("u_src_device_id and u_dest_device_id: both are required")
        f.mark("u_appliance")
        return {
            **origin,
            "FirstDeviceId": first,
            "SecondDeviceId": second,
            "FirstDeviceName": as_text(f.get("u_src_device_name")),
            "SecondDeviceName": as_text(f.get("u_dest_device_name")),
            "ConnectionType": as_text(f.get("u_connection_type")),
        }

    batch = Batch(IOT_CONNECTIONS)
    for page in _pages(ctx, f"{_V3}/connections/{after}", "u_connections", _sensor_filter(ctx)):
        part = rows_of(IOT_CONNECTIONS, page, to_row, "v3 connections")
        batch.rows.extend(part.rows)
        batch.rejects.extend(part.rejects)
    keys = [f"{r['FirstDeviceId']}>{r['SecondDeviceId']}:{r['ConnectionType']}" for r in batch.rows]
    batch.rows = [r for r, k in zip(batch.rows, keys, strict=True) if k not in known]
    ctx.new_cursor = {"polled_ms": now_ms, "recent": sorted(set(keys))}
    yield Unit("connections", iter([batch]))


def fetch_console_alerts(ctx: ApplianceContext) -> Iterator[Unit]:
    """Every sensor's alerts through the console (v2 adds sensor, site and zone names)."""
    version = getattr(ctx.appliance, "alerts_api", "v2")
    yield from incremental_alerts(ctx, f"/external/{version}/alerts", f"console/{version}/alerts")


def fetch_sensors(ctx: ApplianceContext) -> Iterator[Unit]:
    """v3 sensors: connection state (SYNCED is healthy), version, device and alert counts."""
    records = ctx.get(f"{_V3}/sensors")
    origin = _origin(ctx, "console/v3/sensors")

    def to_row(f: Fields) -> Row:
        sensor_id = as_int(f.get("u_id"), "u_id")
        if sensor_id is None:
            raise Invalid("u_id: missing")
        state = as_text(f.get("u_connection_state"))
        return {
            **origin,
            "SensorId": sensor_id,
            "SensorName": as_text(f.get("u_name")),
            "SensorUid": as_text(f.get("u_uid")),
            "ConnectionState": state,
            "Healthy": None if state is None else state.upper() == "SYNCED",
            "Version": as_text(f.get("u_version")),
            "IsActivated": as_bool(f.get("u_is_activated"), "u_is_activated"),
            "DeviceCount": as_int(f.get("u_device_count"), "u_device_count"),
            "AlertCount": as_int(f.get("u_alert_count"), "u_alert_count"),
            "UnhandledAlertCount": as_int(
                f.get("u_unhandled_alert_count"), "u_unhandled_alert_count"
            ),
        }

    yield Unit("sensors", iter([rows_of(IOT_SENSORS, records, to_row, "v3 sensors")]))

"""Defender for IoT on-premises management console datasets (C.3).

``devices`` is the v1 inventory of every sensor (a full snapshot, daily by default); the v3
integration API brings what changed since the last poll: ``device_changes`` (devices new or
updated, and deletions), ``connections``, ``cves``; ``alerts`` is incremental by time like a
sensor's; ``sensors`` is the sensors' connection state, the sensor-health signal.

The v3 deltas with a per-item time resume from watermarks (``iot_console_v3``); lists without
one use the previous poll time less an overlap.

A console's ``sensor_ids`` restrict every dataset to those sensors. Only v1 devices takes them
as a comma list; v3 devices and device CVEs take one ``sensorId``, so each sensor is its own
request series, paged to its end and resumed from its own watermark; v3 connections take none,
so they are kept when either device is one of those sensors' (v1 devices gives their ids);
alerts and sensors are filtered on the ``sensorId``/``u_id`` they carry. The deleted-devices
list names no sensor: every deletion is recorded.
May import ``contracts``, ``errors``, ``tables`` and the other ``sources`` modules.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from typing import Any

from endpoint_forensics.contracts import Batch, Reject, Row, Unit
from endpoint_forensics.sources import ConsoleContext, Cursor, Fetched
from endpoint_forensics.sources.iot import (
    attack_vector,
    device_row,
    incremental_alerts,
    rows_of,
)
from endpoint_forensics.sources.iot_console_v3 import (
    V3,
    cursor_ms,
    delta_rows,
    pages,
    sensor_ids,
    sensor_list,
)
from endpoint_forensics.sources.wire import (
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

_OVERLAP_MS = 10 * 60_000


def _origin(ctx: ConsoleContext, source: str) -> Row:
    return {"Appliance": ctx.appliance.name, "ApplianceKind": "console", "Source": source}


def fetch_console_devices(ctx: ConsoleContext) -> Iterator[Unit]:
    """``/external/v1/devices``: every sensor's devices with sensor, site and zone ids."""
    records = ctx.get("/external/v1/devices", sensor_list(ctx))
    origin = _origin(ctx, "console/v1/devices")

    def to_row(f: Fields) -> Row:
        row = device_row(f, origin)
        site, zone = as_text(f.get("siteId")), as_text(f.get("zoneId"))
        row["Site"], row["Zone"] = site, zone
        return row

    yield Unit("devices", iter([rows_of(IOT_DEVICES, records, to_row, "/external/v1/devices")]))


def v3_device_row(f: Fields, origin: Row) -> Row:
    device_id = f.get_as("u_id", as_int)
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
        "Authorized": f.get_as(("u_authorized", "u_is_authorized"), as_bool),
        "SensorId": int(sensors[0]) if sensors and sensors[0].isdigit() else None,
        "Site": as_text(f.get("u_site")),
        "Zone": as_text(f.get("u_zone")),
        "PurdueLevel": purdue,
        "FirstSeen": f.get_as("u_first_discovered", from_epoch_ms),
        "LastActivity": f.get_as("u_last_activity", from_epoch_ms),
        "LastUpdate": f.get_as("u_last_update", from_epoch_ms),
        "DeviceStatus": "Active",
    }


def fetch_device_changes(ctx: ConsoleContext) -> Fetched:
    """v3 devices new or updated since the last poll, and devices deleted since then."""
    cursor = ctx.cursor or {}
    origin = _origin(ctx, "console/v3/devices")
    batch = Batch(IOT_DEVICES)

    def parse(page: list[Any]) -> list[Row]:
        part = rows_of(IOT_DEVICES, page, lambda f: v3_device_row(f, origin), "v3 devices")
        batch.rejects.extend(part.rejects)
        return part.rows

    batch.rows, marks = delta_rows(ctx, "devices", "u_devices", {"notificationType": "0"}, parse)
    # Deletions carry no time: ask from the previous poll (less an overlap), skip ids known.
    # They name no sensor either, so sensor_ids cannot apply: every deletion is recorded.
    now_ms = to_epoch_ms(ctx.now)
    deleted_after = max(0, cursor_ms(cursor, "polled_ms") - _OVERLAP_MS) if cursor else 0
    known_deleted = set(cursor.get("deleted") or [])
    deleted = ctx.get(f"{V3}/deleteddevices/{deleted_after}")
    gone = []
    for record in deleted if isinstance(deleted, list) else []:
        try:
            ident = Fields(record).get_as("u_id", as_int)
            if ident is None:
                raise Invalid("u_id: missing")
        except Invalid as exc:  # not a deletion we can record: quarantined with its reason
            batch.rejects.append(Reject(f"deleted device: {exc}", record))
            continue
        if ident in known_deleted:
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
    yield Unit("device_changes", iter([batch]))
    return {**marks, "polled_ms": now_ms, "deleted": sorted(known_deleted)[-10_000:]}


def fetch_console_cves(ctx: ConsoleContext) -> Fetched:
    """v3 device CVEs of devices whose CVEs changed since the last poll (all, the first time)."""
    origin = _origin(ctx, "console/v3/devicecves")
    batch = Batch(IOT_CVES)

    def parse(page: list[Any]) -> list[Row]:
        devices: list[Row] = []
        for record in page:
            try:
                f = Fields(record)
                devices.append(
                    {
                        "DeviceId": f.get_as("u_id", as_int),
                        "LastUpdate": f.get_as("u_last_update", from_epoch_ms),
                        "record": f,
                    }
                )
            except Invalid as exc:
                batch.rejects.append(Reject(str(exc), record))
        return devices

    fresh, marks = delta_rows(ctx, "devicecves", "u_device_cves", {}, parse)
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
    yield Unit("cves", iter([batch]))
    return marks


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
        "Score": c.get_as("u_score", as_score),
        "AttackVector": attack_vector(c.get("u_attack_vector")),
        "Description": as_text(c.get("u_description")),
        "LastUpdate": device["LastUpdate"],
    }


def fetch_console_connections(ctx: ConsoleContext) -> Fetched:
    """v3 connections new since the previous poll (less an overlap; all, the first time)."""
    cursor = ctx.cursor or {}
    now_ms = to_epoch_ms(ctx.now)
    after = max(0, cursor_ms(cursor, "polled_ms") - _OVERLAP_MS) if cursor else 0
    known = set(cursor.get("recent") or [])
    origin = _origin(ctx, "console/v3/connections")

    def to_row(f: Fields) -> Row:
        first = f.get_as("u_src_device_id", as_int)
        second = f.get_as("u_dest_device_id", as_int)
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
    # No sensorId here: every sensor's connections come.
    for page in pages(ctx, f"{V3}/connections/{after}", "u_connections", {}):
        part = rows_of(IOT_CONNECTIONS, page, to_row, "v3 connections")
        batch.rows.extend(part.rows)
        batch.rejects.extend(part.rejects)
    mine = _sensor_device_ids(ctx)
    if mine is not None:
        batch.rows = [
            r for r in batch.rows if r["FirstDeviceId"] in mine or r["SecondDeviceId"] in mine
        ]
    keys = [f"{r['FirstDeviceId']}>{r['SecondDeviceId']}:{r['ConnectionType']}" for r in batch.rows]
    batch.rows = [r for r, k in zip(batch.rows, keys, strict=True) if k not in known]
    yield Unit("connections", iter([batch]))
    return {"polled_ms": now_ms, "recent": sorted(set(keys))}


def _sensor_device_ids(ctx: ConsoleContext) -> set[int] | None:
    """Console ids of the configured sensors' devices (None: no sensor filter). Asked after
    the connections, so that every device a connection names is already listed."""
    if not sensor_ids(ctx):
        return None
    records = ctx.get("/external/v1/devices", sensor_list(ctx))
    ids = set()
    for record in records if isinstance(records, list) else []:
        if isinstance(record, Mapping):
            ident = Fields(record).get("id")
            if isinstance(ident, int) and not isinstance(ident, bool):
                ids.add(ident)
    return ids


def _of_sensors(batches: Iterator[Batch], ids: tuple[int, ...], key: str) -> Iterator[Batch]:
    for batch in batches:
        batch.rows = [r for r in batch.rows if r.get(key) in ids]
        yield batch


def fetch_console_alerts(ctx: ConsoleContext) -> Fetched:
    """Every sensor's alerts through the console (v2 adds sensor, site and zone names)."""
    version = ctx.appliance.alerts_api
    ids = sensor_ids(ctx)
    path = f"/external/{version}/alerts"
    alerts = incremental_alerts(ctx, path, f"console/{version}/alerts")
    while True:
        try:
            unit = next(alerts)
        except StopIteration as done:
            cursor: Cursor | None = done.value
            return cursor
        # The documented alert filter is spelled `sensor` in one place and `sensorId` in
        # another: filter on the sensorId every alert carries instead.
        if ids:
            unit.batches = _of_sensors(unit.batches, ids, "SensorId")
        yield unit


def fetch_sensors(ctx: ConsoleContext) -> Iterator[Unit]:
    """v3 sensors: connection state (SYNCED is healthy), version, device and alert counts."""
    records = ctx.get(f"{V3}/sensors")
    origin = _origin(ctx, "console/v3/sensors")

    def to_row(f: Fields) -> Row:
        sensor_id = f.get_as("u_id", as_int)
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
            "IsActivated": f.get_as("u_is_activated", as_bool),
            "DeviceCount": f.get_as("u_device_count", as_int),
            "AlertCount": f.get_as("u_alert_count", as_int),
            "UnhandledAlertCount": f.get_as("u_unhandled_alert_count", as_int),
        }

    batches = iter([rows_of(IOT_SENSORS, records, to_row, "v3 sensors")])
    ids = sensor_ids(ctx)
    yield Unit("sensors", _of_sensors(batches, ids, "SensorId") if ids else batches)

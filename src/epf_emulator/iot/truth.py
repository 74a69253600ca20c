"""Ground truth of the Defender for IoT datasets: what a complete sync as of now must contain.

Owns the IoT rows ``/_emulator/stats`` reports, counted straight from the OT model and the alert
and event streams (never through the routes or their rendering, so a paging or filtering bug shows
up as a mismatch), and ``changes_after``, the console's v3 delta counts after a watermark (of every
sensor, or of some). Per sensor: devices listed, connections, (address, CVE) pairs with no ``top``
cap, alerts and events so far, and exposure rows (per reported device: itself plus its remote
access, open ports, plain-text passwords, weak authentication and antivirus entries; plus every row
of the security and operational reports). Per console: devices, device changes (v3 devices after 0
plus deleted devices after 0), connections, (device, CVE) pairs, alerts and sensors.

Imports only ``iot.reports`` and ``iot.state`` of the emulator: it shares no code with the
collector.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from epf_emulator.iot.reports import operational_rows, security_rows
from epf_emulator.iot.state import CONSOLE_NAME, IotState

__all__ = ["IOT_TABLES", "changes_after", "iot_truth"]

IOT_TABLES = (
    "EPF_IotDevices_CL",
    "EPF_IotConnections_CL",
    "EPF_IotCves_CL",
    "EPF_IotAlerts_CL",
    "EPF_IotEvents_CL",
    "EPF_IotExposure_CL",
    "EPF_IotSensors_CL",
)


def changes_after(
    state: IotState, after_ms: int, now_ms: int, sensors: Collection[int] | None = None
) -> dict[str, int]:
    """The console's v3 counts strictly after ``after_ms``, as of ``now_ms``, of the sensors
    numbered ``sensors`` (None: all)."""
    devices = deleted = connections = cves = 0
    for sensor in state.sensors:
        if sensors is not None and sensor.number not in sensors:
            continue
        for d in sensor.devices:
            if d.alive(now_ms) and d.last_update(now_ms) > after_ms:
                devices += 1
                cves += len(d.cves)
            if d.deleted_ms is not None and after_ms < d.deleted_ms <= now_ms:
                deleted += 1
        for c in sensor.connections:
            if c.alive(now_ms) and c.discovered_ms > after_ms:
                connections += 1
    return {"devices": devices, "deleted": deleted, "connections": connections, "cves": cves}


def iot_truth(state: IotState, now_ms: int) -> tuple[dict[str, int], dict[str, Any]]:
    """(table -> rows, the ``truth_detail["iot"]`` document) as of ``now_ms``."""
    sensors: dict[str, dict[str, int]] = {}
    for sensor in state.sensors:
        alive = [d for d in sensor.devices if d.alive(now_ms)]
        exposure = sum(d.exposure.rows() for d in alive if d.exposure is not None)
        for report in (security_rows(sensor, now_ms), operational_rows(sensor, now_ms)):
            exposure += sum(len(rows) for rows in report.values())
        events = state.events[sensor.number]
        sensors[sensor.name] = {
            "devices": len(alive),
            "connections": sum(1 for c in sensor.connections if c.alive(now_ms)),
            "cves": sum(len(d.cves) for d in alive),  # CVEs sit on the first address only
            "alerts": len(state.alerts[sensor.number].upto(now_ms)),
            "events": events.count(events.start_ms, now_ms),
            "exposure": exposure,
        }
    consoles: dict[str, dict[str, int]] = {}
    if state.console:
        changes = changes_after(state, 0, now_ms)
        consoles[CONSOLE_NAME] = {
            "devices": sum(s["devices"] for s in sensors.values()),
            "device_changes": changes["devices"] + changes["deleted"],
            "connections": changes["connections"],
            "cves": changes["cves"],
            "alerts": sum(s["alerts"] for s in sensors.values()),
            "sensors": len(state.sensors),
        }

    def total(rows: dict[str, dict[str, int]], key: str) -> int:
        return sum(r[key] for r in rows.values())

    tables = {
        "EPF_IotDevices_CL": total(sensors, "devices")
        + total(consoles, "devices")
        + total(consoles, "device_changes"),
        "EPF_IotConnections_CL": total(sensors, "connections") + total(consoles, "connections"),
        "EPF_IotCves_CL": total(sensors, "cves") + total(consoles, "cves"),
        "EPF_IotAlerts_CL": total(sensors, "alerts") + total(consoles, "alerts"),
        "EPF_IotEvents_CL": total(sensors, "events"),
        "EPF_IotExposure_CL": total(sensors, "exposure"),
        "EPF_IotSensors_CL": total(consoles, "sensors"),
    }
    return tables, {"sensors": sensors, "consoles": consoles}

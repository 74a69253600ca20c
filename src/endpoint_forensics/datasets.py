"""Which function collects each dataset, into which table: per Defender tenant, per IoT
sensor and per IoT management console.

The registry the pipeline runs from; ``config`` names the same datasets (a test keeps the two
in step). May import ``sources`` and ``tables``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from endpoint_forensics.contracts import Unit
from endpoint_forensics.sources import hunting, iot, iot_console, iot_events, iot_reports, mde, tvm
from endpoint_forensics.tables import (
    AGENT_HEALTH,
    AV_HEALTH,
    CVE_CATALOG,
    DEVICES,
    IOT_ALERTS,
    IOT_CONNECTIONS,
    IOT_CVES,
    IOT_DEVICES,
    IOT_EVENTS,
    IOT_EXPOSURE,
    IOT_SENSORS,
    RECOMMENDATIONS,
    SECURE_CONFIG,
    SOFTWARE_INVENTORY,
    VULNERABILITIES,
    VULNERABILITY_CHANGES,
    Table,
)

__all__ = ["CONSOLE_SPECS", "DATASET_SPECS", "SENSOR_SPECS", "DatasetSpec"]


@dataclass(frozen=True)
class DatasetSpec:
    table: Table
    fetch: Callable[[Any], Iterator[Unit]]  # a FetchContext or an ApplianceContext
    resumable: bool = False  # units carry resume tokens; else an unfinished snapshot restarts


DATASET_SPECS: dict[str, DatasetSpec] = {
    "machines": DatasetSpec(DEVICES, mde.fetch_machines),
    "agent_health": DatasetSpec(AGENT_HEALTH, hunting.fetch_agent_health),
    "av_health": DatasetSpec(AV_HEALTH, mde.fetch_av_health),
    "secure_config": DatasetSpec(SECURE_CONFIG, tvm.fetch_secure_config, resumable=True),
    "vulnerabilities": DatasetSpec(VULNERABILITIES, tvm.fetch_vulnerabilities, resumable=True),
    "vulnerability_changes": DatasetSpec(VULNERABILITY_CHANGES, tvm.fetch_vulnerability_changes),
    "software_inventory": DatasetSpec(
        SOFTWARE_INVENTORY, tvm.fetch_software_inventory, resumable=True
    ),
    "recommendations": DatasetSpec(RECOMMENDATIONS, mde.fetch_recommendations),
    "cve_catalog": DatasetSpec(CVE_CATALOG, mde.fetch_cve_catalog),
}

SENSOR_SPECS: dict[str, DatasetSpec] = {
    "devices": DatasetSpec(IOT_DEVICES, iot.fetch_devices),
    "connections": DatasetSpec(IOT_CONNECTIONS, iot.fetch_connections),
    "cves": DatasetSpec(IOT_CVES, iot.fetch_cves),
    "alerts": DatasetSpec(IOT_ALERTS, iot.fetch_alerts),
    "events": DatasetSpec(IOT_EVENTS, iot_events.fetch_events),
    "exposure": DatasetSpec(IOT_EXPOSURE, iot_reports.fetch_exposure),
}

CONSOLE_SPECS: dict[str, DatasetSpec] = {
    "devices": DatasetSpec(IOT_DEVICES, iot_console.fetch_console_devices),
    "device_changes": DatasetSpec(IOT_DEVICES, iot_console.fetch_device_changes),
    "connections": DatasetSpec(IOT_CONNECTIONS, iot_console.fetch_console_connections),
    "cves": DatasetSpec(IOT_CVES, iot_console.fetch_console_cves),
    "alerts": DatasetSpec(IOT_ALERTS, iot_console.fetch_console_alerts),
    "sensors": DatasetSpec(IOT_SENSORS, iot_console.fetch_sensors),
}

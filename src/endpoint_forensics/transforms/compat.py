"""The compat profile: the original connector's legacy rows, derived from our rows.

Owns ``DERIVED`` (our table name -> the legacy tables derived from it, each with a row filter
and a row mapper), ``derive`` and ``COMPAT``, the transform the pipeline runs with
``[output] profile = "compat"``. Pure functions: rows in, rows out, no I/O. Input and output
rows carry none of the stamp columns (``COMMON_COLUMNS``: TimeGenerated, SnapshotTime, RunId,
...): the sink stamps both, legacy rows with the snapshot time of the rows they come from.

Vocabulary decisions (original-connector.md gives only ENABLED|DISABLED|N/A and GOOD|BAD):
- Pass -> ENABLED (Windows) / GOOD (macOS); Fail -> DISABLED / BAD.
- NotApplicable -> "N/A" on both, the reference's rule "not applicable -> N/A"; on macOS it
  only arises when the SCID row says not applicable (tests without a macOS SCID are left out
  of ``Results_s`` altogether, as the original had no such keys).
- Unknown (no SCID row, or unreadable flags) -> no value: an empty ``<Test>_s`` on Windows and
  no key in the macOS object. That is what the original wrote when a SCID row was missing
  (the Data Collector API dropped nulls), and it never shows a device as healthy or unhealthy
  on a guess.
May import ``tables`` only (and orjson).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from endpoint_forensics.tables import (
    AGENT_HEALTH,
    IOT_CVES,
    IOT_DEVICES,
    IOT_EVENTS,
    HealthResult,
    Table,
)
from endpoint_forensics.tables.compat import (
    LEGACY_IOT_CVES,
    LEGACY_IOT_DEVICES,
    LEGACY_IOT_EVENTS,
    LEGACY_MAC_HEALTH,
    LEGACY_MAC_TESTS,
    LEGACY_WINDOWS_HEALTH,
    LEGACY_WINDOWS_TESTS,
)

__all__ = ["COMPAT", "DERIVED", "CompatTransform", "Derivation", "derive"]

Row = dict[str, Any]

_WINDOWS_VALUES = {
    HealthResult.PASS.value: "ENABLED",
    HealthResult.FAIL.value: "DISABLED",
    HealthResult.NOT_APPLICABLE.value: "N/A",
}
_MAC_VALUES = {
    HealthResult.PASS.value: "GOOD",
    HealthResult.FAIL.value: "BAD",
    HealthResult.NOT_APPLICABLE.value: "N/A",
}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Derivation:
    """One legacy table derived from one of ours: which rows feed it, and how each maps."""

    table: Table
    keep: Callable[[Mapping[str, Any]], bool]
    to_row: Callable[[Mapping[str, Any]], Row]


def derive(table_name: str, rows: Iterable[Mapping[str, Any]]) -> Iterator[tuple[Table, list[Row]]]:
    """The legacy rows derived from rows of our table ``table_name``, grouped by legacy table.

    A legacy table that gets no rows is not yielded; a table with no derivation yields nothing.
    """
    derivations = DERIVED.get(table_name, ())
    if not derivations:
        return
    ours = list(rows)  # read more than once, one pass per legacy table
    for derivation in derivations:
        legacy = [derivation.to_row(row) for row in ours if derivation.keep(row)]
        if legacy:
            yield derivation.table, legacy


# --- agent health ---------------------------------------------------------------------------


def _in_vocabulary(vocabulary: Mapping[str, str], value: Any) -> str | None:
    return vocabulary.get(value) if isinstance(value, str) else None


def _is_family(family: str) -> Callable[[Mapping[str, Any]], bool]:
    return lambda row: row.get("OSFamily") == family


def windows_health_row(row: Mapping[str, Any]) -> Row:
    """An ``EPF_AgentHealth_CL`` row of a Windows device as an ``AgentHealthStatusWindows_CL`` row."""
    out: Row = {"DeviceId_s": row.get("DeviceId"), "DeviceName_s": row.get("DeviceName")}
    for test in LEGACY_WINDOWS_TESTS:
        out[f"{test}_s"] = _in_vocabulary(_WINDOWS_VALUES, row.get(test))
    return out


def mac_health_row(row: Mapping[str, Any]) -> Row:
    """An ``EPF_AgentHealth_CL`` row of a Mac as a ``MDE_MAC_devicehealth_CL`` row: one device
    in a one-element ``Results_s`` array, which the workbook's ``mv-expand`` reads as before."""
    result: Row = {"DeviceId": row.get("DeviceId"), "DeviceName": row.get("DeviceName")}
    for test in LEGACY_MAC_TESTS:
        result[test] = _in_vocabulary(_MAC_VALUES, row.get(test))
    result = {key: value for key, value in result.items() if value is not None}
    return {
        "Results_s": orjson.dumps([result]).decode(),
        "DeviceId_s": row.get("DeviceId"),
        "DeviceName_s": row.get("DeviceName"),
    }


# --- IoT ------------------------------------------------------------------------------------


def _from_source(source: str) -> Callable[[Mapping[str, Any]], bool]:
    return lambda row: row.get("Source") == source


def _json_text(value: Any) -> str | None:
    """A dynamic value as the JSON text the Data Collector API stored for arrays."""
    if value is None or isinstance(value, str):  # already text (or nothing): keep it
        return value
    return orjson.dumps(value).decode()


def _number(value: Any) -> float | None:
    return None if value is None else float(value)


def iot_device_row(row: Mapping[str, Any]) -> Row:
    """An ``EPF_IotDevices_CL`` sensor row as an ``AD4IOT_Devices_CL`` row."""
    return {
        "id_d": _number(row.get("DeviceId")),
        "name_s": row.get("DeviceName"),
        "vendor_s": row.get("Vendor"),
        "type_s": row.get("DeviceType"),
        "operatingSystem_s": row.get("OperatingSystem"),
        "ipAddresses_s": _json_text(row.get("IpAddresses")),
        "macAddresses_s": _json_text(row.get("MacAddresses")),
        "protocols_s": _json_text(row.get("Protocols")),
        "firmware_s": _json_text(row.get("Firmware")),
        "authorized_b": row.get("Authorized"),
        "engineeringStation_b": row.get("EngineeringStation"),
        "scanner_b": row.get("Scanner"),
        "hasDynamicAddress_b": row.get("HasDynamicAddress"),
        "Appliance": row.get("Appliance"),
    }


def iot_cve_row(row: Mapping[str, Any]) -> Row:
    """An ``EPF_IotCves_CL`` sensor row as an ``AD4IOT_CVE_CL`` row."""
    score = row.get("Score")
    address = row.get("IpAddress")
    return {
        "cveId_s": row.get("CveId"),
        # The API sent the score as text ("9.3", "10.0"); str() of the float gives it back.
        "score_s": None if score is None else str(float(score)),
        "attackVector_s": row.get("AttackVector"),
        "description_s": row.get("Description"),
        "IPAddress": address,
        "ipAddress_s": address,
        "Appliance": row.get("Appliance"),
    }


def epoch_ms(value: datetime | None) -> float | None:
    """An aware datetime as epoch milliseconds (exact: no float rounding of seconds)."""
    if value is None:
        return None
    return float((value - _EPOCH) // timedelta(milliseconds=1))


def iot_event_row(row: Mapping[str, Any]) -> Row:
    """An ``EPF_IotEvents_CL`` row as an ``AD4IOT_Events_CL`` row."""
    return {
        "timestamp_d": epoch_ms(row.get("EventTime")),
        "type_s": row.get("EventType"),
        "title_s": row.get("EventTitle"),
        "severity_s": row.get("Severity"),
        "content_s": row.get("Content"),
        "owner_s": row.get("Owner"),
        "Appliance": row.get("Appliance"),
    }


def _always(row: Mapping[str, Any]) -> bool:
    return True


# Keyed by our table name. The original read only sensor v1 APIs, so console rows (whose
# device ids differ) stay out of its tables; events come only from sensors.
DERIVED: dict[str, tuple[Derivation, ...]] = {
    AGENT_HEALTH.name: (
        Derivation(LEGACY_WINDOWS_HEALTH, _is_family("Windows"), windows_health_row),
        Derivation(LEGACY_MAC_HEALTH, _is_family("macOS"), mac_health_row),
    ),
    IOT_DEVICES.name: (
        Derivation(LEGACY_IOT_DEVICES, _from_source("sensor/v1/devices"), iot_device_row),
    ),
    IOT_CVES.name: (Derivation(LEGACY_IOT_CVES, _from_source("sensor/v1/cves"), iot_cve_row),),
    IOT_EVENTS.name: (Derivation(LEGACY_IOT_EVENTS, _always, iot_event_row),),
}


class CompatTransform:
    """The compat profile as a transform: the original connector's legacy tables, derived
    from ours."""

    name = "compat"
    reads: tuple[Table, ...] = (AGENT_HEALTH, IOT_DEVICES, IOT_CVES, IOT_EVENTS)
    writes: tuple[Table, ...] = tuple(d.table for ds in DERIVED.values() for d in ds)

    def derive(
        self, table: Table, rows: Sequence[Mapping[str, Any]]
    ) -> Iterator[tuple[Table, list[Row]]]:
        return derive(table.name, rows)

    def derives(self, table: Table) -> tuple[Table, ...]:
        return tuple(d.table for d in DERIVED.get(table.name, ()))


COMPAT = CompatTransform()

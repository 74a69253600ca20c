"""Defender for IoT sensor vulnerability reports (C.2) as exposure findings.

The devices report gives, per vulnerable device, remote access, open ports, plain-text
password findings, weak authentication and antivirus products; the security and operational
reports are tables of rows. Plain-text password findings keep their protocol and strength;
the password itself is removed from the response before anything else reads it, so it cannot
reach a table, a log, a checkpoint or the quarantine.
May import ``contracts``, ``tables`` and the other ``sources`` modules.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from typing import Any

import orjson

from endpoint_forensics.contracts import Batch, Reject, Row, Unit
from endpoint_forensics.sources import SensorContext
from endpoint_forensics.sources.wire import (
    Fields,
    Invalid,
    as_int,
    as_text,
    text_list,
    without_passwords,
)
from endpoint_forensics.tables import IOT_EXPOSURE

__all__ = ["fetch_exposure"]


_DEVICE_FINDINGS = (  # (key in the report's vulnerabilities, Section)
    ("remoteAccess", "RemoteAccess"),
    ("openedPorts", "OpenPort"),
    ("plainTextPasswords", "PlainTextPassword"),
    ("weakAuthentication", "WeakAuthentication"),
    ("antiViruses", "AntiVirus"),
)


def fetch_exposure(ctx: SensorContext) -> Iterator[Unit]:
    """The devices, security and operational vulnerability reports as exposure findings.

    Plain-text password findings keep their protocol and strength; the password itself is
    removed from the response before anything else reads it, so it cannot reach a table, a
    log or the quarantine.
    """
    origin = {
        "Appliance": ctx.appliance.name,
        "ApplianceKind": "sensor",
        "Source": "sensor/v1/reports",
    }
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
    score = f.get_as("securityScore", as_int)
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
            finding = Fields(item, within=key) if isinstance(item, Mapping) else None
            row: Row = {**base, "Section": section}
            if finding is None:  # weakAuthentication and antiViruses are lists of strings
                row["Protocol" if section == "WeakAuthentication" else "Details"] = (
                    as_text(item) if section == "WeakAuthentication" else {"name": item}
                )
            else:
                row["Port"] = finding.get_as("port", as_int)
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
    return {
        **origin,
        "Report": report,
        "Section": section,
        "FindingKey": digest.hexdigest()[:20],
        "DeviceName": as_text(f.get("name")),
        "IpAddress": as_text(address) if not isinstance(address, list) else None,
        "Peer": as_text(f.get("client")),
        "Port": _port(f.get("port")),
        "Transport": as_text(f.get("transport")),
        "Protocol": as_text(f.get("protocol")),
        "Details": record,
    }


def _port(value: Any) -> int | None:
    """A report row's port, when it is a whole number a long column holds; else None (its
    ``Details`` keep it as reported)."""
    if not isinstance(value, int) or isinstance(value, bool):
        return None
    try:
        return as_int(value)
    except Invalid:
        return None

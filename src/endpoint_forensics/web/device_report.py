"""``epf report device``: one device's posture at a time, as a file that goes into a case.

Owns gathering what the page says: the forensic answer (``analytics.forensics``, the same as
``epf forensics --format json``), the device's triage items at that time, and the provenance
(the workspace as it stood at T: tenants, each table's newest snapshot, feed versions, and a
SHA-256 of the answer's rows). ``analytics.report`` renders it: no script, no network, printable.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from endpoint_forensics.analytics.forensics import device_posture
from endpoint_forensics.analytics.report import as_html
from endpoint_forensics.analytics.triage_report import device_triage_items
from endpoint_forensics.web.panels import workspace_provenance
from endpoint_forensics.workspace import store

__all__ = ["DeviceReport", "device_report", "write_device_report"]


@dataclass(frozen=True)
class DeviceReport:
    answer: dict[str, Any]  # the forensic answer with its triage items
    provenance: dict[str, Any]

    def html(self) -> str:
        return as_html(self.answer, self.provenance)


def device_report(
    db: Path, device: str, at: datetime, *, window: timedelta = timedelta(days=7)
) -> DeviceReport:
    """The posture of ``device`` (id or name) at ``at``, its triage items and provenance.

    Raises:
        ConfigError: the workspace does not exist or cannot be opened.
        ForensicsError: no such device, or nothing known of it by ``at``.
    """
    answer = device_posture(db, device, at, window=window)
    device_id = str(answer["device"]["DeviceId"])
    answer["triage"] = device_triage_items(db, device_id, at)
    con = store.connect_as_of(db, at)
    try:
        provenance = workspace_provenance(con, db)
        row = con.execute(
            "SELECT DefenderTenantId FROM EPF_Devices_CL WHERE DeviceId = ?"
            " ORDER BY SnapshotTime DESC LIMIT 1",
            [device_id],
        ).fetchone()
    finally:
        con.close()
    provenance["device_tenant"] = row[0] if row else None
    provenance["as_of"] = answer["at"]
    provenance["rows_sha256"] = hashlib.sha256(
        orjson.dumps(answer, option=orjson.OPT_SORT_KEYS)
    ).hexdigest()
    return DeviceReport(answer, provenance)


def write_device_report(
    db: Path, device: str, at: datetime, out: Path, *, window: timedelta = timedelta(days=7)
) -> DeviceReport:
    """``device_report`` written to ``out`` as one HTML file."""
    report = device_report(db, device, at, window=window)
    out.write_text(report.html(), encoding="utf-8")
    return report

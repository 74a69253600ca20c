"""Posture at time T: the forensic answer for one device, or the devices a predicate picks.

Owns reading a device's state at T from the workspace: the shipped KQL functions'
(``EPF_DevicesAt`` and the others, the same text Sentinel runs) rows for the device, read
locally by the SQL that stands for them (``device_state``, tested equal), the changes in the window
before T (differences between the snapshots inside it, and the vulnerability events), and the
``missing`` sentences (docs/forensics.md has the JSON contract and the rules). Renders nothing:
``analytics.report`` turns the answer into text, Markdown or HTML.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from endpoint_forensics.analytics.changes import (
    WINDOW_COLUMNS,
    WindowQuery,
    changes_from,
    window_queries,
)
from endpoint_forensics.analytics.device_state import (
    STATE_PART,
    device_state_sql,
    device_vulnerabilities_sql,
)
from endpoint_forensics.analytics.forensics_reads import ForensicsError, Workspace
from endpoint_forensics.analytics.functions import kql_datetime
from endpoint_forensics.analytics.missing import missing_sentences
from endpoint_forensics.tables import AGENT_HEALTH_TESTS

__all__ = ["DATASETS", "ForensicsError", "device_posture", "fleet_posture", "iso"]


_DEVICE_FIELDS = (
    "DeviceId", "DeviceName", "OSPlatform", "OSVersion", "RbacGroupName", "MachineTags",
    "HealthStatus", "OnboardingStatus", "LastSeen",
)  # fmt: skip
_AV_FIELDS = (
    "AvMode", "AvEngineVersion", "AvPlatformVersion", "AvSignatureVersion",
    "AvSignatureUpdateTime", "QuickScanTime", "QuickScanResult", "FullScanTime", "FullScanResult",
)  # fmt: skip
_CONFIG_FIELDS = (
    "ConfigurationId",
    "ConfigurationName",
    "ConfigurationCategory",
    "ConfigurationImpact",
)
_CONFIG_STATE = ("IsApplicable", "IsCompliant")
_VULN_FIELDS = (
    "CveId", "VulnerabilitySeverityLevel", "CvssScore", "ExploitabilityLevel", "SoftwareVendor",
    "SoftwareName", "SoftwareVersion", "FirstSeenTimestamp",
)  # fmt: skip


@dataclass(frozen=True)
class Dataset:
    key: str  # the answer's name for it
    name: str  # the collector's dataset (EPF_Runs_CL.Dataset)
    function: str
    fields: tuple[str, ...]  # what the answer reads of its state
    table: str
    keys: tuple[str, ...] = ()  # what names an item of a device, beyond the device

    def query(
        self,
        device_id: str,
        at: datetime,
        schema: dict[str, list[str]],
        since: datetime | None = None,
    ) -> WindowQuery:
        """The device's state at ``at``: the shipped function's rows for the device
        (``function_query``), read by the SQL that stands for it locally (device_state).
        With ``since``, a dataset whose changes the answer shows also gives its rows in the
        window (``WINDOW_COLUMNS``) from the same scan, told apart by ``Part``
        (``split``)."""
        values: dict[str, Any] = {"at": at, "device": device_id}
        if self.table == "EPF_Vulnerabilities_CL":
            changes = schema.get("EPF_VulnerabilityChanges_CL", [])
            text = device_vulnerabilities_sql(self.fields, changes)
        elif since is not None and self.key in WINDOW_COLUMNS:
            text = device_state_sql(self.table, self.keys, self.fields, WINDOW_COLUMNS[self.key])
            values["since"] = since
        else:
            text = device_state_sql(self.table, self.keys, self.fields)
        return WindowQuery(text, values, sql=True)

    def split(
        self, rows: list[dict[str, Any]]
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The state rows and the window's rows of a ``query`` given ``since``."""
        window = WINDOW_COLUMNS[self.key]
        state = [{f: r[f] for f in self.fields} for r in rows if r["Part"] == STATE_PART]
        rest = [{c: r[c] for c in window} for r in rows if r["Part"] != STATE_PART]
        return state, rest

    def function_query(self, device_id: str, at: datetime) -> WindowQuery:
        """The same read through the shipped function, as Sentinel runs it."""
        return WindowQuery(
            f"{self.function}(at) | where DeviceId == device | project {', '.join(self.fields)}",
            {"at": at, "device": device_id},
        )


DATASETS = (
    Dataset("devices", "machines", "EPF_DevicesAt", _DEVICE_FIELDS, "EPF_Devices_CL"),
    Dataset(
        "agent_health", "agent_health", "EPF_AgentHealthAt", AGENT_HEALTH_TESTS,
        "EPF_AgentHealth_CL",
    ),
    Dataset("antivirus", "av_health", "EPF_AvHealthAt", _AV_FIELDS, "EPF_AvHealth_CL"),
    Dataset(
        "secure_config", "secure_config", "EPF_SecureConfigAt", _CONFIG_FIELDS + _CONFIG_STATE,
        "EPF_SecureConfig_CL", ("ConfigurationId",),
    ),
    Dataset(
        "vulnerabilities", "vulnerabilities", "EPF_VulnerabilitiesAt", _VULN_FIELDS,
        "EPF_Vulnerabilities_CL", ("RecordId",),
    ),
)  # fmt: skip
_DEVICE_ID = re.compile(r"[0-9a-fA-F]{40}")  # Defender's machine id
_SEVERITY_ORDER = {"Critical": 0, "High": 1, "Medium": 2, "Low": 3}


def iso(value: datetime | str | None) -> str | None:
    """ISO 8601 UTC with ``Z`` and whole seconds (docs/forensics.md), or None."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def device_posture(db: Path, device: str, at: datetime, *, window: timedelta) -> dict[str, Any]:
    """The answer of docs/forensics.md for one device (its id or name) at ``at``.

    Raises:
        ForensicsError: the workspace never listed such a device at or before ``at``.
    """
    workspace = Workspace(db)
    try:
        if _DEVICE_ID.fullmatch(device):
            # An id needs no lookup by name: the answer's own queries show whether it is known.
            answer = _answer(workspace, device.lower(), at, window)
            if answer["device"]["DeviceName"] is not None:
                return answer
        device_id = _resolve(workspace, device, at)
        return _answer(workspace, device_id, at, window)
    finally:
        workspace.close()


def fleet_posture(db: Path, at: datetime, where: str) -> list[dict[str, Any]]:
    """One row per device whose state at ``at`` matches the KQL predicate ``where``.

    The predicate sees the devices, agent-health and antivirus columns at ``at`` side by side
    (``TamperProtection == "Fail"``, ``SignatureAgeHours > 168``, ``RbacGroupName == "..."``).
    """
    t = kql_datetime(at)
    query = (
        f"EPF_DevicesAt({t})"
        f" | join kind=leftouter (EPF_AgentHealthAt({t})"
        f" | project DeviceId, {', '.join(AGENT_HEALTH_TESTS)}, FailingTests) on DeviceId"
        f" | join kind=leftouter (EPF_AvHealthAt({t}) | project DeviceId, AvMode,"
        f" AvSignatureVersion, AvSignatureUpdateTime) on DeviceId"
        f" | extend SignatureAgeHours = round(({t} - AvSignatureUpdateTime) / 1h, 1)"
        f" | where {where}"
        f" | project DeviceId, DeviceName, OSPlatform, RbacGroupName, HealthStatus,"
        f" TamperProtection, RealtimeProtection, AvMode, SignatureAgeHours, FailingTests"
        f" | order by DeviceName asc"
    )
    workspace = Workspace(db)
    try:
        return workspace.kql(query)
    finally:
        workspace.close()


def _resolve(workspace: Workspace, device: str, at: datetime) -> str:
    rows = workspace.kql(
        "EPF_Devices_CL | where SnapshotTime <= at"
        " | where DeviceId == device or DeviceName =~ device"
        " or DeviceName startswith strcat(device, '.')"
        " | summarize arg_max(SnapshotTime, DeviceName) by DeviceId",
        at=at,
        device=device,
    )
    if not rows:
        raise ForensicsError(
            f"no device {device!r} in this workspace at or before {iso(at)}:"
            " give its DeviceId or DeviceName as Defender lists it"
        )
    if len(rows) > 1:
        names = ", ".join(f"{r['DeviceName']} ({r['DeviceId']})" for r in rows[:5])
        raise ForensicsError(f"{device!r} names more than one device: {names}; give its DeviceId")
    return str(rows[0]["DeviceId"])


# The newest triage of each of the device's CVEs within the look-back of the state functions.
_TRIAGED = (
    'SELECT CveId, SnapshotTime, InKev, Epss, Decision FROM "EPF_Triage_CL"'
    " WHERE DeviceId = $device AND SnapshotTime <= $at AND SnapshotTime > $at - INTERVAL 31 DAY"
    " QUALIFY row_number() OVER (PARTITION BY CveId ORDER BY SnapshotTime DESC) = 1"
)
_SNAPSHOT_TIMES = (
    'SELECT Dataset, max(SnapshotTime) AS Newest FROM "EPF_Runs_CL"'
    " WHERE Outcome = 'Succeeded' AND SnapshotTime <= $at"
    " AND SnapshotTime > $at - INTERVAL 31 DAY GROUP BY Dataset"
)


def _answer(
    workspace: Workspace, device_id: str, at: datetime, window: timedelta
) -> dict[str, Any]:
    since = at - window
    # The state of each dataset at T, the shipped function's rows for the device: only the
    # fields the answer shows.
    # Those whose changes the answer shows give their rows in the window from the same read.
    queries = {d.key: d.query(device_id, at, workspace.schema, since) for d in DATASETS}
    queries["_snapshot_times"] = WindowQuery(_SNAPSHOT_TIMES, {"at": at}, sql=True)
    if workspace.has("EPF_Triage_CL"):  # a workspace last synced before triage has none
        queries["_triage"] = WindowQuery(_TRIAGED, {"at": at, "device": device_id}, sql=True)
    queries.update({f"_changes_{k}": q for k, q in window_queries(device_id, since, at).items()})
    rows = workspace.run_all(queries)
    changes = {k.removeprefix("_changes_"): v for k, v in rows.items() if k.startswith("_changes_")}
    for d in DATASETS:
        if d.key in WINDOW_COLUMNS:
            rows[d.key], changes[d.key] = d.split(rows[d.key])
    answer: dict[str, Any] = {
        "device": _device(rows["devices"], device_id),
        "at": iso(at),
        "snapshots": _snapshots(rows["_snapshot_times"], at),
        "agent_health": _agent_health(rows["agent_health"]),
        "antivirus": _antivirus(rows["antivirus"], at),
        "secure_config_failing": _failing(rows["secure_config"]),
        "vulnerabilities_open": _open(rows["vulnerabilities"], rows.get("_triage", [])),
        "changes": changes_from(changes, since, at),
    }
    answer["missing"] = missing_sentences(answer)
    return answer


def _device(rows: list[dict[str, Any]], device_id: str) -> dict[str, Any]:
    if not rows:  # known before T, but not listed in the snapshot that answers T
        return {f: (device_id if f == "DeviceId" else None) for f in _DEVICE_FIELDS}
    row = rows[0]
    device = {f: row.get(f) for f in _DEVICE_FIELDS}
    device["MachineTags"] = sorted(row.get("MachineTags") or [])
    device["LastSeen"] = iso(row.get("LastSeen"))
    return device


def _snapshots(rows: list[dict[str, Any]], at: datetime) -> dict[str, dict[str, Any] | None]:
    """The newest snapshot of each dataset completed at or before ``at`` (the run log knows
    it even when, in change-only history, it wrote no row)."""
    newest = {
        str(r["Dataset"]): datetime.fromisoformat(str(r["Newest"]).replace("Z", "+00:00"))
        for r in rows
        if r["Newest"]
    }
    answer: dict[str, dict[str, Any] | None] = {}
    for dataset in DATASETS:
        time = newest.get(dataset.name)
        answer[dataset.key] = (
            None
            if time is None
            else {"time": iso(time), "age_hours": round((at - time).total_seconds() / 3600, 2)}
        )
    return answer


def _agent_health(rows: list[dict[str, Any]]) -> dict[str, str]:
    row = rows[0] if rows else {}
    return {t: str(row.get(t) or "Unknown") for t in AGENT_HEALTH_TESTS}


def _antivirus(rows: list[dict[str, Any]], at: datetime) -> dict[str, Any] | None:
    if not rows:
        return None
    row = rows[0]
    av: dict[str, Any] = {f: row.get(f) for f in _AV_FIELDS}
    for field in ("AvSignatureUpdateTime", "QuickScanTime", "FullScanTime"):
        av[field] = iso(av[field])
    updated = av["AvSignatureUpdateTime"]
    av["SignatureAgeHours"] = (
        round(
            (at - datetime.fromisoformat(updated.replace("Z", "+00:00"))).total_seconds() / 3600, 1
        )
        if updated
        else None
    )
    return av


def _failing(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    failing = [
        {f: r.get(f) for f in _CONFIG_FIELDS}
        for r in rows
        if r.get("IsApplicable") and r.get("IsCompliant") is False
    ]
    return sorted(failing, key=lambda c: (-(c["ConfigurationImpact"] or 0), c["ConfigurationId"]))


def _open(rows: list[dict[str, Any]], triaged: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The open vulnerabilities, each with what the newest triage before T knew of its CVE on
    this device (KEV, EPSS, the decision), or nulls where no triage had decided it."""
    decided = {str(t["CveId"]): t for t in triaged}
    found: dict[tuple[str, str, str], dict[str, Any]] = {}
    for r in rows:
        if not r.get("CveId"):
            continue
        item = {f: r.get(f) for f in _VULN_FIELDS}
        item["FirstSeenTimestamp"] = iso(item["FirstSeenTimestamp"])
        triage = decided.get(str(item["CveId"]), {})
        item.update(
            InKev=triage.get("InKev"), EpssScore=triage.get("Epss"), Decision=triage.get("Decision")
        )
        found[(str(item["CveId"]), item["SoftwareName"] or "", item["SoftwareVersion"] or "")] = (
            item
        )
    return sorted(
        found.values(),
        key=lambda v: (
            _SEVERITY_ORDER.get(v["VulnerabilitySeverityLevel"] or "", 4),
            v["CveId"],
            v["SoftwareName"] or "",
            v["SoftwareVersion"] or "",
        ),
    )

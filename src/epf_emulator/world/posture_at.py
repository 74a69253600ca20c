"""The emulator's own answer to "what was this device's posture at T?" (``/_emulator/posture``).

Owns the JSON of docs/forensics.md for one device at one instant, computed from the emulator's
world and never through collector code: the machine record as of T (``world.fleet``), the
agent-health tests from the assessment rows advanced hunting would return at T (the latest row
per SCID within the 30 days up to T), the AV record, the secure-configuration rows and the
vulnerability rows the datasets serve at T (their own SQL renderings, ``world.tvm_datasets``,
so the values are exactly what a sync at T receives), turned into the product's table values
the way docs/forensics.md states them: ``AvMode`` a name, times UTC ISO 8601 with ``Z`` and
whole seconds, ``OnboardingStatus`` in one spelling. ``snapshots`` says every dataset was read
at T (age 0); ``changes`` are the exact transitions of ``world.posture_changes``; ``InKev``,
``EpssScore`` and ``Decision`` are null (triage is the product's). Where docs/forensics.md
leaves a choice open: a device with no health assessment in the 30 days has ``agent_health``
null, and a device with no AV record is "not in active mode (no record)".

Blocking (DuckDB): call from worker threads.
Imports only ``world.database``, ``world.posture``, ``world.posture_changes``,
``world.scid_catalog`` and ``world.tvm_datasets`` of the emulator: it shares no code with the
collector.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from epf_emulator.world.database import Store
from epf_emulator.world.posture import HOUR_US
from epf_emulator.world.posture_changes import (
    AGENT_HEALTH_TESTS,
    device_changes,
    iso_seconds,
    test_results,
)
from epf_emulator.world.scid_catalog import HEALTH_SCIDS
from epf_emulator.world.tvm_datasets import DATASETS

__all__ = ["AV_MODE_NAMES", "device_posture", "health_results"]

#: DeviceAvInfo ``avMode`` code -> name (defender-apis.md B.2).
AV_MODE_NAMES = {
    "": "Other",
    "0": "Active",
    "1": "Passive",
    "2": "Disabled",
    "3": "Other",
    "4": "EDRBlocked",
    "5": "PassiveAudit",
}
_ONBOARDING = {
    v.lower(): v for v in ("Onboarded", "CanBeOnboarded", "Unsupported", "InsufficientInfo")
}
_SEVERITY_ORDER = {"Critical": 0, "High": 1, "Medium": 2, "Low": 3}
_EXPLOIT_WORDS = (
    ("ExploitIsVerified", "verified"),
    ("ExploitIsInKit", "in-kit"),
    ("ExploitIsPublic", "public"),
)
_AV_FIELDS = frozenset(
    {
        "avMode",
        "avEngineVersion",
        "avPlatformVersion",
        "avSignatureVersion",
        "avSignatureUpdateTime",
        "quickScanTime",
        "quickScanResult",
        "fullScanTime",
        "fullScanResult",
    }
)
_DATASETS = ("devices", "agent_health", "antivirus", "secure_config", "vulnerabilities")
_LOOK_BACK_US = 30 * 24 * HOUR_US  # advanced hunting's window


def device_posture(
    store: Store, *, seed: int, anchor_us: int, record: dict[str, Any], at_us: int
) -> dict[str, Any]:
    """The docs/forensics.md JSON for the device of ``record`` (its machine record as of
    ``at_us``) at ``at_us``."""
    cursor = store.cursor()
    try:
        row = cursor.execute(
            "SELECT idx, family FROM tvm.dev WHERE id = ?", [record["id"]]
        ).fetchone()
        if row is None:
            raise KeyError(record["id"])
        idx, family = int(row[0]), str(row[1])
        health = health_results(cursor, record["id"], family, at_us)
        antivirus = _antivirus(cursor, seed, anchor_us, idx, at_us)
        failing = _failing_configurations(cursor, seed, anchor_us, idx, at_us)
        vulnerabilities = _open_vulnerabilities(cursor, seed, anchor_us, idx, at_us)
        changes = device_changes(
            cursor, seed=seed, anchor_us=anchor_us, idx=idx, family=family, at_us=at_us
        )
    finally:
        cursor.close()
    at = iso_seconds(at_us)
    answer = {
        "device": _device(record),
        "at": at,
        "snapshots": {name: {"time": at, "age_hours": 0.0} for name in _DATASETS},
        "agent_health": health,
        "antivirus": antivirus,
        "secure_config_failing": failing,
        "vulnerabilities_open": vulnerabilities,
        "changes": changes,
    }
    answer["missing"] = _missing(answer)
    return answer


def health_results(cursor: Any, device_id: str, family: str, at_us: int) -> dict[str, str] | None:
    """The 11 tests from the latest assessment per health SCID in the 30 days up to ``at_us``;
    None when the device has none there (advanced hunting returns no row for it)."""
    scids = HEALTH_SCIDS[family]
    rows = cursor.execute(
        'SELECT "ConfigurationId", arg_max("IsApplicable", "Timestamp"),'
        ' arg_max("IsCompliant", "Timestamp")'
        ' FROM raw.main."DeviceTvmSecureConfigurationAssessment"'
        f' WHERE "DeviceId" = ? AND "ConfigurationId" IN ({", ".join("?" * len(scids))})'
        ' AND "Timestamp" > make_timestamp(?) AND "Timestamp" <= make_timestamp(?)'
        " GROUP BY 1",
        [device_id, *scids, at_us - _LOOK_BACK_US, at_us],
    ).fetchall()
    if not rows:
        return None
    latest = {str(r[0]): (r[1], r[2]) for r in rows}
    return test_results(family, latest)


def _served(
    cursor: Any,
    name: str,
    seed: int,
    anchor_us: int,
    idx: int,
    at_us: int,
    only: frozenset[str] | None = None,
) -> list[Any]:
    """Dataset ``name``'s records of device ``idx`` as served at ``at_us`` (camelCase dicts;
    with ``only``, just those fields)."""
    dataset = DATASETS[name]
    fields = ", ".join(
        f"'{c}': {sql}"
        for c, _, sql in dataset.columns(seed, at_us, anchor_us)
        if only is None or c in only
    )
    rows = cursor.execute(
        f"SELECT CAST(to_json({{{fields}}}) AS VARCHAR)"
        f" FROM ({dataset.snapshot(seed, at_us, None, anchor_us)}) s {dataset.joins}"
        f" WHERE s.d = {idx}"
    ).fetchall()
    return [orjson.loads(r[0]) for r in rows]


def _antivirus(cursor: Any, seed: int, anchor_us: int, idx: int, at_us: int) -> Any:
    records = _served(cursor, "av", seed, anchor_us, idx, at_us, _AV_FIELDS)
    if not records:
        return None
    r = records[0]
    updated = _parse(r["avSignatureUpdateTime"])
    age = None if updated is None else round((at_us - _us(updated)) / HOUR_US, 1)
    return {
        "AvMode": AV_MODE_NAMES.get(str(r["avMode"]).strip(), "Other"),
        "AvEngineVersion": r["avEngineVersion"],
        "AvPlatformVersion": r["avPlatformVersion"],
        "AvSignatureVersion": r["avSignatureVersion"],
        "AvSignatureUpdateTime": _iso(updated),
        "SignatureAgeHours": age,
        "QuickScanTime": _iso(_parse(r["quickScanTime"])),
        "QuickScanResult": r["quickScanResult"],
        "FullScanTime": _iso(_parse(r["fullScanTime"])),
        "FullScanResult": r["fullScanResult"],
    }


def _failing_configurations(
    cursor: Any, seed: int, anchor_us: int, idx: int, at_us: int
) -> list[dict[str, Any]]:
    failing = [
        {
            "ConfigurationId": r["configurationId"],
            "ConfigurationName": r["configurationName"],
            "ConfigurationCategory": r["configurationCategory"],
            "ConfigurationImpact": r["configurationImpact"],
        }
        for r in _served(cursor, "secure_config", seed, anchor_us, idx, at_us)
        if r["isApplicable"] is True and r["isCompliant"] is False
    ]
    return sorted(failing, key=lambda c: (-float(c["ConfigurationImpact"]), c["ConfigurationId"]))


def _open_vulnerabilities(
    cursor: Any, seed: int, anchor_us: int, idx: int, at_us: int
) -> list[dict[str, Any]]:
    rows = [
        {
            "CveId": r["cveId"],
            "VulnerabilitySeverityLevel": r["vulnerabilitySeverityLevel"],
            "CvssScore": r["cvssScore"],
            "ExploitabilityLevel": r["exploitabilityLevel"],
            "SoftwareVendor": r["softwareVendor"],
            "SoftwareName": r["softwareName"],
            "SoftwareVersion": r["softwareVersion"],
            "FirstSeenTimestamp": _iso(_parse(r["firstSeenTimestamp"])),
            "InKev": None,
            "EpssScore": None,
            "Decision": None,
        }
        for r in _served(cursor, "vulnerabilities", seed, anchor_us, idx, at_us)
        if r["cveId"] is not None
    ]
    return sorted(
        rows,
        key=lambda v: (
            _SEVERITY_ORDER.get(v["VulnerabilitySeverityLevel"], 4),
            v["CveId"],
            v["SoftwareName"],
            v["SoftwareVersion"],
        ),
    )


def _device(record: dict[str, Any]) -> dict[str, Any]:
    onboarding = record.get("onboardingStatus")
    if isinstance(onboarding, str):
        onboarding = _ONBOARDING.get(onboarding.lower(), onboarding)
    return {
        "DeviceId": record["id"],
        "DeviceName": record.get("computerDnsName"),
        "OSPlatform": record.get("osPlatform"),
        "OSVersion": record.get("osVersion"),
        "RbacGroupName": record.get("rbacGroupName"),
        "MachineTags": sorted(record.get("machineTags") or []),
        "HealthStatus": record.get("healthStatus"),
        "OnboardingStatus": onboarding,
        "LastSeen": _iso(_parse(record.get("lastSeen"))),
    }


def _missing(answer: dict[str, Any]) -> list[str]:
    """docs/forensics.md's rules, in their order."""
    missing = []
    status = answer["device"]["HealthStatus"]
    if status != "Active":
        missing.append(f"Device health was {status}.")
    health = answer["agent_health"] or {}
    if health.get("TamperProtection") == "Fail":
        missing.append("Tamper protection was off.")
    if health.get("RealtimeProtection") == "Fail":
        missing.append("Real-time protection was off.")
    av = answer["antivirus"]
    if av is None or av["AvMode"] != "Active":
        mode = (av or {}).get("AvMode") or "no antivirus record"
        missing.append(f"Antivirus was not in active mode ({mode}).")
    age = av["SignatureAgeHours"] if av else None
    if age is not None and age > 168:
        missing.append(f"Antivirus signatures were {int(age // 24)} days old.")
    vulnerabilities = answer["vulnerabilities_open"]
    for level, word in _EXPLOIT_WORDS:
        hits = sorted({v["CveId"] for v in vulnerabilities if v["ExploitabilityLevel"] == level})
        if hits:
            ids = ", ".join(hits[:5])
            missing.append(
                f"{_count(len(hits), 'open vulnerabilit')} with a {word} exploit: {ids}."
            )
    critical = {
        v["CveId"] for v in vulnerabilities if v["VulnerabilitySeverityLevel"] == "Critical"
    }
    if critical:
        missing.append(f"{_count(len(critical), 'open critical vulnerabilit')}.")
    for test in AGENT_HEALTH_TESTS:
        if test not in ("TamperProtection", "RealtimeProtection") and health.get(test) == "Fail":
            missing.append(f"Agent health test {test} failed.")
    high = [c for c in answer["secure_config_failing"] if float(c["ConfigurationImpact"]) >= 7]
    if high:
        ids = ", ".join(c["ConfigurationId"] for c in high[:5])
        missing.append(f"{_count(len(high), 'high-impact secure configuration')} failed: {ids}.")
    return missing


def _count(n: int, noun: str) -> str:
    """``n`` and the noun, singular or plural (a stem ending in "vulnerabilit" takes y/ies)."""
    if noun.endswith("vulnerabilit"):
        return f"{n} {noun}{'y' if n == 1 else 'ies'}"
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _parse(text: Any) -> datetime | None:
    """A served time (ISO with ``Z``, or TVM's ``2020-12-30 14:17:26``) as an aware UTC time."""
    if not isinstance(text, str) or not text:
        return None
    cleaned = text.rstrip("Z").replace(" ", "T")
    if "." in cleaned:
        head, fraction = cleaned.split(".", 1)
        cleaned = f"{head}.{fraction[:6]}"
    return datetime.fromisoformat(cleaned).replace(tzinfo=UTC)


def _us(t: datetime) -> int:
    delta = t - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _iso(t: datetime | None) -> str | None:
    return (
        None
        if t is None
        else (t - timedelta(microseconds=t.microsecond)).strftime("%Y-%m-%dT%H:%M:%SZ")
    )

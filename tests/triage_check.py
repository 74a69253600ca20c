"""The check every EPF_Triage_CL row must pass, from the vendored CSVs read with nothing but
the csv module: its decision, BOD 26-04 outcome, due date and forensic flag are the tables
applied to its own inputs; a KEV CVE is never unexploited; every input has its reason."""

from __future__ import annotations

import csv
import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from endpoint_forensics.triage import ssvc

_TABLES = Path(ssvc.__file__).with_name("decision_tables")
INPUTS = ("Exploitation", "Automatable", "TechnicalImpact", "MissionWellbeing", "PubliclyExposed")
_DAYS = {"fix on system upgrade": None, "60 days": 60, "14 days": 14, "3 days": 3}


def _csv(name: str) -> dict[tuple[str, ...], str]:
    with (_TABLES / name).open(newline="") as handle:
        rows = list(csv.reader(handle))[1:]
    return {tuple(r[1:-1]): r[-1] for r in rows}


def reasons(row: dict[str, Any]) -> dict[str, Any]:
    value = row["Reasons"]
    return json.loads(value) if isinstance(value, str) else value


def _yes(value: object) -> str:
    return "yes" if value else "no"


def _plus_days(iso: str, days: int) -> str:
    moment = datetime.fromisoformat(iso.replace("Z", "+00:00")) + timedelta(days=days)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def check_triage_rows(rows: list[dict[str, Any]]) -> None:
    coordinator = _csv("cisa_coordinator_2_0_3.csv")
    bod = _csv("cisa_bod_26_04_1_0_0.csv")
    for row in rows:
        exploitation = "public poc" if row["Exploitation"] == "poc" else row["Exploitation"]
        inputs = (exploitation, row["Automatable"], row["TechnicalImpact"], row["MissionWellbeing"])
        assert row["Decision"].lower() == coordinator[inputs], row
        key = (_yes(row["InKev"]), _yes(row["PubliclyExposed"]), row["Automatable"])
        outcome = bod[(*key, row["TechnicalImpact"])]
        assert row["Bod2604Outcome"] == outcome, row
        assert row["ForensicInvestigation"] is (outcome == "3 days & forensic investigation")
        days = _DAYS.get(outcome, 3)
        expected = None if days is None else _plus_days(row["ClockStart"], days)
        assert row["DueDate"] == expected, row
        if row["InKev"]:
            assert row["Exploitation"] == "active", row
        given = reasons(row)
        for name in INPUTS:
            assert given[name]["value"] == row[name], (name, row)
            assert given[name]["source"] and given[name]["why"], (name, row)


#: The columns a triage row takes from its inputs as they are.
_FROM_INPUTS = (
    "DeviceKind", "DeviceName", "RbacGroupName", "VulnerabilitySeverityLevel", "CvssScore",
    "FirstSeen", "InKev", "KevForensicTriage", "Epss", "EpssPercentile",
)  # fmt: skip


def check_inputs_agree(db: Path, rows: list[dict[str, Any]]) -> None:
    """Triage computes its inputs from parts, locally; the shipped ``EPF_TriageInputs`` (as
    Sentinel runs it) must give each row the same inputs, and each row's reasons the same
    feed copies."""
    from endpoint_forensics.analytics.functions import registry
    from endpoint_forensics.workspace import store

    at = rows[0]["SnapshotTime"]
    inputs = {
        (r["DeviceId"], r["CveId"]): r
        for r in store.run_query(
            db, f"EPF_TriageInputs(datetime({at}))", functions=registry()
        ).records()
    }
    assert set(inputs) == {(r["DeviceId"], r["CveId"]) for r in rows}
    for row in rows:
        given = inputs[(row["DeviceId"], row["CveId"])]
        assert {c: row[c] for c in _FROM_INPUTS} == {c: given[c] for c in _FROM_INPUTS}, row
        if given["IsInternetFacing"]:
            assert row["PubliclyExposed"] is True, row
        why = reasons(row)
        assert why["InKev"].get("version") == given["KevCopy"], row
        assert why["Epss"].get("version") == given["EpssCopy"], row

"""What changed on one device in the window before T, from the workspace's history.

Owns the ``changes`` of the forensic answer (docs/forensics.md): the device's state in each
dataset replayed from the newest full snapshot before the window (a full snapshot replaces the
state; in change-only history, ``Added``/``Changed`` rows update it and ``Removed`` rows drop an
item), each difference stamped with the snapshot that first showed it (the collector cannot
know the instant in between); and the vulnerability events (``New`` and ``Fixed``) at the time
Defender gives them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from endpoint_forensics.analytics.missing import STALE_SIGNATURE_HOURS
from endpoint_forensics.tables import AGENT_HEALTH_TESTS

__all__ = ["WINDOW_COLUMNS", "WindowQuery", "changes_from", "window_queries"]

_FULL = frozenset({"", "Snapshot", "Baseline"})
_UPDATED = "_SignatureUpdated"  # an item kept for _staleness, never reported


@dataclass(frozen=True)
class WindowQuery:
    """One KQL read with the values of its declared parameters; with ``sql``, a DuckDB SQL
    text with the values of its named parameters (``$at``)."""

    text: str
    values: dict[str, Any]
    sql: bool = False


# dataset -> (table, the columns its items come from, the items of one row: {item: value})
def _device_items(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row.get(k) for k in _DEVICE_COLUMNS}


def _agent_items(row: dict[str, Any]) -> dict[str, Any]:
    return {t: row.get(t) for t in AGENT_HEALTH_TESTS}


def _av_items(row: dict[str, Any]) -> dict[str, Any]:
    # The update time is not a change to report (it moves several times a day): it tells
    # when the signatures crossed the age the missing rules call old (_staleness).
    return {"AvMode": row.get("AvMode"), _UPDATED: row.get("AvSignatureUpdateTime")}


def _config_items(row: dict[str, Any]) -> dict[str, Any]:
    if not row.get("IsApplicable"):
        state = "NotApplicable"
    else:
        state = "Compliant" if row.get("IsCompliant") else "NonCompliant"
    return {str(row["ConfigurationId"]): state}


_DEVICE_COLUMNS = ("HealthStatus", "OnboardingStatus", "RbacGroupName")
_SNAPSHOTS: tuple[
    tuple[str, str, tuple[str, ...], Callable[[dict[str, Any]], dict[str, Any]]], ...
] = (
    ("devices", "EPF_Devices_CL", _DEVICE_COLUMNS, _device_items),
    ("agent_health", "EPF_AgentHealth_CL", AGENT_HEALTH_TESTS, _agent_items),
    ("antivirus", "EPF_AvHealth_CL", ("AvMode", "AvSignatureUpdateTime"), _av_items),
    (
        "secure_config",
        "EPF_SecureConfig_CL",
        ("ConfigurationId", "IsApplicable", "IsCompliant"),
        _config_items,
    ),
)
_EVENTS = "vulnerability_events"


#: The columns of each dataset's rows in the window that ``changes_from`` reads, by dataset:
#: ``epf forensics`` reads them with the device's state, in one scan of its rows.
WINDOW_COLUMNS: dict[str, tuple[str, ...]] = {
    dataset: ("SnapshotTime", "HistoryKind", *columns) for dataset, _, columns, _ in _SNAPSHOTS
}


def window_queries(device_id: str, since: datetime, at: datetime) -> dict[str, WindowQuery]:
    """The reads ``changes_from`` needs beyond each dataset's rows (``WINDOW_COLUMNS``) in
    ``(since - 31 days, at]``: the vulnerability events in ``(since, at]``, by name."""
    values = {"device": device_id, "since": since, "at": at}
    # The newest record of each event (a later snapshot may list it again).
    return {
        _EVENTS: WindowQuery(
            "SELECT EventTimestamp, Status, CveId, SoftwareName, SoftwareVersion"
            ' FROM "EPF_VulnerabilityChanges_CL" WHERE DeviceId = $device'
            " AND EventTimestamp > $since AND EventTimestamp <= $at"
            " AND Status IN ('New', 'Fixed') AND coalesce(CveId, '') <> ''"
            " QUALIFY row_number() OVER ("
            "PARTITION BY RecordId, Status, EventTimestamp ORDER BY SnapshotTime DESC) = 1",
            values,
            sql=True,
        )
    }


def changes_from(
    rows: Mapping[str, list[dict[str, Any]]], since: datetime, at: datetime
) -> list[dict[str, Any]]:
    """Every change in ``(since, at]``, oldest first, from each dataset's rows in the window
    (``WINDOW_COLUMNS``) and the rows of ``window_queries``."""
    found: list[dict[str, Any]] = []
    for dataset, _, _, items_of in _SNAPSHOTS:
        changes, timeline = _diff(dataset, rows[dataset], items_of, since)
        found.extend(changes)
        if dataset == "antivirus":
            found.extend(_staleness(timeline, since, at))
    found.extend(_vulnerability_events(rows[_EVENTS]))
    return sorted(found, key=lambda c: (c["time"], c["dataset"], c["item"]))


def _diff(
    dataset: str,
    rows: list[dict[str, Any]],
    items_of: Callable[[dict[str, Any]], dict[str, Any]],
    since: datetime,
) -> tuple[list[dict[str, Any]], list[tuple[datetime, dict[str, Any]]]]:
    """The reported changes, and the state from each snapshot on (oldest first)."""
    by_snapshot: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_snapshot.setdefault(row["SnapshotTime"], []).append(row)
    ordered = sorted(by_snapshot, key=_time)
    fulls = [t for t in ordered if _time(t) <= since and _is_full(by_snapshot[t])]
    start = ordered.index(fulls[-1]) if fulls else 0
    changes: list[dict[str, Any]] = []
    timeline: list[tuple[datetime, dict[str, Any]]] = []
    state: dict[str, Any] | None = None
    for snapshot in ordered[start:]:
        after = _replayed(state or {}, by_snapshot[snapshot], items_of)
        timeline.append((_time(snapshot), after))
        if state is not None and _time(snapshot) > since:
            for item in sorted((set(state) | set(after)) - {_UPDATED}):
                before, now = state.get(item), after.get(item)
                if before != now:
                    changes.append(
                        {"time": _iso(snapshot), "dataset": dataset, "item": item,
                         "from": before, "to": now}
                    )  # fmt: skip
        state = after
    return changes, timeline


def _staleness(
    timeline: list[tuple[datetime, dict[str, Any]]], since: datetime, at: datetime
) -> list[dict[str, Any]]:
    """When the signatures became older than 7 days: the last update plus 168 hours, if no
    update came before then (an update that makes them fresh again is a change too)."""
    changes = []
    for i, (start, state) in enumerate(timeline):
        end = timeline[i + 1][0] if i + 1 < len(timeline) else at
        updated = state.get(_UPDATED)
        if not updated:
            continue
        crossing = _time(updated) + timedelta(hours=STALE_SIGNATURE_HOURS)
        if max(start, since) < crossing <= min(end, at):
            changes.append(_stale_change(crossing, False, True))
        if i > 0 and start > since and start <= at:
            before = timeline[i - 1][1].get(_UPDATED)
            if before and _time(before) + timedelta(hours=STALE_SIGNATURE_HOURS) < start:
                if _time(updated) + timedelta(hours=STALE_SIGNATURE_HOURS) >= start:
                    changes.append(_stale_change(start, True, False))
    return changes


def _stale_change(when: datetime, before: bool, after: bool) -> dict[str, Any]:
    return {
        "time": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "dataset": "antivirus",
        "item": "SignaturesOlderThan7Days",
        "from": before,
        "to": after,
    }


def _is_full(rows: list[dict[str, Any]]) -> bool:
    return any((r.get("HistoryKind") or "") in _FULL for r in rows)


def _replayed(
    state: dict[str, Any],
    rows: list[dict[str, Any]],
    items_of: Callable[[dict[str, Any]], dict[str, Any]],
) -> dict[str, Any]:
    """The state after one snapshot's rows: a full snapshot replaces it, changes update it."""
    after = {} if _is_full(rows) else dict(state)
    for row in rows:
        items = items_of(row)
        if row.get("HistoryKind") == "Removed":
            for item in items:
                after.pop(item, None)
        else:
            after.update(items)
    return after


def _vulnerability_events(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "time": _iso(r["EventTimestamp"]),
            "dataset": "vulnerabilities",
            "item": f"{r['CveId']} {r['SoftwareName']} {r['SoftwareVersion']}",
            "from": None if r["Status"] == "New" else "Open",
            "to": "Open" if r["Status"] == "New" else "Fixed",
        }
        for r in rows
    ]


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _iso(value: str) -> str:
    return _time(value).strftime("%Y-%m-%dT%H:%M:%SZ")

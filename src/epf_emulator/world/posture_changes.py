"""The exact transitions of one device's posture in the 7 days before T (``/_emulator/posture``).

Owns the ``changes`` list of docs/forensics.md as the emulator knows it, from its own world:
each ``{"time", "dataset", "item", "from", "to"}`` is a transition in ``(T - 7 days, T]``,
timed to the instant the served data changes (whole seconds in the JSON), oldest first:

- ``devices``, ``HealthStatus``: a device that stopped reporting turns ``Inactive`` 7 days
  after its last report;
- ``agent_health``, one test: its Pass/Fail/NotApplicable/Unknown from the latest assessment
  within 30 days changes (an assessment row with another state, or the last one ageing out);
- ``antivirus``, ``SignaturesOlderThan7Days``: ``false``/``true`` as the signatures pass 7 days
  old or update again, found on the served signature update time (sampled every 10 minutes,
  each change narrowed to the microsecond); the AV mode never changes in this world;
- ``secure_config``, a ``ConfigurationId``: ``Compliant``/``NonCompliant``/``NotApplicable``
  (``null`` before its first assessment);
- ``vulnerabilities``, ``"<CveId> <SoftwareName> <SoftwareVersion>"``: ``null`` -> ``Open``
  when found, ``Open`` -> ``Fixed`` when patched, upgraded or uninstalled.

Also the agent-health tests and their SCIDs (``test_results``), which ``world.posture_at``
shares.

Blocking (DuckDB): call from worker threads.
Imports only ``world.av_health``, ``world.posture``, ``world.scid_catalog`` and
``world.tvm_datasets`` of the emulator: it shares no code with the collector.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from epf_emulator.world.av_health import signature_update_sql
from epf_emulator.world.posture import HOUR_US
from epf_emulator.world.scid_catalog import HEALTH_SCIDS
from epf_emulator.world.tvm_datasets import seen_sql

__all__ = ["AGENT_HEALTH_TESTS", "WINDOW_US", "device_changes", "iso_seconds", "test_results"]

WINDOW_US = 7 * 24 * HOUR_US
_LOOK_BACK_US = 30 * 24 * HOUR_US  # advanced hunting's window
_SAMPLE_US = 600_000_000  # AV signatures: every 10 minutes (no stall or stale spell is shorter)
_STALE_US = 7 * 24 * HOUR_US
_SECOND_US = 1_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

#: The agent-health tests, in docs/forensics.md's order.
AGENT_HEALTH_TESTS = (
    "SensorEnabled",
    "SensorDataCollection",
    "ImpairedCommunications",
    "TamperProtection",
    "AntivirusEnabled",
    "AntivirusSignatureVersion",
    "RealtimeProtection",
    "BehaviorMonitoring",
    "PUAProtection",
    "AntivirusReporting",
    "CloudProtection",
)
# Each family's tests in the order of its SCIDs (``scid_catalog.HEALTH_SCIDS``).
_TESTS_BY_FAMILY = {
    "Windows": AGENT_HEALTH_TESTS,
    "macOS": tuple(AGENT_HEALTH_TESTS[i] for i in (1, 2, 3, 5, 6, 7, 8, 10)),
    "Linux": tuple(AGENT_HEALTH_TESTS[i] for i in (1, 2, 5, 6, 8, 10)),
}
_SCID_OF_TEST = {
    family: dict(zip(tests, HEALTH_SCIDS[family], strict=True))
    for family, tests in _TESTS_BY_FAMILY.items()
}


def iso_seconds(us: int) -> str:
    """``2026-11-03T14:00:00Z``: whole seconds (floored), UTC."""
    return (_EPOCH + timedelta(microseconds=us - us % _SECOND_US)).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_results(family: str, latest: dict[str, tuple[Any, Any]]) -> dict[str, str]:
    """Test -> Pass/Fail/NotApplicable/Unknown from (applicable, compliant) per SCID."""
    results = {}
    for test in AGENT_HEALTH_TESTS:
        scid = _SCID_OF_TEST[family].get(test)
        if scid is None:
            results[test] = "NotApplicable"
        elif scid not in latest:
            results[test] = "Unknown"
        else:
            applicable, compliant = latest[scid]
            if applicable is False:
                results[test] = "NotApplicable"
            elif applicable is None or compliant is None:
                results[test] = "Unknown"
            else:
                results[test] = "Pass" if compliant else "Fail"
    return results


def device_changes(
    cursor: Any, *, seed: int, anchor_us: int, idx: int, family: str, at_us: int
) -> list[dict[str, Any]]:
    """Every transition of device ``idx`` in ``(at_us - 7 days, at_us]``, oldest first."""
    low = at_us - WINDOW_US
    row = cursor.execute("SELECT id, stale, last_us FROM tvm.dev WHERE idx = ?", [idx]).fetchone()
    device_id, stale, last_us = str(row[0]), bool(row[1]), int(row[2])
    changes: list[tuple[int, str, str, Any, Any]] = []
    if stale and low < last_us + _STALE_US + 1 <= at_us:
        changes.append((last_us + _STALE_US + 1, "devices", "HealthStatus", "Active", "Inactive"))
    changes += _health_changes(cursor, device_id, family, low, at_us)
    changes += _config_changes(cursor, device_id, low, at_us)
    changes += _signature_changes(cursor, seed, anchor_us, idx, low, at_us)
    changes += _vulnerability_changes(cursor, idx, low, at_us)
    changes.sort(key=lambda c: (c[0], c[1], c[2], str(c[3]), str(c[4])))
    return [
        {"time": iso_seconds(t), "dataset": dataset, "item": item, "from": old, "to": new}
        for t, dataset, item, old, new in changes
    ]


def _health_changes(
    cursor: Any, device_id: str, family: str, low: int, high: int
) -> list[tuple[int, str, str, Any, Any]]:
    """Agent-health tests, re-evaluated wherever a row enters or leaves the 30-day window."""
    scids = HEALTH_SCIDS[family]
    rows = cursor.execute(
        'SELECT "ConfigurationId", epoch_us("Timestamp"), "IsApplicable", "IsCompliant"'
        ' FROM raw.main."DeviceTvmSecureConfigurationAssessment"'
        f' WHERE "DeviceId" = ? AND "ConfigurationId" IN ({", ".join("?" * len(scids))})'
        ' AND "Timestamp" > make_timestamp(?) AND "Timestamp" <= make_timestamp(?)'
        " ORDER BY 2, 1",
        [device_id, *scids, low - _LOOK_BACK_US, high],
    ).fetchall()

    def state(t: int) -> dict[str, str] | None:
        latest = {
            str(r[0]): (r[2], r[3]) for r in rows if t - _LOOK_BACK_US < int(r[1]) <= t
        }  # rows are in time order: the latest per SCID wins
        return test_results(family, latest) if latest else None

    moments = sorted(
        {int(r[1]) for r in rows if low < int(r[1]) <= high}
        | {int(r[1]) + _LOOK_BACK_US for r in rows if low < int(r[1]) + _LOOK_BACK_US <= high}
    )
    changes: list[tuple[int, str, str, Any, Any]] = []
    before = state(low)
    for t in moments:
        after = state(t)
        for test in AGENT_HEALTH_TESTS:
            old = before.get(test) if before else None
            new = after.get(test) if after else None
            if old != new:
                changes.append((t, "agent_health", test, old, new))
        before = after
    return changes


def _config_changes(
    cursor: Any, device_id: str, low: int, high: int
) -> list[tuple[int, str, str, Any, Any]]:
    """Each configuration's state as the export serves it: its latest assessment."""
    rows = cursor.execute(
        'SELECT "ConfigurationId", epoch_us("Timestamp"), "IsApplicable", "IsCompliant"'
        ' FROM raw.main."DeviceTvmSecureConfigurationAssessment"'
        ' WHERE "DeviceId" = ? AND "Timestamp" <= make_timestamp(?) ORDER BY 1, 2',
        [device_id, high],
    ).fetchall()
    changes: list[tuple[int, str, str, Any, Any]] = []
    previous: dict[str, str] = {}
    for scid, t, applicable, compliant in rows:
        value = "NotApplicable" if not applicable else "Compliant" if compliant else "NonCompliant"
        old = previous.get(scid)
        if int(t) > low and old != value:
            changes.append((int(t), "secure_config", str(scid), old, value))
        previous[scid] = value
    return changes


def _signature_changes(
    cursor: Any, seed: int, anchor_us: int, idx: int, low: int, high: int
) -> list[tuple[int, str, str, Any, Any]]:
    """``SignaturesOlderThan7Days`` flips, found by sampling and narrowed by bisection."""

    def over(times: list[int]) -> list[bool | None]:
        values = ", ".join(f"({t})" for t in times)
        sig = signature_update_sql(seed, seen_sql(seed, "g.t"), anchor_us)
        result = dict(
            cursor.execute(
                f"SELECT g.t, CASE WHEN dv.sensor AND dv.first_us <= g.t"
                f" THEN g.t - ({sig}) // {_SECOND_US} * {_SECOND_US} > {_STALE_US} END"
                f" FROM (VALUES {values}) AS g(t), tvm.dev dv WHERE dv.idx = {idx}"
            ).fetchall()
        )
        return [result[t] for t in times]

    times = list(range(low, high, _SAMPLE_US)) + [high]
    states = over(times)
    changes: list[tuple[int, str, str, Any, Any]] = []
    for (a, before), (b, after) in zip(
        zip(times, states, strict=True), zip(times[1:], states[1:], strict=True), strict=False
    ):
        if before == after:
            continue
        while b - a > 1:  # the first microsecond with the new state
            middle = (a + b) // 2
            a, b = (middle, b) if over([middle])[0] == before else (a, middle)
        changes.append((b, "antivirus", "SignaturesOlderThan7Days", before, after))
    return changes


def _vulnerability_changes(
    cursor: Any, idx: int, low: int, high: int
) -> list[tuple[int, str, str, Any, Any]]:
    rows = cursor.execute(
        "SELECT c.id || ' ' || p.name || ' ' || CASE WHEN v.p = dv.os_prod THEN dv.os_version"
        " ELSE p.versions[v.ver + 1] END, v.t_from, v.t_to"
        " FROM tvm.vrow v JOIN tvm.cve c ON c.idx = v.cve JOIN tvm.prod p ON p.idx = v.p"
        " JOIN tvm.dev dv ON dv.idx = v.d"
        " WHERE v.d = ? AND ((v.t_from > ? AND v.t_from <= ?) OR (v.t_to > ? AND v.t_to <= ?))",
        [idx, low, high, low, high],
    ).fetchall()
    changes: list[tuple[int, str, str, Any, Any]] = []
    for item, t_from, t_to in rows:
        if low < t_from <= high:
            changes.append((int(t_from), "vulnerabilities", str(item), None, "Open"))
        if t_to is not None and low < t_to <= high:
            changes.append((int(t_to), "vulnerabilities", str(item), "Open", "Fixed"))
    return changes

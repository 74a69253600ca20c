"""The emulator keeps history: a fixed calendar, changes over time, /_emulator/posture, the incident.

What a tenant serves at an emulated time depends on the time and the seed, not on where the
clock started; the world changes over its 134 days (patches, new CVEs, drifting settings,
stalling AV signatures, tamper-protection episodes, devices joining and leaving); the
emulator answers docs/forensics.md's question for any device and time itself; and one device
per seed is the incident story's.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from epf_emulator import Emulator, EmulatorSettings
from epf_emulator.common.clock import CLOCK_EARLIEST, INCIDENT_AT, WORLD_ANCHOR, epoch_us
from epf_emulator.world.av_health import signature_update_sql
from epf_emulator.world.database import Store
from epf_emulator.world.fleet import build_fleet
from epf_emulator.world.posture import build_posture
from epf_emulator.world.tvm_datasets import seen_sql

from .conftest import UNTHROTTLED, client_for, get_all, get_token

SEED = 4
DEVICES = 200
DAY_US = 86_400_000_000
ANCHOR_US = epoch_us(WORLD_ANCHOR)
ISO = "%Y-%m-%dT%H:%M:%SZ"


def _settings(start: datetime, devices: int = DEVICES) -> EmulatorSettings:
    return EmulatorSettings(
        iot_sensors=0, devices=devices, seed=SEED, rate_limits=UNTHROTTLED, start=start
    )


@pytest.fixture(scope="module")
def at_anchor() -> Iterator[Emulator]:
    with Emulator(_settings(WORLD_ANCHOR)) as emu:
        yield emu


@pytest.fixture(scope="module")
def early() -> Iterator[Emulator]:
    """Started 90 days before the anchor: the 90-day benchmark's first day."""
    with Emulator(_settings(CLOCK_EARLIEST)) as emu:
        yield emu


@pytest.fixture(scope="module")
def http(at_anchor: Emulator) -> Iterator[httpx.Client]:
    with client_for(at_anchor) as c:
        yield c


@pytest.fixture(scope="module")
def early_http(early: Emulator) -> Iterator[httpx.Client]:
    with client_for(early) as c:
        yield c


def _posture(client: httpx.Client, emu: Emulator, device: str, at: datetime) -> httpx.Response:
    params = {"device": device, "at": at.strftime(ISO)}
    return client.get(f"{emu.base_url}/_emulator/posture", params=params)


def _stats(client: httpx.Client, emu: Emulator) -> dict[str, Any]:
    response = client.get(f"{emu.base_url}/_emulator/stats")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def _served(client: httpx.Client, emu: Emulator) -> dict[str, list[dict[str, Any]]]:
    """Machines, AV records and the secure-configuration export as served now."""
    token = get_token(client, emu)
    machines, _ = get_all(client, f"{emu.base_url}/api/machines", token, **{"$top": 10000})
    av, _ = get_all(client, f"{emu.base_url}/api/deviceavinfo", token, **{"$top": 10000})
    url = f"{emu.base_url}/api/machines/SecureConfigurationsAssessmentByMachine"
    configs, _ = get_all(client, url, token, pageSize=100000)
    return {"machines": machines, "av": av, "secure_config": configs}


# --- the fixed calendar ------------------------------------------------------------------
def test_start_is_validated_and_names_the_setting() -> None:
    for bad in (CLOCK_EARLIEST - timedelta(hours=1), WORLD_ANCHOR + timedelta(days=15)):
        with pytest.raises(ValueError, match="start"):
            EmulatorSettings(start=bad)
    with pytest.raises(ValueError, match="start"):
        EmulatorSettings(start=datetime(2026, 11, 1))  # naive: no zone
    assert EmulatorSettings().start == WORLD_ANCHOR == datetime(2026, 11, 5, tzinfo=UTC)


def test_the_clock_starts_at_start(early: Emulator, early_http: httpx.Client) -> None:
    assert early.now == CLOCK_EARLIEST
    stats = _stats(early_http, early)
    assert stats["clock"]["now"].startswith(CLOCK_EARLIEST.strftime("%Y-%m-%dT%H:%M:%S"))
    assert stats["fleet"]["anchor"] == WORLD_ANCHOR.strftime(ISO)
    # The hunting table still holds 30 days of health at the first day of the benchmark.
    assert stats["truth"]["EPF_AgentHealth_CL"] == stats["truth"]["EPF_AvHealth_CL"] > 0


def test_machines_before_the_anchor_are_as_of_then(
    early: Emulator, early_http: httpx.Client
) -> None:
    now = early.now
    machines = _served(early_http, early)["machines"]
    at_anchor = build_fleet(DEVICES, SEED, WORLD_ANCHOR).devices
    assert 0 < len(machines) < len(at_anchor)  # some devices join later
    listed = {m["id"] for m in machines}
    for device in at_anchor:
        first = WORLD_ANCHOR - timedelta(seconds=device.first_seen_ago)
        if first > now:
            assert device.id not in listed
    for machine in machines:
        seen = datetime.fromisoformat(machine["lastSeen"][:26] + "+00:00")
        assert seen <= now
        assert machine["firstSeen"] <= machine["lastSeen"]
        inactive = now - seen > timedelta(days=7)
        assert (machine["healthStatus"] == "Inactive") == inactive


def test_two_starts_serve_the_same_at_the_same_clock_time(
    at_anchor: Emulator, http: httpx.Client
) -> None:
    with Emulator(_settings(WORLD_ANCHOR - timedelta(days=2))) as later:
        with client_for(later) as client:
            later.advance(48)
            assert later.now == at_anchor.now
            assert _served(client, later) == _served(http, at_anchor)


def test_posture_answers_do_not_depend_on_the_start(
    at_anchor: Emulator, early: Emulator, http: httpx.Client, early_http: httpx.Client
) -> None:
    machines = _served(http, at_anchor)["machines"][:10]
    times = (WORLD_ANCHOR - timedelta(days=40, hours=5), INCIDENT_AT, WORLD_ANCHOR)
    for machine in machines:
        for at in times:
            one = _posture(http, at_anchor, machine["id"], at)
            other = _posture(early_http, early, machine["id"], at)
            assert one.status_code == other.status_code
            assert one.json() == other.json()


# --- the posture endpoint ----------------------------------------------------------------
def test_posture_shape_and_its_snapshot_values(at_anchor: Emulator, http: httpx.Client) -> None:
    served = _served(http, at_anchor)
    machine = next(m for m in served["machines"] if m["onboardingStatus"] == "Onboarded")
    body = _posture(http, at_anchor, machine["id"], at_anchor.now).json()
    assert body["at"] == WORLD_ANCHOR.strftime(ISO)
    assert set(body["snapshots"]) == {
        "devices",
        "agent_health",
        "antivirus",
        "secure_config",
        "vulnerabilities",
    }
    assert all(s == {"time": body["at"], "age_hours": 0.0} for s in body["snapshots"].values())
    assert body["device"]["DeviceId"] == machine["id"]
    assert body["device"]["HealthStatus"] == machine["healthStatus"]
    av = next(r for r in served["av"] if r["machineId"] == machine["id"])
    assert body["antivirus"]["AvSignatureVersion"] == av["avSignatureVersion"]
    assert body["antivirus"]["AvSignatureUpdateTime"] == av["avSignatureUpdateTime"]
    failing = {
        r["configurationId"]
        for r in served["secure_config"]
        if r["deviceId"] == machine["id"] and r["isApplicable"] and not r["isCompliant"]
    }
    assert {c["ConfigurationId"] for c in body["secure_config_failing"]} == failing
    impacts = [c["ConfigurationImpact"] for c in body["secure_config_failing"]]
    assert impacts == sorted(impacts, reverse=True)
    for v in body["vulnerabilities_open"]:
        assert v["InKev"] is None and v["EpssScore"] is None and v["Decision"] is None
    low = (WORLD_ANCHOR - timedelta(days=7)).strftime(ISO)
    assert all(low <= c["time"] <= body["at"] for c in body["changes"])
    assert [c["time"] for c in body["changes"]] == sorted(c["time"] for c in body["changes"])


def test_posture_errors(at_anchor: Emulator, http: httpx.Client) -> None:
    base = f"{at_anchor.base_url}/_emulator/posture"
    device = _served(http, at_anchor)["machines"][0]["id"]
    for params in (
        {},
        {"device": device},
        {"at": "2026-11-01T00:00:00Z"},
        {"device": device, "at": "yesterday"},
        {"device": device, "at": "2026-01-01T00:00:00Z"},  # before the timeline
        {"device": device, "at": "2027-01-01T00:00:00Z"},  # after it
    ):
        response = http.get(base, params=params)
        assert response.status_code == 400, params
        assert response.json()["error"]["message"]
    assert _posture(http, at_anchor, "0" * 40, WORLD_ANCHOR).status_code == 404
    # A device first seen after the clock's earliest time is not onboarded then.
    late = next(
        d
        for d in build_fleet(DEVICES, SEED, WORLD_ANCHOR).devices
        if WORLD_ANCHOR - timedelta(seconds=d.first_seen_ago) > CLOCK_EARLIEST + timedelta(days=1)
    )
    assert _posture(http, at_anchor, late.id, CLOCK_EARLIEST).status_code == 404


# --- the incident ------------------------------------------------------------------------
def test_the_incident_device_is_unprotected_around_the_incident(
    at_anchor: Emulator, http: httpx.Client
) -> None:
    incident = _stats(http, at_anchor)["incident"]
    assert set(incident) == {"DeviceId", "DeviceName", "at", "CveId"}
    assert incident["at"] == "2026-11-03T14:00:00Z"
    hours = timedelta(hours=36)
    answers = [
        _posture(http, at_anchor, incident["DeviceId"], INCIDENT_AT + k * hours).json()
        for k in (-1, 0, 1)
    ]
    for body in answers:
        assert body["device"]["OSPlatform"].startswith("Windows")
        assert body["device"]["DeviceName"].startswith("ws-")  # a client
        assert body["device"]["HealthStatus"] == "Active"
        assert body["agent_health"]["TamperProtection"] == "Fail"
        assert body["agent_health"]["AntivirusSignatureVersion"] == "Fail"
        assert body["antivirus"]["SignatureAgeHours"] > 7 * 24
        assert "Tamper protection was off." in body["missing"]
        assert any(m.startswith("Antivirus signatures were") for m in body["missing"])
        cves = [v for v in body["vulnerabilities_open"] if v["CveId"] == incident["CveId"]]
        assert cves and all(v["VulnerabilitySeverityLevel"] == "Critical" for v in cves)
        assert all(v["ExploitabilityLevel"] == "ExploitIsVerified" for v in cves)
    signature = {a["antivirus"]["AvSignatureUpdateTime"] for a in answers}
    assert len(signature) == 1  # no update within 36 hours either side
    window = ((INCIDENT_AT - hours).strftime(ISO), (INCIDENT_AT + hours).strftime(ISO))
    for change in answers[2]["changes"]:
        if window[0] <= change["time"] <= window[1]:
            assert change["item"] not in (
                "TamperProtection",
                "scid-2003",
                "AntivirusSignatureVersion",
                "scid-2011",
                "SignaturesOlderThan7Days",
            )
            assert not change["item"].startswith(incident["CveId"])


# --- the world changes over time ---------------------------------------------------------
@pytest.fixture(scope="module")
def world() -> Iterator[Store]:
    """The 2,000-device world of seed 1, without a server."""
    fleet = build_fleet(2000, 1, WORLD_ANCHOR)
    store = Store(fleet.devices, WORLD_ANCHOR, seed=1)
    cursor = store.cursor()
    try:
        build_posture(cursor, seed=1, anchor=WORLD_ANCHOR, per_device=30.0)
    finally:
        cursor.close()
    yield store
    store.close()


def _count(store: Store, sql: str) -> int:
    cursor = store.cursor()
    try:
        row = cursor.execute(sql).fetchone()
    finally:
        cursor.close()
    return int(row[0]) if row else 0


@pytest.mark.parametrize("days_before", [14, 104])  # the last two weeks, and early on
def test_each_change_process_happens_in_14_days(world: Store, days_before: int) -> None:
    lo, hi = ANCHOR_US - days_before * DAY_US, ANCHOR_US - (days_before - 14) * DAY_US
    within = f"BETWEEN {lo} AND {hi}"
    patched = (
        "SELECT count(*) FROM tvm.vrow v JOIN tvm.dev d ON d.idx = v.d AND d.os_prod = v.p"
        f" WHERE v.cve IS NOT NULL AND v.t_to {within}"
    )
    upgraded = (
        "SELECT count(*) FROM tvm.vrow v JOIN tvm.sw s USING (d, p, seg)"
        f" WHERE v.cve IS NOT NULL AND v.t_to {within} AND s.to_us = v.t_to"
    )
    new_cves = (
        "SELECT count(DISTINCT c.idx) FROM tvm.cve c JOIN tvm.vrow v ON v.cve = c.idx"
        f" WHERE c.pub_us {within} AND v.t_from >= c.pub_us"
    )
    flips = f"""
        SELECT count(*) FROM (
            SELECT "ConfigurationId" AS scid, epoch_us("Timestamp") AS t, "IsCompliant" <>
                   lag("IsCompliant") OVER (PARTITION BY "DeviceId", "ConfigurationId"
                                            ORDER BY "Timestamp") AS flipped
            FROM raw.main."DeviceTvmSecureConfigurationAssessment")
        WHERE flipped AND t {within}
    """
    tamper_off = flips.replace(
        "WHERE flipped", "WHERE flipped AND scid IN ('scid-2003', 'scid-5092')"
    )
    joined = f"SELECT count(*) FROM tvm.dev WHERE first_us {within}"
    assert _count(world, patched) > 0  # monthly OS patching
    assert _count(world, upgraded) > 0  # software updates end rows
    assert _count(world, new_cves) > 0
    assert _count(world, flips) > 0
    assert _count(world, tamper_off) > 0
    assert _count(world, joined) > 0
    if days_before == 14:
        stopped = f"SELECT count(*) FROM tvm.dev WHERE stale AND last_us + {7 * DAY_US} {within}"
        assert _count(world, stopped) > 0  # devices stop reporting and turn Inactive


def test_signatures_stall_and_resume(world: Store) -> None:
    """Daily, over 14 days: devices whose signatures pass 7 days old and later update again."""
    sig = signature_update_sql(1, seen_sql(1, "g.t"), ANCHOR_US)
    sql = f"""
        WITH ages AS (
            SELECT dv.idx, g.t, g.t - ({sig}) > {7 * DAY_US} AS stale
            FROM tvm.dev dv, range({ANCHOR_US - 14 * DAY_US}, {ANCHOR_US}, {DAY_US // 4}) g(t)
            WHERE dv.sensor AND NOT dv.stale
        ), flips AS (
            SELECT idx, stale, lag(stale) OVER (PARTITION BY idx ORDER BY t) AS before FROM ages
        )
        SELECT count(DISTINCT idx) FILTER (WHERE stale AND NOT before),
               count(DISTINCT idx) FILTER (WHERE before AND NOT stale)
        FROM flips
    """
    cursor = world.cursor()
    try:
        row = cursor.execute(sql).fetchone()
    finally:
        cursor.close()
    assert row is not None
    went_stale, resumed = row
    assert went_stale > 0 and resumed > 0


def test_a_rolled_back_update_reopens_what_it_fixed(world: Store) -> None:
    from epf_emulator.world.rollbacks import ROLLBACK_DEVICES_PER

    cursor = world.cursor()
    try:
        segments = cursor.execute(
            "SELECT d, p, list(ver ORDER BY seg), list(from_us ORDER BY seg),"
            " list(to_us ORDER BY seg) FROM tvm.sw GROUP BY d, p HAVING max(seg) = 2"
        ).fetchall()
        # (device, product, CVE) open before the update, closed by it, open again after.
        reopened = cursor.execute(
            """
            SELECT count(DISTINCT (v0.d, v0.p, v0.cve)) FROM tvm.vrow v0
            JOIN tvm.vrow v2 ON v2.d = v0.d AND v2.p = v0.p AND v2.cve = v0.cve AND v2.seg = 2
            WHERE v0.seg = 0 AND v0.cve IS NOT NULL
              AND NOT EXISTS (SELECT 1 FROM tvm.vrow v1 WHERE v1.d = v0.d AND v1.p = v0.p
                              AND v1.cve = v0.cve AND v1.seg = 1)
            """
        ).fetchone()
    finally:
        cursor.close()
    assert len(segments) == 2000 // ROLLBACK_DEVICES_PER
    assert len({d for d, *_ in segments}) == len(segments)  # one install per device
    for _, _, versions, starts, ends in segments:
        assert versions[0] == versions[2] < versions[1]  # back to the old version
        assert ends[0] == starts[1] and ends[1] == starts[2] and ends[2] is None
        assert ANCHOR_US - 5 * DAY_US <= starts[1] < ANCHOR_US - 4 * DAY_US
        assert DAY_US * 3 // 2 <= starts[2] - starts[1] < DAY_US * 5 // 2
    assert reopened is not None and reopened[0] >= len(segments)


def test_a_window_shows_exactly_the_rows_of_its_time(world: Store) -> None:
    """Each request's hunting tables are built for its window (only the snapshots and
    assessments it can see are made): they hold exactly the full tables' rows in the window,
    both ends included, at the edges of the timeline and at a snapshot's very instant."""
    cursor = world.cursor()
    try:
        row = cursor.execute('SELECT min(_last) FROM raw.main."_devices"').fetchone()
    finally:
        cursor.close()
    assert row is not None
    snapshot_instant: datetime = row[0]
    windows = [
        (WORLD_ANCHOR - timedelta(days=30), WORLD_ANCHOR),
        (CLOCK_EARLIEST - timedelta(days=200), CLOCK_EARLIEST + timedelta(days=3)),
        (WORLD_ANCHOR + timedelta(days=1), WORLD_ANCHOR + timedelta(days=400)),
        (snapshot_instant, snapshot_instant),
        (snapshot_instant - timedelta(days=2), snapshot_instant - timedelta(microseconds=1)),
    ]
    shown = 0
    for start, end in windows:
        low, high = (t.isoformat() for t in (start, end))
        for table in ("DeviceInfo", "DeviceTvmSecureConfigurationAssessment"):
            fingerprint = "SELECT count(*), sum(hash(COLUMNS(*))) FROM {}"
            with world.window(start, end) as cursor:
                windowed = cursor.execute(fingerprint.format(f'"{table}"')).fetchall()
                everything = cursor.execute(
                    fingerprint.format(
                        f'(SELECT * FROM raw.main."{table}" WHERE "Timestamp"'
                        f" BETWEEN TIMESTAMPTZ '{low}' AND TIMESTAMPTZ '{high}')"
                    )
                ).fetchall()
            assert windowed == everything, (table, start, end)
            shown += windowed[0][0]
    assert shown > 0

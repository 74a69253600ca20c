"""The synthetic fleet's composition and the assessment history's rules (no server needed)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from epf_emulator.world.database import Store
from epf_emulator.world.fleet import Fleet, build_fleet

from .conftest import HEALTH_SCIDS

ANCHOR = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
N = 3000


@pytest.fixture(scope="module")
def fleet() -> Fleet:
    return build_fleet(N, 5, ANCHOR)


def _assessment_columns(store: Store) -> dict[str, list[Any]]:
    cursor = store.cursor()
    try:
        rows = cursor.execute(
            'SELECT "DeviceId", "ConfigurationId", "IsApplicable", "IsCompliant",'
            ' epoch_us("Timestamp") FROM raw.main."DeviceTvmSecureConfigurationAssessment"'
            ' ORDER BY "DeviceId", "ConfigurationId", "Timestamp"'
        ).fetchall()
    finally:
        cursor.close()
    names = ("DeviceId", "ConfigurationId", "IsApplicable", "IsCompliant", "Timestamp")
    return {name: [row[i] for row in rows] for i, name in enumerate(names)}


@pytest.fixture(scope="module")
def store(fleet: Fleet) -> Iterator[Store]:
    built = Store(fleet.devices, ANCHOR, seed=5)
    yield built
    built.close()


@pytest.fixture(scope="module")
def assessments(store: Store) -> dict[str, list[Any]]:
    return _assessment_columns(store)


def _share(count: int) -> float:
    return count / N


def test_exact_count_and_platform_mix(fleet: Fleet) -> None:
    assert len(fleet.devices) == N
    assert len({d.id for d in fleet.devices}) == N
    platforms = Counter(d.platform for d in fleet.devices)
    clients = platforms["Windows10"] + platforms["Windows11"]
    servers = sum(v for k, v in platforms.items() if k.startswith("WindowsServer"))
    assert _share(clients) == pytest.approx(0.55, abs=0.04)
    assert _share(servers) == pytest.approx(0.15, abs=0.03)
    assert _share(platforms["macOS"]) == pytest.approx(0.15, abs=0.03)
    assert _share(platforms["Linux"]) == pytest.approx(0.15, abs=0.03)


def test_health_and_onboarding_mix(fleet: Fleet) -> None:
    health = Counter(d.record["healthStatus"] for d in fleet.devices)
    onboarding = Counter(d.record["onboardingStatus"] for d in fleet.devices)
    assert _share(health["Active"]) == pytest.approx(0.85, abs=0.03)
    assert _share(health["Inactive"]) == pytest.approx(
        0.08 + 0.02, abs=0.03
    )  # stale, duplicates included
    assert {"ImpairedCommunication", "NoSensorData", "Unknown"} <= set(health)
    assert _share(onboarding["onboarded"]) == pytest.approx(0.02 * 0.95, abs=0.01)  # casing drift
    assert _share(onboarding["CanBeOnboarded"]) == pytest.approx(0.03, abs=0.01)
    assert 0 < onboarding["Unsupported"] and 0 < onboarding["InsufficientInfo"]
    for d in fleet.devices:
        seen = (
            ANCHOR - datetime.fromisoformat(d.record["lastSeen"][:26] + "+00:00")
        ).total_seconds() / 86400
        if d.record["healthStatus"] == "Inactive":
            assert 8 <= seen <= 29
        elif d.record["onboardingStatus"] == "Onboarded":
            assert seen < 1


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_times_are_consistent_for_every_seed(seed: int) -> None:
    for d in build_fleet(2000, seed, ANCHOR).devices:
        assert d.first_seen_ago > d.last_seen_ago > 0
        assert d.last_seen_ago < 29 * 86400  # every device has history inside the 30 days
        assert d.record["firstSeen"] < d.record["lastSeen"]


def test_duplicates_are_older_records_of_another_device(fleet: Fleet) -> None:
    by_id = {d.id: d for d in fleet.devices}
    duplicates = [d for d in fleet.devices if d.record["isPotentialDuplication"]]
    assert len(duplicates) == N * 2 // 100
    merged = 0
    for dup in duplicates:
        original = by_id[dup.duplicate_of or ""]
        assert dup.record["computerDnsName"] == original.record["computerDnsName"]
        assert dup.record["lastSeen"] < original.record["lastSeen"]
        if dup.record["mergedIntoMachineId"] is not None:
            assert dup.record["mergedIntoMachineId"] == original.id
            merged += 1
    assert 0 < merged < len(duplicates)


def test_wire_quirks_are_present(fleet: Fleet) -> None:
    records = [d.record for d in fleet.devices]
    missing = [r for r in records if not {"vmMetadata", "agentVersion", "osVersion"} <= set(r)]
    assert _share(len(missing)) == pytest.approx(0.03, abs=0.015)
    assert any("osVersion" not in r for r in records)
    assert any(r.get("deviceCategory") == "Endpoint" for r in records)
    assert any(r.get("vmMetadata") for r in records)
    assert any(r["osVersion"] is None for r in records if "osVersion" in r)
    assert {r["rbacGroupId"] for r in records} >= {0, 140, 210, 305, 410}


def test_assessments_follow_the_rules(fleet: Fleet, assessments: dict[str, list[Any]]) -> None:
    c = assessments
    by_id = {d.id: d for d in fleet.devices}
    per_device: dict[str, set[str]] = {}
    for device_id, scid in zip(c["DeviceId"], c["ConfigurationId"], strict=True):
        per_device.setdefault(device_id, set()).add(scid)
    sensored = {d.id for d in fleet.devices if d.record["onboardingStatus"].lower() == "onboarded"}
    assert set(per_device) == sensored
    lacking = 0
    for device_id, scids in per_device.items():
        device = by_id[device_id]
        expected = HEALTH_SCIDS[device.family]
        assert 13 <= len(scids - expected) <= 22  # other configurations, to be ignored
        assert 22 <= len(scids) <= 28  # 20-30 configurations per device
        missing = expected - scids
        assert len(missing) <= 2
        lacking += bool(missing)
    assert 0.01 < lacking / len(per_device) < 0.06
    anchor_us = int(ANCHOR.timestamp() * 1_000_000)
    future = 0
    for device_id, stamp in zip(c["DeviceId"], c["Timestamp"], strict=True):
        device = by_id[device_id]
        age_days = (anchor_us - stamp) / 86_400_000_000
        # the timeline: from 120 days back (plus 12 hours) to 14 days on; a stale device's
        # history stops at its lastSeen
        assert -14 <= age_days <= 120.5 + 1e-6
        if device.stale:
            assert age_days >= device.last_seen_ago / 86400 - 1e-6  # stopped at lastSeen
        future += age_days < 0
    assert 0 < future < len(c["Timestamp"]) * 0.1  # a few flips await an advance


def test_passive_av_makes_realtime_protection_not_applicable(
    fleet: Fleet, assessments: dict[str, list[Any]]
) -> None:
    c = assessments
    passive = {d.id for d in fleet.devices if d.av_mode == 1}
    rows = [
        (device_id, applicable)
        for device_id, scid, applicable in zip(
            c["DeviceId"], c["ConfigurationId"], c["IsApplicable"], strict=True
        )
        if scid == "scid-2012"
    ]
    active = {d.id for d in fleet.devices if d.av_mode == 0}
    assert passive and active
    assert all(not applicable for device_id, applicable in rows if device_id in passive)
    assert all(applicable for device_id, applicable in rows if device_id in active)


def test_same_inputs_same_fleet_and_history(
    fleet: Fleet, assessments: dict[str, list[Any]]
) -> None:
    again = build_fleet(N, 5, ANCHOR)
    assert [d.record for d in again.devices] == [d.record for d in fleet.devices]
    later = build_fleet(N, 5, ANCHOR + timedelta(days=3))
    assert [d.id for d in later.devices] == [d.id for d in fleet.devices]
    assert [d.health for d in later.devices] == [d.health for d in fleet.devices]
    other = Store(again.devices, ANCHOR, seed=5)
    try:
        assert _assessment_columns(other) == assessments
    finally:
        other.close()

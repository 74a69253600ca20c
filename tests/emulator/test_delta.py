"""The vulnerability delta (14 days, 6-hour buckets, RBAC-move pairs), advance() and determinism."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from epf_emulator import Emulator, EmulatorSettings

from .conftest import UNTHROTTLED, bearer, client_for, get_all, get_token

CHANGES = "SoftwareVulnerabilityChangesByMachine"
BUCKET = timedelta(hours=6)


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _delta(
    client: httpx.Client, emu: Emulator, token: str, since: datetime
) -> list[dict[str, Any]]:
    url = f"{emu.base_url}/api/machines/{CHANGES}"
    return get_all(client, url, token, sinceTime=_iso(since), pageSize=700)[0]


def _event_time(row: dict[str, Any]) -> datetime:
    return datetime.strptime(row["eventTimestamp"][:26], "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=UTC)


def _bucket_start(t: datetime) -> datetime:
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return epoch + (t - epoch) // BUCKET * BUCKET


def _pairs(rows: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """RBAC-move artefacts: a Fixed and a New of the same id, at the same instant, in two groups."""
    by_key: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_key[(row["id"], row["eventTimestamp"])].append(row)
    pairs = []
    for group in by_key.values():
        if sorted(r["status"] for r in group) == ["Fixed", "New"]:
            fixed, new = sorted(group, key=lambda r: r["status"])
            assert fixed["rbacGroupId"] != new["rbacGroupId"]
            pairs.append((fixed, new))
    return pairs


def test_since_time_is_required_and_goes_back_at_most_14_days(
    posture_emu: Emulator, posture_client: httpx.Client, posture_token: str
) -> None:
    url = f"{posture_emu.base_url}/api/machines/{CHANGES}"
    now = posture_emu.now

    def status(**params: str) -> tuple[int, str]:
        response = posture_client.get(url, params=params, headers=bearer(posture_token))
        return response.status_code, response.json().get("error", {}).get("code", "")

    assert status() == (400, "MissingRequiredParameter")
    assert status(sinceTime="yesterday") == (400, "BadRequest")
    assert status(sinceTime=_iso(now - timedelta(days=14, minutes=1))) == (400, "BadRequest")
    assert status(sinceTime=_iso(now - timedelta(days=13, hours=23)))[0] == 200
    future = posture_client.get(
        url, params={"sinceTime": _iso(now + timedelta(days=1))}, headers=bearer(posture_token)
    )
    assert future.status_code == 200 and future.json()["value"] == []


def test_changes_come_in_six_hour_buckets(
    posture_emu: Emulator, posture_client: httpx.Client, posture_token: str
) -> None:
    now = posture_emu.now
    start = _bucket_start(now - timedelta(days=3))
    from_start = _delta(posture_client, posture_emu, posture_token, start)
    late_in_bucket = _delta(
        posture_client, posture_emu, posture_token, start + BUCKET - timedelta(seconds=1)
    )
    assert from_start and late_in_bucket == from_start  # the whole bucket sinceTime falls in
    earlier = _delta(posture_client, posture_emu, posture_token, start - timedelta(seconds=1))
    # One bucket more: exactly the events of [start - 6 h, start), which may be none.
    extra = [r for r in earlier if r not in from_start]
    assert len(earlier) == len(from_start) + len(extra)
    assert all(start - BUCKET <= _event_time(r) < start for r in extra)
    times = [_event_time(r) for r in from_start]
    assert min(times) >= start and max(times) <= now
    assert times == sorted(times)
    for row in from_start[:200]:
        assert row["status"] in ("New", "Fixed", "Updated")
        assert isinstance(row["isOnboarded"], bool)
        assert len(row["eventTimestamp"]) == 27  # "2020-11-03 10:13:34.8476880"


def test_the_delta_is_the_truth_plus_the_rbac_move_pairs(
    posture_emu: Emulator, posture_client: httpx.Client, posture_token: str
) -> None:
    stats = posture_emu.stats()
    detail = stats["truth_detail"]["EPF_VulnerabilityChanges_CL"]
    since = datetime.fromisoformat(detail["since_time"])
    assert since == posture_emu.now - timedelta(days=14)
    rows = _delta(posture_client, posture_emu, posture_token, since)
    pairs = _pairs(rows)
    assert pairs, "the test tenant should have a device-group move in the window"
    artefact_ids = {id(r) for pair in pairs for r in pair}
    real = [r for r in rows if id(r) not in artefact_ids]
    assert len(rows) == detail["served_rows"]
    assert 2 * len(pairs) == detail["rbac_move_artefact_rows"]
    assert len(real) == stats["truth"]["EPF_VulnerabilityChanges_CL"] == detail["real_changes"]
    assert Counter(r["status"] for r in real) == detail["by_status"]
    # Every row of a moved device is paired at the move.
    moved = {(p[0]["deviceId"], p[0]["eventTimestamp"]) for p in pairs}
    assert len({device for device, _ in moved}) >= 1


def test_a_version_upgrade_is_a_fixed_and_a_new(
    posture_emu: Emulator, posture_client: httpx.Client, posture_token: str
) -> None:
    since = posture_emu.now - timedelta(days=14)
    rows = [r for r in _delta(posture_client, posture_emu, posture_token, since) if r["cveId"]]
    by_change: dict[tuple[str, str, str], dict[str, set[str]]] = defaultdict(
        lambda: defaultdict(set)
    )
    for r in rows:
        key = (r["deviceId"], r["softwareName"], r["eventTimestamp"])
        by_change[key][r["status"]].add(r["softwareVersion"])
    upgrades = [
        change
        for change in by_change.values()
        if change["Fixed"] and change["New"] and change["Fixed"].isdisjoint(change["New"])
    ]
    assert upgrades  # same instant: the old version Fixed, the new one New


@pytest.fixture(scope="module")
def moving() -> Iterator[Emulator]:
    settings = EmulatorSettings(
        iot_sensors=0, devices=300, seed=13, rate_limits=UNTHROTTLED, export_part_rows=4000
    )
    with Emulator(settings) as emulator:
        yield emulator


def _snapshot(client: httpx.Client, emu: Emulator, token: str) -> dict[str, dict[str, Any]]:
    url = f"{emu.base_url}/api/machines/SoftwareVulnerabilitiesByMachine"
    records, _ = get_all(client, url, token, pageSize=200_000)
    return {r["id"]: r for r in records}


def test_advance_changes_the_snapshot_and_the_delta_consistently(moving: Emulator) -> None:
    with client_for(moving) as client:
        token = get_token(client, moving)
        before_time = moving.now
        before = _snapshot(client, moving, token)
        before_truth = moving.stats()["truth"]
        export = client.get(
            f"{moving.base_url}/api/machines/SoftwareVulnerabilitiesExport", headers=bearer(token)
        ).json()
        machines_before = {
            m["id"]: m["rbacGroupId"]
            for m in get_all(client, f"{moving.base_url}/api/machines", token)[0]
        }
        response = client.post(f"{moving.base_url}/_emulator/advance?hours=60")
        assert response.status_code == 200 and response.json()["advanced_hours"] == 60
        assert moving.now == before_time + timedelta(hours=60)
        after = _snapshot(client, moving, token)
        assert after.keys() != before.keys()  # vulnerabilities fixed and found meanwhile
        assert moving.stats()["truth"]["EPF_Vulnerabilities_CL"] == len(after)
        assert moving.stats()["truth"] != before_truth
        # Replaying the delta since then on the earlier snapshot gives the new one.
        delta = _delta(client, moving, token, before_time)
        assert {"New", "Fixed"} <= {r["status"] for r in delta}
        state = {k: (v["rbacGroupId"], v["exploitabilityLevel"]) for k, v in before.items()}
        for row in delta:
            if row["status"] == "Fixed":
                state.pop(row["id"], None)
            else:
                state[row["id"]] = (row["rbacGroupId"], row["exploitabilityLevel"])
        assert state == {k: (v["rbacGroupId"], v["exploitabilityLevel"]) for k, v in after.items()}
        # Export files made before are stale: a new request makes new ones, of the new size.
        fresh = client.get(
            f"{moving.base_url}/api/machines/SoftwareVulnerabilitiesExport", headers=bearer(token)
        ).json()
        assert fresh["generatedTime"] > export["generatedTime"]
        assert not set(fresh["exportFiles"]) & set(export["exportFiles"])
        # Devices that moved group during the advance show it in the machines API too.
        moved = {p[1]["deviceId"]: p[1]["rbacGroupId"] for p in _pairs(delta)}
        machines_after = {
            m["id"]: m["rbacGroupId"]
            for m in get_all(client, f"{moving.base_url}/api/machines", token)[0]
        }
        checked = 0
        for device, group in moved.items():
            if _event_time(next(r for r in delta if r["deviceId"] == device)) > before_time:
                assert machines_after[device] == group != machines_before[device]
                checked += 1
        assert checked  # seed 13 has a move in those 60 hours
        with pytest.raises(ValueError, match="hours"):
            moving.advance(-1)
        assert client.post(f"{moving.base_url}/_emulator/advance?hours=x").status_code == 400


def test_advance_moves_av_signatures_and_secure_configuration(moving: Emulator) -> None:
    with client_for(moving) as client:
        token = get_token(client, moving)
        av_before = {
            r["id"]: r
            for r in get_all(client, f"{moving.base_url}/api/deviceavinfo", token, **{"$top": 500})[
                0
            ]
        }
        config_url = f"{moving.base_url}/api/machines/SecureConfigurationsAssessmentByMachine"
        config_before = {
            (r["deviceId"], r["configurationId"]): r["isCompliant"]
            for r in get_all(client, config_url, token)[0]
        }
        moving.advance(24)
        av_after = {
            r["id"]: r
            for r in get_all(client, f"{moving.base_url}/api/deviceavinfo", token, **{"$top": 500})[
                0
            ]
        }
        updated = sum(
            av_after[k]["avSignatureUpdateTime"] > v["avSignatureUpdateTime"]
            for k, v in av_before.items()
        )
        assert updated > len(av_before) / 2  # most devices got newer signatures
        config_after = {
            (r["deviceId"], r["configurationId"]): r["isCompliant"]
            for r in get_all(client, config_url, token)[0]
        }
        assert config_after.keys() == config_before.keys()
        assert any(config_after[k] != v for k, v in config_before.items())  # a few flipped


def _fingerprint(emu: Emulator) -> dict[str, Any]:
    with client_for(emu) as client:
        token = get_token(client, emu)
        vulns = get_all(
            client, f"{emu.base_url}/api/machines/SoftwareVulnerabilitiesByMachine", token
        )[0]
        config = get_all(
            client, f"{emu.base_url}/api/machines/SecureConfigurationsAssessmentByMachine", token
        )[0]
        cves = get_all(client, f"{emu.base_url}/api/vulnerabilities", token)[0]
        return {
            "vulns": [(r["id"], r["rbacGroupId"], r["cvssScore"]) for r in vulns],
            "config": [(r["deviceId"], r["configurationId"], r["isCompliant"]) for r in config],
            "cves": sorted((c["cvssVector"], c["EPSS"]) for c in cves),
            "truth": emu.stats()["truth"],
        }


def test_same_seed_same_posture_other_seed_other() -> None:
    settings = EmulatorSettings(iot_sensors=0, devices=40, seed=21, rate_limits=UNTHROTTLED)
    with Emulator(settings) as first:
        a = _fingerprint(first)
    with Emulator(settings) as second:
        b = _fingerprint(second)
    assert a == b
    with Emulator(
        EmulatorSettings(iot_sensors=0, devices=40, seed=22, rate_limits=UNTHROTTLED)
    ) as other:
        c = _fingerprint(other)
    assert c["vulns"] != a["vulns"] and c["cves"] != a["cves"]

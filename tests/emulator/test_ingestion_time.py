"""The Logs Ingestion endpoint keeps a TimeGenerated only near its receive time (defender-apis.md
F; azure-monitor-docs log-standard-columns): more than 2 days older, or more than a day ahead,
and the row gets the receive time instead, the emulated clock's "now"."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from epf_emulator import Emulator, EmulatorSettings

from .conftest import bearer, client_for, get_token

MONITOR = "https://monitor.azure.com"
AV = "EPF_AvHealth_CL"


@pytest.fixture
def emu() -> Iterator[Emulator]:
    """A tenant of each test's own: the tests move its clock."""
    with Emulator(EmulatorSettings(iot_sensors=0, devices=2, seed=31)) as emulator:
        yield emulator


@pytest.fixture
def http(emu: Emulator) -> Iterator[httpx.Client]:
    with client_for(emu) as c:
        yield c


def iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def upload(http: httpx.Client, emu: Emulator, rows: list[dict[str, Any]]) -> None:
    response = http.post(
        f"{emu.base_url}/dataCollectionRules/{emu.dcr_immutable_id}/streams/Custom-{AV}",
        params={"api-version": "2023-01-01"},
        json=rows,
        headers=bearer(get_token(http, emu, MONITOR)),
    )
    assert response.status_code == 204, response.text


def stored(emu: Emulator) -> dict[str, dict[str, Any]]:
    return {row["DeviceId"]: row for row in emu.ingested_rows(AV)}


def test_time_generated_far_from_the_receive_time_becomes_the_receive_time(
    emu: Emulator, http: httpx.Client
) -> None:
    now = emu.now  # the clock does not move on its own: this is the receive time
    sent = {
        "old-47h": now - timedelta(hours=47),
        "old-2d": now - timedelta(days=2),  # "older than 2 days" is replaced, 2 days is not
        "old-2d-1s": now - timedelta(days=2, seconds=1),
        "old-3d": now - timedelta(days=3),
        "ahead-23h": now + timedelta(hours=23),
        "ahead-1d": now + timedelta(days=1),
        "ahead-1d-1s": now + timedelta(days=1, seconds=1),
    }
    seen = now - timedelta(days=30)
    upload(
        http,
        emu,
        [
            {"DeviceId": device, "TimeGenerated": iso(t), "LastSeenTime": iso(seen)}
            for device, t in sent.items()
        ],
    )
    rows = stored(emu)
    replaced = {"old-2d-1s", "old-3d", "ahead-1d-1s"}
    for device, t in sent.items():
        expected = now if device in replaced else t
        assert rows[device]["TimeGenerated"] == expected, device
        # Only TimeGenerated moves: any other datetime column is kept as sent.
        assert rows[device]["LastSeenTime"] == seen, device


def test_an_upload_days_late_gets_the_receive_time_of_the_advanced_clock(
    emu: Emulator, http: httpx.Client
) -> None:
    taken = emu.now
    upload(http, emu, [{"DeviceId": "before", "TimeGenerated": iso(taken)}])
    # Three days pass (POST /_emulator/advance, as an operator would), then the late upload.
    moved = http.post(f"{emu.base_url}/_emulator/advance", params={"hours": 72})
    assert moved.status_code == 200, moved.text
    received = emu.now
    assert received - taken == timedelta(hours=72)
    late = {"DeviceId": "late", "TimeGenerated": iso(taken), "SnapshotTime": iso(taken)}
    upload(http, emu, [late, {"DeviceId": "fresh", "TimeGenerated": iso(received)}])
    rows = stored(emu)
    assert rows["before"]["TimeGenerated"] == taken  # on time: kept
    assert rows["late"]["TimeGenerated"] == received  # 3 days late: the value sent is gone
    assert rows["late"]["SnapshotTime"] == taken
    assert rows["fresh"]["TimeGenerated"] == received

"""The sensor's ``/api/v1/events`` (C.2): latest 100, newest first, 4320-minute clamp, hourly cache."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from epf_emulator import Emulator, EmulatorSettings

from .test_iot_common import IOT_SETTINGS, appliance, get_json, iot_client, now_ms

EVENT_TYPES = {
    "DEVICE_CONNECTION_CREATED",
    "REMOTE_ACCESS",
    "PROGRAM_DEVICE",
    "DEVICE_ADDED",
    "FIRMWARE_CHANGE",
    "ALERT",
    "USER_LOGIN",
    "NOTICE",
}
MINUTE_MS = 60_000


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    """Its own emulator: the cache test advances the clock (runs last in this module)."""
    with Emulator(IOT_SETTINGS) as emulator:
        yield emulator


@pytest.fixture(scope="module")
def sensor(emu: Emulator) -> Iterator[httpx.Client]:
    with iot_client(appliance(emu, "sensor-1")) as client:
        yield client


def test_latest_100_newest_first(emu: Emulator, sensor: httpx.Client) -> None:
    events = get_json(sensor, "/api/v1/events")
    assert len(events) == 100  # about 500 in the 30-minute backlog at 1000/h
    stamps = [e["timestamp"] for e in events]
    assert stamps == sorted(stamps, reverse=True) and len(set(stamps)) == 100
    now = now_ms(emu)
    assert now - 30 * MINUTE_MS <= stamps[-1] and stamps[0] <= now
    for e in events:
        assert set(e) == {"severity", "title", "timestamp", "content", "owner", "type"}
        assert e["type"] in EVENT_TYPES and e["severity"] in ("INFO", "NOTICE", "ALERT")
        assert isinstance(e["timestamp"], int) and e["timestamp"] > 1_577_836_800_000
    assert len({e["type"] for e in events}) >= 5
    assert any(e["owner"] is None for e in events)
    assert any("10." in e["content"] for e in events)  # content names device addresses
    assert get_json(sensor, "/api/v1/events", minutesTimeFrame=4320) == events  # the default
    short = get_json(sensor, "/api/v1/events", minutesTimeFrame=2)
    assert 0 < len(short) < 100 and all(e["timestamp"] >= now - 2 * MINUTE_MS for e in short)
    assert short == events[: len(short)]


def test_type_filter_and_bad_values(sensor: httpx.Client) -> None:
    logins = get_json(sensor, "/api/v1/events", type="USER_LOGIN")
    assert logins and {e["type"] for e in logins} == {"USER_LOGIN"}
    assert get_json(sensor, "/api/v1/events", type="NO_SUCH_TYPE") == []
    for bad in ("ten", "1.5", "0x10"):
        response = sensor.get("/api/v1/events", params={"minutesTimeFrame": bad})
        assert (response.status_code, response.text) == (500, "Failure - error")


def test_identical_calls_within_an_emulated_hour_are_cached(
    emu: Emulator, sensor: httpx.Client
) -> None:
    first = sensor.get("/api/v1/events", params=[("minutesTimeFrame", "60"), ("type", "ALERT")])
    assert first.status_code == 200 and first.json()
    emu.advance(0.5)
    # The same parameters in another order: the same call, so the first answer byte for byte,
    # although new events happened in the meantime.
    again = sensor.get("/api/v1/events", params=[("type", "ALERT"), ("minutesTimeFrame", "60")])
    assert again.content == first.content
    fresh = get_json(sensor, "/api/v1/events", minutesTimeFrame=61, type="ALERT")
    assert fresh[0]["timestamp"] > first.json()[0]["timestamp"]  # a new call sees them
    emu.advance(1.1)  # the entry expired an hour after the first call
    later = sensor.get("/api/v1/events", params=[("minutesTimeFrame", "60"), ("type", "ALERT")])
    assert later.content != first.content
    assert later.json()[0]["timestamp"] > now_ms(emu) - 60 * MINUTE_MS
    repeat = sensor.get("/api/v1/events", params=[("type", "ALERT"), ("minutesTimeFrame", "60")])
    assert repeat.content == later.content  # cached again


def test_minutes_time_frame_is_clamped_to_4320() -> None:
    settings = EmulatorSettings(
        devices=5,
        seed=9,
        iot_sensors=1,
        iot_console=False,
        iot_devices_per_sensor=10,
        iot_events_per_hour=1.0,
        iot_event_backlog_minutes=4320.0,
    )
    with Emulator(settings) as emu, iot_client(appliance(emu, "sensor-1")) as sensor:
        emu.advance(48)  # events from 120 hours ago: older than the largest window
        huge = get_json(sensor, "/api/v1/events", minutesTimeFrame=100_000)
        assert 0 < len(huge) < 100
        assert all(e["timestamp"] >= now_ms(emu) - 4320 * MINUTE_MS for e in huge)
        assert huge == get_json(sensor, "/api/v1/events", minutesTimeFrame=4320)
        everything = emu.stats()["truth_detail"]["iot"]["sensors"]["sensor-1"]["events"]
        assert everything > len(huge)  # older events exist; the window hides them


def test_a_storm_hour_runs_at_its_own_rate() -> None:
    from datetime import timedelta

    from epf_emulator.common.clock import WORLD_ANCHOR

    storm = WORLD_ANCHOR - timedelta(hours=3)
    settings = EmulatorSettings(
        devices=5,
        seed=3,
        iot_events_per_hour=10.0,
        iot_event_backlog_minutes=4320.0,
        iot_event_storms=((2, storm, 3000.0),),
    )
    hour_ms = int(storm.timestamp() * 1000) // 3_600_000 * 3_600_000

    def storm_hour(events: list[dict[str, object]]) -> int:
        return sum(1 for e in events if hour_ms <= int(e["timestamp"]) < hour_ms + 3_600_000)  # type: ignore[call-overload]

    with Emulator(settings) as emu:
        kind = {"minutesTimeFrame": 240, "type": "DEVICE_CONNECTION_CREATED"}
        with iot_client(appliance(emu, "sensor-1")) as client:
            calm = get_json(client, "/api/v1/events", **kind)
        with iot_client(appliance(emu, "sensor-2")) as client:
            stormy = get_json(client, "/api/v1/events", **kind)
    # At 10 an hour a type has a handful in 4 hours; at 3,000 an hour the sensor's latest-100
    # cap is reached within the storm hour.
    assert len(calm) < 20 and storm_hour(calm) < 10
    assert len(stormy) == 100 and storm_hour(stormy) >= 90
    with pytest.raises(ValueError, match="iot_event_storms"):
        EmulatorSettings(iot_event_storms=((3, storm, 10.0),))  # there are 2 sensors
    with pytest.raises(ValueError, match="iot_event_storms"):
        EmulatorSettings(iot_event_storms=((1, storm.replace(tzinfo=None), 10.0),))

"""A management console restricted to some sensors (``sensor_ids``): v3 devices and device CVEs
take one ``sensorId`` per request and v3 connections none (defender-apis.md C.3), so the
collector reads one series per sensor and filters connections itself; every poll lands exactly
the changes of those sensors, each once."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

from endpoint_forensics.config import Settings, load_settings
from endpoint_forensics.pipeline.run import RunSummary, run_sync
from endpoint_forensics.sinks.duckdb import DuckDBSink
from epf_emulator import Emulator, EmulatorSettings

from ..emulator.test_iot_common import appliance, get_json, iot_client

CHOSEN = (1, 3)  # of three sensors: sensor-2 must not appear
V3_DATASETS = ["device_changes", "cves", "connections"]


@pytest.fixture(scope="module")
def plant() -> Iterator[Emulator]:
    with Emulator(EmulatorSettings(devices=0, seed=11, iot_sensors=3)) as emu:
        yield emu


def console_settings(emu: Emulator, tmp_path: Path, **console: Any) -> Settings:
    tmp_path.mkdir(parents=True, exist_ok=True)
    config = tmp_path / "epf.toml"
    emu.write_config(config, mde=False)
    values: dict[str, Any] = {
        "store.path": str(tmp_path / "ws.duckdb"),
        "state.dir": str(tmp_path / "state"),
        **{f"sensors.{i}.datasets": [] for i in range(3)},
        **{f"consoles.0.{key}": value for key, value in console.items()},
    }
    return load_settings(config, environ={}, overrides=values)


def sync(settings: Settings, emu: Emulator) -> RunSummary:
    sink = DuckDBSink(settings.store.path)
    try:
        summary = run_sync(settings, [sink], now=emu.now)
    finally:
        sink.close()
    assert summary.exit_code == 0, summary.errors()
    return summary


def rows(settings: Settings, sql: str) -> list[tuple[Any, ...]]:
    con = duckdb.connect(str(settings.store.path), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def count(settings: Settings, sql: str) -> int:
    return int(rows(settings, sql)[0][0])


def sensor_device_ids(emu: Emulator, sensor: int) -> set[int]:
    """The console ids of one sensor's devices, as its v1 device list gives them."""
    with iot_client(appliance(emu, "console")) as client:
        return {d["id"] for d in get_json(client, "/external/v1/devices", sensorId=str(sensor))}


def ms(emu: Emulator) -> int:
    return int(emu.now.timestamp() * 1000)


def test_two_of_three_sensors_land_exactly_theirs(plant: Emulator, tmp_path: Path) -> None:
    settings = console_settings(plant, tmp_path, sensor_ids=list(CHOSEN), page_size=7)
    stats = plant.stats
    before = stats()["iot_requests"]["console"].get("/external/v3/integration/devices/0", {})
    sync(settings, plant)
    truth = stats()["truth_detail"]["iot"]["sensors"]
    chosen = [truth[f"sensor-{n}"] for n in CHOSEN]

    def stored(table: str, source: str) -> int:
        return count(settings, f"SELECT count(*) FROM {table} WHERE Source = '{source}'")

    devices = sum(t["devices"] for t in chosen)
    assert stored("EPF_IotDevices_CL", "console/v1/devices") == devices
    assert stored("EPF_IotDevices_CL", "console/v3/devices") == devices
    assert stored("EPF_IotCves_CL", "console/v3/devicecves") == sum(t["cves"] for t in chosen)
    connections = sum(t["connections"] for t in chosen)
    assert stored("EPF_IotConnections_CL", "console/v3/connections") == connections
    assert stored("EPF_IotAlerts_CL", "console/v2/alerts") == sum(t["alerts"] for t in chosen)
    assert rows(settings, "SELECT SensorId FROM EPF_IotSensors_CL ORDER BY 1") == [(1,), (3,)]
    # The deleted-devices list names no sensor: every deletion is recorded (documented).
    deleted = plant.iot_changes_after(0)["deleted"]
    assert stored("EPF_IotDevices_CL", "console/v3/deleteddevices") == deleted
    # Nothing of sensor-2, in any table.
    for source in ("console/v1/devices", "console/v3/devices"):
        sensors_seen = rows(
            settings,
            f"SELECT DISTINCT SensorId FROM EPF_IotDevices_CL WHERE Source = '{source}' ORDER BY 1",
        )
        assert sensors_seen == [(1,), (3,)], source
    other = ",".join(str(i) for i in sensor_device_ids(plant, 2))
    assert count(settings, f"SELECT count(*) FROM EPF_IotCves_CL WHERE DeviceId IN ({other})") == 0
    assert (
        count(
            settings,
            "SELECT count(*) FROM EPF_IotConnections_CL"
            f" WHERE FirstDeviceId IN ({other}) OR SecondDeviceId IN ({other})",
        )
        == 0
    )
    # Each sensor's series paged to its end, once: ceil(n / 7) pages per sensor.
    after = stats()["iot_requests"]["console"]["/external/v3/integration/devices/0"]
    pages = after.get("200", 0) - before.get("200", 0)
    assert pages == sum(max(1, -(-t["devices"] // 7)) for t in chosen)
    assert after.get("500", 0) == before.get("500", 0)


def test_later_polls_per_sensor_lose_nothing_and_repeat_nothing(tmp_path: Path) -> None:
    """Poll 1 reads every sensor; the config then keeps two, whose series start from the
    all-sensor watermark (not from the beginning); polls 2 and 3 land exactly what changed in
    those sensors since the poll before."""
    with Emulator(EmulatorSettings(devices=0, seed=12, iot_sensors=3)) as emu:
        polls = [sync(console_settings(emu, tmp_path, datasets=V3_DATASETS), emu)]
        marks = [ms(emu)]
        chosen = console_settings(
            emu, tmp_path, datasets=V3_DATASETS, sensor_ids=list(CHOSEN), page_size=5
        )
        expected: list[dict[int, dict[str, int]]] = []
        deleted: list[int] = []
        for _ in range(2):
            emu.advance(1.5)
            polls.append(sync(chosen, emu))
            expected.append({n: emu.iot_changes_after(marks[-1], {n}) for n in CHOSEN})
            deleted.append(emu.iot_changes_after(marks[-1])["deleted"])
            marks.append(ms(emu))
        assert all(sum(e[n]["devices"] for n in CHOSEN) > 0 for e in expected)
        for poll, want, gone in zip(polls[1:], expected, deleted, strict=True):
            run = f"RunId = '{poll.run_id}'"
            by_sensor = dict(
                rows(
                    chosen,
                    "SELECT SensorId, count(*) FROM EPF_IotDevices_CL"
                    f" WHERE Source = 'console/v3/devices' AND {run} GROUP BY ALL",
                )
            )
            assert by_sensor == {n: want[n]["devices"] for n in CHOSEN if want[n]["devices"]}
            cves = count(
                chosen,
                f"SELECT count(*) FROM EPF_IotCves_CL WHERE Source = 'console/v3/devicecves'"
                f" AND {run}",
            )
            assert cves == sum(want[n]["cves"] for n in CHOSEN)
            connections = count(chosen, f"SELECT count(*) FROM EPF_IotConnections_CL WHERE {run}")
            assert connections == sum(want[n]["connections"] for n in CHOSEN)
            removed = count(
                chosen,
                "SELECT count(*) FROM EPF_IotDevices_CL"
                f" WHERE Source = 'console/v3/deleteddevices' AND {run}",
            )
            assert removed == gone
        repeated = count(
            chosen,
            "SELECT count(*) FROM (SELECT DeviceId, LastUpdate FROM EPF_IotDevices_CL"
            " WHERE Source = 'console/v3/devices' GROUP BY ALL HAVING count(*) > 1)",
        )
        assert repeated == 0

"""Microsoft Sentinel output end to end: the Logs Ingestion API of the emulator, through the
real Azure SDK client, with the durable outbox between the collector and the endpoint."""

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

from endpoint_forensics.config import Settings, load_settings
from endpoint_forensics.sinks import close_sinks, open_sinks
from endpoint_forensics.workspace.store import run_query
from epf_emulator import Emulator, EmulatorSettings
from epf_emulator.common.settings import Fault

from .sentinel_support import ingested_since, local_counts, sync

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def tenant() -> Iterator[Emulator]:
    with Emulator(EmulatorSettings(devices=120, seed=17, iot_sensors=1)) as emu:
        yield emu


def sentinel_settings(emu: Emulator, tmp_path: Path, **overrides: Any) -> Settings:
    tmp_path.mkdir(parents=True, exist_ok=True)
    config = tmp_path / "epf.toml"
    emu.write_config(config)
    values: dict[str, Any] = {
        "store.path": str(tmp_path / "ws.duckdb"),
        "state.dir": str(tmp_path / "state"),
        **overrides,
    }
    return load_settings(config, environ={}, overrides=values)


def test_sentinel_receives_exactly_the_rows_of_the_local_store(
    tenant: Emulator, tmp_path: Path
) -> None:
    before = dict(tenant.stats()["ingested"])
    settings = sentinel_settings(tenant, tmp_path)
    summary = sync(settings)
    assert summary.exit_code == 0, summary.errors()
    report = summary.deliveries["sentinel"]
    assert report.error == "" and report.waiting_uploads == 0
    assert ingested_since(tenant, before) == local_counts(settings)
    # Row for row: the same devices, stamped with the same run, each with a BatchId.
    rows = [r for r in tenant.ingested_rows("EPF_Devices_CL") if r["RunId"] == summary.run_id]
    con = duckdb.connect(str(settings.store.path), read_only=True)
    local = {r[0] for r in con.execute("SELECT DeviceId FROM EPF_Devices_CL").fetchall()}
    con.close()
    assert {r["DeviceId"] for r in rows} == local
    assert all(len(r["BatchId"]) == 32 for r in rows)
    assert not list((settings.state.dir / "outbox" / "sentinel" / "pending").iterdir())


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port that refuses connections: bound, never listening, held for the whole test (a
    port merely freed could be taken by an outgoing connection meanwhile)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


def test_an_endpoint_down_for_a_whole_run_loses_nothing(
    tenant: Emulator, tmp_path: Path, closed_port: int
) -> None:
    before = dict(tenant.stats()["ingested"])
    down = sentinel_settings(
        tenant,
        tmp_path,
        **{
            "sentinel.endpoint": f"https://127.0.0.1:{closed_port}",
            "tenants.0.datasets": ["machines", "av_health"],
        },
    )
    first = sync(down)
    assert all(o.outcome == "Succeeded" for o in first.outcomes)
    assert first.exit_code == 3  # collected, but not yet delivered
    report = first.deliveries["sentinel"]
    assert "cannot reach Sentinel" in report.error
    assert report.waiting_rows == sum(local_counts(down).values())
    assert ingested_since(tenant, before) == {}

    up = sentinel_settings(tenant, tmp_path, **{"tenants.0.datasets": ["machines", "av_health"]})
    second = sync(up)
    assert second.exit_code == 0, second.errors()
    # Both runs arrive, once: what waited, then the new run.
    assert ingested_since(tenant, before) == local_counts(up)
    assert second.deliveries["sentinel"].waiting_uploads == 0


def test_a_413_splits_the_upload_and_a_400_sets_it_aside(tmp_path: Path) -> None:
    faults = (
        Fault("/dataCollectionRules", 413, times=1),
        Fault("/dataCollectionRules", 400, times=1, after=3),
    )
    settings_kw = {"devices": 40, "seed": 5, "iot_sensors": 0, "faults": faults}
    with Emulator(EmulatorSettings(**settings_kw)) as emu:
        settings = sentinel_settings(emu, tmp_path)
        summary = sync(settings)
        ingested = emu.stats()["ingested"]
    report = summary.deliveries["sentinel"]
    assert report.rejected_uploads == 1 and report.error == ""
    rejected = list((settings.state.dir / "outbox" / "sentinel" / "rejected").glob("*.json.gz"))
    assert len(rejected) == 1
    assert "HTTP 400" in rejected[0].with_suffix(".reason").read_text()
    set_aside = int(rejected[0].name.split(".r")[1].split(".")[0])
    local = local_counts(settings)
    assert sum(ingested.values()) + set_aside == sum(local.values())


def test_a_refused_identity_keeps_everything_for_the_next_run(
    tenant: Emulator, tmp_path: Path
) -> None:
    settings = sentinel_settings(
        tenant,
        tmp_path,
        **{"sentinel.client_secret": "not-the-secret", "tenants.0.datasets": ["machines"]},
    )
    summary = sync(settings)
    report = summary.deliveries["sentinel"]
    assert "could not get a token" in report.error and "not-the-secret" not in report.error
    assert report.waiting_rows == sum(local_counts(settings).values())
    assert summary.exit_code == 3


def test_the_compat_profile_feeds_the_original_workbook_in_both_places(
    tenant: Emulator, tmp_path: Path
) -> None:
    before = dict(tenant.stats()["ingested"])
    settings = sentinel_settings(tenant, tmp_path, **{"output.compat": True})
    summary = sync(settings)
    assert summary.exit_code == 0, summary.errors()
    local = local_counts(settings)
    legacy = {t: n for t, n in local.items() if not t.startswith("EPF_")}
    assert set(legacy) == {
        "AgentHealthStatusWindows_CL",
        "MDE_MAC_devicehealth_CL",
        "AD4IOT_Devices_CL",
        "AD4IOT_CVE_CL",
        "AD4IOT_Events_CL",
    }
    assert ingested_since(tenant, before) == local  # Sentinel has them too
    db = settings.store.path
    windows = run_query(
        db, 'EPF_AgentHealth_CL | where OSFamily == "Windows" | summarize count() by SensorEnabled'
    ).records()
    expected = {
        {"Pass": "ENABLED", "Fail": "DISABLED", "NotApplicable": "N/A"}.get(
            r["SensorEnabled"], ""
        ): r["count_"]
        for r in windows
    }
    # The workbook's pie: the latest row per device, then count by the test column.
    pie = run_query(
        db,
        "AgentHealthStatusWindows_CL | summarize arg_max(TimeGenerated, *) by DeviceId_s"
        " | summarize count() by SensorEnabled_s",
    ).records()
    assert {r["SensorEnabled_s"] or "": r["count_"] for r in pie} == expected
    macs = run_query(
        db,
        "MDE_MAC_devicehealth_CL | mv-expand Results = parse_json(Results_s)"
        " | extend DeviceName = tostring(Results.DeviceName)"
        " | summarize arg_max(TimeGenerated, *) by DeviceName | count",
    ).records()
    mac_devices = run_query(
        db, 'EPF_AgentHealth_CL | where OSFamily == "macOS" | distinct DeviceId | count'
    ).records()
    assert macs[0]["Count"] == mac_devices[0]["Count"] > 0
    cves = run_query(db, "AD4IOT_CVE_CL | summarize count() by IPAddress | count").records()
    sensor_ips = run_query(
        db,
        'EPF_IotCves_CL | where Source == "sensor/v1/cves" | distinct IpAddress | count',
    ).records()
    assert cves[0]["Count"] == sensor_ips[0]["Count"] > 0


def test_throttling_is_waited_out_and_everything_arrives(tmp_path: Path) -> None:
    # Three uploads a second at most: the sink's senders get 429 with Retry-After.
    settings_kw = {"devices": 60, "seed": 6, "iot_sensors": 0, "ingestion_rate_limit": (3, 1.0)}
    with Emulator(EmulatorSettings(**settings_kw)) as emu:
        settings = sentinel_settings(emu, tmp_path, **{"sentinel.max_concurrency": 8})
        summary = sync(settings)
        stats = emu.stats()
    assert summary.exit_code == 0, summary.errors()
    assert stats["ingestion"]["rejected"].get("429", 0) > 0
    assert stats["ingested"] == local_counts(settings)


def test_a_halted_sink_keeps_what_it_has_not_sent(tenant: Emulator, tmp_path: Path) -> None:
    settings = sentinel_settings(tenant, tmp_path, **{"tenants.0.datasets": ["machines"]})
    sinks = open_sinks(settings)
    sentinel = sinks[1]
    from endpoint_forensics.contracts import Batch
    from endpoint_forensics.tables import DEVICES

    sentinel._halted.set()  # as if the endpoint had just failed: nothing more goes out
    with sentinel.open(DEVICES, unit="t/run-x/machines/page-0") as writer:
        writer.write(Batch(DEVICES, rows=[{"DeviceId": "d1"}]), {"RunId": "run-x"})
    close_sinks(sinks)  # closed without a flush, as when a run is interrupted
    assert sentinel.outbox.counts() == (1, 1)

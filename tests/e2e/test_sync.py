import ssl

import duckdb
import httpx
import orjson
import pytest

from endpoint_forensics.config import DATASETS
from endpoint_forensics.tables import AGENT_HEALTH_TESTS
from endpoint_forensics.tables.datasets import dataset_names
from endpoint_forensics.workspace import store
from epf_emulator import Emulator, EmulatorSettings, Fault

from .conftest import settings_for, sync

pytestmark = pytest.mark.e2e


def count(db, table, run_id=None):
    con = duckdb.connect(str(db), read_only=True)
    try:
        where = f" WHERE RunId = '{run_id}'" if run_id else ""
        return con.execute(f'SELECT count(*) FROM "{table}"{where}').fetchone()[0]
    finally:
        con.close()


def requests_for(emu, path):
    stats = emu.stats()["requests"]
    return {int(k): v for k, v in stats.get(path, {}).items()}


def test_a_full_sync_equals_the_truth_and_pages_to_the_end(small_tenant, tmp_path):
    settings = settings_for(small_tenant, tmp_path, page_size=40)  # 250 devices: 7 pages
    before = requests_for(small_tenant, "/api/machines").get(200, 0)
    summary = sync(settings)
    assert summary.exit_code == 0, summary.errors()
    truth = small_tenant.stats()["truth"]
    db = settings.store.path
    assert truth["EPF_Devices_CL"] == 250 and truth["EPF_Runs_CL"] == len(dataset_names("tenant"))
    for table, expected in truth.items():  # every table the registry has
        # The emulator counts its own datasets; the run ends with triage, a row of its own.
        expected += table == "EPF_Runs_CL"
        assert count(db, table, summary.run_id) == expected, table
    assert requests_for(small_tenant, "/api/machines").get(200, 0) - before == 7
    ids = store.run_query(
        db, "EPF_Devices_CL | summarize n = count() by DeviceId | where n > 1"
    ).rows
    assert ids == []  # every device exactly once


def test_agent_health_covers_every_family_with_only_the_vocabulary(small_tenant, tmp_path):
    settings = settings_for(small_tenant, tmp_path)
    summary = sync(settings)
    db = settings.store.path
    families = {
        r["OSFamily"]
        for r in store.run_query(db, "EPF_AgentHealth_CL | distinct OSFamily").records()
    }
    assert families == {"Windows", "macOS", "Linux"}
    values = set()
    for test in AGENT_HEALTH_TESTS:
        values |= {
            r[test] for r in store.run_query(db, f"EPF_AgentHealth_CL | distinct {test}").records()
        }
    assert values <= {"Pass", "Fail", "NotApplicable", "Unknown"}
    assert {"Pass", "Fail", "NotApplicable"} <= values
    runs = store.run_query(
        db,
        f'EPF_Runs_CL | where RunId == "{summary.run_id}" | project Dataset, Outcome, Rows, Requests',
    ).records()
    assert {r["Dataset"]: r["Outcome"] for r in runs} == dict.fromkeys(
        (*DATASETS, "triage"), "Succeeded"
    )
    assert all(r["Requests"] >= 1 for r in runs if r["Dataset"] != "triage")


def test_the_legacy_mde_hunting_api_gives_the_same_rows(small_tenant, tmp_path):
    graph = sync(settings_for(small_tenant, tmp_path / "g", datasets=["agent_health"]))
    legacy = sync(
        settings_for(small_tenant, tmp_path / "m", datasets=["agent_health"], hunting_api="mde")
    )
    assert graph.exit_code == legacy.exit_code == 0
    q = "EPF_AgentHealth_CL | project DeviceId, SensorDataCollection, TamperProtection, CloudProtection | order by DeviceId asc"
    assert (
        store.run_query(tmp_path / "g" / "ws.duckdb", q).rows
        == store.run_query(tmp_path / "m" / "ws.duckdb", q).rows
    )


def test_a_hunting_result_at_the_row_limit_is_split_until_complete(tmp_path):
    # The collector is not told the cap: the row count the query carries shows the cut.
    with Emulator(
        EmulatorSettings(iot_sensors=0, devices=120, seed=3, graph_hunting_row_limit=40)
    ) as emu:
        settings = settings_for(emu, tmp_path, datasets=["agent_health"])
        summary = sync(settings)
        assert summary.exit_code == 0, summary.errors()
        assert summary.outcomes[0].rows == emu.stats()["truth"]["EPF_AgentHealth_CL"]
        assert summary.outcomes[0].requests > 1


def test_429_then_success(tmp_path):
    faults = (Fault("/api/machines", 429, times=2, retry_after=1),)
    with Emulator(EmulatorSettings(iot_sensors=0, devices=30, seed=5, faults=faults)) as emu:
        summary = sync(settings_for(emu, tmp_path, datasets=["machines"]))
        assert summary.exit_code == 0, summary.errors()
        assert summary.outcomes[0].rows == 30
        assert summary.outcomes[0].throttled == 2
        assert requests_for(emu, "/api/machines") == {429: 2, 200: 1}


def test_the_emulators_own_rate_limit_is_waited_out(tmp_path):
    # The emulator allows 2 calls per 2 s; the collector's budget (100/min) would go faster.
    with Emulator(
        EmulatorSettings(iot_sensors=0, devices=50, seed=5, rate_limits={"machines": (2, 2.0)})
    ) as emu:
        summary = sync(settings_for(emu, tmp_path, datasets=["machines"], page_size=10))
        assert summary.exit_code == 0, summary.errors()
        assert summary.outcomes[0].rows == 50
        statuses = requests_for(emu, "/api/machines")
        # 5 full pages, then the empty one that ends a $skip walk (no next link with $top).
        assert statuses[200] == 6 and statuses.get(429, 0) >= 1


def test_a_token_expiring_mid_run_is_renewed(tmp_path):
    # 2 s tokens, and the emulator's rate limit stretches the run past several lifetimes.
    settings = EmulatorSettings(
        iot_sensors=0,
        devices=60,
        seed=9,
        token_lifetime_seconds=2,
        rate_limits={"machines": (2, 1.5)},
    )
    with Emulator(settings) as emu:
        summary = sync(settings_for(emu, tmp_path, datasets=["machines"], page_size=10))
        assert summary.exit_code == 0, summary.errors()
        assert summary.outcomes[0].rows == 60
        assert emu.stats()["tokens_issued"] >= 2
        assert requests_for(emu, "/api/machines").get(401, 0) == 0  # renewed before expiry


def test_a_401_mid_run_gets_a_new_token_and_the_page_again(tmp_path):
    faults = (Fault("/api/machines", 401, times=1, after=1),)
    with Emulator(EmulatorSettings(iot_sensors=0, devices=30, seed=9, faults=faults)) as emu:
        summary = sync(settings_for(emu, tmp_path, datasets=["machines"], page_size=10))
        assert summary.exit_code == 0, summary.errors()
        assert summary.outcomes[0].rows == 30
        # 3 full pages and the empty one that ends the $skip walk.
        assert requests_for(emu, "/api/machines") == {200: 4, 401: 1}
        assert emu.stats()["tokens_issued"] == 2


def test_unknown_and_missing_fields_are_tolerated_and_a_record_without_id_is_quarantined(tmp_path):
    extras = (
        {
            "id": "f" * 40,
            "computerDnsName": "odd.contoso.com",
            "brandNewField": {"x": 1},
        },  # most fields missing
        {"computerDnsName": "no-id.contoso.com", "osPlatform": "Windows11"},
    )
    with Emulator(
        EmulatorSettings(iot_sensors=0, devices=20, seed=2, extra_machine_records=extras)
    ) as emu:
        settings = settings_for(emu, tmp_path, datasets=["machines"])
        summary = sync(settings)
        assert summary.exit_code == 0
        outcome = summary.outcomes[0]
        assert (outcome.rows, outcome.quarantined) == (21, 1)
        assert emu.stats()["truth"]["EPF_Devices_CL"] == 21
    odd = store.run_query(
        settings.store.path, f'EPF_Devices_CL | where DeviceId == "{"f" * 40}"'
    ).records()
    assert odd[0]["DeviceName"] == "odd.contoso.com"
    assert odd[0]["AdditionalFields"] == {"brandNewField": {"x": 1}}
    assert odd[0]["LastSeen"] is None
    files = list((tmp_path / "state" / "quarantine").rglob("*.jsonl"))
    assert len(files) == 1
    line = orjson.loads(files[0].read_bytes().splitlines()[0])
    assert line == {"reason": "machine record has no id", "record": extras[1]}


def test_an_empty_tenant_is_not_an_error(tmp_path):
    with Emulator(EmulatorSettings(iot_sensors=0, devices=0, seed=1)) as emu:
        summary = sync(settings_for(emu, tmp_path))
        assert summary.exit_code == 0, summary.errors()
        truth = emu.stats()["truth"]
        assert {o.table: o.rows for o in summary.outcomes} == {
            **{t: n for t, n in truth.items() if t != "EPF_Runs_CL"},
            "EPF_Triage_CL": 0,  # nothing open, nothing decided
        }
        assert truth["EPF_Devices_CL"] == truth["EPF_Vulnerabilities_CL"] == 0


def test_a_failure_midway_leaves_no_partial_snapshot(tmp_path):
    faults = (Fault("/api/machines", 500, times=50, after=1),)
    with Emulator(EmulatorSettings(iot_sensors=0, devices=30, seed=9, faults=faults)) as emu:
        settings = settings_for(emu, tmp_path, datasets=["machines"], page_size=10, max_retries=1)
        summary = sync(settings)
    assert summary.exit_code == 1
    assert "InternalServerError" in summary.outcomes[0].error
    assert count(settings.store.path, "EPF_Devices_CL") == 0  # page 1 was rolled back
    runs = store.run_query(
        settings.store.path, "EPF_Runs_CL | project Outcome, Rows, Error"
    ).records()
    assert runs[0]["Outcome"] == "Failed" and runs[0]["Rows"] == 0 and runs[0]["Error"]


def test_the_collector_refuses_an_untrusted_certificate(small_tenant, tmp_path):
    settings = settings_for(small_tenant, tmp_path)
    other_ca = tmp_path / "other-ca.pem"
    import trustme

    trustme.CA().cert_pem.write_to_path(str(other_ca))
    bad = settings_for(small_tenant, tmp_path, ca_bundle=str(other_ca))
    summary = sync(bad)
    assert summary.exit_code == 1
    assert "is not trusted; set ca_bundle" in summary.errors()[0]
    assert settings.tenants[0].ca_bundle != bad.tenants[0].ca_bundle
    with pytest.raises(httpx.ConnectError):
        httpx.get(
            f"{small_tenant.base_url}/_emulator/stats",
            verify=ssl.create_default_context(cafile=str(other_ca)),
        )


def test_downloads_a_killed_run_left_are_removed_by_the_next(small_tenant, tmp_path):
    settings = settings_for(small_tenant, tmp_path, datasets=["machines"])
    # What a run killed mid-export leaves: its own download folder, a part half written.
    killed = settings.state.dir / "work" / "0b5e0c3a-killed-run"
    killed.mkdir(parents=True)
    (killed / "part-0001.json.gz.partial").write_bytes(b"\x1f\x8b half")

    summary = sync(settings)

    assert summary.exit_code == 0
    assert not killed.exists()
    assert not [f for f in (settings.state.dir / "work").rglob("*") if f.is_file()]

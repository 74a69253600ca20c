"""The posture datasets end to end: both export paths, resume, expiry, throttling, the delta."""

import time
from datetime import timedelta

import duckdb
import pytest

from epf_emulator import Emulator, EmulatorSettings, Fault

from .conftest import settings_for, sync

pytestmark = pytest.mark.e2e

POSTURE_TABLES = [
    "EPF_AvHealth_CL",
    "EPF_SecureConfig_CL",
    "EPF_Vulnerabilities_CL",
    "EPF_VulnerabilityChanges_CL",
    "EPF_SoftwareInventory_CL",
    "EPF_Recommendations_CL",
    "EPF_CveCatalog_CL",
]


@pytest.fixture(scope="module")
def posture_tenant():
    # Small parts, so every export has several.
    with Emulator(
        EmulatorSettings(iot_sensors=0, devices=120, seed=21, export_part_rows=700)
    ) as emu:
        yield emu


def rows(db, sql, params=None):
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


def table_count(db, table, run_id):
    return rows(db, f'SELECT count(*) FROM "{table}" WHERE RunId = ?', [run_id])[0][0]


def requests_for(emu, prefix):
    out = {}
    for path, statuses in emu.stats()["requests"].items():
        if path.startswith(prefix):
            for status, n in statuses.items():
                out[int(status)] = out.get(int(status), 0) + n
    return out


@pytest.mark.parametrize("mode", ["json", "files"])
def test_every_posture_table_equals_the_truth(posture_tenant, tmp_path, mode):
    settings = settings_for(posture_tenant, tmp_path, export_mode=mode, export_page_size=1000)
    summary = sync(settings)
    assert summary.exit_code == 0, summary.errors()
    truth = posture_tenant.stats()["truth"]
    for table in POSTURE_TABLES:
        assert table_count(settings.store.path, table, summary.run_id) == truth[table], table
    vulns = next(o for o in summary.outcomes if o.dataset == "vulnerabilities")
    assert vulns.requests > 2  # several pages or parts
    # Every vulnerability belongs to installed software of its device.
    orphans = rows(
        settings.store.path,
        'SELECT count(*) FROM "EPF_Vulnerabilities_CL" v ANTI JOIN "EPF_SoftwareInventory_CL" s '
        "USING (DeviceId, SoftwareVendor, SoftwareName, SoftwareVersion)",
    )
    assert orphans == [(0,)]
    nulls = rows(
        settings.store.path, 'SELECT count(*) FROM "EPF_Vulnerabilities_CL" WHERE CveId IS NULL'
    )
    assert nulls[0][0] > 0  # installed software without a known CVE is kept


def test_device_group_move_duplicates_are_removed_from_the_delta(tmp_path):
    with Emulator(EmulatorSettings(iot_sensors=0, devices=300, seed=21)) as emu:
        settings = settings_for(emu, tmp_path, datasets=["vulnerability_changes"])
        summary = sync(settings)
        detail = emu.stats()["truth_detail"]["EPF_VulnerabilityChanges_CL"]
        truth = emu.stats()["truth"]["EPF_VulnerabilityChanges_CL"]
    assert detail["rbac_move_artefact_rows"] > 0  # the emulator served some
    assert detail["served_rows"] == truth + detail["rbac_move_artefact_rows"]
    assert summary.outcomes[0].rows == truth  # and every one of them was removed
    pairs = rows(
        settings.store.path,
        'SELECT count(*) FROM "EPF_VulnerabilityChanges_CL" f JOIN "EPF_VulnerabilityChanges_CL" n '
        "ON f.RecordId = n.RecordId AND f.EventTimestamp = n.EventTimestamp "
        "WHERE f.Status = 'Fixed' AND n.Status = 'New' AND f.RbacGroupName <> n.RbacGroupName",
    )
    assert pairs == [(0,)]


@pytest.mark.parametrize(
    "mode, failing_path",
    [("files", "/tvm-export/"), ("json", "/api/machines/SoftwareVulnerabilitiesByMachine")],
)
def test_an_export_failing_midway_resumes_with_no_duplicates(tmp_path, mode, failing_path):
    faults = (Fault(failing_path, 500, times=2, after=2),)  # the third part or page fails, twice
    settings_kw = {"devices": 100, "seed": 8, "export_part_rows": 500, "faults": faults}
    with Emulator(EmulatorSettings(iot_sensors=0, **settings_kw)) as emu:
        settings = settings_for(
            emu,
            tmp_path,
            datasets=["vulnerabilities"],
            export_mode=mode,
            export_page_size=500,
            max_retries=1,
        )
        first = sync(settings)
        assert first.exit_code == 1 and "500" in first.outcomes[0].error
        partial = table_count(settings.store.path, "EPF_Vulnerabilities_CL", first.run_id)
        assert partial > 0  # the first two parts or pages are in
        second = sync(settings)
        assert second.exit_code == 0, second.errors()
        outcome = second.outcomes[0]
        assert outcome.snapshot_run_id == first.run_id  # the same snapshot, completed
        truth = emu.stats()["truth"]["EPF_Vulnerabilities_CL"]
        db = settings.store.path
        assert table_count(db, "EPF_Vulnerabilities_CL", first.run_id) == truth
        assert outcome.rows == truth - partial
        dupes = 'SELECT count(*) - count(DISTINCT RecordId) FROM "EPF_Vulnerabilities_CL"'
        assert rows(db, dupes) == [(0,)]


def test_expired_links_are_requested_again(tmp_path):
    with Emulator(
        EmulatorSettings(
            iot_sensors=0, devices=60, seed=8, export_part_rows=700, sas_valid_seconds=1.0
        )
    ) as emu:
        settings = settings_for(emu, tmp_path, datasets=["vulnerabilities"], export_mode="files")

        def slow(tenant, dataset, n, finished):
            if not finished:
                time.sleep(1.3)  # outlive the links

        from endpoint_forensics.pipeline.run import run_sync
        from endpoint_forensics.sinks.duckdb import DuckDBSink

        sink = DuckDBSink(settings.store.path)
        try:
            summary = run_sync(settings, [sink], progress=slow)
        finally:
            sink.close()
        assert summary.exit_code == 0, summary.errors()
        assert summary.outcomes[0].rows == emu.stats()["truth"]["EPF_Vulnerabilities_CL"]
        assert requests_for(emu, "/tvm-export/").get(403, 0) >= 1
        assert requests_for(emu, "/api/machines/SoftwareVulnerabilitiesExport")[200] >= 2


def test_an_empty_200_and_a_429_on_the_export_budget_are_retried(tmp_path):
    path = "/api/machines/SoftwareVulnerabilitiesExport"
    faults = (Fault(path, 200, times=1, body=""), Fault(path, 429, times=1, after=1, retry_after=1))
    with Emulator(EmulatorSettings(iot_sensors=0, devices=40, seed=8, faults=faults)) as emu:
        settings = settings_for(emu, tmp_path, datasets=["vulnerabilities"], export_mode="files")
        summary = sync(settings)
        assert summary.exit_code == 0, summary.errors()
        assert summary.outcomes[0].rows == emu.stats()["truth"]["EPF_Vulnerabilities_CL"]
        assert summary.outcomes[0].throttled == 1
        assert requests_for(emu, path) == {200: 2, 429: 1}  # the empty one, then the real one


def test_the_delta_between_baselines_and_a_quiet_run(tmp_path):
    with Emulator(EmulatorSettings(iot_sensors=0, devices=150, seed=13)) as emu:
        settings = settings_for(emu, tmp_path)
        full = sync(settings)
        assert full.exit_code == 0, full.errors()
        db = settings.store.path
        before = rows(db, 'SELECT count(*) FROM "EPF_VulnerabilityChanges_CL"')[0][0]

        emu.advance(12)
        later = sync(settings)
        by_dataset = {o.dataset: o for o in later.outcomes}
        assert by_dataset["vulnerabilities"].outcome == "Skipped"  # the weekly baseline is not due
        new_changes = by_dataset["vulnerability_changes"].rows
        assert new_changes > 0
        keys = "RecordId, RbacGroupName, Status, EventTimestamp"
        dupes = rows(
            db, f'SELECT count(*) - count(DISTINCT ({keys})) FROM "EPF_VulnerabilityChanges_CL"'
        )
        assert dupes == [(0,)]  # the bucket served again was not delivered twice
        assert (
            rows(db, 'SELECT count(*) FROM "EPF_VulnerabilityChanges_CL"')[0][0]
            == before + new_changes
        )

        quiet = sync(settings)
        quiet_by = {o.dataset: o for o in quiet.outcomes}
        assert quiet_by["vulnerability_changes"].rows == 0
        full_rows = sum(o.rows for o in full.outcomes)
        quiet_rows = sum(o.rows for o in quiet.outcomes)
        full_requests = sum(o.requests for o in full.outcomes)
        quiet_requests = sum(o.requests for o in quiet.outcomes)
        assert quiet_rows < full_rows * 0.2
        assert quiet_requests <= full_requests
        print(
            f"full run: {full_rows} rows, {full_requests} requests, {full.wall_seconds:.2f} s; "
            f"quiet run: {quiet_rows} rows, {quiet_requests} requests, {quiet.wall_seconds:.2f} s"
        )
        assert timedelta(0) <= later.time_generated - full.time_generated

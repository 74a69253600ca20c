"""Memory and the workspace: a workspace that refuses one dataset's rows fails that dataset
alone, and says so; a decode short of memory falls back to the line-by-line reader."""

from pathlib import Path

import duckdb
import pytest

from endpoint_forensics.sources import decode
from endpoint_forensics.workspace import store
from epf_emulator import Emulator

from .conftest import settings_for, sync


def test_a_store_error_fails_its_dataset_alone(small_tenant: Emulator, tmp_path: Path) -> None:
    settings = settings_for(
        small_tenant,
        tmp_path,
        datasets=["machines", "recommendations", "cve_catalog"],
        export_mode="json",
    )
    # A workspace whose recommendations table cannot take the rows: every insert into it
    # fails inside DuckDB, as an out-of-memory or full disk would.
    con = duckdb.connect(str(settings.store.path))
    con.execute('CREATE TABLE "EPF_Recommendations_CL" ("RecommendationId" INTEGER)')
    con.close()

    summary = sync(settings)

    outcomes = {o.dataset: o for o in summary.outcomes}
    assert outcomes["machines"].outcome == "Succeeded"
    assert outcomes["cve_catalog"].outcome == "Succeeded"  # collected after the failure
    failed = outcomes["recommendations"]
    assert failed.outcome == "Failed" and failed.rows == 0
    assert "workspace ws.duckdb: writing EPF_Recommendations_CL failed" in failed.error
    assert summary.exit_code == 3
    runs = store.run_query(
        settings.store.path,
        "EPF_Runs_CL | project Dataset, Outcome, Rows, Error | order by Dataset asc",
    ).records()
    assert [(r["Dataset"], r["Outcome"]) for r in runs] == [
        ("cve_catalog", "Succeeded"),
        ("machines", "Succeeded"),
        ("recommendations", "Failed"),
        ("triage", "Succeeded"),  # the devices and the catalogue came: triage ran after them
    ]
    assert "EPF_Recommendations_CL" in runs[2]["Error"]
    assert store.run_query(settings.store.path, "EPF_Recommendations_CL | count").rows == [(0,)]
    devices = store.run_query(settings.store.path, "EPF_Devices_CL | count").rows
    assert devices == [(small_tenant.stats()["truth"]["EPF_Devices_CL"],)]


def test_a_decode_short_of_memory_still_lands_every_row(
    small_tenant: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every export part and delta page runs out of the decode's memory: each is read again
    line by line, and every table still equals the truth."""
    monkeypatch.setattr(decode, "_DECODE_MEMORY_MB", 8)  # under one JSON read buffer
    datasets = ["machines", "vulnerabilities", "vulnerability_changes", "secure_config"]
    settings = settings_for(small_tenant, tmp_path, datasets=datasets, export_mode="files")
    summary = sync(settings)
    assert summary.exit_code == 0, summary.errors()
    truth = small_tenant.stats()["truth"]
    for outcome in summary.outcomes:
        if outcome.dataset != "triage":  # decided from what was read, checked in test_triage
            assert outcome.rows == truth[outcome.table] > 0, outcome.dataset

"""The threat feeds end to end: read from the emulator's mirrors over HTTPS, imported
unchanged from the published files, a malformed entry quarantined, and an outage that keeps
the last good copy in use and says so in EPF_Runs_CL."""

from __future__ import annotations

import gzip
import io
import json
import zipfile
from pathlib import Path

import pytest

from endpoint_forensics.config import Settings, load_settings
from endpoint_forensics.pipeline.run import RunSummary, run_sync
from endpoint_forensics.sinks.duckdb import DuckDBSink
from endpoint_forensics.workspace import store
from epf_emulator import Emulator, EmulatorSettings, Fault

from ..emulator.conftest import client_for

pytestmark = pytest.mark.e2e

_KEV = "/feeds/kev/known_exploited_vulnerabilities.json"
_EPSS = "/feeds/epss/epss_scores-current.csv.gz"
_VULNRICHMENT = "/feeds/vulnrichment/archive/refs/heads/develop.zip"
_COMPARED = {
    "EPF_Kev_CL": "CveId, DateAdded, DueDate, ForensicTriage, KnownRansomwareCampaignUse, Cwes",
    "EPF_Epss_CL": "CveId, Epss, Percentile, ScoreDate, ModelVersion",
    "EPF_Vulnrichment_CL": "CveId, Exploitation, Automatable, TechnicalImpact, AssessedAt",
}


@pytest.fixture(scope="module")
def mirrors():
    with Emulator(EmulatorSettings(iot_sensors=0, devices=120, seed=7)) as emu:
        yield emu


def _settings(emu: Emulator, tmp_path: Path, **overrides: object) -> Settings:
    tmp_path.mkdir(parents=True, exist_ok=True)
    config = tmp_path / "epf.toml"
    emu.write_config(config, iot="none", mde=False, sentinel=False, feeds=True)
    values = {"store.path": str(tmp_path / "ws.duckdb"), "state.dir": str(tmp_path / "state")}
    values.update({f"feeds.{k}": v for k, v in overrides.items()})
    return load_settings(config, environ={}, overrides=values)


def _sync(emu: Emulator, settings: Settings) -> RunSummary:
    sink = DuckDBSink(settings.store.path)
    try:
        return run_sync(settings, [sink], now=emu.now)
    finally:
        sink.close()


def _published(emu: Emulator) -> dict[str, bytes]:
    with client_for(emu) as client:
        kev = client.get(emu.base_url + _KEV)
        epss = client.get(emu.base_url + _EPSS, follow_redirects=True)
        zipped = client.get(emu.base_url + _VULNRICHMENT)
    assert kev.status_code == epss.status_code == zipped.status_code == 200
    name = epss.url.path.rsplit("/", 1)[-1]
    assert name.startswith("epss_scores-2") and epss.history[0].status_code == 302
    return {"kev": kev.content, name: epss.content, "vulnrichment": zipped.content}


def _rows(settings: Settings, table: str) -> list[tuple]:
    query = f'SELECT {_COMPARED[table]} FROM "{table}" ORDER BY CveId'
    return store.run_query(settings.store.path, query, sql=True).rows


def test_every_feed_is_read_from_the_emulators_mirrors_with_its_provenance(mirrors, tmp_path):
    summary = _sync(mirrors, _settings(mirrors, tmp_path))
    assert summary.exit_code == 0, summary.errors()
    assert [(o.kind, o.dataset, o.outcome) for o in summary.outcomes] == [
        ("feed", "kev", "Succeeded"),
        ("feed", "epss", "Succeeded"),
        ("feed", "vulnrichment", "Succeeded"),
        ("triage", "triage", "Succeeded"),  # the feeds are triage's inputs: none open here
    ]
    assert summary.outcomes[-1].rows == 0
    published = _published(mirrors)
    kev = json.loads(published["kev"])
    [epss_name] = [k for k in published if k.startswith("epss_scores-")]
    epss_lines = gzip.decompress(published[epss_name]).decode().splitlines()
    with zipfile.ZipFile(io.BytesIO(published["vulnrichment"])) as archive:
        records = [json.loads(archive.read(n)) for n in archive.namelist() if n.endswith(".json")]
    path = Path(_settings(mirrors, tmp_path).store.path)
    counts = {
        r["Table"]: r
        for r in store.run_query(
            path,
            "union withsource=Table EPF_Kev_CL, EPF_Epss_CL, EPF_Vulnrichment_CL"
            " | summarize Rows = count(), Versions = dcount(FeedVersion),"
            " Version = any(FeedVersion), Source = any(FeedSource) by Table",
        ).records()
    }
    assert counts["EPF_Kev_CL"]["Rows"] == kev["count"] == len(kev["vulnerabilities"]) > 0
    assert counts["EPF_Kev_CL"]["Version"] == kev["catalogVersion"]
    assert counts["EPF_Kev_CL"]["Source"] == mirrors.base_url + _KEV
    assert counts["EPF_Epss_CL"]["Rows"] == len(epss_lines) - 2
    model, date = epss_lines[0].removeprefix("#").split(",")
    assert counts["EPF_Epss_CL"]["Version"] == f"{model.split(':')[1]} {date[11:21]}"
    assert counts["EPF_Vulnrichment_CL"]["Rows"] == len(records) > 0
    assert counts["EPF_Vulnrichment_CL"]["Version"].startswith("archive sha256:")
    assert {r["Versions"] for r in counts.values()} == {1}
    forensic = {e["cveID"] for e in kev["vulnerabilities"] if e["forensicTriage"] == "Yes"}
    stored = store.run_query(path, "EPF_Kev_CL | where ForensicTriage | project CveId").rows
    assert {r[0] for r in stored} == forensic and forensic


def test_the_published_files_import_unchanged_from_a_folder(mirrors, tmp_path):
    online = _settings(mirrors, tmp_path / "online")
    assert _sync(mirrors, online).exit_code == 0
    published = _published(mirrors)
    folder = tmp_path / "feeds"
    (folder / "epss").mkdir(parents=True)
    (folder / "known_exploited_vulnerabilities.json").write_bytes(published.pop("kev"))
    with zipfile.ZipFile(io.BytesIO(published.pop("vulnrichment"))) as archive:
        archive.extractall(folder / "clone")  # a clone's layout: vulnrichment-develop/2026/...
    [(epss_name, epss)] = published.items()
    (folder / "epss" / epss_name).write_bytes(epss)
    # An older day's file beside it: the folder's newest is read.
    (folder / "epss" / "epss_scores-2020-01-01.csv.gz").write_bytes(
        gzip.compress(
            b"#model_version:v2019,score_date:2020-01-01T00:00:00+0000\ncve,epss,percentile\n"
        )
    )
    offline = _settings(
        mirrors,
        tmp_path / "offline",
        **{
            "kev": {"path": str(folder / "known_exploited_vulnerabilities.json")},
            "epss": {"path": str(folder / "epss")},
            "vulnrichment": {"path": str(folder / "clone")},
        },
    )
    summary = _sync(mirrors, offline)
    assert summary.exit_code == 0, summary.errors()
    for table in _COMPARED:
        assert _rows(offline, table) == _rows(online, table), table
    sources = store.run_query(
        offline.store.path, "EPF_Epss_CL | summarize by FeedSource", functions=None
    ).rows
    assert sources == [(str(folder / "epss" / epss_name),)]


def test_a_malformed_kev_entry_is_quarantined_with_its_reason(mirrors, tmp_path):
    kev = json.loads(_published(mirrors)["kev"])
    kev["vulnerabilities"][0]["dateAdded"] = "last Tuesday"
    kev["vulnerabilities"][1].pop("cveID")
    path = tmp_path / "known_exploited_vulnerabilities.json"
    path.write_text(json.dumps(kev))
    settings = _settings(mirrors, tmp_path, datasets=["kev"], kev={"path": str(path)})
    summary = _sync(mirrors, settings)
    outcome, triage = summary.outcomes
    assert triage.dataset == "triage"
    assert (outcome.outcome, outcome.rows, outcome.quarantined) == (
        "Succeeded",
        len(kev["vulnerabilities"]) - 2,
        2,
    )
    lines = [
        json.loads(line)
        for f in (settings.state.dir / "quarantine").rglob("*.kev.jsonl")
        for line in f.read_text().splitlines()
    ]
    assert sorted(line["reason"] for line in lines) == [
        "dateAdded: expected an ISO 8601 timestamp, got 'last Tuesday'",
        "no cveID",
    ]


def test_a_feed_outage_keeps_the_last_good_copy_and_says_so(tmp_path):
    faults = (
        Fault(_KEV, 503, after=1, times=1_000),  # the first read succeeds, every later fails
        Fault(_EPSS, 200, after=1, times=1_000, body="<html>Sign in to the guest Wi-Fi</html>"),
    )
    with Emulator(EmulatorSettings(iot_sensors=0, devices=60, seed=4, faults=faults)) as emu:
        settings = _settings(emu, tmp_path, max_retries=0, datasets=["kev", "epss"])
        first = _sync(emu, settings)
        assert first.exit_code == 0, first.errors()
        emu.advance(24)
        second = _sync(emu, settings)
    assert [o.outcome for o in second.outcomes] == ["Failed", "Failed"]  # no triage: nothing new
    runs = store.run_query(
        settings.store.path,
        f'EPF_Runs_CL | where RunId == "{second.run_id}" | project Dataset, Outcome, Error',
    ).records()
    errors = {r["Dataset"]: r["Error"] for r in runs}
    kev_version = store.run_query(settings.store.path, "EPF_Kev_CL | summarize by FeedVersion").rows
    assert len(kev_version) == 1
    assert "503" in errors["kev"]
    assert f"the last good copy stays in use: {kev_version[0][0]} from https://" in errors["kev"]
    assert "does not start with its '#model_version" in errors["epss"]
    assert "the last good copy stays in use: v2025.03.14 " in errors["epss"]
    # Nothing of the failed reads was written: the first run's copies are the newest.
    written = store.run_query(
        settings.store.path,
        "union EPF_Kev_CL, EPF_Epss_CL | summarize by RunId",
    ).rows
    assert written == [(first.run_id,)]

"""``epf report device`` (one device's posture at T as a case file) and ``epf report fleet --at``
(the workbook's panels as the workspace stood at T): what each says is what the workspace
answers, the file renders completely in a real Chromium with the network off, and it carries
its provenance."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest

from endpoint_forensics.analytics.report import CONTENT_SECURITY_POLICY
from endpoint_forensics.analytics.triage_report import device_triage_items
from endpoint_forensics.web.device_report import device_report
from endpoint_forensics.web.panels import answer_workbook

from .conftest import Page

HOSTILE = "<img src=x onerror=alert(1)><script>alert(2)</script>\"'&"


def _epf(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "endpoint_forensics", *args], capture_output=True, text=True
    )


def _iso(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def _newest(db: Path) -> datetime:
    with duckdb.connect(str(db), read_only=True) as con:
        con.execute("SET TimeZone = 'UTC'")
        row = con.execute("SELECT max(SnapshotTime) FROM EPF_Devices_CL").fetchone()
    assert row is not None and isinstance(row[0], datetime)
    return row[0]


def _triaged_device(db: Path) -> str:
    """A device with open items in the newest triage run."""
    with duckdb.connect(str(db), read_only=True) as con:
        row = con.execute(
            "SELECT DeviceId FROM EPF_Triage_CL WHERE SnapshotTime ="
            " (SELECT max(SnapshotTime) FROM EPF_Triage_CL)"
            " AND DeviceId IN (SELECT DeviceId FROM EPF_Devices_CL)"
            " GROUP BY DeviceId ORDER BY count(*) DESC, DeviceId LIMIT 1"
        ).fetchone()
    assert row is not None
    return str(row[0])


def _tables(page: Any) -> dict[str, int]:
    """Each section's title and its table's rows on the page."""
    return dict(
        page.eval_on_selector_all(
            "h2",
            """els => els.map(h => {
                const next = h.nextElementSibling;
                const rows = next && next.tagName === 'TABLE' ? next.rows.length - 1 : 0;
                return [h.textContent, rows];
            })""",
        )
    )


@pytest.mark.e2e
def test_the_case_file_renders_offline_with_the_forensic_answer_and_its_provenance(
    demo: Path, tmp_path: Path, offline_page: Page
) -> None:
    device = _triaged_device(demo)
    at = _newest(demo) + timedelta(hours=14)
    out = tmp_path / "case.html"
    made = _epf("report", "device", "--db", str(demo), "--device", device,
                "--at", _iso(at), "--out", str(out))  # fmt: skip
    assert made.returncode == 0, made.stderr
    cli = _epf("forensics", "--db", str(demo), "--device", device, "--at", _iso(at),
               "--format", "json")  # fmt: skip
    answer = orjson.loads(cli.stdout)
    triage = device_triage_items(demo, device, at)
    assert triage, "the device has triage items"

    offline_page.page.goto(out.as_uri())
    assert offline_page.problems == []
    page = offline_page.page
    assert page.inner_text("h1") == f"Posture of {answer['device']['DeviceName']} at {_iso(at)}"
    missing = page.eval_on_selector_all(".missing li", "els => els.map(e => e.textContent)")
    assert missing == answer["missing"]
    tables = _tables(page)
    assert tables[f"Open vulnerabilities ({len(answer['vulnerabilities_open'])})"] == len(
        answer["vulnerabilities_open"]
    )
    assert tables[f"Changes in the window ({len(answer['changes'])})"] == len(answer["changes"])
    assert tables[f"Triage items ({len(triage)})"] == len(triage)
    assert tables["Snapshots the answer comes from"] == len(answer["snapshots"])

    # Provenance: the time, the tenant, the feeds by then, a hash of exactly this answer.
    facts = dict(
        page.eval_on_selector_all(
            ".provenance tr",
            "els => els.map(e => [e.cells[0].textContent, e.cells[1].textContent])",
        )
    )
    expected = device_report(demo, device, at)
    assert expected.answer["missing"] == answer["missing"]
    assert facts["As of"] == _iso(at)
    assert (
        facts["SHA-256 of the answer's rows"]
        == hashlib.sha256(orjson.dumps(expected.answer, option=orjson.OPT_SORT_KEYS)).hexdigest()
    )
    assert re.fullmatch(r"[0-9a-f-]{36}", facts["Defender tenant"])
    assert {"EPF_Kev_CL", "EPF_Epss_CL"} <= set(facts)
    newest = [v.split(" (")[0] for k, v in facts.items() if k.endswith("newest snapshot")]
    assert newest and all(t <= _iso(at) for t in newest)

    # Nothing but the page: no script, its style allowed by hash, nothing to fetch.
    text = out.read_text("utf-8")
    assert "<script" not in text and CONTENT_SECURITY_POLICY.replace("'", "&#x27;") in text
    assert not re.search(r"(src|href)=\"?https?:", text)


@pytest.mark.e2e
def test_a_device_name_carrying_markup_stays_text_in_the_case_file(
    demo: Path, tmp_path: Path, offline_page: Page
) -> None:
    db = tmp_path / "hostile.duckdb"
    shutil.copy(demo, db)
    device = _triaged_device(db)
    with duckdb.connect(str(db)) as con:
        con.execute(
            "UPDATE EPF_Devices_CL SET DeviceName = ? WHERE DeviceId = ?", [HOSTILE, device]
        )
    out = tmp_path / "case.html"
    made = _epf("report", "device", "--db", str(db), "--device", device,
                "--at", _iso(_newest(db)), "--out", str(out))  # fmt: skip
    assert made.returncode == 0, made.stderr
    offline_page.page.goto(out.as_uri())
    assert HOSTILE in offline_page.page.inner_text("h1")
    assert offline_page.page.locator("img, script").count() == 0
    assert offline_page.dialogs == [] and offline_page.problems == []


def test_an_unknown_device_or_time_is_said_plainly(demo: Path, tmp_path: Path) -> None:
    out = tmp_path / "case.html"
    unknown = _epf("report", "device", "--db", str(demo), "--device", "no-such-device",
                   "--at", "2026-11-03T00:00:00Z", "--out", str(out))  # fmt: skip
    assert unknown.returncode != 0 and "no-such-device" in unknown.stderr
    bad_time = _epf("report", "device", "--db", str(demo), "--device", "x", "--at", "yesterday",
                    "--out", str(out))  # fmt: skip
    assert (
        bad_time.returncode == 2 and "--at: 'yesterday' is not an ISO 8601 time" in bad_time.stderr
    )
    for result in (unknown, bad_time):
        assert "Traceback" not in result.stderr
    assert not out.exists()


@pytest.mark.e2e
def test_the_fleet_at_a_time_is_the_workspace_as_it_stood_then(demo: Path, tmp_path: Path) -> None:
    newest = _newest(demo)
    at = newest - timedelta(days=2, hours=12)
    then = answer_workbook(demo, at=at)
    # The same workspace with everything collected after T removed: the same answers.
    cut = tmp_path / "cut.duckdb"
    shutil.copy(demo, cut)
    with duckdb.connect(str(cut)) as con:
        for (table,) in con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE table_name LIKE 'EPF%'"
        ).fetchall():
            con.execute(f'DELETE FROM "{table}" WHERE SnapshotTime > ?', [at])
    truncated = answer_workbook(cut)
    assert then.results == truncated.results
    assert then.provenance["as_of"] == _iso(at)
    assert then.provenance["tables"] == truncated.provenance["tables"]
    now = answer_workbook(demo)
    assert now.results != then.results  # the fortnight changed the answers
    assert answer_workbook(demo, at=newest).results == now.results

    out = tmp_path / "fleet.html"
    made = _epf("report", "fleet", "--db", str(demo), "--out", str(out), "--at", _iso(at))
    assert made.returncode == 0, made.stderr
    assert f'"as_of":"{_iso(at)}"' in out.read_text("utf-8")

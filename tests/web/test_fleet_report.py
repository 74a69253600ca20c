"""``epf report fleet``: the Sentinel workbook's panels, answered from the demo workspace, in one
HTML file that renders completely in a real Chromium with the network off; values carrying
markup stay text."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import pytest

from endpoint_forensics.web import panels
from endpoint_forensics.web.fleet_report import fleet_report_html, write_fleet_report
from endpoint_forensics.web.panels import PanelResult, WorkbookAnswer, answer_workbook

from .conftest import Page

CHARTS = {"barchart", "piechart", "timechart"}


def _render(page: Page, path: Path) -> list[dict[str, Any]]:
    page.page.goto(path.as_uri())
    page.page.wait_for_selector("body[data-rendered=true]", timeout=30_000)
    return page.page.eval_on_selector_all(
        "[data-panel]",
        """els => els.map(e => ({
            name: e.dataset.panel, state: e.dataset.state, rows: Number(e.dataset.rows || 0),
            text: e.innerText,
            charts: [...e.querySelectorAll('canvas')].map(c => c.width * c.height),
        }))""",
    )


@pytest.mark.e2e
def test_every_panel_renders_offline_as_the_workspace_answers(
    demo: Path, tmp_path: Path, offline_page: Page
) -> None:
    answer = answer_workbook(demo)
    out = tmp_path / "fleet.html"
    out.write_text(fleet_report_html(answer), encoding="utf-8")
    shown = {p["name"]: p for p in _render(offline_page, out)}

    assert offline_page.problems == []
    items = {i["name"]: i for i in answer.workbook["items"] if i["type"] == 3}
    assert set(shown) == set(items) == set(answer.results)
    for name, panel in shown.items():
        result, content = answer.results[name], items[name]["content"]
        assert result.error is None, (name, result.error)
        if result.rows:
            assert panel["state"] == "rows" and panel["rows"] == len(result.rows), name
            drawn = content["visualization"] in CHARTS
            # A chart is drawn (a canvas with pixels) exactly where the workbook draws one.
            assert (len(panel["charts"]) == 1 and panel["charts"][0] > 0) == drawn, name
        else:
            assert panel["state"] == "empty" and content["noDataMessage"] in panel["text"], name
    # The demo answers every panel (an empty one says what to do: below, on an empty workspace).
    assert all(r.rows for r in answer.results.values())
    body = offline_page.page.inner_text("body")
    assert answer.provenance["rows_sha256"] in body
    assert all(t in body for t in answer.provenance["tenants"])


@pytest.mark.e2e
def test_a_device_name_carrying_markup_renders_as_text(
    demo: Path, tmp_path: Path, offline_page: Page
) -> None:
    hostile = "<img src=x onerror=alert(1)><script>alert(2)</script>\"'&"
    db = tmp_path / "hostile.duckdb"
    shutil.copy(demo, db)
    with duckdb.connect(str(db)) as con:
        tables = [
            t
            for (t,) in con.execute(
                "SELECT DISTINCT table_name FROM duckdb_columns() WHERE column_name = 'DeviceName'"
            ).fetchall()
        ]
        for table in tables:
            con.execute(
                f'UPDATE "{table}" SET DeviceName = ? WHERE DeviceName IS NOT NULL', [hostile]
            )
    out = tmp_path / "fleet.html"
    write_fleet_report(db, out)
    panels = {p["name"]: p for p in _render(offline_page, out)}

    assert offline_page.dialogs == [] and offline_page.problems == []
    assert hostile in panels["devices-grid"]["text"]
    assert offline_page.page.locator("#epf-root img, #epf-root script").count() == 0


def test_the_page_allows_only_its_own_inline_parts() -> None:
    breakout = "</script><script>alert(1)</script>"
    page = fleet_report_html(
        WorkbookAnswer(
            workbook={"items": []},
            parameters={},
            choices={},
            results={"p": PanelResult(["DeviceName"], [[breakout]])},
            provenance={"rows_sha256": "0"},
        )
    )
    policy = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', page)
    assert policy is not None
    assert "unsafe-inline" not in policy[1] and "default-src &#x27;none&#x27;" in policy[1]
    # The value is in the data block, escaped: no markup of it reaches the page.
    assert breakout not in page and "\\u003c/script\\u003e" in page
    assert not re.search(r"(src|href)=\"?https?:", page)


@pytest.mark.e2e
def test_a_panel_keeps_at_most_max_rows_and_says_so(
    demo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    full = answer_workbook(demo).results["devices-grid"]
    monkeypatch.setattr(panels, "MAX_ROWS", 5)
    cut = answer_workbook(demo).results["devices-grid"]
    assert len(full.rows) > 5 and not full.truncated
    assert cut.truncated and cut.rows == full.rows[:5]


@pytest.fixture
def demo_like_workspace(tmp_path: Path) -> Path:
    """An empty workspace: every panel answers with no rows and says what to do."""
    from endpoint_forensics.workspace import store

    db = tmp_path / "empty.duckdb"
    store.connect(db).close()
    return db


def test_an_empty_workspace_gives_every_panel_its_message(
    demo_like_workspace: Path, tmp_path: Path
) -> None:
    report = write_fleet_report(demo_like_workspace, tmp_path / "fleet.html")
    assert report.answered == 0 and report.failed == [] and report.panels >= 15


def test_the_command_names_a_missing_workspace(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "endpoint_forensics", "report", "fleet",
         "--db", str(tmp_path / "none.duckdb"), "--out", str(tmp_path / "x.html")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 2
    assert "does not exist" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "x.html").exists()

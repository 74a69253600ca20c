"""``epf serve``: every view of the dashboard on the demo workspace in a real Chromium, a device
followed from the fleet to its page and asked about a chosen time (the same answer as ``epf
forensics``), markup from Defender data shown as text, the token, GET only, KQL with ``epf
query``'s errors, and answers while a sync holds the workspace."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import httpx
import orjson
import pytest

from endpoint_forensics.web.server import (
    COOKIE,
    RunningServer,
    ServeLimits,
    create_app,
    start_server,
)
from endpoint_forensics.web.snapshot import WorkspaceSnapshot

from .conftest import Page

TOKEN = "test-token-0123456789"
HOSTILE = "<img src=x onerror=alert(1)><script>alert(2)</script>\"'&"


def _serve(db: Path, limits: ServeLimits | None = None) -> Iterator[RunningServer]:
    snapshot = WorkspaceSnapshot(db)
    running = start_server(
        create_app(snapshot, token=TOKEN, limits=limits or ServeLimits()),
        host="127.0.0.1",
        port=0,
        token=TOKEN,
    )
    try:
        yield running
    finally:
        running.stop()
        snapshot.close()


@pytest.fixture(scope="module")
def served(demo: Path) -> Iterator[RunningServer]:
    yield from _serve(demo, ServeLimits(query_rows=5))


def _open(page: Page, running: RunningServer, fragment: str = "") -> None:
    page.page.goto(running.url)
    page.page.wait_for_selector("body[data-rendered=true]", timeout=60_000)
    if fragment:
        _go(page, fragment)


def _go(page: Page, fragment: str) -> None:
    page.page.evaluate("() => { delete document.body.dataset.rendered; }")
    page.page.evaluate("f => { location.hash = f; }", fragment)
    page.page.wait_for_selector("body[data-rendered=true]", timeout=60_000)


@pytest.mark.e2e
def test_every_view_renders_from_the_workbooks_queries(
    served: RunningServer, local_page: Page
) -> None:
    _open(local_page, served)
    links = local_page.page.eval_on_selector_all("nav a", "els => els.map(e => e.hash)")
    views = [link for link in links if link.startswith("#view=")]
    assert len(views) >= 7 and "#device=" in links and "#query=" in links
    devices: dict[str, str] = {}  # the first device each view links to
    for view in views:
        _go(local_page, view)
        states = local_page.page.eval_on_selector_all(
            "[data-panel]", "els => els.map(e => [e.dataset.panel, e.dataset.state])"
        )
        assert states and all(state == "rows" for _, state in states), (view, states)
        assert local_page.page.locator(".error").count() == 0, view
        for panel, link in local_page.page.eval_on_selector_all(
            "[data-panel]",
            "els => els.map(e => [e.dataset.panel, (e.querySelector('a') || {}).hash])",
        ):
            if link:
                devices[panel] = link
    assert local_page.problems == []
    # Every panel that names devices links each to a device page that answers.
    assert {"devices-grid", "silent-devices", "forensic-items", "ot-also-it"} <= set(devices)
    with httpx.Client(base_url=served.base_url, cookies={COOKIE: TOKEN}) as client:
        for panel, link in devices.items():
            device = link.removeprefix("#device=")
            found = client.get("/api/device", params={"device": device})
            assert found.status_code == 200, (panel, found.text)


@pytest.mark.e2e
def test_a_device_followed_from_the_fleet_answers_at_a_picked_time_as_epf_forensics(
    served: RunningServer, demo: Path, local_page: Page
) -> None:
    _open(local_page, served, "#view=The original workbook's views")
    link = local_page.page.locator("[data-panel=devices-grid] a").first
    name = link.inner_text()
    link.click()
    local_page.page.wait_for_selector("[data-answer=missing]", timeout=60_000)
    assert local_page.page.inner_text("h2").startswith(name)
    device_id = local_page.page.url.split("#device=")[1].split("&")[0]

    local_page.page.evaluate("() => { delete document.body.dataset.rendered; }")
    local_page.page.fill("input[name=at]", "2026-11-03T14:00:00")
    local_page.page.click("button[type=submit]")
    local_page.page.wait_for_selector("body[data-rendered=true]", timeout=60_000)
    assert local_page.page.inner_text("h2") == f"{name} at 2026-11-03T14:00:00Z"

    cli = subprocess.run(
        [sys.executable, "-m", "endpoint_forensics", "forensics", "--db", str(demo),
         "--device", device_id, "--at", "2026-11-03T14:00:00Z", "--format", "json"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    answer = orjson.loads(cli.stdout)
    missing = local_page.page.eval_on_selector_all(
        "[data-answer=missing] li", "els => els.map(e => e.textContent)"
    )
    assert missing == answer["missing"]
    for key in ("changes", "vulnerabilities_open", "secure_config_failing"):
        shown = local_page.page.locator(f"[data-answer={key}] tbody tr").count()
        assert shown == len(answer[key]), key
    health = dict(
        local_page.page.eval_on_selector_all(
            "[data-answer=agent_health] tr",
            "els => els.map(e => [e.cells[0].textContent, e.cells[1].textContent])",
        )
    )
    assert health == {k: v or "" for k, v in answer["agent_health"].items()}
    assert local_page.problems == []


@pytest.mark.e2e
def test_a_view_as_of_a_picked_time_answers_as_the_workspace_stood_then(
    served: RunningServer, demo: Path, local_page: Page
) -> None:
    from endpoint_forensics.web.panels import answer_workbook

    at = "2026-11-02T12:00:00Z"
    _open(local_page, served, "#view=Fleet posture now")
    local_page.page.evaluate("() => { delete document.body.dataset.rendered; }")
    local_page.page.fill("input[name=at]", at.removesuffix("Z"))
    local_page.page.click("button[type=submit]")
    local_page.page.wait_for_selector("body[data-rendered=true]", timeout=60_000)
    assert f"as it stood at {at}" in local_page.page.inner_text("main")
    then = answer_workbook(demo, section="Fleet posture now", at=datetime.fromisoformat(at))
    shown = dict(
        local_page.page.eval_on_selector_all(
            "[data-panel]", "els => els.map(e => [e.dataset.panel, Number(e.dataset.rows)])"
        )
    )
    assert shown == {name: len(r.rows) for name, r in then.results.items()}
    assert local_page.problems == []
    with httpx.Client(base_url=served.base_url, cookies={COOKIE: TOKEN}) as client:
        wrong = client.get("/api/workbook", params={"at": "last tuesday"})
        assert wrong.status_code == 400 and "not an ISO 8601 time" in wrong.json()["error"]


@pytest.fixture(scope="module")
def hostile(demo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    db = tmp_path_factory.mktemp("hostile") / "hostile.duckdb"
    shutil.copy(demo, db)
    with duckdb.connect(str(db)) as con:
        for (table,) in con.execute(
            "SELECT DISTINCT table_name FROM duckdb_columns() WHERE column_name = 'DeviceName'"
        ).fetchall():
            con.execute(
                f'UPDATE "{table}" SET DeviceName = ? WHERE DeviceName IS NOT NULL', [HOSTILE]
            )
    yield from _serve(db)


@pytest.mark.e2e
def test_a_device_name_carrying_markup_renders_as_text(
    hostile: RunningServer, local_page: Page
) -> None:
    _open(local_page, hostile, "#view=The original workbook's views")
    grid = local_page.page.inner_text("[data-panel=devices-grid]")
    assert HOSTILE in grid
    local_page.page.locator("[data-panel=devices-grid] a").first.click()
    local_page.page.wait_for_selector("[data-answer=missing]", timeout=60_000)
    assert local_page.page.inner_text("h2").startswith(HOSTILE)
    assert local_page.page.locator("main img, main script").count() == 0
    assert local_page.dialogs == [] and local_page.problems == []


def test_the_token_gets_in_and_nothing_else_does(served: RunningServer) -> None:
    with httpx.Client(base_url=served.base_url) as client:
        for path in ("/", "/api/views", "/assets/app.js"):
            refused = client.get(path)
            assert refused.status_code == 401, path
        with httpx.Client(base_url=served.base_url, cookies={COOKIE: "wrong"}) as wrong:
            assert wrong.get("/api/views").status_code == 401
        assert client.get("/?token=wrong").status_code == 401
        entry = client.get(f"/?token={TOKEN}")
        assert entry.status_code == 303 and entry.headers["location"] == "/"
        assert "httponly" in entry.headers["set-cookie"].lower()
        views = client.get("/api/views")  # the cookie, from now on
        assert views.status_code == 200 and "Fleet posture now" in views.json()["sections"]
        assert client.post("/api/views").status_code == 405  # no write of any kind
        headers = views.headers
        assert "default-src 'none'" in headers["content-security-policy"]
        assert "unsafe-inline" not in headers["content-security-policy"]
        assert headers["x-frame-options"] == "DENY" and headers["cache-control"] == "no-store"
        assert client.get("/assets/../server.py").status_code == 404


def test_a_token_no_ascii_can_spell_is_refused_not_a_server_error(served: RunningServer) -> None:
    with httpx.Client(base_url=served.base_url) as client:
        assert client.get("/", params={"token": "\u00e9"}).status_code == 401
        assert client.get("/", params={"token": "\U00010000"}).status_code == 401


def test_the_query_page_has_epf_querys_engine_errors_and_limits(served: RunningServer) -> None:
    with httpx.Client(base_url=served.base_url, cookies={COOKIE: TOKEN}) as client:
        wrong = client.get("/api/query", params={"q": "EPF_Devices_CL | where devicename == 'x'"})
        assert wrong.status_code == 400
        assert "Sentinel would refuse" in wrong.json()["error"]
        assert "did you mean DeviceName?" in wrong.json()["error"]
        found = client.get("/api/query", params={"q": "EPF_Devices_CL | project DeviceName"})
        body = found.json()
        assert found.status_code == 200 and len(body["rows"]) == 5 and body["truncated"]
        unknown = client.get("/api/device", params={"device": "no-such-device"})
        assert unknown.status_code == 400 and "no-such-device" in unknown.json()["error"]


def test_a_time_utc_cannot_hold_is_a_plain_400(served: RunningServer) -> None:
    with httpx.Client(base_url=served.base_url, cookies={COOKIE: TOKEN}) as client:
        device = client.get("/api/query", params={"q": "EPF_Devices_CL | project DeviceId"})
        device_id = device.json()["rows"][0][0]
        for at in ("0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"):
            answer = client.get("/api/device", params={"device": device_id, "at": at})
            assert answer.status_code == 400, (at, answer.text)
            assert "error" in answer.json()
        workbook = client.get("/api/workbook", params={"at": "0001-01-01T00:00:00+01:00"})
        assert workbook.status_code == 400


def test_a_query_with_a_character_the_kql_parser_cannot_decode_is_refused_plainly(
    served: RunningServer,
) -> None:
    with httpx.Client(base_url=served.base_url, cookies={COOKIE: TOKEN}) as client:
        answer = client.get("/api/query", params={"q": "\U00010000"})
        assert answer.status_code == 400 and answer.json()["error"]


@pytest.mark.e2e
def test_it_answers_from_the_last_state_while_a_sync_writes(demo: Path, tmp_path: Path) -> None:
    db = tmp_path / "ws.duckdb"
    shutil.copy(demo, db)
    snapshot = WorkspaceSnapshot(db)
    first = snapshot.current()  # a copy of the state before the writer starts
    with subprocess.Popen(
        [sys.executable, "-c",
         "import duckdb, sys, time; con = duckdb.connect(sys.argv[1]);"
         " con.execute('CREATE TABLE writing (a INT)'); print('writing', flush=True);"
         " time.sleep(60)", str(db)],
        stdout=subprocess.PIPE, text=True,
    ) as writer:  # fmt: skip
        try:
            assert writer.stdout is not None and writer.stdout.readline().strip() == "writing"
            assert snapshot.current() == first  # the writer holds it: the last copy answers
            late = WorkspaceSnapshot(db)
            with pytest.raises(Exception, match="being written"):
                late.current()  # no copy yet: said plainly, not a lock error
            late.close()
        finally:
            writer.kill()
    refreshed = snapshot.current()
    assert refreshed != first  # the writer's commit is the new state
    with duckdb.connect(str(refreshed), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM writing").fetchone() == (0,)
    snapshot.close()


@pytest.mark.e2e
def test_a_view_is_answered_once_per_state_of_the_workspace(demo: Path, tmp_path: Path) -> None:
    db = tmp_path / "ws.duckdb"
    shutil.copy(demo, db)
    snapshot = WorkspaceSnapshot(db)
    running = start_server(
        create_app(snapshot, token=TOKEN, prewarm=True), host="127.0.0.1", port=0, token=TOKEN
    )
    try:
        with httpx.Client(base_url=running.base_url, cookies={COOKIE: TOKEN}, timeout=120) as c:
            view = {"section": "Collector health"}
            first = c.get("/api/workbook", params=view)
            # The same state: the same answer, not computed again (its written_at is the first's).
            assert c.get("/api/workbook", params=view).content == first.content
            with duckdb.connect(str(db)) as con:
                con.execute(
                    "INSERT INTO EPF_Runs_CL (TimeGenerated, SnapshotTime, RunId, SourceName,"
                    " Dataset, TableName, Outcome, Rows, Throttled) SELECT max(TimeGenerated),"
                    " max(SnapshotTime), 'a-new-run', 'a-new-source', 'machines',"
                    " 'EPF_Devices_CL', 'Succeeded', 1, 7 FROM EPF_Runs_CL"
                )
            after = c.get("/api/workbook", params=view).json()
            sources = [row[0] for row in after["results"]["throttling"]["rows"]]
            assert "a-new-source" in sources  # a new state: answered again
            assert "a-new-source" not in first.text
    finally:
        running.stop()
        snapshot.close()


def test_the_current_copy_is_held_open_so_each_request_shares_its_database(
    tmp_path: Path,
) -> None:
    from endpoint_forensics.workspace import store

    db = tmp_path / "ws.duckdb"
    store.connect(db).close()
    snapshot = WorkspaceSnapshot(db)
    try:
        copy = snapshot.current()
        # A setting of the database instance outlives a request's connection only if the
        # instance does: the snapshot's own connection keeps it (and its cached pages).
        first = store.connect(copy, read_only=True)
        first.execute("SET GLOBAL threads = 1")
        first.close()
        second = store.connect(copy, read_only=True)
        assert second.execute("SELECT current_setting('threads')").fetchone() == (1,)
        second.close()
    finally:
        snapshot.close()
    # Closed with the snapshot: a new connection starts a new instance.
    fresh = duckdb.connect(str(tmp_path / "ws.duckdb"), read_only=True)
    assert fresh.execute("SELECT current_setting('threads')").fetchone() != (1,)
    fresh.close()


def _epf(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "endpoint_forensics", *args], capture_output=True, text=True
    )


def test_serving_beyond_loopback_keeps_the_token(tmp_path: Path) -> None:
    result = _epf("serve", "--db", str(tmp_path / "x.duckdb"), "--host", "0.0.0.0", "--no-token")
    assert result.returncode == 2 and "not a loopback address" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.e2e
def test_the_command_prints_the_address_with_its_token(demo: Path, tmp_path: Path) -> None:
    with subprocess.Popen(
        [sys.executable, "-m", "endpoint_forensics", "serve", "--db", str(demo), "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "TMPDIR": str(tmp_path)},  # where it keeps its copies
    ) as server:  # fmt: skip
        try:
            assert server.stdout is not None
            line = server.stdout.readline()
            found = re.search(r"(http://127\.0\.0\.1:\d+/)\?token=(\S+)", line)
            assert found, line
            with httpx.Client() as client:
                assert client.get(found[1]).status_code == 401
                assert client.get(found[0], follow_redirects=True).status_code == 200
                # A query starts Microsoft's parser (.NET), which hooks SIGTERM its own way.
                asked = client.get(f"{found[1]}api/query", params={"q": "EPF_Devices_CL | count"})
                assert asked.status_code == 200
            assert list(tmp_path.glob("epf-serve-*/*.duckdb"))  # the copy it answers from
        finally:
            server.terminate()  # as a service manager stops it
            server.wait(timeout=30)
    # Stopped, it leaves no copy of the workspace behind.
    assert list(tmp_path.iterdir()) == []


def test_assets_served_are_the_packaged_ones() -> None:
    from endpoint_forensics.web.server import ASSETS, _asset

    for name in ASSETS:
        assert _asset(name), name
    app: Any = _asset("app.html").decode()
    # The page loads only what the server serves, from itself.
    assert set(re.findall(r'(?:src|href)="/assets/([^"]+)"', app)) == set(ASSETS)


def test_the_copies_a_killed_server_left_are_removed_by_the_next(
    demo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    left = tmp_path / f"epf-serve-{gone}-abc123"
    left.mkdir()
    (left / "workspace-1.duckdb").write_bytes(b"a killed server's copy")
    running = tmp_path / f"epf-serve-{os.getpid()}-def456"  # a server still running
    running.mkdir()
    snapshot = WorkspaceSnapshot(demo)
    try:
        assert not left.exists() and running.exists()
    finally:
        snapshot.close()
    assert [p.name for p in tmp_path.iterdir()] == [running.name]

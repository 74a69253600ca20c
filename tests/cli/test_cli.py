"""The `epf` command as a user runs it: a separate process, real arguments, real exit codes."""

import os
import re
import ssl
import subprocess
import sys
import tomllib
from pathlib import Path

import httpx
import orjson
import pytest

import endpoint_forensics
from endpoint_forensics.tables import TABLES

from ..triage_check import check_triage_rows


def epf(*args, cwd=None, env=None):
    return subprocess.run(
        [sys.executable, "-m", "endpoint_forensics", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=600,
    )


def test_help_works_with_h_and_lists_every_command():
    result = epf("-h")
    assert result.returncode == 0
    for command in ("demo", "emulator", "sync", "query", "tables"):
        assert command in result.stdout


def test_tables_json_is_the_registry():
    result = epf("tables", "--format", "json")
    assert result.returncode == 0
    printed = orjson.loads(result.stdout)
    assert [t["name"] for t in printed] == list(TABLES)
    devices = printed[0]
    assert devices["key"] == ["DefenderTenantId", "DeviceId"]
    assert {"name": "MachineTags", "type": "dynamic"}.items() <= next(
        c for c in devices["columns"] if c["name"] == "MachineTags"
    ).items()
    assert devices["source"] == "mde:machines"


def test_a_malformed_config_names_the_key_and_exits_2(tmp_path):
    config = tmp_path / "epf.toml"
    config.write_text(
        '[[tenants]]\nname = "x"\ntenant_id = "t"\nclient_secret = "s3cr3t"\npage_size = "lots"\n'
    )
    result = epf("sync", "--config", str(config))
    assert result.returncode == 2
    assert "tenants[0].client_id: is required" in result.stderr
    assert "tenants[0].page_size" in result.stderr
    assert "Traceback" not in result.stderr and "s3cr3t" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_wrong_secret_is_one_clear_line_and_a_failed_run(small_cli_tenant, tmp_path):
    config = tmp_path / "epf.toml"
    small_cli_tenant.write_config(config, iot="none", sentinel=False)
    text = config.read_text()
    real = small_cli_tenant.client_secret
    config.write_text(text.replace(real, "not-the-secret-at-all"))
    result = epf("sync", "--config", str(config), "--db", str(tmp_path / "ws.duckdb"))
    assert result.returncode == 1
    errors = [l for l in result.stderr.splitlines() if l.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert "AADSTS7000215" in errors[0] and "emulated" in errors[0]
    assert "Traceback" not in result.stderr
    assert "not-the-secret-at-all" not in result.stderr + result.stdout
    assert real not in result.stderr + result.stdout


def test_sync_then_query_in_every_format(small_cli_tenant, tmp_path):
    config = tmp_path / "epf.toml"
    small_cli_tenant.write_config(config)
    db = tmp_path / "ws.duckdb"
    result = epf("sync", "--config", str(config), "--db", str(db))
    assert result.returncode == 0, result.stderr
    assert "EPF_Devices_CL" in result.stdout and "Succeeded" in result.stdout
    assert small_cli_tenant.client_secret not in result.stdout + result.stderr

    as_json = epf(
        "query",
        "--db",
        str(db),
        "--format",
        "json",
        "EPF_Devices_CL | summarize arg_max(TimeGenerated, *) by DeviceId | count",
    )
    assert as_json.returncode == 0, as_json.stderr
    assert orjson.loads(as_json.stdout) == [{"Count": 40}]

    as_csv = epf(
        "query",
        "--db",
        str(db),
        "--format",
        "csv",
        "EPF_Devices_CL | summarize n = count() by OSPlatform | order by OSPlatform asc",
    )
    lines = as_csv.stdout.splitlines()
    assert lines[0] == "OSPlatform,n" and sum(int(l.rsplit(",", 1)[1]) for l in lines[1:]) == 40

    as_sql = epf(
        "query",
        "--db",
        str(db),
        "--sql",
        "--format",
        "json",
        'SELECT count(*) AS n FROM "EPF_AgentHealth_CL"',
    )
    assert (
        orjson.loads(as_sql.stdout)[0]["n"]
        == small_cli_tenant.stats()["truth"]["EPF_AgentHealth_CL"]
    )

    bad = epf("query", "--db", str(db), "EPF_Devices_CL | where NoSuchColumn == 1")
    assert bad.returncode == 2 and bad.stderr.startswith("error:") and "Traceback" not in bad.stderr


def test_query_on_a_missing_workspace_says_what_to_do(tmp_path):
    result = epf("query", "--db", str(tmp_path / "none.duckdb"), "EPF_Devices_CL | count")
    assert result.returncode == 2
    assert "does not exist" in result.stderr and "epf demo" in result.stderr


@pytest.mark.e2e
def test_demo_counts_match_the_truth(tmp_path):
    db = tmp_path / "demo.duckdb"
    result = epf(
        "demo", "--devices", "1500", "--seed", "7", "--days", "2", "--db", str(db), "--no-serve",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "Synced 3 days of the emulated tenant" in result.stdout
    assert "the state at the end): yes" in result.stdout
    assert "Devices per platform" in result.stdout and "Agent health tests failing" in result.stdout
    # Every IoT table is in the truth the counts were compared with, and each sensor is shown.
    assert "EPF_IotEvents_CL" in result.stdout and "EPF_IotExposure_CL" in result.stdout
    # (sensor-2's last sync fails: the demo deletes its token; the console still lists it.)
    assert re.search(r"^  sensor-1 .* SYNCED$", result.stdout, re.MULTILINE)
    # It triages every open vulnerability, then ends with the forensic answer for the incident.
    assert "need a forensic investigation within 3 days" in result.stdout
    assert "The incident:" in result.stdout and "Tamper protection was off." in result.stdout
    # What it made go wrong is told, and is no error: an event storm, a deleted sensor token.
    assert "What went wrong during the fortnight, on purpose" in result.stdout
    assert "floods sensor sensor-1" in result.stdout and "sensor sensor-2 is" in result.stdout
    assert "error:" not in result.stderr
    # The local workspace only, unless asked for (--sentinel): nothing was sent.
    assert "Sentinel (emulated" not in result.stdout and "sentinel: sent" not in result.stdout
    triage = epf("query", "--db", str(db), "--format", "json", "EPF_Triage_CL")
    rows = orjson.loads(triage.stdout)
    assert rows, triage.stderr
    check_triage_rows(rows)
    latest = epf(
        "query",
        "--db",
        str(db),
        "--format",
        "json",
        "EPF_DevicesAt(datetime(2026-11-05T00:00:00Z)) | count",  # the demo ends at the anchor
    )
    assert latest.returncode == 0, latest.stderr
    assert 1400 < orjson.loads(latest.stdout)[0]["Count"] <= 1500
    families = epf(
        "query",
        "--db",
        str(db),
        "--format",
        "json",
        "EPF_AgentHealth_CL | summarize n = count() by OSFamily",
    )
    assert {r["OSFamily"] for r in orjson.loads(families.stdout)} == {"Windows", "macOS", "Linux"}


@pytest.mark.e2e
def test_demo_runs_again_over_its_own_workspace_and_spares_any_other(tmp_path):
    """`make demo` twice: the second demo starts its fortnight afresh (a workspace that already
    held it would find every dataset synced); a workspace of another tenant is not touched."""
    db = tmp_path / "demo.duckdb"
    args = ("demo", "--devices", "40", "--seed", "3", "--days", "2", "--db", str(db), "--no-serve")
    for _ in range(2):
        result = epf(*args, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert "the state at the end): yes" in result.stdout
    import duckdb

    other = tmp_path / "contoso.duckdb"
    con = duckdb.connect(str(other))
    con.execute("CREATE TABLE EPF_Runs_CL (SourceKind VARCHAR, SourceName VARCHAR)")
    con.execute("INSERT INTO EPF_Runs_CL VALUES ('tenant', 'contoso')")
    con.close()
    refused = epf(*args[:-3], "--db", str(other), "--no-serve", cwd=tmp_path)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "is not a workspace `epf demo` wrote" in refused.stderr and str(other) in refused.stderr
    con = duckdb.connect(str(other), read_only=True)
    assert con.execute("FROM EPF_Runs_CL").fetchall() == [("tenant", "contoso")]
    con.close()


def test_demo_with_sentinel_checks_what_the_emulated_sentinel_received(tmp_path):
    db = tmp_path / "demo.duckdb"
    result = epf(
        "demo", "--devices", "40", "--seed", "3", "--days", "2", "--db", str(db), "--no-serve",
        "--sentinel", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    found = re.search(
        r"^Sentinel \(emulated Logs Ingestion API\) received the same rows: yes \(([0-9,]+)\)$",
        result.stdout,
        re.MULTILINE,
    )
    assert found, result.stdout
    stored = epf("query", "--db", str(db), "--sql", "--format", "json", _STORED_ROWS)
    assert int(found.group(1).replace(",", "")) == orjson.loads(stored.stdout)[0]["n"] > 0


# Every row of every table of the workspace: what Sentinel should have received.
_STORED_ROWS = "SELECT " + " + ".join(f'(SELECT count(*) FROM "{t}")' for t in TABLES) + " AS n"


@pytest.mark.e2e
def test_emulator_writes_a_config_that_sync_uses(tmp_path):
    import time

    config = tmp_path / "emulated.toml"
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "endpoint_forensics",
            "emulator",
            "--devices",
            "25",
            "--port",
            "0",
            "--write-config",
            str(config),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not config.exists() and time.monotonic() < deadline and server.poll() is None:
            time.sleep(0.1)
        assert config.exists(), "the emulator did not write its config"
        # The emulated world keeps its own calendar: the sync collects as of its clock.
        tenant = tomllib.loads(config.read_text())["tenants"][0]
        stats = httpx.get(
            f"{tenant['mde_base_url']}/_emulator/stats",
            verify=ssl.create_default_context(cafile=tenant["ca_bundle"]),
        ).json()
        db = str(tmp_path / "ws.duckdb")
        result = epf("sync", "--config", str(config), "--db", db, "--now", stats["clock"]["now"])
        assert result.returncode == 0, result.stderr
        for table in ("EPF_Devices_CL", "EPF_VulnerabilityChanges_CL"):
            count = epf("query", "--db", db, "--format", "json", f"{table} | count")
            assert orjson.loads(count.stdout) == [{"Count": stats["truth"][table]}], table
        assert stats["truth"]["EPF_Devices_CL"] == 25
        assert stats["truth"]["EPF_VulnerabilityChanges_CL"] > 0
    finally:
        server.terminate()
        _, err = server.communicate(timeout=30)
    assert "https://127.0.0.1:" in err
    assert f"--now {stats['clock']['now'][:19]}" in err
    assert "Traceback" not in err


# `epf` as if the demo extra were not installed: importing any of its modules fails, as it
# would in an environment without them.
WITHOUT_DEMO_EXTRA = """
import runpy, sys

MISSING = {"starlette", "uvicorn", "python_multipart", "multipart", "trustme"}


class NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in MISSING:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, NotInstalled())
sys.argv = ["epf", *sys.argv[1:]]
runpy.run_module("endpoint_forensics", run_name="__main__", alter_sys=True)
"""


@pytest.mark.parametrize(("command", "option"), [("demo", "--no-serve"), ("emulator", "--port=0")])
def test_without_the_demo_extra_the_emulator_commands_say_what_to_install(
    command, option, tmp_path
):
    # The package under test, wherever the process starts (cwd is an empty folder).
    src = str(Path(endpoint_forensics.__file__).parents[1])
    path = os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_DEMO_EXTRA, command, "--devices", "5", option],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": path},
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"epf {command} needs the demo extra" in lines[0]
    assert "starlette, uvicorn, python_multipart, trustme not installed" in lines[0]
    assert lines[0].endswith("pip install 'endpoint-forensics[demo]'")
    assert list(tmp_path.iterdir()) == []  # no workspace, no emulator state


def test_deploy_arm_writes_every_table_and_the_dcrs(tmp_path):
    out = tmp_path / "epf.json"
    result = epf("deploy", "arm", "--out", str(out))
    assert result.returncode == 0, result.stderr
    template = orjson.loads(out.read_bytes())
    tables = {
        r["name"].split("/")[-1].rstrip("')]")
        for r in template["resources"]
        if r["type"] == "Microsoft.OperationalInsights/workspaces/tables"
    }
    assert any("EPF_Devices_CL" in t for t in tables)
    assert not any("AD4IOT" in t for t in tables)  # compat tables only with --compat
    assert "dataCollectionRules" in template["outputs"]
    compat = epf("deploy", "arm", "--out", str(out), "--compat")
    assert compat.returncode == 0 and b"AD4IOT_Events_CL" in out.read_bytes()


def test_doctor_on_a_good_config_finds_nothing_to_fix(small_cli_tenant, tmp_path):
    config = tmp_path / "epf.toml"
    small_cli_tenant.write_config(config)
    result = epf("doctor", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Nothing to fix." in result.stdout and "FAIL" not in result.stdout
    assert small_cli_tenant.client_secret not in result.stdout + result.stderr

"""One run at a time per state folder: a second `epf sync` or `epf run` tick on the same state
exits with a clear message and changes nothing, or waits with --wait; runs never overlap."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import duckdb

from tests.cli.test_cli import epf

# Holds the run lock of a state folder until its stdin closes (or for some seconds), as
# another epf process would.
_HOLDER = """
import sys, time
from pathlib import Path
from endpoint_forensics.pipeline.lock import run_lock
with run_lock(Path(sys.argv[1]), command="epf sync"):
    print("held", flush=True)
    hold = float(sys.argv[2])
    if hold:
        time.sleep(hold)
    else:
        sys.stdin.read()
"""


def hold_run_lock(state: Path, seconds: float = 0.0) -> subprocess.Popen[str]:
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(state), str(seconds)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    return holder


def release_run_lock(holder: subprocess.Popen[str]) -> None:
    holder.communicate(timeout=30)  # closes its stdin: it lets go and ends
    assert holder.returncode == 0


def _config(tenant, tmp_path: Path) -> tuple[Path, Path, Path]:
    config = tmp_path / "epf.toml"
    tenant.write_config(config, iot="none", sentinel=False)
    state = tmp_path / "state"
    text = config.read_text()
    config.write_text(
        f'{text}\n[state]\ndir = "{state.as_posix()}"\n' if "[state]" not in text else text
    )
    return config, state, tmp_path / "ws.duckdb"


def test_a_sync_on_a_state_another_run_holds_exits_at_once_and_changes_nothing(
    small_cli_tenant, tmp_path
):
    config, state, db = _config(small_cli_tenant, tmp_path)
    holder = hold_run_lock(state)
    try:
        started = time.monotonic()
        result = epf("sync", "--config", str(config), "--db", str(db))
        took = time.monotonic() - started
        assert result.returncode == 75, result.stderr
        errors = [l for l in result.stderr.splitlines() if l.startswith("error:")]
        assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
        assert f"another run holds the state folder {state}" in errors[0]
        assert f"process {holder.pid} on" in errors[0] and "--wait SECONDS" in errors[0]
        assert took < 20  # it did not wait
        assert not db.exists()  # the workspace was not even opened
        assert sorted(p.name for p in state.iterdir()) == ["run.lock", "run.lock.json"]

        # `epf run`: the tick is skipped, said so, and with no tick run the exit is 75 too.
        ticked = epf("run", "--config", str(config), "--db", str(db), "--runs", "1")
        assert ticked.returncode == 75, ticked.stderr
        assert "warning: tick skipped: another run holds the state folder" in ticked.stderr
        assert "Traceback" not in ticked.stderr and not db.exists()
    finally:
        release_run_lock(holder)
    assert sorted(p.name for p in state.iterdir()) == ["run.lock"]  # the owner file went with it

    after = epf("sync", "--config", str(config), "--db", str(db))
    assert after.returncode == 0, after.stderr


def test_a_sync_with_wait_starts_when_the_run_before_it_ends(small_cli_tenant, tmp_path):
    config, state, db = _config(small_cli_tenant, tmp_path)
    holder = hold_run_lock(state, seconds=3)
    started = time.monotonic()
    result = epf("sync", "--config", str(config), "--db", str(db), "--wait", "120")
    assert result.returncode == 0, result.stderr
    release_run_lock(holder)
    assert time.monotonic() - started >= 2.5  # it waited for the holder


def test_two_syncs_started_together_run_one_after_the_other_and_store_each_row_once(
    small_cli_tenant, tmp_path
):
    config, _, db = _config(small_cli_tenant, tmp_path)
    command = [sys.executable, "-m", "endpoint_forensics", "sync", "--config", str(config)]
    both = [
        subprocess.Popen(
            [*command, "--db", str(db), "--wait", "300"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for p in both:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
    con = duckdb.connect(str(db), read_only=True)
    try:
        runs = con.execute(
            'SELECT RunId, min(StartTime), max(EndTime) FROM "EPF_Runs_CL" GROUP BY RunId'
            " ORDER BY 2"
        ).fetchall()
        assert len(runs) == 2
        (_, _, first_end), (_, second_start, _) = runs
        assert first_end <= second_start  # the second began after the first had ended
        # The second found every snapshot delivered and collected nothing twice.
        devices = con.execute(
            'SELECT count(*), count(DISTINCT DeviceId) FROM "EPF_Devices_CL"'
        ).fetchall()[0]
    finally:
        con.close()
    assert devices == (40, 40)


def test_a_workspace_another_process_writes_is_busy_not_broken(small_cli_tenant, tmp_path):
    config, _, db = _config(small_cli_tenant, tmp_path)
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys; con = duckdb.connect(sys.argv[1]); print('open', flush=True);"
            " sys.stdin.read()",
            str(db),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert writer.stdout is not None and writer.stdout.readline().strip() == "open"
    try:
        query = epf("query", "--db", str(db), "EPF_Devices_CL | count")
        sync = epf("sync", "--config", str(config), "--db", str(db))
    finally:
        writer.communicate(timeout=30)
    for result in (query, sync):
        assert result.returncode == 75, result.stderr
        (error,) = [l for l in result.stderr.splitlines() if l.startswith("error:")]
        assert f"is open in another process (process {writer.pid})" in error
        assert "Traceback" not in result.stderr
    assert epf("sync", "--config", str(config), "--db", str(db)).returncode == 0  # free again

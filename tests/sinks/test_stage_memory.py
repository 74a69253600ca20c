"""[store] stage_memory_mb: what the workspace's engine may hold for a stage over the whole
workspace (triage), so a sync's peak memory can be bounded by a setting."""

from pathlib import Path

import duckdb
import pytest

from endpoint_forensics.config import load_settings
from endpoint_forensics.errors import ConfigError
from endpoint_forensics.sinks import close_sinks, open_sinks
from endpoint_forensics.tables import TRIAGE
from endpoint_forensics.workspace import store

from ..test_config import GOOD, write


def _config(tmp_path: Path, line: str) -> str:
    where = f'path = "{tmp_path / "ws.duckdb"}"'
    return GOOD.replace('path = "ws.duckdb"', f"{where}\n{line}")


def _limit(con) -> str:
    return str(con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0])


def _mib(mb: int) -> str:
    """How DuckDB itself shows a limit of ``mb`` MB."""
    con = duckdb.connect()
    try:
        con.execute(f"SET memory_limit = '{mb}MB'")
        return _limit(con)
    finally:
        con.close()


def test_a_stage_takes_the_configured_memory_and_collection_gets_its_own_back(tmp_path: Path):
    text = _config(tmp_path, "stage_memory_mb = 200")
    settings = load_settings(write(tmp_path, text), environ={"CONTOSO_SECRET": "x"})
    assert settings.store.stage_memory_mb == 200
    sinks = open_sinks(settings)
    try:
        workspace = sinks[0]
        seen = []

        def query(con):
            seen.append(_limit(con))
            return f'SELECT * FROM "{TRIAGE.name}" LIMIT 0', []

        workspace.derive(TRIAGE, unit="triage/r1/triage/all", stamp={}, query=query)
        with workspace.reading() as cursor:
            seen.append(_limit(cursor))
        seen.append(_limit(workspace._con))
    finally:
        close_sinks(sinks)
    assert seen == [_mib(200), _mib(200), _mib(store.SYNC_MEMORY_MB)]


def test_without_the_setting_a_stage_gets_a_bound_not_a_share_of_the_machine(tmp_path: Path):
    text = _config(tmp_path, "")
    settings = load_settings(write(tmp_path, text), environ={"CONTOSO_SECRET": "x"})
    sinks = open_sinks(settings)
    try:
        with sinks[0].reading() as cursor:
            found = _limit(cursor)
    finally:
        close_sinks(sinks)
    # A share of the machine grows with it (4 GB here), and a sync's peak with the fleet.
    assert found == _mib(store.STAGE_MEMORY_MB) == _mib(1024)


@pytest.mark.parametrize("value", ["16", '"lots"', "-1"])
def test_a_wrong_stage_memory_names_the_key(tmp_path: Path, value: str):
    text = _config(tmp_path, f"stage_memory_mb = {value}")
    with pytest.raises(ConfigError, match=r"store\.stage_memory_mb"):
        load_settings(write(tmp_path, text), environ={"CONTOSO_SECRET": "x"})

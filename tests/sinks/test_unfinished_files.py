"""A DuckDB file whose creation the disk cut short (shorter than its headers) holds nothing:
the workspace and the Sentinel sink's change history make it again instead of failing every
run after; a file damaged past its headers is said in one line, never removed."""

from pathlib import Path

import duckdb
import pytest

from endpoint_forensics.errors import ConfigError
from endpoint_forensics.sinks.history import HistoryFile
from endpoint_forensics.workspace import store


def _cut_short(path: Path, keep: int) -> None:
    """What a disk that filled during DuckDB's creation of ``path`` leaves."""
    duckdb.connect(str(path)).close()
    whole = path.read_bytes()
    path.write_bytes(whole[:keep])


@pytest.mark.parametrize("keep", [0, 4096, 8192])
def test_a_workspace_cut_short_at_creation_is_made_again(tmp_path: Path, keep: int) -> None:
    path = tmp_path / "ws.duckdb"
    _cut_short(path, keep)
    with pytest.raises(duckdb.IOException):
        duckdb.connect(str(path))  # what the disk left: DuckDB refuses it
    con = store.connect(path)
    try:
        assert con.execute("SELECT count(*) FROM duckdb_tables()").fetchone()[0] > 0
    finally:
        con.close()


def test_a_change_history_cut_short_at_creation_is_made_again(tmp_path: Path) -> None:
    path = tmp_path / "history.duckdb"
    _cut_short(path, 8192)
    history = HistoryFile(path)
    history.begin()
    history.commit()
    history.close()
    assert path.stat().st_size >= 3 * 4096


def test_a_workspace_damaged_past_its_headers_is_said_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "ws.duckdb"
    con = store.connect(path)
    con.close()
    whole = path.read_bytes()
    path.write_bytes(whole[:4096] + b"\xff" * (len(whole) - 4096))
    with pytest.raises(ConfigError, match="cannot open workspace"):
        store.connect(path)
    assert path.stat().st_size == len(whole)

"""Fixtures the analytics tests share."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from endpoint_forensics.demo import run_demo


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    db = tmp_path_factory.mktemp("demo") / "demo.duckdb"
    # Six days: the incident device turns tamper protection off three days before the
    # incident, so the first syncs see it on, the later ones off.
    result = run_demo(devices=150, seed=9, db=db, days=6)
    assert result.summary.exit_code == 0
    yield db

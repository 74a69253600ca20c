"""``epf query`` speaks KQL: a query Sentinel would refuse fails with Sentinel's message (a
wrong-case column names the right one), an operator the local engine lacks is named as KQL
spells it with its position, and no internal of the translation library reaches the user."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from endpoint_forensics.workspace import store
from endpoint_forensics.workspace.kql_errors import plain_kql_error


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("query") / "ws.duckdb"
    store.connect(path).close()  # the registry's tables, empty
    return path


def _epf(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "endpoint_forensics", *args], capture_output=True, text=True
    )


def test_a_wrong_case_column_fails_as_in_sentinel_and_names_the_right_one(db: Path) -> None:
    result = _epf("query", "--db", str(db), "EPF_Devices_CL | where devicename == 'x' | count")
    assert result.returncode == 2
    assert "Sentinel would refuse this query" in result.stderr
    assert "KS142" in result.stderr and "did you mean DeviceName?" in result.stderr
    assert "Traceback" not in result.stderr
    # The right case runs.
    right = _epf("query", "--db", str(db), "EPF_Devices_CL | where DeviceName == 'x' | count")
    assert right.returncode == 0, right.stderr


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("EPF_Devices_CL | make-series count() on SnapshotTime step 1d", "make-series at 1:17"),
        ("EPF_Devices_CL | summarize take_any(*) by DeviceId", "`*` as a function argument"),
        ("EPF_Devices_CL | summarize percentiles(RiskScore, 50)", "percentiles()"),
        ("EPF_Devices_CL | project column_ifexists('x', '')", "column_ifexists()"),
        ("EPF_Devices_CL | evaluate bag_unpack(VmMetadata)", "evaluate at 1:17"),
    ],
)
def test_an_operator_the_local_engine_lacks_is_named_plainly(
    db: Path, query: str, named: str
) -> None:
    result = _epf("query", "--db", str(db), query)
    assert result.returncode == 2
    assert f"{named}" in result.stderr and "runs in Sentinel as it is" in result.stderr
    for internal in ("wave", "translate/", "Operator'", "expression:", "aggregate:", "Traceback"):
        assert internal not in result.stderr, (internal, result.stderr)


def test_plain_messages_keep_what_is_not_the_librarys_own() -> None:
    parse = "could not parse KQL at 1:15: mismatched input '|' expecting {<EOF>, ';'}"
    assert plain_kql_error(parse) == parse
    odd = "unsupported KQL construct 'MvApplyOperator' at 2:3 (not implemented in this wave)"
    assert plain_kql_error(odd).startswith("mv-apply at 2:3 is not supported")
    new = "unsupported KQL construct 'function:geo_distance_2points'"
    assert plain_kql_error(new).startswith("geo_distance_2points() is not supported")


def test_a_character_microsofts_parser_cannot_decode_is_refused_without_a_traceback(
    db: Path,
) -> None:
    # Past U+FFFF the parser fails decoding its own message; the local engine still answers.
    result = _epf("query", "--db", str(db), "EPF_Devices_CL | where DeviceName == '\U00010000'")
    assert result.returncode == 0, result.stderr
    alone = _epf("query", "--db", str(db), "\U00010000")
    assert alone.returncode == 2 and alone.stderr.strip()
    assert "Traceback" not in alone.stderr + result.stderr

"""The shipped hunting queries: Azure-Sentinel's structure, valid under Microsoft's parser
against the registry's tables (and Sentinel's documented SecurityAlert), and each one over our
own tables finds what it hunts on the demo workspace or on one written to hold it."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from endpoint_forensics.analytics.functions import registry
from endpoint_forensics.analytics.hunting import TACTICS, hunting_queries, tables_named
from endpoint_forensics.contracts import Batch
from endpoint_forensics.sinks.duckdb import DuckDBSink
from endpoint_forensics.tables import RUNS, TABLES, VULNERABILITIES, VULNERABILITY_CHANGES
from endpoint_forensics.workspace import store

from .kql_support import SECURITY_ALERT, error_messages
from .test_lifecycle import Workspace, _device, _event, _vuln, day

QUERIES = hunting_queries()
SENTINEL_TABLES = {"SecurityAlert"}
LOCAL = sorted(f for f, q in QUERIES.items() if not SENTINEL_TABLES & set(q.tables))


def test_at_least_fifteen_queries_with_distinct_ids_and_names() -> None:
    assert len(QUERIES) >= 15
    assert len({q.id for q in QUERIES.values()}) == len(QUERIES)
    assert len({q.name for q in QUERIES.values()}) == len(QUERIES)
    assert all(set(q.tactics) <= TACTICS and q.techniques for q in QUERIES.values())


@pytest.mark.parametrize("file", sorted(QUERIES))
def test_each_query_declares_exactly_the_tables_it_reads(file: str) -> None:
    query = QUERIES[file]
    known = {*TABLES, *SENTINEL_TABLES}
    named = tables_named(query.query, known)
    # A shipped function stands for the tables it reads.
    assert named <= set(query.tables) and set(query.tables) <= known, (named, query.tables)
    assert set(query.tables) - named <= _read_through_functions(query.query)


def _read_through_functions(text: str) -> set[str]:
    from endpoint_forensics.analytics.functions import functions
    from endpoint_forensics.azure.arm_functions import tables_read

    shipped = functions()
    return {
        table
        for name, function in shipped.items()
        if f"{name}(" in text
        for table in tables_read(function, shipped)
    }


@pytest.fixture(scope="module")
def schema(schema: dict[str, Any]) -> dict[str, Any]:
    """The shared schema, and Sentinel's SecurityAlert the alert queries join."""
    return {**schema, "SecurityAlert": SECURITY_ALERT}


@pytest.mark.parametrize("file", sorted(QUERIES))
def test_each_query_is_valid_kql_for_sentinel(
    file: str, kustology: ModuleType, schema: dict[str, Any]
) -> None:
    assert error_messages(kustology, QUERIES[file].query, schema) == []


def test_a_wrong_column_case_is_caught(kustology: ModuleType, schema: dict[str, Any]) -> None:
    # The check above would pass anything if the binder saw no schema.
    query = QUERIES["kev_on_internet_facing.yaml"].query.replace("InKev", "inKev")
    assert error_messages(kustology, query, schema)


# --- Run locally, on the demo workspace ---


@pytest.mark.e2e
@pytest.mark.parametrize("file", LOCAL)
def test_each_query_over_our_tables_finds_rows_on_the_demo(file: str, demo: Path) -> None:
    # The demo's fortnight has what each hunts: a failure, a gap, a rolled-back update, ...
    rows = store.run_query(demo, QUERIES[file].query, functions=registry()).rows
    assert rows, f"{file} found nothing on the demo workspace"


@pytest.mark.e2e
def test_a_vulnerability_fixed_then_open_again_is_found(tmp_path: Path) -> None:
    workspace = Workspace(tmp_path / "w.duckdb", "changes")
    a = _vuln("d1", "CVE-2026-1", day(0.5))
    for n in range(11):
        workspace.write(TABLES["EPF_Devices_CL"], [_device("d1", day(n))], day(n))
    workspace.write(VULNERABILITIES, [a], day(1))
    workspace.write(VULNERABILITIES, [a], day(10))
    events = [_event(a, "Fixed", day(3)), _event(a, "New", day(5))]
    workspace.write(VULNERABILITY_CHANGES, events, day(6), full=False)
    (row,) = workspace.query(QUERIES["vulnerabilities_reopened.yaml"].query)
    assert (row["CveId"], row["ReopenCount"], row["Status"]) == ("CVE-2026-1", 1, "Open")


@pytest.mark.e2e
def test_a_failed_run_and_its_gap_are_found(tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    gap = {"start": "2026-10-01T00:00:00Z", "end": "2026-10-01T06:00:00Z",
           "reason": "events window full", "sinks": ["workspace"]}  # fmt: skip
    runs = [
        _run("sensor-1", "events", "Succeeded", day(1)),
        _run("sensor-1", "events", "Failed", day(2), error="503 from the sensor", gaps=[gap]),
        _run("tenant", "machines", "Succeeded", day(2)),
    ]
    sink = DuckDBSink(db)
    try:
        for n, row in enumerate(runs):
            stamp = {
                "TimeGenerated": row["EndTime"],
                "SnapshotTime": row["EndTime"],
                "RunId": f"r{n}",
            }
            with sink.open(RUNS, unit=f"u{n}") as writer:
                writer.write(Batch(RUNS, rows=[row]), stamp)
    finally:
        sink.close()
    (failed,) = store.run_query(
        db, QUERIES["collector_failures.yaml"].query, functions=registry()
    ).records()
    assert (failed["SourceName"], failed["Dataset"], failed["Error"]) == (
        "sensor-1",
        "events",
        "503 from the sensor",
    )
    assert failed["LastSucceeded"] == day(1).strftime("%Y-%m-%dT%H:%M:%SZ")
    (found,) = store.run_query(
        db, QUERIES["collection_gaps.yaml"].query, functions=registry()
    ).records()
    assert (found["SourceName"], found["GapReason"]) == ("sensor-1", "events window full")


def _run(source: str, dataset: str, outcome: str, at: Any, **extra: Any) -> dict[str, Any]:
    return {
        "SourceName": source, "SourceKind": "sensor" if source.startswith("sensor") else "tenant",
        "Dataset": dataset, "TableName": "EPF_IotEvents_CL", "Outcome": outcome, "Rows": 1,
        "StartTime": at, "EndTime": at, "Error": extra.get("error", ""),
        "Gaps": extra.get("gaps"),
    }  # fmt: skip

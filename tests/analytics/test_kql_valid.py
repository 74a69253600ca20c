"""Every KQL text the product ships is valid where it will run: Microsoft's own parser and binder
(Kusto.Language, the one behind Sentinel) accept it against the registry's tables and the
shipped functions, and the local engine runs it on a workspace synced from the emulator.

The texts are found, not listed: every function in ``analytics/kql``, every ```` ```kql ````
block and ``epf query`` command in the README and docs, the demo's report queries and the
query it suggests next, the advanced-hunting query the collector sends to Defender, and the
DCR transforms of the ARM template.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from endpoint_forensics.analytics.functions import functions, registry
from endpoint_forensics.azure.arm import build_arm_template
from endpoint_forensics.cli.render import next_query
from endpoint_forensics.config import load_settings
from endpoint_forensics.demo import report_queries
from endpoint_forensics.pipeline.run import run_sync
from endpoint_forensics.sinks.duckdb import DuckDBSink
from endpoint_forensics.sources.hunting import agent_health_query
from endpoint_forensics.tables import TABLES
from endpoint_forensics.workspace import store
from epf_emulator import Emulator, EmulatorSettings
from epf_emulator.world.hunting_schema import DOCUMENTED_TABLES

from .kql_support import error_messages, parameters_declaration

ROOT = Path(__file__).resolve().parents[2]
_FENCE = re.compile(r"^```(?P<lang>\w*)\n(?P<body>.*?)^```", re.DOTALL | re.MULTILINE)
# `epf query` options that take a value; `--sql` marks a SQL query, which is not ours to check.
_VALUE_OPTIONS = {"--db", "--format", "-f"}


def _documented_queries() -> list[tuple[str, str]]:
    """(where, KQL) for each ```kql block and each `epf query` command of the README and docs."""
    found = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        text = path.read_text(encoding="utf-8")
        for fence in _FENCE.finditer(text):
            first = text.count("\n", 0, fence.start("body")) + 1  # the body's first line
            if fence["lang"] == "kql":
                found.append((f"{path.relative_to(ROOT)}:{first}", fence["body"].strip()))
                continue
            for offset, line in enumerate(fence["body"].splitlines()):
                query = _epf_query_text(line)
                if query is not None:
                    found.append((f"{path.relative_to(ROOT)}:{first + offset}", query))
    return found


def _epf_query_text(line: str) -> str | None:
    """The KQL of an ``epf query ...`` command line, or None (another command, or --sql)."""
    if not re.search(r"\bepf query\b", line):
        return None
    words = shlex.split(line)
    args = words[words.index("query") + 1 :]
    positional = []
    while args:
        word = args.pop(0)
        if word == "--sql":
            return None
        if word in _VALUE_OPTIONS:
            args.pop(0)
        elif not word.startswith("-"):
            positional.append(word)
    assert len(positional) == 1, f"cannot tell the query of {line!r}"
    return positional[0]


DOCUMENTED = _documented_queries()
FUNCTIONS = sorted(functions())


def test_the_shipped_texts_are_found() -> None:
    # An extraction that silently finds nothing would pass every test below.
    assert len(FUNCTIONS) >= 6
    assert sum(where.startswith("README.md") for where, _ in DOCUMENTED) >= 2


# --- Valid for Sentinel (Microsoft's parser and binder) ---


@pytest.mark.parametrize("name", FUNCTIONS)
def test_every_function_body_is_valid_kql(
    name: str, kustology: ModuleType, schema: dict[str, Any]
) -> None:
    function = functions()[name]
    text = parameters_declaration(function) + function.body
    assert error_messages(kustology, text, schema) == []


@pytest.mark.parametrize(("where", "query"), DOCUMENTED, ids=[w for w, _ in DOCUMENTED])
def test_every_documented_query_is_valid_kql(
    where: str, query: str, kustology: ModuleType, schema: dict[str, Any]
) -> None:
    assert error_messages(kustology, query, schema) == []


def test_the_demo_queries_are_valid_kql(kustology: ModuleType, schema: dict[str, Any]) -> None:
    demo = report_queries(datetime(2026, 11, 5, tzinfo=UTC))
    queries = [
        demo["by_platform"],
        demo["failing_tests"],
        *demo["state_counts"].values(),
        next_query("2026-11-03T14:00:00Z"),
    ]
    assert {q: error_messages(kustology, q, schema) for q in queries} == {q: [] for q in queries}


@pytest.mark.parametrize("prefix", ["", "a3"])
def test_the_agent_health_hunting_query_is_valid_against_defenders_schema(
    prefix: str, kustology: ModuleType
) -> None:
    # Sent to Defender's advanced hunting, so bound to Defender's documented tables.
    assert error_messages(kustology, agent_health_query(prefix), DOCUMENTED_TABLES) == []


def test_every_dcr_transform_is_valid_kql(kustology: ModuleType) -> None:
    transforms = list(_dcr_transforms(build_arm_template(compat=True)))
    assert len(transforms) == len(TABLES)
    problems = {
        stream: error_messages(kustology, kql, {"source": columns})
        for stream, kql, columns in transforms
    }
    assert {s: p for s, p in problems.items() if p} == {}


def _dcr_transforms(node: object) -> Iterator[tuple[str, str, dict[str, str]]]:
    """(input stream, transformKql, the stream's columns) of every data flow in a template."""
    if isinstance(node, dict):
        declared = node.get("streamDeclarations", {})
        for flow in node.get("dataFlows", []):
            (stream,) = flow["streams"]
            columns = {c["name"]: c["type"] for c in declared[stream]["columns"]}
            yield stream, flow["transformKql"], columns
        for value in node.values():
            yield from _dcr_transforms(value)
    elif isinstance(node, list):
        for item in node:
            yield from _dcr_transforms(item)


# --- The check can fail ---


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("EPF_Devices_CL | where HealthStatuss == 'Active'", "KS142"),  # misspelt column
        ("EPF_Devices_CL | where healthstatus == 'Active'", "KS142"),  # wrong case
        ("EPF_Device_CL | count", "KS204"),  # unknown table
        ("epf_devices_cl | count", "KS204"),  # table in the wrong case
        # A column the function drops, and a call without its argument.
        ("EPF_VulnerabilitiesAt(datetime(2026-01-01)) | project Status", "KS142"),
        ("EPF_VulnerabilitiesAt() | count", "KS119"),
    ],
)
def test_a_wrong_name_is_an_error(
    query: str, code: str, kustology: ModuleType, schema: dict[str, Any]
) -> None:
    errors = error_messages(kustology, query, schema)
    assert errors and all(e.startswith(code) for e in errors), errors


def test_a_function_body_without_its_parameters_declared_is_an_error(
    kustology: ModuleType, schema: dict[str, Any]
) -> None:
    body = functions()["EPF_DevicesAt"].body
    assert any(
        e.startswith("KS142") and "'at'" in e for e in error_messages(kustology, body, schema)
    )


def test_a_call_to_a_function_binds_the_columns_of_its_table(
    kustology: ModuleType, schema: dict[str, Any]
) -> None:
    assert set(schema["EPF_VulnerabilitiesAt"].returns) == set(
        TABLES["EPF_Vulnerabilities_CL"].column_names
    )
    query = (
        "EPF_SecureConfigAt(datetime(2026-01-01)) | where IsCompliant == false"
        " | summarize Devices = dcount(DeviceId) by ConfigurationId, ConfigurationName"
    )
    assert error_messages(kustology, query, schema) == []


# --- Runs on a local workspace (duckdb-kql, as `epf query` runs it) ---


@dataclass(frozen=True)
class SyncedWorkspace:
    path: Path
    run_id: str
    snapshot_time: datetime

    def run(self, kql: str) -> store.QueryResult:
        return store.run_query(self.path, kql, functions=registry())


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SyncedWorkspace]:
    """One sync of a small emulated tenant (one OT sensor) into a DuckDB workspace."""
    tmp = tmp_path_factory.mktemp("kql-workspace")
    emulated = EmulatorSettings(
        devices=12, seed=5, iot_sensors=1, iot_devices_per_sensor=12, iot_console=False
    )
    with Emulator(emulated) as emu:
        emu.write_config(tmp / "epf.toml", iot="pin", sentinel=False)
        settings = load_settings(
            tmp / "epf.toml",
            environ={},
            overrides={"store.path": str(tmp / "ws.duckdb"), "state.dir": str(tmp / "state")},
        )
        sink = DuckDBSink(settings.store.path)
        try:
            summary = run_sync(settings, [sink])
        finally:
            sink.close()
    assert summary.exit_code == 0, summary.errors()
    path = settings.store.path
    newest = "SELECT max(SnapshotTime) FROM EPF_Devices_CL"
    yield SyncedWorkspace(path, summary.run_id, store.run_query(path, newest, sql=True).rows[0][0])


@pytest.mark.e2e
@pytest.mark.parametrize(("where", "query"), DOCUMENTED, ids=[w for w, _ in DOCUMENTED])
def test_every_documented_query_runs_locally(
    where: str, query: str, workspace: SyncedWorkspace
) -> None:
    workspace.run(query)


@pytest.mark.e2e
@pytest.mark.parametrize("name", FUNCTIONS)
def test_every_function_runs_locally_with_the_columns_sentinel_gives(
    name: str, workspace: SyncedWorkspace, schema: dict[str, Any]
) -> None:
    function = functions()[name]
    at = f"datetime({workspace.snapshot_time.strftime('%Y-%m-%dT%H:%M:%S.%fZ')})"
    arguments = ", ".join(_ARGUMENTS.get(kind, at) for _, kind in function.parameters)
    result = workspace.run(f"{name}({arguments})")
    assert set(result.columns) == set(schema[name].returns or result.columns)
    if function.signature == "at:datetime":
        # As of the snapshot just synced, each of these has that snapshot's rows.
        assert result.rows


# A literal per parameter type for a call; every datetime is the synced snapshot's time.
_ARGUMENTS = {
    "string": '""',
    "timespan": "14d",
    "long": "0",
    "int": "0",
    "real": "0.0",
    "bool": "false",
    "dynamic": "dynamic([])",
}


@pytest.mark.e2e
def test_the_demo_queries_run_locally(workspace: SyncedWorkspace) -> None:
    demo = report_queries(workspace.snapshot_time)
    queries = [demo["by_platform"], demo["failing_tests"], *demo["state_counts"].values()]
    for query in queries:
        assert workspace.run(query).rows, query
    # A fleet question: twelve devices may have no tamper protection off, but it runs.
    workspace.run(next_query(workspace.snapshot_time.isoformat()))

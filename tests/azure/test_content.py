"""``epf deploy content``: the Azure-Sentinel repository layout, the structural checks its CI
runs, and its KQL validation done as it does it: the hunting queries, parsers and workbook
queries bound against nothing but the custom-table JSON files written beside them (and
Sentinel's SecurityAlert)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from endpoint_forensics.analytics.functions import KqlFunction, functions
from endpoint_forensics.analytics.hunting import hunting_queries
from endpoint_forensics.analytics.workbook import workbook_document
from endpoint_forensics.azure.content import (
    CUSTOM_TABLES_DIR,
    HUNTING_DIR,
    PARSERS_DIR,
    WORKBOOKS_DIR,
    write_content,
)

from ..analytics.kql_support import SECURITY_ALERT, error_messages

_PARSER_FIELDS = ("id", "Function", "Category", "FunctionName", "FunctionAlias", "FunctionQuery")
_SUBSCRIPTION = re.compile(r"/subscriptions/[0-9a-fA-F-]{36}", re.IGNORECASE)
_CUSTOM_TABLE = re.compile(r"\b[A-Za-z][A-Za-z0-9_]*_CL\b")


@pytest.fixture(scope="module")
def content(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("content")
    result = subprocess.run(
        [sys.executable, "-m", "endpoint_forensics", "deploy", "content", "--out", str(out)],
        capture_output=True,
        text=True,
        env={"SOURCE_DATE_EPOCH": "1764720000", "PATH": ""},  # 2025-12-03
    )
    assert result.returncode == 0, result.stderr
    assert "18 in Hunting Queries/" in result.stderr
    return out


def _parsers(content: Path) -> dict[str, dict[str, Any]]:
    return {
        p.stem: yaml.safe_load(p.read_text(encoding="utf-8"))
        for p in sorted((content / PARSERS_DIR).glob("*.yaml"))
    }


def test_the_layout_holds_every_query_function_and_table(content: Path) -> None:
    hunting = {p.name: p.read_text(encoding="utf-8") for p in (content / HUNTING_DIR).iterdir()}
    assert hunting == {f: q.text for f, q in hunting_queries().items()}
    assert set(_parsers(content)) == set(functions())
    (workbook,) = (content / WORKBOOKS_DIR).iterdir()
    assert json.loads(workbook.read_text(encoding="utf-8")) == workbook_document()
    tables = {p.stem for p in (content / CUSTOM_TABLES_DIR).glob("*.json")}
    read = set()
    for text in [*hunting.values(), *(f.body for f in functions().values())]:
        read |= set(_CUSTOM_TABLE.findall(text))
    assert read and read <= tables


def test_each_parser_has_the_fields_and_a_stable_guid(content: Path, tmp_path: Path) -> None:
    parsers = _parsers(content)
    for name, parser in parsers.items():
        assert all(parser.get(k) for k in _PARSER_FIELDS), name
        assert str(uuid.UUID(parser["id"])) == parser["id"]
        assert parser["FunctionAlias"] == parser["FunctionName"] == name
        assert parser["Function"]["LastUpdated"] == "2025-12-03"
        assert parser["FunctionQuery"].strip() == functions()[name].body
        declared = [(p["Name"], p["Type"]) for p in parser.get("FunctionParams", [])]
        assert tuple(declared) == functions()[name].parameters
    assert len({p["id"] for p in parsers.values()}) == len(parsers)
    # Written again, the same function keeps its id (a release updates the same parser).
    write_content(tmp_path)
    assert {n: p["id"] for n, p in _parsers(tmp_path).items()} == {
        n: p["id"] for n, p in parsers.items()
    }


def test_no_file_names_a_subscription(content: Path) -> None:
    for path in content.rglob("*"):
        if path.is_file():
            assert not _SUBSCRIPTION.search(path.read_text(encoding="utf-8")), path


def test_every_query_binds_against_the_written_table_files_alone(
    content: Path, kustology: ModuleType
) -> None:
    """As Azure-Sentinel's CI validates: the custom tables from their JSON files, Sentinel's
    own table from its documented schema, and the parsers as the functions they deploy."""
    schema: dict[str, Any] = {"SecurityAlert": SECURITY_ALERT}
    for path in (content / CUSTOM_TABLES_DIR).glob("*.json"):
        table = json.loads(path.read_text(encoding="utf-8"))
        schema[table["Name"]] = {p["Name"]: p["Type"] for p in table["Properties"]}
    pending = {
        name: KqlFunction(
            name,
            tuple((p["Name"], p["Type"]) for p in parser.get("FunctionParams", [])),
            parser["Function"]["Title"],
            parser["FunctionQuery"].strip(),
            tuple(
                (p["Name"], p["Default"])
                for p in parser.get("FunctionParams", [])
                if "Default" in p
            ),
        )
        for name, parser in _parsers(content).items()
    }
    errors: dict[str, list[str]] = {}
    while pending:  # a parser that calls another binds after it
        bound = False
        for name, function in list(pending.items()):
            text = f"declare query_parameters({function.signature});\n{function.body}"
            found = error_messages(kustology, text, schema)
            if not found:
                schema[name] = kustology.FunctionSchema(
                    function.parameters, _columns(kustology, text, schema)
                )
                del pending[name]
                bound = True
            else:
                errors[name] = found
        if not bound:
            break
    assert not pending, {n: errors[n] for n in pending}
    for path in sorted((content / HUNTING_DIR).glob("*.yaml")):
        query = yaml.safe_load(path.read_text(encoding="utf-8"))["query"]
        assert error_messages(kustology, query, schema) == [], path.name
    for path in (content / WORKBOOKS_DIR).glob("*.json"):
        for item in json.loads(path.read_text(encoding="utf-8"))["items"]:
            if item["type"] == 3:
                query = item["content"]["query"]
                assert error_messages(kustology, query, schema) == [], item["name"]


def _columns(kustology: ModuleType, text: str, schema: dict[str, Any]) -> dict[str, str] | None:
    from kustology.utils import analysis

    build: Any = analysis.build_global_state
    code = kustology.KustoCode.ParseAndAnalyze(text, build(schema))
    columns = getattr(code.ResultType, "Columns", None)
    return None if columns is None else {str(c.Name): str(c.Type.Name) for c in columns}

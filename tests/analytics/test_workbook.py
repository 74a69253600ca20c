"""The generated workbook: the structure Azure Workbooks and Azure-Sentinel's checks expect,
every query valid under Microsoft's parser (as written, and with the parameters chosen), and
every panel answering on the demo workspace, its filters narrowing what it shows."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from endpoint_forensics.analytics.functions import registry
from endpoint_forensics.analytics.workbook import PARAMETERS, panel_queries, workbook_document
from endpoint_forensics.workspace import store

from .kql_support import error_messages

DOCUMENT = workbook_document()
QUERY_ITEMS = [i for i in DOCUMENT["items"] if i["type"] == 3]  # type: ignore[index, union-attr]


def test_the_document_has_the_workbook_structure() -> None:
    assert DOCUMENT["version"] == "Notebook/1.0"
    assert str(DOCUMENT["$schema"]).endswith("/schema/workbook.json")
    assert DOCUMENT["fromTemplateId"] not in ("", "sentinel-UserWorkbook")
    items: list[dict[str, Any]] = DOCUMENT["items"]  # type: ignore[assignment]
    assert {i["type"] for i in items} == {1, 3, 9}
    assert len({i["name"] for i in items}) == len(items)
    (parameters,) = [i for i in items if i["type"] == 9]
    declared = {p["name"]: p for p in parameters["content"]["parameters"]}
    assert declared["TimeRange"]["type"] == 4 and declared["TimeRange"]["value"]["durationMs"] > 0
    assert {n for n, _, _ in PARAMETERS} | {"TimeRange"} == set(declared)
    assert len(QUERY_ITEMS) >= 15
    for item in QUERY_ITEMS:
        content = item["content"]
        assert content["version"] == "KqlItem/1.0" and content["noDataMessage"], item["name"]
        assert content["timeContextFromParameter"] == "TimeRange"
    assert not re.search(r"/subscriptions/[0-9a-f-]{36}", json.dumps(DOCUMENT), re.IGNORECASE)


@pytest.mark.parametrize("item", QUERY_ITEMS, ids=[i["name"] for i in QUERY_ITEMS])
def test_each_panel_query_is_valid_kql(
    item: dict[str, Any], kustology: ModuleType, schema: dict[str, Any]
) -> None:
    assert error_messages(kustology, item["content"]["query"], schema) == []
    chosen = panel_queries({"Group": "Servers", "OS": "Windows11", "Tenant": "t"})[item["name"]]
    assert error_messages(kustology, chosen, schema) == []


@pytest.mark.parametrize(("name", "label", "query"), PARAMETERS, ids=[p[0] for p in PARAMETERS])
def test_each_parameter_query_is_valid_kql(
    name: str, label: str, query: str, kustology: ModuleType, schema: dict[str, Any]
) -> None:
    assert error_messages(kustology, query, schema) == []


@pytest.mark.e2e
@pytest.mark.parametrize("name", sorted(panel_queries()))
def test_each_panel_answers_on_the_demo(name: str, demo: Path) -> None:
    rows = store.run_query(demo, panel_queries()[name], functions=registry()).rows
    assert rows, name


@pytest.mark.e2e
def test_the_parameters_narrow_the_panels(demo: Path) -> None:
    def rows(name: str, **values: str) -> int:
        query = panel_queries(values)[name]
        return len(store.run_query(demo, query, functions=registry()).rows)

    groups = [r[0] for r in store.run_query(demo, PARAMETERS[1][2], functions=registry()).rows]
    group = next(g for g in groups if g and g != "*")
    assert 0 < rows("devices-grid", Group=group) < rows("devices-grid")
    assert rows("devices-grid", OS="NoSuchOS") == 0
    assert rows("decisions", Tenant="no-such-tenant") == 0
    assert {r[0] for r in store.run_query(demo, PARAMETERS[2][2], functions=registry()).rows} >= {
        "*"
    }

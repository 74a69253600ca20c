"""``epf deploy content``: the product's Sentinel content in the Azure-Sentinel repository's
layout, for a content repository or a pull request there (docs/hunting.md):

- ``Hunting Queries/<file>.yaml``: the shipped hunting queries, as they are;
- ``Parsers/<Function>.yaml``: each shipped KQL function in the repository's parser format
  (``id``, ``Function`` with ``Title``, ``Version`` and ``LastUpdated``, ``Category``,
  ``FunctionName``, ``FunctionAlias``, ``FunctionQuery``), its parameters as ``FunctionParams``;
- ``.script/tests/KqlvalidationsTests/CustomTables/<Table>.json``: the schema of every custom
  table, which the repository's KQL validation needs to bind a query over it;
- ``Workbooks/EndpointForensics.json``: the workbook (``analytics.workbook``).

Each parser's id is derived from the function's name, so a new release updates the same
parser. ``LastUpdated`` is the day of the build (``SOURCE_DATE_EPOCH`` when set, as
reproducible builds use it). May import ``analytics.functions``, ``analytics.hunting`` and
``analytics.workbook`` and ``tables``.
"""

from __future__ import annotations

import json
import os
import uuid
from datetime import UTC, date, datetime
from pathlib import Path

import yaml

from endpoint_forensics.analytics.functions import KqlFunction, functions
from endpoint_forensics.analytics.hunting import hunting_queries
from endpoint_forensics.analytics.workbook import workbook_document
from endpoint_forensics.tables import TABLES

__all__ = [
    "CUSTOM_TABLES_DIR",
    "HUNTING_DIR",
    "PARSERS_DIR",
    "WORKBOOKS_DIR",
    "parser_document",
    "write_content",
]

HUNTING_DIR = "Hunting Queries"
WORKBOOKS_DIR = "Workbooks"
PARSERS_DIR = "Parsers"
CUSTOM_TABLES_DIR = ".script/tests/KqlvalidationsTests/CustomTables"
# The namespace of the parsers' ids: one id per function name, for ever.
_PARSER_IDS = uuid.UUID("0b9c6f0e-4d0e-4c39-9a3e-5f4f1e0c2a71")
_PARSER_VERSION = "1.0.0"


def parser_document(function: KqlFunction, built: date) -> dict[str, object]:
    """``function`` as an Azure-Sentinel parser file's mapping."""
    document: dict[str, object] = {
        "id": str(uuid.uuid5(_PARSER_IDS, function.name)),
        "Function": {
            "Title": f"{function.name}: {function.description.split('. ')[0].rstrip('.')}",
            "Version": _PARSER_VERSION,
            "LastUpdated": built.isoformat(),
        },
        "Category": "Microsoft Sentinel Parser",
        "FunctionName": function.name,
        "FunctionAlias": function.name,
    }
    if function.parameters:
        defaults = dict(function.defaults)
        document["FunctionParams"] = [
            {
                "Name": name,
                "Type": kind,
                **({"Default": defaults[name]} if name in defaults else {}),
            }
            for name, kind in function.parameters
        ]
    document["FunctionQuery"] = function.body + "\n"
    return document


def write_content(out: Path) -> dict[str, int]:
    """Write the content under ``out``; the files written, by folder."""
    built = _build_day()
    written = {HUNTING_DIR: 0, PARSERS_DIR: 0, WORKBOOKS_DIR: 0, CUSTOM_TABLES_DIR: 0}
    hunting = out / HUNTING_DIR
    hunting.mkdir(parents=True, exist_ok=True)
    for file, query in hunting_queries().items():
        (hunting / file).write_text(query.text, encoding="utf-8")
        written[HUNTING_DIR] += 1
    parsers = out / PARSERS_DIR
    parsers.mkdir(parents=True, exist_ok=True)
    for name, function in functions().items():
        text = yaml.dump(
            parser_document(function, built),
            Dumper=_BlockDumper,
            sort_keys=False,
            allow_unicode=True,
            width=100,
        )
        (parsers / f"{name}.yaml").write_text(text, encoding="utf-8")
        written[PARSERS_DIR] += 1
    workbooks = out / WORKBOOKS_DIR
    workbooks.mkdir(parents=True, exist_ok=True)
    text = json.dumps(workbook_document(), indent=2, ensure_ascii=False) + "\n"
    (workbooks / "EndpointForensics.json").write_text(text, encoding="utf-8")
    written[WORKBOOKS_DIR] += 1
    tables = out / CUSTOM_TABLES_DIR
    tables.mkdir(parents=True, exist_ok=True)
    for name, table in TABLES.items():
        schema = {
            "Name": name,
            "Properties": [{"Name": c, "Type": t} for c, t in table.kql_schema().items()],
        }
        (tables / f"{name}.json").write_text(json.dumps(schema, indent=2) + "\n", "utf-8")
        written[CUSTOM_TABLES_DIR] += 1
    return written


def _build_day() -> date:
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if epoch.isdigit():
        return datetime.fromtimestamp(int(epoch), tz=UTC).date()
    return datetime.now(UTC).date()


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings (the queries) as literal blocks, as the repository writes them."""


def _represent_text(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _represent_text)

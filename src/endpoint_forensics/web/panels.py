"""The workbook's panels answered from a local workspace, for the dashboard and the reports.

Owns running each query of ``analytics.workbook`` on one read-only connection, with the
dropdowns' values, keeping at most ``MAX_ROWS`` rows of each (a panel is read, not exported:
``epf query`` gives them all), and the provenance a report carries: the tenants, each table's
newest snapshot, the feed copies, and a SHA-256 of the rows shown. One definition feeds the
Sentinel workbook and these views, so the two cannot drift.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from endpoint_forensics.analytics.functions import registry
from endpoint_forensics.analytics.workbook import (
    PARAMETERS,
    SECTIONS,
    panel_queries,
    workbook_document,
)
from endpoint_forensics.errors import ConfigError
from endpoint_forensics.tables import TABLES
from endpoint_forensics.workspace import store
from endpoint_forensics.workspace.store import QueryError

__all__ = [
    "MAX_ROWS",
    "PanelResult",
    "WorkbookAnswer",
    "answer_workbook",
    "sections",
    "workspace_provenance",
]

#: Rows kept per panel.
MAX_ROWS = 500
_FEEDS = ("EPF_Kev_CL", "EPF_Epss_CL", "EPF_Vulnrichment_CL")


@dataclass(frozen=True)
class PanelResult:
    columns: list[str]
    rows: list[list[Any]]
    truncated: bool = False  # more rows than MAX_ROWS
    error: str | None = None  # the query failed: why, in one line


@dataclass
class WorkbookAnswer:
    """The workbook document, each panel's rows, the dropdowns' choices and the provenance."""

    workbook: dict[str, Any]
    parameters: dict[str, str]
    choices: dict[str, list[str]]
    results: dict[str, PanelResult]
    provenance: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self), default=_json_default, option=orjson.OPT_SORT_KEYS)


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    return str(value)  # intervals, UUIDs, blobs: as the engine prints them


def _result(con: Any, query: str, functions: Any) -> PanelResult:
    try:
        found = store.query_on(con, query, functions=functions, limit=MAX_ROWS + 1)
    except QueryError as exc:
        return PanelResult([], [], error=str(exc))
    json_cols = {i for i, t in enumerate(found.types) if t == "JSON"}
    rows = [
        [store.plain_value(v, decode_json=i in json_cols) for i, v in enumerate(row)]
        for row in found.rows[:MAX_ROWS]
    ]
    return PanelResult(found.columns, rows, truncated=len(found.rows) > MAX_ROWS)


def sections() -> list[str]:
    """The workbook's sections, by title, in order."""
    return [title for title, _, _ in SECTIONS]


def answer_workbook(
    db: Path,
    values: dict[str, str] | None = None,
    *,
    section: str | None = None,
    at: datetime | None = None,
) -> WorkbookAnswer:
    """Every panel of the workbook on the workspace at ``db`` (or of one ``section``), the
    dropdowns set to ``values`` (default ``*``, everything), as the workspace stood at ``at``
    (default: all of it).

    Raises:
        ConfigError: the workspace does not exist or cannot be opened.
    """
    functions = registry()
    chosen = {name: "*" for name, _, _ in PARAMETERS} | (values or {})
    document = workbook_document()
    wanted = None
    if section is not None:
        panels = [p for title, _, ps in SECTIONS if title == section for p in ps]
        if not panels:
            known = ", ".join(sections())
            raise ConfigError(f"no workbook section {section!r}; there are: {known}")
        wanted = {p.name for p in panels} | {section, "parameters"}
        items: list[dict[str, Any]] = document["items"]  # type: ignore[assignment]
        document["items"] = [i for i in items if i["name"] in wanted]
    con = store.connect(db, read_only=True) if at is None else store.connect_as_of(db, at)
    try:
        results = {
            name: _result(con, query, functions)
            for name, query in panel_queries(chosen).items()
            if wanted is None or name in wanted
        }
        choices = {
            name: [str(r[0]) for r in _result(con, query, functions).rows if r and r[0]]
            for name, _, query in PARAMETERS
        }
        provenance = workspace_provenance(con, db)
    finally:
        con.close()
    digest = hashlib.sha256(
        orjson.dumps(
            {k: asdict(v) for k, v in results.items()},
            default=_json_default,
            option=orjson.OPT_SORT_KEYS,
        )
    ).hexdigest()
    provenance["rows_sha256"] = digest
    provenance["as_of"] = store.plain_value(at) if at is not None else None
    return WorkbookAnswer(document, chosen, choices, results, provenance)


def workspace_provenance(con: Any, db: Path) -> dict[str, Any]:
    """What a report's answers came from: the workspace, the Defender tenants of its runs, each
    table's rows and newest snapshot, and the newest copy of each threat feed (as ``con`` sees
    them: ``store.connect_as_of`` narrows all of it to a time)."""
    present = store.table_columns(con)
    tables = []
    for name in sorted(set(TABLES) & set(present)):
        count, newest = con.execute(
            f'SELECT count(*), max(SnapshotTime) FROM "{name}"'
            if "SnapshotTime" in present[name]
            else f'SELECT count(*), NULL FROM "{name}"'
        ).fetchone()
        if count:
            tables.append(
                {"table": name, "rows": count, "newest_snapshot": store.plain_value(newest)}
            )
    tenants: list[str] = []
    if "EPF_Runs_CL" in present:
        tenants = [
            str(r[0])
            for r in con.execute(
                "SELECT DISTINCT DefenderTenantId FROM EPF_Runs_CL"
                " WHERE coalesce(DefenderTenantId, '') <> '' ORDER BY 1"
            ).fetchall()
        ]
    feeds = []
    for name in _FEEDS:
        if name in present:
            row = con.execute(
                f'SELECT FeedVersion, FeedSource, SnapshotTime FROM "{name}"'
                " ORDER BY SnapshotTime DESC LIMIT 1"
            ).fetchone()
            if row:
                feeds.append(
                    {
                        "table": name,
                        "version": row[0],
                        "source": row[1],
                        "read_at": store.plain_value(row[2]),
                    }
                )
    return {
        "workspace": db.name,
        "written_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "tenants": tenants,
        "tables": tables,
        "feeds": feeds,
    }

"""The SQL of the decode's fast path: what DuckDB reads of a JSON-lines part and how each field
becomes its column.

Owns the plan of a part (``plan``: the fields DuckDB learns from the first line, the SELECT that
casts them to the table's columns, unknown fields gathered into AdditionalFields, and the
condition under which a record's values all convert, ``Plan.ok_sql``), the casts themselves
(``cast_sql``), and the scratch DuckDB the decode runs in. ``sources.decode`` runs them.
May import ``tables`` and ``sources.wire``.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from endpoint_forensics.sources.wire import FieldMap
from endpoint_forensics.tables import COMMON_COLUMNS, KqlType, Table

__all__ = [
    "LINE_FIELD",
    "VARCHAR_OF_JSON",
    "Plan",
    "cast_sql",
    "ident",
    "plan_part",
    "scratch_duckdb",
    "sql_str",
]

LINE_FIELD = "_line"  # the record number a spill file adds to each line
_STAMPS = {c.name for c in COMMON_COLUMNS}


# The text DuckDB's JSON reader gives a value it reads as VARCHAR, from the same value read as
# JSON: numbers are spelt differently by the two (1e+20 against 100000000000000000000.0), an
# integer past 64 bits or a number past a double's range is kept as written by both.
VARCHAR_OF_JSON = (
    "CASE WHEN json_type({0}) = 'DOUBLE' AND NOT regexp_full_match({0}::VARCHAR, '-?[0-9]+') "
    "AND isfinite({0}::DOUBLE) THEN CAST({0}::DOUBLE AS VARCHAR) ELSE {0}->>'$' END"
)


@dataclass(frozen=True)
class Plan:
    first_line: dict[str, Any]  # a value of each field's type, for DuckDB to learn from
    select_sql: str
    checked: tuple[tuple[str, KqlType, bool], ...]  # (wire key, its column's type, required)

    def ok_sql(self, text_of: str) -> str:
        """The condition under which a record's values all convert, its key fields present.

        ``text_of`` spells a field's value as the text the casts start from, ``{0}`` standing
        for the quoted field name: ``{0}`` itself where the reader reads it as VARCHAR.
        """
        checks: list[str] = []
        for wire, kql_type, required in self.checked:
            quoted = f'"{ident(wire)}"'
            raw = quoted if kql_type is KqlType.DYNAMIC else text_of.format(quoted)
            check = cast_sql(raw, kql_type)[1]
            if check:
                checks.append(check)
            if required:
                checks.append(f"coalesce({raw}, '') <> ''")
        return " AND ".join(checks) or "true"


def scratch_duckdb(work_dir: Path, *, threads: int, memory_mb: int) -> Any:
    """An in-memory DuckDB for decoding: bounded memory, spilling to ``work_dir`` beyond it."""
    import duckdb

    con = duckdb.connect(
        config={
            "threads": threads,
            "memory_limit": f"{memory_mb}MB",
            "temp_directory": str(work_dir / "duckdb.tmp"),
        }
    )
    con.execute("SET TimeZone = 'UTC'")
    return con


# What DuckDB learns from each value of the first line (``maximum_depth = 2``): text for a
# column that is cast from text, JSON for a dynamic column or an unknown field, the number.
_LEARN_FROM = {"VARCHAR": "", "JSON": {}, "BIGINT": 0}


def plan_part(
    table: Table, fields: FieldMap, required: Collection[str], sample_keys: list[str]
) -> Plan:
    """SQL that reads a part's wire keys (those of the sample, and the known ones) and casts
    them to the table's columns, and the ``_line`` number when a line has one."""
    sample_keys = [k for k in sample_keys if k != LINE_FIELD]
    by_lower = {k.lower(): k for k in sample_keys}
    wire_for: dict[str, str] = {}  # column -> wire key as spelt in this part
    for wire, column in fields.items():
        wire_for[column] = by_lower.get(wire.lower()) or wire
    known = {w.lower() for w in fields}
    unknown = [k for k in sample_keys if k.lower() not in known]
    types: dict[str, str] = {}
    selects: dict[str, str] = {}  # column -> its SQL, put in the table's order below
    checked: list[tuple[str, KqlType, bool]] = []
    for col in table.columns:
        if col.name in _STAMPS or col.name == "AdditionalFields":
            continue
        found = wire_for.get(col.name)
        if found is None:
            selects[col.name] = f'NULL AS "{col.name}"'
            continue
        wire = found
        raw = f'"{ident(wire)}"'
        types[wire] = "JSON" if col.type is KqlType.DYNAMIC else "VARCHAR"
        selects[col.name] = f'{cast_sql(raw, col.type)[0]} AS "{col.name}"'
        checked.append((wire, col.type, col.name in required))
    for key in unknown:
        types[key] = "JSON"
    if unknown:
        # Only the fields a line has, as the careful path keeps them (SQL cannot tell a field
        # that is null from one that is missing: neither is kept).
        pairs = ", ".join(
            f'CASE WHEN "{ident(k)}" IS NOT NULL '
            f"THEN '{sql_str(orjson.dumps(k).decode())}:' || \"{ident(k)}\" END"
            for k in unknown
        )
        selects["AdditionalFields"] = (
            f"nullif('{{' || concat_ws(',', {pairs}) || '}}', '{{}}')::JSON AS \"AdditionalFields\""
        )
    else:
        selects["AdditionalFields"] = 'NULL::JSON AS "AdditionalFields"'
    types[LINE_FIELD] = "BIGINT"  # on every line of a spill; never in an export
    return Plan(
        {k: _LEARN_FROM[t] for k, t in types.items()},
        # In the table's order (AdditionalFields is not always last: HistoryKind follows it).
        ", ".join(selects[c.name] for c in table.columns if c.name in selects),
        tuple(checked),
    )


def cast_sql(raw: str, kql_type: KqlType) -> tuple[str, str | None]:
    """The SQL cast of a VARCHAR wire value, and the condition under which it succeeded."""
    blank = f"({raw} IS NULL OR {raw} = '')"
    if kql_type is KqlType.DYNAMIC:
        return raw, None
    if kql_type in (KqlType.STRING, KqlType.GUID):
        # A list or an object reads as its JSON text, which is no string: such a value, or a
        # string that looks like one, is looked at again with its JSON type.
        # (Comparisons, not left(): a fifth of the decode's time cheaper.)
        return raw, (
            f"({raw} IS NULL OR NOT ({raw} >= '[' AND {raw} < '\\' OR {raw} >= '{{' AND {raw} < '|'))"
        )
    if kql_type is KqlType.BOOL:
        expr = f"CASE lower({raw}) WHEN 'true' THEN true WHEN 'false' THEN false END"
        return expr, f"({blank} OR lower({raw}) IN ('true', 'false', 'unknown'))"
    sql_type = {
        KqlType.INT: "INTEGER",
        KqlType.LONG: "BIGINT",
        KqlType.REAL: "DOUBLE",
        KqlType.DATETIME: "TIMESTAMPTZ",
    }[kql_type]
    expr = f"TRY_CAST(nullif({raw}, '') AS {sql_type})"
    return expr, f"({blank} OR {expr} IS NOT NULL)"


def ident(name: str) -> str:
    return name.replace('"', '""')


def sql_str(text: str) -> str:
    return text.replace("'", "''")

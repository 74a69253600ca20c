"""Decoding a JSON-lines file (an export part, or a page or the delta spilled to disk) into
typed batches of one table, with bounded memory.

Owns the SQL path and the line-by-line path. The SQL path runs in a scratch, in-memory DuckDB
used as a JSON reader: ``read_json`` streams the file, SQL casts each field to its column's
type, and a record whose value does not convert (or is a list or an object where text is due),
or that lacks its key fields, is read again with its values' JSON types and goes through the
tolerant Python path instead (kept, with the raw value in AdditionalFields, or quarantined with
a reason). The fields are learnt from the first lines, unknown ones kept in AdditionalFields;
DuckDB checks every line's keys as it parses it, and a line with a field the first lines did
not show (a new field, or a known one spelt in another case) stops the SQL reader. Such a file,
one with a line that is not JSON, or a decode that needs more memory than it may take, is read
line by line instead (``RedoUnit``), in batches of a few thousand rows: both paths give the
same rows.
May import ``contracts``, ``errors``, ``tables`` and ``sources.wire``.
"""

from __future__ import annotations

import gzip
import secrets
import shutil
from collections.abc import Callable, Collection, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast

import orjson

from endpoint_forensics.contracts import Batch, RedoUnit, Reject
from endpoint_forensics.errors import PermanentError
from endpoint_forensics.sources.wire import FieldMap, convert_record, field_specs
from endpoint_forensics.tables import COMMON_COLUMNS, KqlType, Table

__all__ = [
    "LINE_FIELD",
    "ExportSpec",
    "decode_part",
    "memory_mb_for",
    "record_to_row",
    "scratch_duckdb",
    "spill_records",
]

_SAMPLE_LINES = 2_000
LINE_FIELD = "_line"  # the record number a spill file adds to each line
_BATCH_ROWS = 16_384  # Arrow rows per batch from the SQL path (about 16 MB of export rows)
_PYTHON_BATCH_ROWS = 5_000  # dict rows per batch from the line-by-line path
# Memory of the SQL decode, by design rather than by a number that happens to pass: DuckDB's
# JSON reader reads in 32 MiB buffers that cannot spill, up to about three per thread at once
# (seen: "failed to allocate data of size 32.0 MiB (90.4 MiB/122.0 MiB used)" under 128 MB
# with two threads), and a batch with its casts needs a working set beside them; everything
# else spills to disk. Neither depends on the fleet or the size of a part.
_JSON_READ_BUFFER_MB = 32
_WORKING_SET_MB = 64


def memory_mb_for(threads: int) -> int:
    """The memory limit of a scratch DuckDB that reads JSON lines with ``threads`` threads."""
    return threads * 3 * _JSON_READ_BUFFER_MB + _WORKING_SET_MB


_DECODE_THREADS = 2
_DECODE_MEMORY_MB = memory_mb_for(_DECODE_THREADS)
_STAMPS = {c.name for c in COMMON_COLUMNS}
_SPECS: dict[tuple[str, int], dict[str, Any]] = {}


@dataclass(frozen=True)
class ExportSpec:
    """One export: its endpoint (also its rate budget's name), table, fields and key fields.

    ``convert`` replaces the generic conversion of a record, for exports whose records need
    reshaping first; such exports are decoded line by line (the SQL path maps fields only).
    """

    endpoint: str
    table: Table
    fields: FieldMap
    required: tuple[str, ...]  # columns a row cannot do without
    convert: Callable[[Any], dict[str, Any] | str] | None = None

    def to_row(self, record: Any) -> dict[str, Any] | str:
        if self.convert is not None:
            return self.convert(record)
        return record_to_row(record, self.table, self.fields, self.required)


def spill_records(records: list[Any], path: Path) -> Path:
    """Write records as JSON lines, so a page decodes like an export part (in SQL, typed)."""
    with path.open("wb") as fh:
        for record in records:
            fh.write(orjson.dumps(record) + b"\n")
    return path


def decode_part(
    path: Path,
    spec: ExportSpec,
    *,
    careful: bool = False,
    skip_lines: Collection[int] = (),
) -> Iterator[Batch]:
    """Typed batches of one JSON-lines file, gzip or plain (see the module docstring).

    ``skip_lines`` names records to leave out by their ``_line`` field (spill files written by
    the delta carry one).
    """
    if careful:
        yield from _decode_lines(path, spec, skip_lines)
        return
    try:
        sample_keys = _sample_keys(path)
    except ValueError as exc:
        raise RedoUnit(str(exc)) from exc
    yield from _decode_fast(path, spec, sample_keys, skip_lines)


def record_to_row(
    record: Any, table: Table, fields: FieldMap, required: Sequence[str]
) -> dict[str, Any] | str:
    """A row of ``table`` from one wire record, or why it cannot be one."""
    if not isinstance(record, Mapping):
        return f"record is a {type(record).__name__}, not an object"
    specs = _SPECS.get((table.name, id(fields)))
    if specs is None:  # field maps are module constants: build each spec once
        specs = _SPECS[(table.name, id(fields))] = field_specs(table, fields)
    row, extra = convert_record(record, specs)
    missing = [c for c in required if row.get(c) in (None, "")]
    if missing:
        return f"record has no {', '.join(missing)}"
    row["AdditionalFields"] = extra or None
    return row


def _open(path: Path) -> BinaryIO:
    if path.suffix == ".gz":
        return cast(BinaryIO, gzip.GzipFile(path, "rb"))
    return path.open("rb")


def _sample_keys(path: Path) -> list[str]:
    keys: dict[str, None] = {}
    with _open(path) as fh:
        for number, line in enumerate(fh):
            if number >= _SAMPLE_LINES:
                break
            if not line.strip():
                continue
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                raise ValueError(f"line {number + 1} is not valid JSON") from None
            if isinstance(record, dict):
                keys.update(dict.fromkeys(record))
    # DuckDB's names are case-insensitive and never empty: a part whose keys differ only in
    # case (two spellings of one field, or two unknown fields) or with an empty key cannot be
    # read in SQL without losing one; the line-by-line reader keeps them all.
    seen: dict[str, str] = {}
    for key in keys:
        if key == "":
            raise ValueError("a record has an empty field name")
        other = seen.setdefault(key.lower(), key)
        if other != key:
            raise ValueError(f"fields {other!r} and {key!r} differ only in case")
    return list(keys)


def _decode_lines(path: Path, spec: ExportSpec, skip_lines: Collection[int]) -> Iterator[Batch]:
    batch = Batch(spec.table)
    skip = set(skip_lines)
    with _open(path) as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                batch.rejects.append(
                    Reject(
                        f"line {number} is not valid JSON",
                        line.decode("utf-8", "replace").rstrip("\r\n"),
                    )
                )
                continue
            if isinstance(record, dict) and LINE_FIELD in record:
                number_field = record.pop(LINE_FIELD)
                if isinstance(number_field, Hashable) and number_field in skip:
                    continue
            row = spec.to_row(record)
            if isinstance(row, str):
                batch.rejects.append(Reject(row, record))
            else:
                batch.rows.append(row)
            if len(batch.rows) >= _PYTHON_BATCH_ROWS:
                yield batch
                batch = Batch(spec.table)
    yield batch


def _decode_fast(
    path: Path, spec: ExportSpec, sample_keys: list[str], skip_lines: Collection[int]
) -> Iterator[Batch]:
    import duckdb

    plan = _plan(spec, sample_keys)
    # DuckDB reads the fields it learns, with the types it learns, from a first line that is
    # ours (a value of each field's type), and refuses a later line with any other field
    # ("has unknown key"), a check that costs nothing beside the parse. It learns only from
    # the file it reads, so it reads a copy of the part behind that line (a gzip part takes
    # it as a gzip member of its own), and the line's row is left out by its marker field.
    # The copy and the look at the first line cost a few percent (bench/decode_part.py);
    # ``columns =`` instead would keep the types, but read a field it was not given as
    # nothing at all.
    copy = path.with_name(f".sql-{path.name}")
    source = _source(path, copy, plan.first_line, skip_lines)
    con = scratch_duckdb(path.parent, threads=_DECODE_THREADS, memory_mb=_DECODE_MEMORY_MB)
    try:
        if skip_lines:
            con.execute(
                "CREATE TEMP TABLE _skip AS SELECT unnest($lines::BIGINT[]) AS line",
                {"lines": sorted(skip_lines)},
            )
        bad = 0
        # Every field is read (``_line`` too, then dropped): DuckDB checks a line's fields only
        # when the query reads all it learnt.
        result = con.sql(
            f"SELECT {plan.select_sql}, ({plan.ok_sql('{0}')}) AS _ok, {LINE_FIELD} FROM {source}"
        )
        for record_batch in result.to_arrow_reader(_BATCH_ROWS):
            ok = record_batch.column("_ok")
            good = record_batch.filter(ok).drop_columns(["_ok", LINE_FIELD])
            bad += record_batch.num_rows - good.num_rows
            if good.num_rows:
                yield Batch(spec.table, arrow=good)
        if bad:
            yield from _tolerant_batches(con, path, spec, plan, bad, skip_lines)
    except UnicodeDecodeError as exc:
        # DuckDB quotes the line it refused, cut at a byte count, sometimes inside a
        # character: its message then cannot even be read. It refused a line all the same.
        raise RedoUnit(f"{path.name}: DuckDB refused a line (its message is unreadable)") from exc
    except (duckdb.Error, OSError) as exc:
        # DuckDB's errors reach the Arrow reader's caller as OSError with DuckDB's text.
        problem = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if isinstance(exc, duckdb.InvalidInputException | duckdb.OutOfMemoryException) or (
            problem.startswith(("Invalid Input Error", "Out of Memory Error"))
        ):
            # A line that is not JSON or has a field the first lines did not show (its line
            # number counts our first line), or more memory than the decode may take: the
            # line-by-line reader keeps what it can of the first, every field of the second,
            # and is bounded for the third.
            raise RedoUnit(f"{path.name}: {problem}") from exc
        raise PermanentError(f"decoding {path.name} failed: {problem}") from exc
    finally:
        con.close()
        copy.unlink(missing_ok=True)
        path.with_name(f".sql-raw-{path.name}").unlink(missing_ok=True)


def _source(
    path: Path, copy: Path, first_line: Mapping[str, Any], skip_lines: Collection[int]
) -> str:
    """SQL of the records of ``path``, read by DuckDB with the types of ``first_line`` (see
    ``_decode_fast``), without the ``skip_lines``."""
    marker = f"_epf_first_line_{secrets.token_hex(8)}"
    _copy_behind(path, copy, orjson.dumps({**first_line, marker: "x"}) + b"\n")
    reader = (
        f"read_json('{_sql_str(str(copy))}', format = 'newline_delimited', records = true, "
        "sample_size = 1, maximum_depth = 2, map_inference_threshold = -1)"
    )
    source = f'(SELECT * FROM {reader} WHERE "{marker}" IS NULL)'
    if skip_lines:
        # A line without a number (not an object) is never skipped: the careful path
        # rejects it too.
        source = (
            f"(SELECT * FROM {source} WHERE {LINE_FIELD} IS NULL "
            f"OR {LINE_FIELD} NOT IN (SELECT line FROM _skip))"
        )
    return source


# The text DuckDB's JSON reader gives a value it reads as VARCHAR, from the same value read as
# JSON: numbers are spelt differently by the two (1e+20 against 100000000000000000000.0), an
# integer past 64 bits or a number past a double's range is kept as written by both.
_VARCHAR_OF_JSON = (
    "CASE WHEN json_type({0}) = 'DOUBLE' AND NOT regexp_full_match({0}::VARCHAR, '-?[0-9]+') "
    "AND isfinite({0}::DOUBLE) THEN CAST({0}::DOUBLE AS VARCHAR) ELSE {0}->>'$' END"
)


def _tolerant_batches(
    con: Any, path: Path, spec: ExportSpec, plan: _Plan, bad: int, skip_lines: Collection[int]
) -> Iterator[Batch]:
    """The records the SQL casts refused, as the careful path reads them.

    The SQL reader has their values as text, which loses a value's JSON type (``false`` and
    ``"false"`` read alike), so they are read again from a copy where every field is JSON and
    picked by the same conditions on the same text. Should the count differ, the part is
    read line by line instead.
    """
    raw_copy = path.with_name(f".sql-raw-{path.name}")
    first_line: dict[str, Any] = {k: ({} if k != LINE_FIELD else 0) for k in plan.first_line}
    source = _source(path, raw_copy, first_line, skip_lines)
    names = [k for k in plan.first_line if k != LINE_FIELD]
    columns = ", ".join(f'"{_ident(k)}"' for k in names)
    ok = plan.ok_sql(f"({_VARCHAR_OF_JSON})")
    raw = con.execute(f"SELECT {columns} FROM {source} WHERE NOT ({ok})")
    seen = 0
    while chunk := raw.fetchmany(_PYTHON_BATCH_ROWS):
        seen += len(chunk)
        if seen > bad:
            break
        yield _tolerant_batch(spec, names, chunk)
    if seen != bad:
        raise RedoUnit(f"{path.name}: {bad} records the SQL casts refused, {seen} read again")


def _copy_behind(path: Path, copy: Path, first_line: bytes) -> None:
    """Write ``copy``: ``first_line``, then the bytes of ``path`` as they are."""
    with path.open("rb") as src, copy.open("wb") as dst:
        dst.write(gzip.compress(first_line, mtime=0) if path.suffix == ".gz" else first_line)
        shutil.copyfileobj(src, dst, 1 << 20)


def _tolerant_batch(spec: ExportSpec, names: list[str], values: list[tuple[Any, ...]]) -> Batch:
    batch = Batch(spec.table)
    for row_values in values:
        record = {
            k: orjson.loads(v) for k, v in zip(names, row_values, strict=True) if v is not None
        }
        row = spec.to_row(record)
        if isinstance(row, str):
            batch.rejects.append(Reject(row, record))
        else:
            batch.rows.append(row)
    return batch


@dataclass(frozen=True)
class _Plan:
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
            quoted = f'"{_ident(wire)}"'
            raw = quoted if kql_type is KqlType.DYNAMIC else text_of.format(quoted)
            check = _cast(raw, kql_type)[1]
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


def _plan(spec: ExportSpec, sample_keys: list[str]) -> _Plan:
    """SQL that reads a part's wire keys (those of the sample, and the known ones) and casts
    them to the table's columns, and the ``_line`` number when a line has one."""
    sample_keys = [k for k in sample_keys if k != LINE_FIELD]
    by_lower = {k.lower(): k for k in sample_keys}
    wire_for: dict[str, str] = {}  # column -> wire key as spelt in this part
    for wire, column in spec.fields.items():
        wire_for[column] = by_lower.get(wire.lower()) or wire
    known = {w.lower() for w in spec.fields}
    unknown = [k for k in sample_keys if k.lower() not in known]
    types: dict[str, str] = {}
    selects: dict[str, str] = {}  # column -> its SQL, put in the table's order below
    checked: list[tuple[str, KqlType, bool]] = []
    for col in spec.table.columns:
        if col.name in _STAMPS or col.name == "AdditionalFields":
            continue
        found = wire_for.get(col.name)
        if found is None:
            selects[col.name] = f'NULL AS "{col.name}"'
            continue
        wire = found
        raw = f'"{_ident(wire)}"'
        types[wire] = "JSON" if col.type is KqlType.DYNAMIC else "VARCHAR"
        selects[col.name] = f'{_cast(raw, col.type)[0]} AS "{col.name}"'
        checked.append((wire, col.type, col.name in spec.required))
    for key in unknown:
        types[key] = "JSON"
    if unknown:
        # Only the fields a line has, as the careful path keeps them (SQL cannot tell a field
        # that is null from one that is missing: neither is kept).
        pairs = ", ".join(
            f'CASE WHEN "{_ident(k)}" IS NOT NULL '
            f"THEN '{_sql_str(orjson.dumps(k).decode())}:' || \"{_ident(k)}\" END"
            for k in unknown
        )
        selects["AdditionalFields"] = (
            f"nullif('{{' || concat_ws(',', {pairs}) || '}}', '{{}}')::JSON AS \"AdditionalFields\""
        )
    else:
        selects["AdditionalFields"] = 'NULL::JSON AS "AdditionalFields"'
    types[LINE_FIELD] = "BIGINT"  # on every line of a spill; never in an export
    return _Plan(
        {k: _LEARN_FROM[t] for k, t in types.items()},
        # In the table's order (AdditionalFields is not always last: HistoryKind follows it).
        ", ".join(selects[c.name] for c in spec.table.columns if c.name in selects),
        tuple(checked),
    )


def _cast(raw: str, kql_type: KqlType) -> tuple[str, str | None]:
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


def _ident(name: str) -> str:
    return name.replace('"', '""')


def _sql_str(text: str) -> str:
    return text.replace("'", "''")

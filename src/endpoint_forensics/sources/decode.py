"""Decoding a JSON-lines file (an export part, or a page or the delta spilled to disk) into
typed batches of one table, with bounded memory.

Owns the SQL path (its SQL is ``sources.decode_sql``'s) and the line-by-line path. The SQL path
runs in a scratch, in-memory DuckDB used as a JSON reader: ``read_json`` streams the file, SQL
casts each field to its column's type, and a record whose value does not convert (or is a list
or an object where text is due), or that lacks its key fields, is read again with its values'
JSON types and goes through the tolerant Python path instead (kept, with the raw value in
AdditionalFields, or quarantined with a reason). The fields are learnt from the first lines,
unknown ones kept in AdditionalFields; DuckDB checks every line's keys as it parses it, and a
line with a field the first lines did not show (a new field, or a known one spelt in another
case) stops the SQL reader. Such a file, one with a line that is not JSON, or a decode that
needs more memory than it may take, is read line by line instead (``RedoUnit``), in batches of
a few thousand rows: both paths give the same rows.
May import ``contracts``, ``errors``, ``tables``, ``sources.wire`` and ``sources.decode_sql``.
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
from endpoint_forensics.sources.decode_sql import (
    LINE_FIELD,
    VARCHAR_OF_JSON,
    Plan,
    ident,
    plan_part,
    scratch_duckdb,
    sql_str,
)
from endpoint_forensics.sources.wire import FieldMap, convert_record, field_specs
from endpoint_forensics.tables import Table

__all__ = [
    "LINE_FIELD",
    "ExportSpec",
    "decode_part",
    "memory_mb_for",
    "record_to_row",
]

_SAMPLE_LINES = 2_000
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

    plan = plan_part(spec.table, spec.fields, spec.required, sample_keys)
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
        _raw_copy(path).unlink(missing_ok=True)


def _source(
    path: Path, copy: Path, first_line: Mapping[str, Any], skip_lines: Collection[int]
) -> str:
    """SQL of the records of ``path``, read by DuckDB with the types of ``first_line`` (see
    ``_decode_fast``), without the ``skip_lines``."""
    marker = f"_epf_first_line_{secrets.token_hex(8)}"
    _copy_behind(path, copy, orjson.dumps({**first_line, marker: "x"}) + b"\n")
    reader = (
        f"read_json('{sql_str(str(copy))}', format = 'newline_delimited', records = true, "
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


def _tolerant_batches(
    con: Any, path: Path, spec: ExportSpec, plan: Plan, bad: int, skip_lines: Collection[int]
) -> Iterator[Batch]:
    """The records the SQL casts refused, as the careful path reads them.

    The SQL reader has their values as text, which loses a value's JSON type (``false`` and
    ``"false"`` read alike), so they are read again from a copy where every field is JSON and
    picked by the same conditions on the same text. Should the count differ, the part is
    read line by line instead.
    """
    raw_copy = _raw_copy(path)
    first_line: dict[str, Any] = {k: ({} if k != LINE_FIELD else 0) for k in plan.first_line}
    source = _source(path, raw_copy, first_line, skip_lines)
    names = [k for k in plan.first_line if k != LINE_FIELD]
    columns = ", ".join(f'"{ident(k)}"' for k in names)
    ok = plan.ok_sql(f"({VARCHAR_OF_JSON})")
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


def _raw_copy(path: Path) -> Path:
    """Where the tolerant path copies ``path`` to read every field as JSON."""
    return path.with_name(f".sql-raw-{path.name}")

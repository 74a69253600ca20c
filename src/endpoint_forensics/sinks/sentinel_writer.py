"""What the Sentinel sink puts in its outbox: a unit's rows as JSON objects for the table's
stream, stamped, gzip-compressed in uploads of at most 1 MB, each value within the service's
64 KB field limit (a longer one is truncated and says so). Encoded as the batches come, so
nothing piles up in memory. May import ``contracts``, ``sinks.outbox`` and ``tables``.
"""

from __future__ import annotations

import gzip
import uuid
from collections.abc import Iterator, Mapping
from typing import Any, cast

import orjson

from endpoint_forensics.contracts import Batch, HistoryPlan
from endpoint_forensics.sinks.history import ChangeHistory
from endpoint_forensics.sinks.outbox import StagedUnit
from endpoint_forensics.sinks.rows import to_arrow
from endpoint_forensics.tables import KqlType, Table

__all__ = ["MAX_BODY_BYTES", "MAX_FIELD_BYTES", "SentinelWriter", "encode_rows"]

MAX_BODY_BYTES = 1_000_000  # the limit is 1 MB per call, compressed and uncompressed (D.2)
MAX_FIELD_BYTES = 65_536  # longer values are truncated by the service; we say so
_MARKER = "…[truncated by epf: {n} bytes]"


class SentinelWriter:
    """Encodes a unit's batches into uploads as they come; nothing piles up in memory."""

    def __init__(
        self,
        table: Table,
        staged: StagedUnit,
        *,
        history: tuple[ChangeHistory | None, HistoryPlan | None] = (None, None),
    ) -> None:
        self._table = table
        self._staged = staged
        self._history, self._plan = history
        self._chunk: list[bytes] = []
        self._size = 2  # the brackets
        self._batch_id = uuid.uuid4().hex
        self.rows = 0

    def write(self, batch: Batch, stamp: Mapping[str, Any]) -> None:
        if self._history is not None and self._plan is not None:
            batch = self._changes_of(batch, stamp)
        for record in encode_rows(self._table, batch, stamp):
            line = b'{"BatchId":"' + self._batch_id.encode() + b'",' + record[1:]
            if self._chunk and self._size + len(line) + 1 > MAX_BODY_BYTES:
                self._flush_chunk()
                line = b'{"BatchId":"' + self._batch_id.encode() + b'",' + record[1:]
            self._chunk.append(line)
            self._size += len(line) + 1
            self.rows += 1

    def _changes_of(self, batch: Batch, stamp: Mapping[str, Any]) -> Batch:
        """The rows of ``batch`` the change-only history says to send (``sinks.history``)."""
        import pyarrow as pa

        assert self._history is not None and self._plan is not None
        parts = []
        if batch.rows:
            parts.append(to_arrow(self._table, batch.rows, stamped=set(stamp)))
        if batch.arrow is not None and batch.arrow.num_rows:
            parts.append(batch.arrow)
        written = [self._history.rows_to_write(self._table, p, stamp, self._plan) for p in parts]
        return Batch(self._table, arrow=pa.concat_tables(written) if written else None)

    def seal(self) -> None:
        if self._chunk:
            self._flush_chunk()

    def _flush_chunk(self) -> None:
        body = b"[" + b",".join(self._chunk) + b"]"
        self._staged.add(gzip.compress(body, compresslevel=6), len(self._chunk))
        self._chunk = []
        self._size = 2
        self._batch_id = uuid.uuid4().hex


def encode_rows(table: Table, batch: Batch, stamp: Mapping[str, Any]) -> Iterator[bytes]:
    """Each row of ``batch`` as one JSON object (bytes) for the table's stream, stamped."""
    dynamic = {c.name for c in table.columns if c.type is KqlType.DYNAMIC}
    known = set(table.column_names)
    # SnapshotTime goes with every row: the service may replace TimeGenerated (a delivery more
    # than 2 days late), and a stamp without it was taken at its TimeGenerated.
    stamp = {"SnapshotTime": stamp.get("TimeGenerated"), **stamp}
    stamped = {k: _bounded(v) for k, v in stamp.items() if k in known and v is not None}
    for row in batch.rows:
        record: dict[str, Any] = {}
        for name, value in row.items():
            if value is None or name not in known:
                continue
            if name in dynamic:
                value = _dynamic(value)
            record[name] = _bounded(value)
        for name, value in stamped.items():
            record.setdefault(name, value)
        yield orjson.dumps(record)
    if batch.arrow is not None:
        yield from _arrow_records(batch.arrow, dynamic, known, stamped)


def _arrow_records(
    data: Any, dynamic: set[str], known: set[str], stamped: Mapping[str, Any]
) -> Iterator[bytes]:
    """``encode_rows`` of an Arrow batch, column by column: the same bytes, a third of the
    time (no dict a row from Arrow, and a column's values are bounded only when one of them
    may be over the limit)."""
    import pyarrow.compute as pc

    names = [n for n in data.schema.names if n in known]
    for start in range(0, data.num_rows, 5_000):
        part = data.slice(start, 5_000)
        columns = []
        for name in names:
            column = part.column(name)
            values = _times_as_text(column, pc) or column.to_pylist()
            if name in dynamic:
                values = [None if v is None else _dynamic(v) for v in values]
            if _may_be_over_the_limit(column, pc, dynamic=name in dynamic):
                values = [_bounded(v) for v in values]
            columns.append(values)
        for values in zip(*columns, strict=True):
            record = {n: v for n, v in zip(names, values, strict=True) if v is not None}
            for name, value in stamped.items():
                record.setdefault(name, value)
            yield orjson.dumps(record)


def _times_as_text(column: Any, pc: Any) -> list[Any] | None:
    """A UTC timestamp column's values as the text orjson gives a datetime (microseconds only
    when there are some), made by Arrow: a datetime object a value costs ten times more.
    None for another column, or a year Arrow would not spell with four digits."""
    import pyarrow as pa

    kind = column.type
    if not (pa.types.is_timestamp(kind) and kind.unit == "us" and kind.tz in ("UTC", "+00:00")):
        return None
    if column.null_count == len(column):
        return [None] * len(column)
    years = pc.min_max(pc.year(column)).as_py()
    if years["min"] < 1000 or years["max"] > 9999:
        return None
    text = pc.replace_substring_regex(
        pc.strftime(column, format="%Y-%m-%dT%H:%M:%S"), pattern=r"\.000000$", replacement=""
    )
    return cast(list[Any], pc.binary_join_element_wise(text, "+00:00", "").to_pylist())


def _may_be_over_the_limit(column: Any, pc: Any, *, dynamic: bool) -> bool:
    """Whether a value of ``column`` may be over ``MAX_FIELD_BYTES`` once encoded. A dynamic
    value is encoded again from its parsed JSON, which can be a few times longer than the
    text (1e15 is 1000000000000000.0): its text is checked against an eighth of the limit."""
    import pyarrow as pa

    kind = column.type
    if pa.types.is_boolean(kind) or pa.types.is_integer(kind) or pa.types.is_floating(kind):
        return False
    if pa.types.is_timestamp(kind) or pa.types.is_null(kind):
        return False
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        return True  # a type not foreseen: every value is measured
    longest = pc.max(pc.binary_length(column)).as_py()
    return longest is not None and longest > MAX_FIELD_BYTES // (8 if dynamic else 1)


def _dynamic(value: Any) -> Any:
    # Arrow batches carry dynamic columns as JSON text; the stream wants the value itself.
    if isinstance(value, str):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return value
    return value


#: A text of at most this many characters is within ``MAX_FIELD_BYTES`` (UTF-8 takes at most 4
#: bytes a character).
_SHORT_CHARS = MAX_FIELD_BYTES // 4


def _bounded(value: Any) -> Any:
    """``value``, or a truncated stand-in when it is over the service's 64 KB field limit."""
    if isinstance(value, str):
        if len(value) <= _SHORT_CHARS:  # within the limit in any encoding: nothing to measure
            return value
        encoded = value.encode()
        if len(encoded) <= MAX_FIELD_BYTES:
            return value
        marker = _MARKER.format(n=len(encoded))
        keep = MAX_FIELD_BYTES - len(marker.encode())
        return encoded[:keep].decode(errors="ignore") + marker
    if isinstance(value, dict | list):
        text = orjson.dumps(value)
        if len(text) <= MAX_FIELD_BYTES:
            return value
        marker = _MARKER.format(n=len(text))
        keep = MAX_FIELD_BYTES - len(marker.encode()) - 64
        return {"epf_truncated": True, "text": text[:keep].decode(errors="ignore") + marker}
    return value

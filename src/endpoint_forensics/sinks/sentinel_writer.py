"""What the Sentinel sink puts in its outbox: a unit's rows as JSON objects for the table's
stream, stamped, gzip-compressed in uploads of at most 1 MB, each value within the service's
64 KB field limit (a longer one is truncated and says so). Encoded as the batches come, so
nothing piles up in memory. May import ``contracts``, ``sinks.outbox`` and ``tables``.
"""

from __future__ import annotations

import gzip
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

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
    stamped = {k: v for k, v in stamp.items() if k in known and v is not None}
    for row in _rows(batch):
        record: dict[str, Any] = {}
        for name, value in row.items():
            if value is None or name not in known:
                continue
            if name in dynamic:
                value = _dynamic(value)
            record[name] = value
        for name, value in stamped.items():
            record.setdefault(name, value)
        yield orjson.dumps({k: _bounded(v) for k, v in record.items()})


def _rows(batch: Batch) -> Iterator[Mapping[str, Any]]:
    yield from batch.rows
    if batch.arrow is not None:
        data = batch.arrow
        for start in range(0, data.num_rows, 5_000):
            yield from data.slice(start, 5_000).to_pylist()


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

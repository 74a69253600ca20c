"""Snapshots of the TVM datasets: materialised once per instant, then paged or written to files.

Owns turning a dataset "as of T" (``world.tvm_datasets``) into a numbered DuckDB table
(``tvm.snap_N``: the dataset's keys in paging order, ``rn`` from 1), so that every page of a
``$skiptoken`` walk and every part of an export reads the same rows cheaply
(``rn BETWEEN``, pruned by zone maps), however large the page; rendering a range of rows as
JSON lines (camelCase, streamed in batches) or writing it as a gzip JSON-lines part
(PascalCase, written by DuckDB's ``COPY``); and a small cache of recent snapshots, pinned
while in use.

Blocking (DuckDB): call from worker threads, never on the event loop.
Imports only ``world.database`` and ``world.tvm_datasets`` of the emulator: it shares no code
with the collector.
"""

from __future__ import annotations

import itertools
import os
import threading
import zlib
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from epf_emulator.world.database import Store
from epf_emulator.world.tvm_datasets import DATASETS, Dataset

__all__ = ["Snapshot", "Snapshots"]

_KEEP = 6  # snapshots kept (only keys, tens of bytes per row: ~200 MB for 3M rows)
_FETCH_ROWS = 5000
_CHUNK_BYTES = 1 << 20
_COPY_ROWS = 25_000  # lines rendered (and sorted) by one COPY: bounds a writer's memory


@dataclass
class Snapshot:
    """One dataset as of ``at`` (and, for the delta, since ``since``)."""

    dataset: Dataset
    at: int
    since: int | None
    table: str
    rows: int
    pins: int = 0
    _records: list[dict[str, Any]] | None = field(default=None, repr=False)


class Snapshots:
    """Materialises and caches snapshots; thread-safe."""

    def __init__(self, store: Store, *, seed: int, anchor_us: int) -> None:
        self._store = store
        self._seed = seed
        self._anchor_us = anchor_us
        self._lock = threading.Lock()
        self._building: dict[tuple[str, int, int | None], threading.Lock] = {}
        self._cache: OrderedDict[tuple[str, int, int | None], Snapshot] = OrderedDict()
        self._names = itertools.count(1)

    @contextmanager
    def pinned(self, name: str, at: int, since: int | None = None) -> Iterator[Snapshot]:
        """The snapshot of dataset ``name`` as of ``at``, kept while the block runs."""
        snapshot = self._get(name, at, since)
        try:
            yield snapshot
        finally:
            with self._lock:
                snapshot.pins -= 1
            self._evict()

    def lines(self, snapshot: Snapshot, start: int, count: int) -> Iterator[list[str]]:
        """Rows ``start+1 .. start+count`` as camelCase JSON objects, in batches."""
        if count <= 0 or start >= snapshot.rows:
            return
        sql = self._lines_sql(snapshot, start, count, pascal=False)
        cursor = self._store.cursor()
        try:
            cursor.execute(sql)
            while True:
                batch = cursor.fetchmany(_FETCH_ROWS)
                if not batch:
                    break
                yield [row[0] for row in batch]
        finally:
            cursor.close()

    def records(self, snapshot: Snapshot) -> list[dict[str, Any]]:
        """Every row as a dict (small datasets: the OData endpoints filter them in Python)."""
        with self._lock:
            cached = snapshot._records
        if cached is not None:
            return cached
        records = [
            orjson.loads(line) for batch in self.lines(snapshot, 0, snapshot.rows) for line in batch
        ]
        with self._lock:
            snapshot._records = records
        return records

    def write_part(self, snapshot: Snapshot, start: int, count: int, path: Path) -> None:
        """Write rows ``start+1 .. start+count`` as a gzip JSON-lines file, atomically.

        DuckDB renders and writes the lines itself (one JSON object per line, written
        through its CSV writer with quoting off, which keeps per-record columns), a slice of
        ``_COPY_ROWS`` rows at a time: a slice's lines are sorted in memory before they are
        written (a join does not keep the snapshot's order), so slices bound that memory
        (measured: a 100,000-row vulnerability part in one slice took 250 MB more per
        writer; in slices, too little to measure). zlib at level 1 then gzips them into one
        member, twice as fast as DuckDB's own gzip (measured: 1.2 s vs 2.5 s per 200,000
        vulnerability rows), which is most of an export's time.
        """
        plain = path.with_name(path.name + ".jsonl")
        partial = path.with_name(path.name + ".partial")
        target = str(plain).replace("'", "''")
        try:
            compressor = zlib.compressobj(1, zlib.DEFLATED, 31)  # wbits 31: a gzip member
            with partial.open("wb") as sink:
                for first in range(start, start + count, _COPY_ROWS):
                    rows = min(_COPY_ROWS, start + count - first)
                    self._copy_lines(snapshot, first, rows, target)
                    with plain.open("rb") as source:
                        while chunk := source.read(_CHUNK_BYTES):
                            sink.write(compressor.compress(chunk))
                sink.write(compressor.flush())
            os.replace(partial, path)
        finally:
            plain.unlink(missing_ok=True)
            partial.unlink(missing_ok=True)

    def count(self, name: str, at: int, since: int | None = None) -> int:
        with self.pinned(name, at, since) as snapshot:
            return snapshot.rows

    # --- internals ---------------------------------------------------------------------------
    def _get(self, name: str, at: int, since: int | None) -> Snapshot:
        key = (name, at, since)
        with self._lock:
            snapshot = self._cache.get(key)
            if snapshot is not None:
                snapshot.pins += 1
                self._cache.move_to_end(key)
                return snapshot
            building = self._building.setdefault(key, threading.Lock())
        with building:  # one materialisation per key, however many requests race for it
            with self._lock:
                snapshot = self._cache.get(key)
                if snapshot is not None:
                    snapshot.pins += 1
                    return snapshot
            snapshot = self._materialise(DATASETS[name], at, since)
            with self._lock:
                snapshot.pins += 1
                self._cache[key] = snapshot
                self._building.pop(key, None)
        self._evict()
        return snapshot

    def _materialise(self, dataset: Dataset, at: int, since: int | None) -> Snapshot:
        table = f"tvm.snap_{next(self._names)}"
        sql = dataset.snapshot(self._seed, at, since, self._anchor_us)
        cursor = self._store.cursor()
        try:
            cursor.execute(
                f"CREATE TABLE {table} AS SELECT row_number() OVER (ORDER BY {dataset.order})"
                f" AS rn, * FROM ({sql}) ORDER BY rn"
            )
            row = cursor.execute(f"SELECT count(*) FROM {table}").fetchone()
        finally:
            cursor.close()
        return Snapshot(dataset, at, since, table, int(row[0]) if row else 0)

    def _evict(self) -> None:
        dropped = []
        with self._lock:
            while len(self._cache) > _KEEP:
                victim = next((k for k, s in self._cache.items() if s.pins == 0), None)
                if victim is None:
                    break
                dropped.append(self._cache.pop(victim).table)
        for table in dropped:
            cursor = self._store.cursor()
            try:
                cursor.execute(f"DROP TABLE IF EXISTS {table}")
            finally:
                cursor.close()

    def _copy_lines(self, snapshot: Snapshot, start: int, count: int, target: str) -> None:
        sql = self._lines_sql(snapshot, start, count, pascal=True)
        cursor = self._store.cursor()
        try:
            cursor.execute(
                f"COPY ({sql}) TO '{target}'"
                " (FORMAT CSV, HEADER false, QUOTE '', ESCAPE '', DELIMITER '\x01')"
            )
        finally:
            cursor.close()

    def _lines_sql(self, snapshot: Snapshot, start: int, count: int, *, pascal: bool) -> str:
        """One JSON object per row; a few rows carry the dataset's undocumented column."""
        d = snapshot.dataset
        render = d.file_columns if pascal else d.columns
        columns = render(self._seed, snapshot.at, self._anchor_us)
        camel, pascal_name, extra_value, extra_when = d.extra(self._seed)
        fields = ", ".join(f"'{p if pascal else c}': {sql}" for c, p, sql in columns)
        extra_name = pascal_name if pascal else camel
        plain = f"to_json({{{fields}}})"
        with_extra = f"to_json({{{fields}, '{extra_name}': {extra_value}}})"
        return (
            f"SELECT CAST(CASE WHEN {extra_when} THEN {with_extra} ELSE {plain} END AS VARCHAR)"
            f" FROM {snapshot.table} s {d.joins}"
            f" WHERE s.rn > {start} AND s.rn <= {start + count} ORDER BY s.rn"
        )

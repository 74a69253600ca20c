"""The durable outbox: batches a remote sink has not acknowledged yet, on disk, in order.

A delivery unit (a page, an export part) is staged as upload-sized gzip JSON files, then
committed with one directory rename into ``pending/<seq>.<hash>/``: from then on it survives a
crash, a reboot and a sink that is down for the whole run, and the pipeline may move its
checkpoint past it. The sender deletes each file once the remote side acknowledged it, and a
unit whose files are all gone is logged in ``sent.log`` and its directory removed. A unit is
"delivered" (for the pipeline) once it is pending or sent, so a resumed run never enqueues it
twice. Each file carries its ``BatchId`` in every row, so a file re-sent after a lost
acknowledgement can be recognised downstream.

A unit of a snapshot that cannot resume is committed *held* (a ``held`` file in its folder,
saying which snapshot): it is not sent until ``release``, once the snapshot is complete. A
snapshot cut short (a kill, a failure) is collected again from its start, and its held units
are discarded unsent, so Sentinel never gets a row of it twice.

Layout::

    <dir>/pending/000000000042.<unit hash>/unit          the unit id and table, one line each
    <dir>/pending/000000000042.<unit hash>/0003.json.gz  one upload (a JSON array)
    <dir>/pending/000000000042.<unit hash>/held          {scope, dataset, run_id}: not yet
    <dir>/staging/...                                    units being written (lost on a crash)
    <dir>/rejected/<seq>.<hash>.<n>.json.gz + .reason    uploads the remote side refused for good
    <dir>/sent.log                                       "<utc iso>\\t<unit id>" per sent unit

May import nothing of ours.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

__all__ = ["Outbox", "PendingFile", "write_atomically"]

_HELD = "held"
_SENT_LOG_DAYS = 30  # units older than this are forgotten (no run resumes that far back)


@dataclass(frozen=True)
class PendingFile:
    """One upload waiting in the outbox."""

    path: Path
    unit: str
    table: str
    rows: int

    @property
    def size(self) -> int:
        return self.path.stat().st_size


class Outbox:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self._pending = directory / "pending"
        self._staging = directory / "staging"
        self._rejected = directory / "rejected"
        for folder in (self._pending, self._staging, self._rejected):
            folder.mkdir(parents=True, exist_ok=True)
        # A unit staged but never committed was not delivered: its rows come again.
        for leftover in self._staging.iterdir():
            shutil.rmtree(leftover, ignore_errors=True)
        self._lock = threading.Lock()
        self._sent = self._read_sent_log()
        for folder in self._pending_dirs():
            if not (folder / "unit").exists() and not any(folder.glob("*.json.gz")):
                # A sent unit's folder, killed while being removed (its unit file first).
                shutil.rmtree(folder, ignore_errors=True)
        self._queued = {self._unit_of(d): d for d in self._pending_dirs()}
        # Kept as files come and go, so the cap's check before each unit reads no folder.
        self._bytes = sum(_size(f) for d in self._queued.values() for f in d.glob("*.json.gz"))
        existing = [int(d.name.split(".")[0]) for d in self._pending_dirs()]
        self._next_seq = max(existing, default=self._last_seq()) + 1
        # A unit whose last upload was acknowledged just before a crash: sent, not yet logged
        # (a held unit that is empty was logged when it was committed).
        for unit, folder in list(self._queued.items()):
            if not any(folder.glob("*.json.gz")):
                self._finish_if_empty(folder, unit)

    # --- what the pipeline asks ----------------------------------------------------------------
    def has(self, unit: str) -> bool:
        with self._lock:
            return unit in self._sent or unit in self._queued

    def holds(self, unit_prefix: str) -> bool:
        """Whether a unit starting ``unit_prefix`` was sent (within the sent log) or waits."""
        with self._lock:
            return any(u.startswith(unit_prefix) for u in (*self._sent, *self._queued))

    def stage(self, unit: str, table: str, *, held: Mapping[str, str] | None = None) -> StagedUnit:
        """A unit to write; ``held`` (the snapshot it belongs to) keeps it from the sender
        until ``release``."""
        folder = self._staging / _digest(unit)
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        try:
            (folder / "unit").write_text(f"{unit}\n{table}\n", encoding="utf-8")
            if held is not None:
                (folder / _HELD).write_text(json.dumps(dict(held)), encoding="utf-8")
        except BaseException:  # a full disk, say: no half-made unit is left behind
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return StagedUnit(self, folder, unit)

    def release(self, unit_prefix: str) -> list[PendingFile]:
        """The held units whose id starts ``unit_prefix`` may be sent now: their uploads."""
        released: list[PendingFile] = []
        with self._lock:
            folders = [f for u, f in self._queued.items() if u.startswith(unit_prefix)]
        for folder in folders:
            marker = folder / _HELD
            if marker.exists():
                marker.unlink()
                _fsync_dir(folder)
                released += list(_uploads_in(folder))
        return released

    def held_units(self) -> list[tuple[str, dict[str, str]]]:
        """(unit, its snapshot: scope, dataset, run_id) of every unit still held."""
        with self._lock:
            queued = list(self._queued.items())
        held = []
        for unit, folder in queued:
            try:
                held.append((unit, json.loads((folder / _HELD).read_text(encoding="utf-8"))))
            except FileNotFoundError:
                continue
        return held

    def held_bytes(self) -> int:
        """The size of the held uploads (they wait for their snapshot, not for the sender)."""
        with self._lock:
            folders = list(self._queued.values())
        return sum(_size(f) for d in folders if (d / _HELD).exists() for f in d.glob("*.json.gz"))

    def discard(self, unit_prefix: str, table: str) -> int:
        """Drop pending units of ``table`` whose id starts with ``unit_prefix``; rows dropped."""
        dropped = 0
        with self._lock:
            for unit, folder in list(self._queued.items()):
                if unit.startswith(unit_prefix) and _table_of(folder) == table:
                    for upload in folder.glob("*.json.gz"):
                        size = _size(upload)
                        with contextlib.suppress(FileNotFoundError):  # a sender was first
                            upload.unlink()
                            dropped += _rows_of(upload)
                            self._bytes -= size
                    shutil.rmtree(folder, ignore_errors=True)
                    del self._queued[unit]
        return dropped

    # --- what the sender asks --------------------------------------------------------------------
    def pending(self) -> Iterator[PendingFile]:
        """Every upload waiting to be sent (held ones aside), oldest unit first, in order
        within a unit."""
        for folder in self._pending_dirs():
            if not (folder / _HELD).exists():
                yield from _uploads_in(folder)

    @property
    def pending_bytes(self) -> int:
        """The size on disk of the uploads waiting (what the outbox's cap bounds)."""
        with self._lock:
            return self._bytes

    def acknowledged(self, item: PendingFile) -> None:
        """The remote side accepted ``item``: forget it, and its unit once nothing is left."""
        self._forget(item.path)
        self._finish_if_empty(item.path.parent, item.unit)

    def reject(self, item: PendingFile, reason: str) -> Path:
        """Set ``item`` aside for good (the remote side will never accept it), with why."""
        target = self._rejected / f"{item.path.parent.name}.{item.path.name}"
        size = _size(item.path)
        item.path.replace(target)
        with self._lock:
            self._bytes -= size
        target.with_suffix(".reason").write_text(reason + "\n", encoding="utf-8")
        self._finish_if_empty(item.path.parent, item.unit)
        return target

    def replace(self, item: PendingFile, parts: list[tuple[bytes, int]]) -> list[PendingFile]:
        """Replace ``item`` by smaller uploads (e.g. after a 413), in the same place in order;
        return them."""
        stem = item.path.name.split(".")[0]
        new = []
        for i, (body, rows) in enumerate(parts):
            path = item.path.parent / f"{stem}.{i:03d}.r{rows}.json.gz"
            write_atomically(path, body)
            with self._lock:
                self._bytes += len(body)
            new.append(PendingFile(path, item.unit, item.table, rows))
        self._forget(item.path)
        return new

    def counts(self) -> tuple[int, int]:
        """(uploads, rows) waiting."""
        files = [f for d in self._pending_dirs() for f in d.glob("*.json.gz")]
        return len(files), sum(_rows_of(f) for f in files)

    # --- internals ---------------------------------------------------------------------------------
    def _forget(self, path: Path) -> None:
        """Remove an upload and its bytes from the count (once, whoever removes it first)."""
        size = _size(path)
        try:
            path.unlink()
        except FileNotFoundError:
            return
        with self._lock:
            self._bytes -= size

    def _commit(self, folder: Path, unit: str) -> list[PendingFile]:
        with self._lock:
            seq = self._next_seq
            self._next_seq += 1
            target = self._pending / f"{seq:012d}.{folder.name}"
            _fsync_dir(folder)
            folder.rename(target)  # the commit: one atomic rename
            _fsync_dir(self._pending)
            self._queued[unit] = target
        uploads = list(_uploads_in(target))
        with self._lock:
            self._bytes += sum(_size(u.path) for u in uploads)
        if not uploads:  # nothing to send (no row changed, say): delivered at once
            self._finish_if_empty(target, unit)
        if (target / _HELD).exists():
            return []  # sent once its snapshot is complete (release)
        return uploads

    def _finish_if_empty(self, folder: Path, unit: str) -> None:
        with self._lock:
            if not folder.exists() or any(folder.glob("*.json.gz")):
                return
            stamp = datetime.now(UTC).isoformat()
            with (self.dir / "sent.log").open("a", encoding="utf-8") as log:
                log.write(f"{stamp}\t{unit}\n")
                log.flush()
                os.fsync(log.fileno())
            self._sent.add(unit)
            self._queued.pop(unit, None)
            (self.dir / "last-seq").write_text(folder.name.split(".")[0], encoding="utf-8")
            shutil.rmtree(folder, ignore_errors=True)

    def _pending_dirs(self) -> list[Path]:
        return sorted(d for d in self._pending.iterdir() if d.is_dir())

    def _unit_of(self, folder: Path) -> str:
        return _unit_and_table(folder)[0]

    def _last_seq(self) -> int:
        try:
            return int((self.dir / "last-seq").read_text(encoding="utf-8").strip())
        except (OSError, ValueError):
            return 0

    def _read_sent_log(self) -> set[str]:
        path = self.dir / "sent.log"
        if not path.exists():
            return set()
        horizon = datetime.now(UTC) - timedelta(days=_SENT_LOG_DAYS)
        kept: list[str] = []
        units: set[str] = set()
        for line in path.read_text(encoding="utf-8").splitlines():
            stamp, _, unit = line.partition("\t")
            try:
                if datetime.fromisoformat(stamp) < horizon:
                    continue
            except ValueError:
                continue
            kept.append(line)
            units.add(unit)
        if len(kept) < len(path.read_text(encoding="utf-8").splitlines()):
            write_atomically(path, ("\n".join(kept) + "\n").encode() if kept else b"")
        return units


class StagedUnit:
    """A unit being written: ``add`` uploads, then ``commit`` (or ``abandon``)."""

    def __init__(self, outbox: Outbox, folder: Path, unit: str) -> None:
        self._outbox = outbox
        self._folder = folder
        self._unit = unit
        self._count = 0

    def add(self, body: bytes, rows: int) -> None:
        """One upload: a gzip JSON array of ``rows`` records."""
        path = self._folder / f"{self._count:06d}.r{rows}.json.gz"
        with path.open("wb") as fh:
            fh.write(body)
            fh.flush()
            os.fsync(fh.fileno())
        self._count += 1

    def commit(self) -> list[PendingFile]:
        """Make the unit durable and pending; return its uploads, in order."""
        return self._outbox._commit(self._folder, self._unit)

    def abandon(self) -> None:
        shutil.rmtree(self._folder, ignore_errors=True)


def _digest(unit: str) -> str:
    return hashlib.sha256(unit.encode()).hexdigest()[:24]


def _uploads_in(folder: Path) -> Iterator[PendingFile]:
    unit, table = _unit_and_table(folder)
    for path in sorted(folder.glob("*.json.gz")):
        yield PendingFile(path, unit, table, _rows_of(path))


def _unit_and_table(folder: Path) -> tuple[str, str]:
    lines = (folder / "unit").read_text(encoding="utf-8").splitlines()
    return lines[0], lines[1] if len(lines) > 1 else ""


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:  # already sent, or set aside
        return 0


def _table_of(folder: Path) -> str:
    return _unit_and_table(folder)[1]


def _rows_of(path: Path) -> int:
    # "<index>.r<rows>.json.gz", or "<index>.<part>.r<rows>.json.gz" after a split
    for part in path.name.split("."):
        if part.startswith("r") and part[1:].isdigit():
            return int(part[1:])
    return 0


def write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` whole or not at all (temp file, fsync, rename)."""
    partial = path.with_name(path.name + ".partial")
    try:
        with partial.open("wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        partial.replace(path)
    except BaseException:
        partial.unlink(missing_ok=True)  # a full disk leaves no half file behind
        raise


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)

"""The state-store interface, and its local-folder backend.

A unit of work's state is a folder laid out as a run's state folder is (``checkpoints/``,
``outbox/``, ``quarantine/``): the pipeline runs on a local copy of it unchanged. ``push``
writes what changed in the order that never loses a row: the outbox and quarantine first,
then the change-only history, the checkpoints last. A push cut short leaves checkpoints
behind what was written, so the unit is collected again (rows delivered twice, which
``BatchId`` and the keys let a query drop), never ahead of it (rows lost).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from filelock import FileLock, Timeout

from endpoint_forensics.errors import EpfError

__all__ = ["Lease", "LeaseLost", "LocalStateStore", "StateStore", "files_in_push_order"]


class LeaseLost(EpfError):
    """A lease expired or was broken while its holder worked: what it did is not pushed."""


class Lease(Protocol):
    """One holder's right to a unit or a budget, until released or expired."""

    name: str
    #: What the lease's record held when it was taken (a budget's calls); b"" when new.
    record: bytes

    def keep(self) -> None:
        """Prove the lease is still held (and extend it); raises ``LeaseLost`` if not."""

    def release(self, record: bytes | None = None) -> None:
        """Give the lease up, first writing ``record`` (when given) for the next holder."""


class StateStore(Protocol):
    """Where units' state and leases live: a folder, or a Blob container."""

    def take(self, name: str) -> Lease | None:
        """The lease called ``name``, or None when another holder has it."""

    def pull(self, prefix: str, into: Path) -> None:
        """Copy everything stored under ``prefix`` into the folder ``into``."""

    def push(self, prefix: str, source: Path, *, under: Lease) -> None:
        """Store the folder ``source`` under ``prefix`` (what changed since ``pull``, and
        removing what is gone), checkpoints last, while ``under`` is held."""

    def read(self, name: str) -> bytes | None:
        """One stored object, None when there is none."""


def files_in_push_order(folder: Path) -> list[str]:
    """The files of ``folder`` (relative, '/'-separated) in the order a push writes them."""
    names = [
        p.relative_to(folder).as_posix()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.name.endswith((".lock", ".tmp", ".wal"))
    ]
    return sorted(names, key=_rank)


def _rank(name: str) -> int:
    if not name.startswith("checkpoints/"):
        return 0  # the outbox, quarantine: what the checkpoints will say was delivered
    return 2 if name.endswith(".json") else 1  # the history, then the checkpoints


def digest(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class _FolderLease:
    def __init__(self, name: str, lock: FileLock, record_path: Path) -> None:
        self.name = name
        self._lock = lock
        self._record_path = record_path
        self.record = record_path.read_bytes() if record_path.exists() else b""

    def keep(self) -> None:
        if not self._lock.is_locked:
            raise LeaseLost(f"the lease {self.name!r} was released before its work was saved")

    def release(self, record: bytes | None = None) -> None:
        if record is not None and self._lock.is_locked:
            _write(self._record_path, record)
        self._lock.release()


class LocalStateStore:
    """State in a local folder: ``<root>/<prefix>/...``; a lease is a kernel file lock
    (``filelock``), gone with its process, beside its record ``<root>/leases/<name>``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def take(self, name: str) -> _FolderLease | None:
        path = self.root / "leases" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(path) + ".lock", timeout=0)
        try:
            lock.acquire()
        except Timeout:
            return None
        return _FolderLease(name, lock, path)

    def pull(self, prefix: str, into: Path) -> None:
        stored = self.root / prefix
        into.mkdir(parents=True, exist_ok=True)
        for name in _files(stored):
            target = into / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(stored / name, target)

    def push(self, prefix: str, source: Path, *, under: Lease) -> None:
        stored = self.root / prefix
        keep = files_in_push_order(source)
        for name in keep:
            target = stored / name
            if target.exists() and digest(target) == digest(source / name):
                continue
            if _rank(name) == 2:
                under.keep()  # the checkpoints only while the unit is still ours
            target.parent.mkdir(parents=True, exist_ok=True)
            _write(target, (source / name).read_bytes())
        for name in set(_files(stored)) - set(keep):
            (stored / name).unlink()

    def read(self, name: str) -> bytes | None:
        path = self.root / name
        return path.read_bytes() if path.is_file() else None


def _files(folder: Path) -> Iterator[str]:
    if folder.is_dir():
        for p in folder.rglob("*"):
            if p.is_file() and not p.name.endswith((".lock", ".tmp")):
                yield p.relative_to(folder).as_posix()


def _write(path: Path, data: bytes) -> None:
    """Atomically: a reader sees the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)

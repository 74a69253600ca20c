"""The workspace as ``epf serve`` reads it: a private copy of the last committed state.

DuckDB lets one process write a file or several read it, not both: a server holding the
workspace open would make ``epf sync`` fail, and a server opening it while a sync writes gets a
lock error. So the server answers from a copy, made when the workspace is not being written and
its size or time has changed since the last copy; while a sync writes, the previous copy answers.
A copy is kept only if the workspace did not change while it was copied.

The current copy is held open for the server's life: DuckDB then shares its database instance
with every connection a request opens to the copy, which costs a fraction of a millisecond
instead of the 10 to 20 ms of starting an instance, and finds its pages cached.

The copies live in a temporary folder named after the server's process, removed when it stops;
one that a killed server left (its process gone) is removed by the next server to start.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

from endpoint_forensics.errors import ConfigError, WorkspaceBusy
from endpoint_forensics.workspace import store

__all__ = ["WorkspaceBusy", "WorkspaceSnapshot"]


_PREFIX = "epf-serve-"


def _remove_folders_of_gone_servers() -> None:
    """Remove the copies of servers whose process is gone (killed before they could)."""
    for folder in Path(tempfile.gettempdir()).glob(f"{_PREFIX}*-*"):
        pid = folder.name[len(_PREFIX) :].partition("-")[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # another user's, or not a process id: not ours to judge
    return True


def _stamp(path: Path) -> tuple[int, int, int, int]:
    """Size and time of the file and of its write-ahead log (absent: zeros)."""
    stamp = []
    for part in (path, path.with_name(path.name + ".wal")):
        try:
            info = part.stat()
            stamp += [info.st_size, info.st_mtime_ns]
        except FileNotFoundError:
            stamp += [0, 0]
    return (stamp[0], stamp[1], stamp[2], stamp[3])


class WorkspaceSnapshot:
    """Copies of ``source`` in a private folder; ``current()`` gives the newest usable one."""

    def __init__(self, source: Path) -> None:
        self.source = source
        _remove_folders_of_gone_servers()
        self._folder = Path(tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-"))
        self._lock = threading.Lock()
        self._copy: Path | None = None
        self._held: Any = None  # a read-only connection to the current copy
        self._stamp: tuple[int, int, int, int] | None = None
        self._generation = 0

    def current(self) -> Path:
        """The path of the newest copy, refreshed first if the workspace changed and is free.

        Raises:
            ConfigError: the workspace does not exist.
            WorkspaceBusy: it is being written and there is no earlier copy to answer from.
        """
        with self._lock:
            if not self.source.exists():
                raise ConfigError(
                    f"workspace {str(self.source)!r} does not exist; run `epf sync` or `epf demo` first"
                )
            stamp = _stamp(self.source)
            if stamp != self._stamp:
                self._refresh(stamp)
            if self._copy is None:
                raise WorkspaceBusy(
                    f"workspace {str(self.source)!r} is being written (a sync runs); the"
                    " dashboard answers once it ends"
                )
            return self._copy

    def _refresh(self, stamp: tuple[int, int, int, int]) -> None:
        try:
            # Free (no writer holds it) and readable: then copy it as it stands.
            store.connect(self.source, read_only=True).close()
        except WorkspaceBusy:
            return  # a writer holds it: the previous copy answers
        self._generation += 1
        copy = self._folder / f"workspace-{self._generation}.duckdb"
        shutil.copyfile(self.source, copy)
        wal = self.source.with_name(self.source.name + ".wal")
        if wal.exists():
            shutil.copyfile(wal, copy.with_name(copy.name + ".wal"))
        if _stamp(self.source) != stamp:
            copy.unlink(missing_ok=True)  # written meanwhile: not a committed state
            copy.with_name(copy.name + ".wal").unlink(missing_ok=True)
            return
        held = store.connect(copy, read_only=True)
        if self._held is not None:
            self._held.close()
        old, self._copy, self._stamp, self._held = self._copy, copy, stamp, held
        if old is not None:
            # Requests still reading the old copy keep their open handle (POSIX).
            old.unlink(missing_ok=True)
            old.with_name(old.name + ".wal").unlink(missing_ok=True)

    def close(self) -> None:
        with self._lock:
            if self._held is not None:
                self._held.close()
                self._held = None
        shutil.rmtree(self._folder, ignore_errors=True)

"""One run at a time per state folder: two `epf sync`, an `epf run` tick that overlaps a slow
run, or a Functions timer that fires again while the last invocation still works.

The checkpoints, the outbox and the quarantine of a state folder assume one writer: two runs
would both deliver the same units and move the same cursors. The lock is ``filelock``'s
(``flock`` on Linux and macOS, ``LockFileEx`` on Windows): the kernel holds it for the open
file, so a run that is killed, even with SIGKILL, leaves no stale lock behind. Beside it,
``run.lock.json`` says who holds it (process, host, since when), for the message the other
run prints; it is advice only, the kernel lock decides.
May import ``errors``.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path

from filelock import FileLock, Timeout

from endpoint_forensics.errors import RunInProgress, StateNotWritable

__all__ = ["LOCK_FILE", "run_lock"]

LOCK_FILE = "run.lock"
_OWNER_FILE = "run.lock.json"


@contextmanager
def run_lock(
    state_dir: Path, *, wait_seconds: float = 0.0, command: str = "epf sync"
) -> Iterator[None]:
    """Hold the state folder's run lock for the block; wait up to ``wait_seconds`` for it.

    Raises:
        RunInProgress: another process holds it (the message names it and what to do).
        StateNotWritable: the state folder cannot be created or written.
    """
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        lock = FileLock(state_dir / LOCK_FILE, timeout=wait_seconds)
        lock.acquire()
    except Timeout:
        raise RunInProgress(
            f"another run holds the state folder {state_dir} ({_owner(state_dir)}), so this one"
            " did not start; it changes nothing. Run again when that one has finished"
            + ("" if wait_seconds else ", or pass --wait SECONDS to wait for it")
        ) from None
    except OSError as exc:
        raise StateNotWritable(
            f"the state folder {state_dir} cannot be written ({exc.strerror or exc}): the run"
            " keeps its checkpoints and outbox there; give it a writable folder (state.dir)"
        ) from None
    owner = state_dir / _OWNER_FILE
    try:
        with suppress(OSError):  # advice only: a full disk must not stop the run here
            owner.write_text(
                json.dumps(
                    {
                        "pid": os.getpid(),
                        "host": socket.gethostname(),
                        "command": command,
                        "since": datetime.now(UTC).isoformat(timespec="seconds"),
                    }
                )
            )
        yield
    finally:
        with suppress(OSError):
            owner.unlink()
        lock.release()


def _owner(state_dir: Path) -> str:
    """Who holds the lock, as its owner file tells (it may be gone already)."""
    try:
        held = json.loads((state_dir / _OWNER_FILE).read_text())
        return f"{held['command']}, process {held['pid']} on {held['host']}, since {held['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that has not said which"

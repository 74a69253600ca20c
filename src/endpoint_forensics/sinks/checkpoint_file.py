"""Checkpoints kept in files, for a sink that cannot keep them with its data (Sentinel: its
tables cannot be read back cheaply). One JSON file per source, written atomically (temp file,
fsync, rename) whenever a dataset's checkpoint moves. The folder is per destination: the
Sentinel sink keys it by its ingestion endpoint and DCRs, so pointing it at a new workspace
or DCR starts from nothing and gets full baselines.
May import ``contracts``, ``errors`` and ``sinks.outbox``.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import orjson

from endpoint_forensics.contracts import SavedCheckpoint
from endpoint_forensics.errors import EpfError, SinkError, local_failure
from endpoint_forensics.sinks.outbox import write_atomically

__all__ = ["FileCheckpointStore", "destination_folder", "read_checkpoint_file"]

_VERSION = 1


def read_checkpoint_file(path: Path) -> dict[str, dict[str, Any]]:
    """The datasets of one checkpoint file ({} when there is none, or of another version)."""
    if not path.exists():
        return {}
    try:
        loaded = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise EpfError(
            f"checkpoint file {str(path)!r} is unreadable ({exc}); move it away to start the "
            "source's datasets afresh"
        ) from exc
    if isinstance(loaded, dict) and loaded.get("version") == _VERSION:
        datasets = loaded.get("datasets")
        return dict(datasets) if isinstance(datasets, dict) else {}
    return {}


class FileCheckpointStore:
    """``<folder>/<scope>.json``: ``{"version": 1, "datasets": {dataset: state}}``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._lock = threading.Lock()

    def load(self, scope: str) -> dict[str, dict[str, Any]]:
        return read_checkpoint_file(self._path(scope))

    def save(self, checkpoint: SavedCheckpoint) -> None:
        with self._lock:
            path = self._path(checkpoint.scope)
            datasets = read_checkpoint_file(path)
            datasets[checkpoint.dataset] = dict(checkpoint.state)
            data = {"version": _VERSION, "datasets": datasets}
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                write_atomically(path, orjson.dumps(data, option=orjson.OPT_INDENT_2))
            except OSError as exc:  # the disk: the unit fails, its old checkpoint stands
                raise SinkError(
                    f"saving the checkpoint {path} failed: {local_failure(exc)}"
                ) from exc

    def _path(self, scope: str) -> Path:
        return self.folder / f"{scope}.json"


def destination_folder(root: Path, prefix: str, keys: set[str]) -> Path:
    """The checkpoint folder under ``root`` of the destination that ``keys`` name (for
    Sentinel: its DCRs' immutable ids). A folder whose keys share one with ``keys`` is the same
    destination, reorganised (a table moved to another DCR of the workspace): it is kept, and
    its keys updated. Keys shared with none: a new destination, a new folder."""
    import hashlib

    wanted = sorted(k.lower() for k in keys)
    chosen: Path | None = None
    if root.is_dir():
        for folder in sorted(root.glob(f"{prefix}-*")):
            try:
                known = set(orjson.loads((folder / "keys.json").read_bytes()))
            except (OSError, orjson.JSONDecodeError, TypeError):
                continue
            if known & set(wanted):
                chosen = folder
                break
    if chosen is None:
        digest = hashlib.sha256("\n".join(wanted).encode()).hexdigest()[:16]
        chosen = root / f"{prefix}-{digest}"
    chosen.mkdir(parents=True, exist_ok=True)
    (chosen / "keys.json").write_bytes(orjson.dumps(wanted))
    return chosen

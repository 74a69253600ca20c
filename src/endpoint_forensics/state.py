"""Run state on disk: the quarantine of malformed records (checkpoints and the outbox come later).

A quarantined record is kept whole, with its reason, in
``<state dir>/quarantine/<run id>/<tenant>.<dataset>.jsonl``, so nothing collected is lost.
Imports ``contracts`` only.
"""

from __future__ import annotations

from pathlib import Path

import orjson

from endpoint_forensics.contracts import Reject

__all__ = ["Quarantine"]


class Quarantine:
    def __init__(self, state_dir: Path, run_id: str) -> None:
        self.folder = state_dir / "quarantine" / run_id
        self.count = 0

    def add(self, tenant: str, dataset: str, rejects: list[Reject]) -> Path | None:
        """Append ``rejects`` to the dataset's quarantine file; return its path."""
        if not rejects:
            return None
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{tenant}.{dataset}.jsonl"
        with path.open("ab") as fh:
            for reject in rejects:
                line = {"reason": reject.reason, "record": reject.record}
                fh.write(orjson.dumps(line, default=str) + b"\n")
        self.count += len(rejects)
        return path

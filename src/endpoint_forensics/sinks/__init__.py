"""Sinks: destinations for record batches, one interface (``contracts.Sink``).

``open_sinks`` builds the ones a config asks for: the local DuckDB workspace (unless
``store.enabled = false``) and Microsoft Sentinel (``[sentinel]``).
May import ``sinks.duckdb`` and ``sinks.sentinel`` (each only when configured), ``config`` and
``contracts``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from endpoint_forensics.config import Settings
    from endpoint_forensics.contracts import Sink

__all__ = ["close_sinks", "open_sinks", "sentinel_checkpoint_folder"]


def sentinel_checkpoint_folder(settings: Settings) -> Path:
    """The Sentinel sink's checkpoint folder: one per destination, named by its DCRs. A DCR
    names the workspace tables its streams land in, so a new workspace (new DCRs) starts from
    nothing and gets full baselines, while tables moved between the DCRs of one workspace keep
    their checkpoints. The ingestion endpoint is only the way in."""
    from endpoint_forensics.sinks.checkpoint_file import destination_folder

    sentinel = settings.sentinel
    assert sentinel is not None
    rules = {d.immutable_id for d in sentinel.dcrs}
    if sentinel.dcr_immutable_id:
        rules.add(sentinel.dcr_immutable_id)
    return destination_folder(settings.state.dir / "checkpoints", "sentinel", rules)


def open_sinks(settings: Settings) -> list[Sink]:
    sinks: list[Sink] = []
    if settings.store.enabled:
        from endpoint_forensics.sinks.duckdb import DuckDBSink

        sinks.append(
            DuckDBSink(settings.store.path, stage_memory_mb=settings.store.stage_memory_mb)
        )
    if settings.sentinel is not None:
        from endpoint_forensics.sinks.sentinel import SentinelSink

        outbox = settings.sentinel.outbox_dir or settings.state.dir / "outbox" / "sentinel"
        sinks.append(SentinelSink(settings.sentinel, outbox, sentinel_checkpoint_folder(settings)))
    return sinks


def close_sinks(sinks: list[Sink]) -> None:
    for sink in sinks:
        sink.close()

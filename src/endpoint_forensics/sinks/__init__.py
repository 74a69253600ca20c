"""Sinks: destinations for record batches, one interface (``contracts.Sink``).

``open_sinks`` builds the ones a config asks for: the local DuckDB workspace (unless
``store.enabled = false``) and Microsoft Sentinel (``[sentinel]``).
May import ``sinks.duckdb`` and ``sinks.sentinel`` (each only when configured), ``config`` and
``contracts``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from endpoint_forensics.config import Settings
    from endpoint_forensics.contracts import Sink

__all__ = ["close_sinks", "open_sinks"]


def open_sinks(settings: Settings) -> list[Sink]:
    sinks: list[Sink] = []
    if settings.store.enabled:
        from endpoint_forensics.sinks.duckdb import DuckDBSink

        sinks.append(DuckDBSink(settings.store.path))
    if settings.sentinel is not None:
        from endpoint_forensics.sinks.sentinel import SentinelSink

        outbox = settings.sentinel.outbox_dir or settings.state.dir / "outbox" / "sentinel"
        sinks.append(SentinelSink(settings.sentinel, outbox))
    return sinks


def close_sinks(sinks: list[Sink]) -> None:
    for sink in sinks:
        sink.close()

"""What the Sentinel end-to-end tests share: a sync into every configured sink, and the row
counts on both sides."""

import duckdb

from endpoint_forensics.config import Settings
from endpoint_forensics.pipeline.run import RunSummary, run_sync
from endpoint_forensics.sinks import close_sinks, open_sinks
from epf_emulator import Emulator


def sync(settings: Settings) -> RunSummary:
    sinks = open_sinks(settings)
    try:
        return run_sync(settings, sinks)
    finally:
        close_sinks(sinks)


def local_counts(settings: Settings) -> dict[str, int]:
    """Rows per table of the local workspace (empty tables and bookkeeping left out)."""
    con = duckdb.connect(str(settings.store.path), read_only=True)
    try:
        tables = [r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()]
        counts = {t: con.execute(f'SELECT count(*) FROM "{t}"').fetchall()[0][0] for t in tables}
    finally:
        con.close()
    return {t: n for t, n in counts.items() if n and not t.startswith("_")}


def ingested_since(emu: Emulator, before: dict[str, int]) -> dict[str, int]:
    """Rows per table the emulated Logs Ingestion endpoint accepted since ``before``."""
    now = emu.stats()["ingested"]
    return {t: n - before.get(t, 0) for t, n in now.items() if n - before.get(t, 0)}

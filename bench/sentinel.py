"""`make bench-sentinel`: delivery into the Logs Ingestion API, measured, beside the SDK's
plain sequential upload in the same run.

1. Starts `epf emulator` (its own process, so the endpoint's work is not ours) and syncs a fleet
   into a local workspace with the Sentinel endpoint unreachable: every upload waits in the
   outbox (the collection is not timed).
2. Ours: a `SentinelSink` on that outbox, pointed at the endpoint, sends everything
   (`max_concurrency` senders, pre-built gzip uploads); timed until the outbox is empty.
3. The simplest alternative: the same rows, read back from the workspace, given to the Azure
   SDK's `LogsIngestionClient.upload()` one table after the other (it chunks, gzips and posts
   sequentially); timed around the uploads only.
Printed for both: rows, uncompressed MB, seconds, rows/s, MB/s, and the endpoint's count of
rows received. Usage: python bench/sentinel.py [--devices N] [--concurrency C]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import duckdb
import httpx
import orjson

from endpoint_forensics.config import load_settings
from endpoint_forensics.identity.credentials import build_credential
from endpoint_forensics.pipeline.run import run_sync
from endpoint_forensics.sinks import close_sinks, open_sinks
from endpoint_forensics.sinks.sentinel import SentinelSink

EPF = [sys.executable, "-m", "endpoint_forensics"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="epf-bench-sentinel-"))
    config = scratch / "emulated.toml"
    emulator = subprocess.Popen(
        [*EPF, "emulator", "--devices", str(args.devices), "--seed", str(args.seed), "--port",
         "0", "--write-config", str(config), "--state-dir", str(scratch / "emulator")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while not config.exists():
            if emulator.poll() is not None or time.monotonic() > deadline:
                print("the emulator did not start", file=sys.stderr)
                return 1
            time.sleep(0.2)
        # Bound, never listening, held until the end: connections to it are refused.
        refuser = socket.socket()
        refuser.bind(("127.0.0.1", 0))
        closed_port = refuser.getsockname()[1]
        base = {"store.path": str(scratch / "ws.duckdb"), "state.dir": str(scratch / "state")}
        up = load_settings(config, environ=dict(os.environ), overrides=base)
        assert up.sentinel is not None
        down = load_settings(
            config,
            environ=dict(os.environ),
            overrides={**base, "sentinel.endpoint": f"https://127.0.0.1:{closed_port}"},
        )
        print(f"bench-sentinel: {args.devices:,} devices; collecting into the outbox ...")
        sinks = open_sinks(down)
        try:
            summary = run_sync(down, sinks)
        finally:
            close_sinks(sinks)
            refuser.close()
        waiting = summary.deliveries["sentinel"]
        print(f"  {waiting.waiting_rows:,} rows in {waiting.waiting_uploads:,} uploads wait")

        outbox = scratch / "state" / "outbox" / "sentinel"
        config_ours = up.sentinel.model_copy(update={"max_concurrency": args.concurrency})
        before = _ingested(up.sentinel.endpoint, up.sentinel.ca_bundle)
        sink = SentinelSink(config_ours, outbox, scratch / "state" / "checkpoints" / "bench")
        started = time.monotonic()
        report = sink.flush()
        ours_seconds = time.monotonic() - started
        sink.close()
        ours_received = _ingested(up.sentinel.endpoint, up.sentinel.ca_bundle) - before
        if report.error:
            print(f"  our sink stopped: {report.error}", file=sys.stderr)

        tables = _tables(scratch / "ws.duckdb")
        raw = sum(len(orjson.dumps(r)) for rows in tables.values() for r in rows)
        client = _sdk_client(up)
        before = _ingested(up.sentinel.endpoint, up.sentinel.ca_bundle)
        started = time.monotonic()
        for table, rows in tables.items():
            route = up.sentinel.route(table)  # each table's own DCR: one holds 10 streams at most
            if route is None:
                print(f"  no DCR takes {table}: the SDK pass leaves it out", file=sys.stderr)
                continue
            client.upload(rule_id=route[1], stream_name=f"Custom-{table}", logs=rows)
        sdk_seconds = time.monotonic() - started
        sdk_received = _ingested(up.sentinel.endpoint, up.sentinel.ca_bundle) - before
        sdk_rows = sum(len(rows) for rows in tables.values())

        print(f"\n{'':<34}{'rows':>12}{'MB':>9}{'seconds':>9}{'rows/s':>10}{'MB/s':>8}  received")
        _line(
            f"epf sink ({args.concurrency} senders, outbox)",
            report.sent_rows,
            report.raw_bytes,
            ours_seconds,
            ours_received,
        )
        _line("SDK upload(), sequential", sdk_rows, raw, sdk_seconds, sdk_received)
        print(f"\nepf is {sdk_seconds / ours_seconds:.2f}x the SDK's sequential upload")
    finally:
        emulator.send_signal(signal.SIGTERM)
        try:
            emulator.wait(timeout=30)
        except subprocess.TimeoutExpired:
            emulator.kill()
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


def _line(name: str, rows: int, raw_bytes: int, seconds: float, received: int) -> None:
    mb = raw_bytes / 1e6
    print(
        f"{name:<34}{rows:>12,}{mb:>9.1f}{seconds:>9.1f}{rows / seconds:>10,.0f}"
        f"{mb / seconds:>8.1f}  {received:,}"
    )


def _tables(db: Path) -> dict[str, list[dict[str, Any]]]:
    """Every stored row as the JSON record the stream takes (untimed preparation)."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        names = [
            r[0]
            for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()
            if not r[0].startswith("_")
        ]
        out: dict[str, list[dict[str, Any]]] = {}
        for name in names:
            kinds = dict(
                con.execute(
                    "SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = ?",
                    [name],
                ).fetchall()
            )
            rows = con.sql(f'SELECT * FROM "{name}"').to_arrow_table().to_pylist()
            if rows:
                out[name] = [_record(r, kinds) for r in rows]
    finally:
        con.close()
    return out


def _record(row: dict[str, Any], kinds: dict[str, str]) -> dict[str, Any]:
    record: dict[str, Any] = {}
    for key, value in row.items():
        if value is None:
            continue
        if isinstance(value, dt.datetime):
            value = value.isoformat()
        elif kinds.get(key) == "JSON" and isinstance(value, str):
            value = orjson.loads(value)
        record[key] = value
    return record


def _sdk_client(settings: Any) -> Any:
    from azure.monitor.ingestion import LogsIngestionClient

    sentinel = settings.sentinel
    return LogsIngestionClient(
        sentinel.endpoint,
        build_credential(sentinel),
        credential_scopes=[sentinel.scope],
        connection_verify=str(sentinel.ca_bundle),
    )


def _ingested(endpoint: str, ca: Path | None) -> int:
    verify = ssl.create_default_context(cafile=str(ca)) if ca else True
    stats = httpx.get(f"{endpoint}/_emulator/stats", verify=verify, timeout=120).json()
    return int(sum(stats.get("ingested", {}).values()))


if __name__ == "__main__":
    sys.exit(main())

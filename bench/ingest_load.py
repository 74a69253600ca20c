"""A load generator for a Logs Ingestion endpoint: the ceiling of `bench/ingest_receiver.py`.

Posts pre-built gzip uploads (the outbox's own files, read into memory before the clock starts)
over many keep-alive HTTPS connections at once: ``processes`` spawned processes, each with
``connections // processes`` threads on the standard library's ``http.client`` (the leanest
client at hand, so what is measured is the endpoint, not the client). Every answer must be
204. ``post_all`` returns rows, compressed and uncompressed bytes, seconds and the statuses.
"""

from __future__ import annotations

import http.client
import multiprocessing
import queue
import ssl
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Upload:
    """One upload to post: the file (gzip JSON array), its DCR and stream, its rows."""

    path: Path
    rule_id: str
    stream: str
    rows: int


@dataclass
class LoadResult:
    rows: int
    uploads: int
    sent_bytes: int
    raw_bytes: int
    seconds: float
    statuses: dict[int, int]


def post_all(
    url: str,
    token: str,
    ca: Path,
    uploads: list[Upload],
    *,
    connections: int,
    processes: int,
) -> LoadResult:
    """Post every upload once, ``connections`` at a time from ``processes`` processes."""
    context = multiprocessing.get_context("spawn")
    go = context.Event()
    results: Any = context.Queue()
    shares = [uploads[i::processes] for i in range(processes)]
    threads = [connections // processes + (i < connections % processes) for i in range(processes)]
    workers = [
        context.Process(
            target=_process, args=(url, token, str(ca), share, n, go, results), daemon=True
        )
        for share, n in zip(shares, threads, strict=True)
        if share
    ]
    for worker in workers:
        worker.start()
    for _ in workers:  # each has read its files and opened its connections
        assert results.get(timeout=300) == "ready"
    started = time.monotonic()
    go.set()
    statuses: Counter[int] = Counter()
    rows = sent = raw = count = 0
    for _ in workers:
        done = results.get(timeout=3600)
        statuses.update(done["statuses"])
        rows += done["rows"]
        sent += done["sent"]
        raw += done["raw"]
        count += done["uploads"]
    seconds = time.monotonic() - started
    for worker in workers:
        worker.join(timeout=30)
    return LoadResult(rows, count, sent, raw, seconds, dict(statuses))


def _process(
    url: str,
    token: str,
    ca: str,
    share: list[Upload],
    threads: int,
    go: Any,
    results: Any,
) -> None:
    host, _, port = url.removeprefix("https://").partition(":")
    context = ssl.create_default_context(cafile=ca)
    bodies = queue.SimpleQueue[tuple[Upload, bytes]]()
    for upload in share:
        bodies.put((upload, upload.path.read_bytes()))
    lock = threading.Lock()
    tally: dict[str, Any] = {"rows": 0, "sent": 0, "raw": 0, "uploads": 0, "statuses": Counter()}
    clients = [
        http.client.HTTPSConnection(host, int(port), context=context, timeout=300)
        for _ in range(max(1, threads))
    ]
    for client in clients:
        client.connect()

    def run(client: http.client.HTTPSConnection) -> None:
        go.wait()
        while True:
            try:
                upload, body = bodies.get_nowait()
            except queue.Empty:
                return
            client.request(
                "POST",
                f"/dataCollectionRules/{upload.rule_id}/streams/{upload.stream}"
                "?api-version=2023-01-01",
                body=body,
                headers={
                    "Authorization": f"Bearer {token}",
                    "Content-Type": "application/json",
                    "Content-Encoding": "gzip",
                },
            )
            response = client.getresponse()
            response.read()
            with lock:
                tally["statuses"][response.status] += 1
                if response.status == 204:
                    tally["rows"] += upload.rows
                    tally["sent"] += len(body)
                    tally["raw"] += int.from_bytes(body[-4:], "little")
                    tally["uploads"] += 1

    pool = [threading.Thread(target=run, args=(c,)) for c in clients]
    for thread in pool:
        thread.start()
    results.put("ready")
    for thread in pool:
        thread.join()
    for client in clients:
        client.close()
    tally["statuses"] = dict(tally["statuses"])
    results.put(tally)

"""A Logs Ingestion endpoint for `make bench-sentinel` that is not the bottleneck: the emulator's
own endpoint code, its bodies checked by several worker processes.

One uvicorn HTTPS server (the emulator's ``common.listen``) takes the connections and serves
exactly what the emulated endpoint checks, with the emulator's code:
``epf_emulator.ingestion.endpoint.IngestionApi`` (bearer token, api-version, DCR and stream,
the per-DCR request limit, 413 over 1 MiB compressed or uncompressed, gzip decoded, the JSON
array checked against the stream's columns by ``ingestion.streams.check_records``;
defender-apis.md D.1-D.4) and the Entra token endpoint of ``identity.entra`` that issues the
tokens it takes. The costly part, decoding and checking each body, runs in a pool of
``--workers`` processes (``IngestionApi``'s ``checker``), request by request: several bodies
are checked at once whichever connections they come on. (Worker processes each with its own
socket on one port, SO_REUSEPORT, tie each connection to one worker: with 4 senders the kernel
put two connections on one worker and none on another, and the endpoint was the bottleneck
again.) The DCRs are the emulator's for the same seed (``ingestion.rules.emulated_rules``), the
TLS certificate is issued by the emulator's test CA. What differs from the emulator: accepted
bodies are counted, not kept (the emulator writes each to a temporary file, so
``/_emulator/stats`` and the tests can read the rows back).

``GET /_receiver/stats``: requests, 204s, rows, compressed and uncompressed bytes, refusals by
status. ``start_receiver`` runs it as a child process and returns a ``Receiver`` (its URL,
stats, stop). Standalone: ``python bench/ingest_receiver.py --workers N --seed S --tenant-id T
--client-id C --ca-dir D`` with the client secret in ``EPF_RECEIVER_CLIENT_SECRET`` (and the
CA's ``ca.pem`` and ``ca-key.pem`` in D); it prints its URL.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

_SECRET_ENV = "EPF_RECEIVER_CLIENT_SECRET"


@dataclass
class Receiver:
    """A running receiver: ``url`` (endpoint and authority host), its process, its CA."""

    url: str
    workers: int
    ca: Path
    process: subprocess.Popen[bytes]

    def stats(self) -> dict[str, Any]:
        verify = ssl.create_default_context(cafile=str(self.ca))
        return dict(httpx.get(f"{self.url}/_receiver/stats", verify=verify, timeout=60).json())

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_receiver(
    *,
    workers: int,
    seed: int,
    tenant_id: str,
    client_id: str,
    client_secret: str,
    emulator_state: Path,
    folder: Path,
) -> Receiver:
    """Start a receiver with ``workers`` processes, trusted by the emulator's CA (its ``ca.pem``
    and ``ca-key.pem`` in ``emulator_state``, copied to ``folder``); return once it listens."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("ca.pem", "ca-key.pem"):
        shutil.copy(emulator_state / name, folder / name)
    ready = folder / "url"
    ready.unlink(missing_ok=True)
    process = subprocess.Popen(
        [sys.executable, __file__, "--workers", str(workers), "--seed", str(seed),
         "--tenant-id", tenant_id, "--client-id", client_id, "--ca-dir", str(folder),
         "--ready-file", str(ready)],
        env={**os.environ, _SECRET_ENV: client_secret},
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not ready.exists() or not ready.read_text().endswith("\n"):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError("the ingestion receiver did not start")
        time.sleep(0.05)
    return Receiver(ready.read_text().strip(), workers, folder / "ca.pem", process)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--tenant-id", required=True)
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--ca-dir", type=Path, required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--ready-file", type=Path)
    args = parser.parse_args()
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from epf_emulator.common.limits import RequestStats
    from epf_emulator.common.listen import bind, make_server
    from epf_emulator.core.credentials import issue_server_certificate
    from epf_emulator.identity.entra import Identity
    from epf_emulator.ingestion.endpoint import Ingested, IngestionApi, Received
    from epf_emulator.ingestion.rules import emulated_rules

    class Counted(Ingested):
        """Counts what the endpoint accepted and refused; keeps no body."""

        def __init__(self) -> None:
            super().__init__()
            self.counts: Counter[str] = Counter()

        def accept(self, received: Received) -> None:
            body = received.body
            gzipped = received.encoding == "gzip" and len(body) >= 18
            self.counts.update(
                requests=1,
                accepted=1,
                rows=received.rows,
                bytes=len(body),
                raw_bytes=int.from_bytes(body[-4:], "little") if gzipped else len(body),
            )

        def reject(self, status: int) -> None:
            self.counts.update(("requests", f"rejected {status}"))

    _, certfile = issue_server_certificate(args.ca_dir, "127.0.0.1")
    identity = Identity(
        tenant_id=args.tenant_id,
        client_id=args.client_id,
        client_secret=os.environ[_SECRET_ENV],
        token_lifetime_seconds=3599,
        stats=RequestStats(),
    )
    # Spawned, not forked: the server's threads are not copied into them.
    checkers = ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("spawn"))
    # Every worker started, its imports done, before the first request.
    list(checkers.map(_warm, [0.2] * args.workers))
    ingested = Counted()
    api = IngestionApi(
        identity=identity,
        ingested=ingested,
        rules=emulated_rules(args.seed),
        now=lambda: datetime.now(UTC),
        rate_limit=None,  # the service's 12,000 requests a minute per DCR
        checker=checkers,
    )

    async def stats(request: Request) -> JSONResponse:
        counts = ingested.counts
        refused = {k.split()[1]: n for k, n in counts.items() if k.startswith("rejected ")}
        fields = ("requests", "accepted", "rows", "bytes", "raw_bytes")
        return JSONResponse({**{k: counts[k] for k in fields}, "rejected": refused})

    app = Starlette(routes=[Route("/_receiver/stats", stats), *identity.routes(), *api.routes()])
    sock = bind("127.0.0.1", args.port)
    sock.listen(1024)  # connections wait in the backlog until the server runs
    url = f"https://127.0.0.1:{sock.getsockname()[1]}"
    if args.ready_file is not None:
        args.ready_file.write_text(url + "\n")
    else:
        print(url, flush=True)
    # uvicorn raises the signal that stopped it again once it is done: to this handler, so the
    # pool below is shut down rather than left behind.
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        make_server(app, host="127.0.0.1", port=0, certfile=str(certfile)).run(sockets=[sock])
    finally:
        sock.close()
        checkers.shutdown(cancel_futures=True)
    return 0


def _warm(seconds: float) -> None:
    import epf_emulator.ingestion.endpoint  # noqa: F401  (what each check needs)

    time.sleep(seconds)  # long enough that each worker takes one


if __name__ == "__main__":
    sys.exit(main())

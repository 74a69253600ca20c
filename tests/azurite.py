"""Azurite, the Azure Storage emulator (npm package ``azurite``, pinned in tools/azurite), in a
process of its own over HTTPS with a test CA, as the tests start our own emulator: the real
``azure-storage-blob`` and ``azure-storage-queue`` clients talk to it.

``make test`` installs it (``npm ci`` in tools/azurite). Where it is not installed, or node
cannot start it, ``start_azurite`` says why and the tests that need it skip, saying so; CI
installs it and runs them.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: The installed launcher (tools/azurite/package.json pins the version).
AZURITE = Path(__file__).resolve().parents[1] / "tools" / "azurite" / "node_modules" / ".bin"
#: Azurite's well-known development account: public, documented, a key of no real account.
ACCOUNT = "devstoreaccount1"
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


class AzuriteUnavailable(Exception):
    """Azurite is not installed here, or could not start: the reason, for a skip."""


@dataclass
class Azurite:
    process: subprocess.Popen[bytes]
    blob_port: int
    queue_port: int
    ca_bundle: Path
    log: Path

    @property
    def blob_url(self) -> str:
        return f"https://127.0.0.1:{self.blob_port}/{ACCOUNT}"

    @property
    def queue_url(self) -> str:
        return f"https://127.0.0.1:{self.queue_port}/{ACCOUNT}"

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=https;AccountName={ACCOUNT};AccountKey={KEY};"
            f"BlobEndpoint={self.blob_url};QueueEndpoint={self.queue_url};"
        )

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_azurite(folder: Path, *, timeout: float = 60) -> Azurite:
    """Azurite serving blobs and queues over HTTPS, its data in memory, its CA and log in
    ``folder``.

    Raises:
        AzuriteUnavailable: not installed (``make test`` installs it) or it did not start.
    """
    launcher = AZURITE / "azurite"
    if not launcher.exists():
        raise AzuriteUnavailable(
            f"Azurite is not installed ({launcher} is missing): `make test` installs it with"
            " `npm ci --prefix tools/azurite`"
        )
    if shutil.which("node") is None:
        raise AzuriteUnavailable("node is not on PATH: Azurite runs on Node.js")
    import trustme

    folder.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca_bundle, cert_file, key_file = folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
    ca.cert_pem.write_to_path(str(ca_bundle))
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    blob_port, queue_port, table_port = _free_port(), _free_port(), _free_port()
    log = folder / "azurite.log"
    with log.open("wb") as output:  # the child keeps its own copy of the descriptor
        process = _launch(launcher, blob_port, queue_port, table_port, cert_file, key_file, output)
    found = Azurite(process, blob_port, queue_port, ca_bundle, log)
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise AzuriteUnavailable(f"Azurite exited ({process.returncode}): {_tail(log)}")
        if all(_listening(p) for p in (blob_port, queue_port)):
            return found
        if time.monotonic() > deadline:
            found.stop()
            raise AzuriteUnavailable(f"Azurite did not listen within {timeout:.0f} s: {_tail(log)}")
        time.sleep(0.1)


def _launch(
    launcher: Path, blob: int, queue: int, table: int, cert: Path, key: Path, output: Any
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            str(launcher),
            "--silent",
            "--disableTelemetry",
            "--inMemoryPersistence",
            # The SDK names a newer service version than Azurite 3.37 knows; what we use
            # (blobs, leases, messages) is older than both.
            "--skipApiVersionCheck",
            "--blobPort",
            str(blob),
            "--queuePort",
            str(queue),
            "--tablePort",
            str(table),
            "--cert",
            str(cert),
            "--key",
            str(key),
        ],
        stdout=output,
        stderr=subprocess.STDOUT,
    )


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _tail(log: Path) -> str:
    try:
        return " ".join(log.read_text(errors="replace").split()[-40:])
    except OSError:
        return "(no log)"

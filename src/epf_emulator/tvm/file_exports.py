"""Via-files exports: jobs that write gzip JSON-lines parts, SAS links, and the blob endpoint.

Owns the ``...Export`` half of defender-apis.md B.5.3: an export of a dataset as of an
instant is a job whose parts (``export_part_rows`` rows each) are written lazily, in order,
by two background writers, on the first request for that dataset and instant; later
requests for the same instant reuse the files (an ``advance`` makes them stale: the next
request makes new ones). After an advance the datasets already asked for are exported again
as of the new instant without waiting to be asked (``renew``): the request then gets the
export it would have made, only sooner (how long the service takes to make one is not
documented; nothing of this shows on the wire but the latency). The response lists every
part's URL at once; a download of a part not yet written waits for it. URLs look like the
service's (``/tvm-export/{date}/{HHMM}/
{VaExport|ScaExport|SoftwareInventory|InfoGatheringExport}/json/OrgId={tenant}/
part-NNNNN-{guid}.c000.json.gz``) with a SAS query (``sv st se sr=b sp=r sig``, ``sig`` an
HMAC over the path and the validity) checked like Azure Storage does, wall-clock time
included: an expired or forged link is 403 ``AuthenticationFailed``, a request that also
sends ``Authorization`` is 400 ``InvalidAuthenticationInfo``, both in Storage's XML. Files
stream from disk. Old jobs' files are deleted once two newer ones of the dataset exist.

Imports only ``common.clock``, ``common.responses`` and ``world.snapshots`` of the emulator: it
shares no code with the collector.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import math
import secrets
import shutil
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from epf_emulator.common.clock import from_epoch_us
from epf_emulator.common.responses import storage_error
from epf_emulator.world.snapshots import Snapshots

__all__ = ["BLOB_PREFIX", "ExportJob", "Exports"]

BLOB_PREFIX = "/tvm-export/"
_SAS_VERSION = "2020-08-04"
_WAIT_SECONDS = 600.0
_JOBS_KEPT = 2


@dataclass
class _Part:
    index: int
    start: int
    count: int
    path: Path
    url_path: str
    ready: threading.Event = field(default_factory=threading.Event)
    error: str | None = None


@dataclass
class ExportJob:
    """One export of a dataset as of ``at``: its parts, written in the background."""

    dataset: str
    at: int
    rows: int
    folder: Path
    parts: list[_Part]

    @property
    def generated_time(self) -> str:
        return from_epoch_us(self.at).strftime("%Y-%m-%dT%H:%M:%SZ")

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every part is written (benchmarks and tests)."""
        return all(part.ready.wait(timeout) for part in self.parts)


class Exports:
    """Export jobs of one tenant, the SAS signer and the blob route."""

    def __init__(
        self,
        snapshots: Snapshots,
        root: Path,
        *,
        tenant_id: str,
        seed: int,
        part_rows: int,
    ) -> None:
        self._snapshots = snapshots
        self._root = root
        self._tenant_id = tenant_id
        self._seed = seed
        self._part_rows = part_rows
        self._key = secrets.token_bytes(32)
        self._lock = threading.Lock()
        self.signatures: set[str] = set()  # every SAS signature handed out
        self._jobs: dict[tuple[str, int], ExportJob] = {}
        self._asked: dict[str, str] = {}  # dataset -> its export folder name, once asked for
        self._parts: dict[str, _Part] = {}
        self._writers = ThreadPoolExecutor(max_workers=2, thread_name_prefix="epf-export")
        self._log = logging.getLogger(__name__)

    @property
    def part_rows(self) -> int:
        return self._part_rows

    def close(self) -> None:
        self._writers.shutdown(wait=True, cancel_futures=True)

    def routes(self) -> list[Route]:
        return [Route(BLOB_PREFIX + "{blob:path}", self._download, methods=["GET", "HEAD"])]

    def job(self, dataset: str, folder_name: str, at: int) -> ExportJob:
        """The export of ``dataset`` as of ``at``: started now, or the one already made."""
        key = (dataset, at)
        with self._lock:
            self._asked[dataset] = folder_name
            existing = self._jobs.get(key)
        if existing is not None:
            return existing
        rows = self._snapshots.count(dataset, at)
        when = from_epoch_us(at)
        guid = uuid.uuid5(uuid.NAMESPACE_URL, f"epf-export:{self._seed}:{dataset}:{at}")
        prefix = (
            f"{BLOB_PREFIX}{when:%Y-%m-%d}/{when:%H%M}/{folder_name}/json/OrgId={self._tenant_id}/"
        )
        folder = self._root / f"{dataset}-{at}"
        folder.mkdir(parents=True, exist_ok=True)
        parts = []
        for index, start in enumerate(range(0, rows, self._part_rows)):
            name = f"part-{index:05d}-{guid}.c000.json.gz"
            count = min(self._part_rows, rows - start)
            parts.append(_Part(index, start, count, folder / name, prefix + name))
        job = ExportJob(dataset, at, rows, folder, parts)
        with self._lock:
            if key in self._jobs:  # another request won the race
                return self._jobs[key]
            self._jobs[key] = job
            for part in parts:
                self._parts[part.url_path] = part
        for part in parts:
            self._writers.submit(self._write, job, part)
        self._prune(dataset)
        return job

    def renew(self, at: int, *, current: Callable[[], int]) -> None:
        """Start the export as of ``at`` of every dataset asked for before, while ``at`` is
        still the ``current()`` instant (a later advance makes it nobody's)."""
        with self._lock:
            asked = list(self._asked.items())
        for dataset, folder_name in asked:
            if current() != at:
                return
            self.job(dataset, folder_name, at)

    def signed_url(self, base: str, path: str, valid_seconds: float) -> str:
        """An absolute SAS URL for a blob path, valid from a few minutes ago."""
        now = datetime.now(UTC)
        start = now.replace(microsecond=0) - timedelta(minutes=5)  # clock skew, as Azure does
        # SAS times have whole seconds: round the expiry up, never cut the validity short.
        expiry = datetime.fromtimestamp(math.ceil(now.timestamp() + valid_seconds), UTC)
        st, se = _iso(start), _iso(expiry)
        sig = self._signature(path, st, se)
        with self._lock:
            self.signatures.add(
                sig
            )  # what a secrets check must never find in the collector's output
        query = f"sv={_SAS_VERSION}&st={quote(st, safe='')}&se={quote(se, safe='')}&sr=b&sp=r"
        return f"{base}{path}?{query}&sig={quote(sig, safe='')}"

    # --- internals -----------------------------------------------------------------------
    def _write(self, job: ExportJob, part: _Part) -> None:
        try:
            with self._snapshots.pinned(job.dataset, job.at) as snapshot:
                self._snapshots.write_part(snapshot, part.start, part.count, part.path)
        except Exception as exc:  # the download says so; the emulator keeps serving
            self._log.exception("writing %s failed", part.url_path)
            part.error = f"{type(exc).__name__}: {exc}"
        finally:
            part.ready.set()

    def _prune(self, dataset: str) -> None:
        with self._lock:
            jobs = sorted(
                (j for j in self._jobs.values() if j.dataset == dataset), key=lambda j: j.at
            )
            stale = jobs[:-_JOBS_KEPT] if len(jobs) > _JOBS_KEPT else []
            stale = [j for j in stale if all(p.ready.is_set() for p in j.parts)]
            for job in stale:
                del self._jobs[(job.dataset, job.at)]
                for part in job.parts:
                    self._parts.pop(part.url_path, None)
        for job in stale:
            shutil.rmtree(job.folder, ignore_errors=True)

    def _signature(self, path: str, st: str, se: str) -> str:
        message = f"r\n{st}\n{se}\n{path}\n{_SAS_VERSION}".encode()
        return base64.b64encode(hmac.new(self._key, message, hashlib.sha256).digest()).decode()

    async def _download(self, request: Request) -> Response:
        if "authorization" in request.headers:
            return storage_error(
                400,
                "InvalidAuthenticationInfo",
                "Authentication information is not given in the correct format. Check the value"
                " of Authorization header.",
            )
        path = request.url.path
        q = request.query_params
        fields = {k: q.get(k, "") for k in ("sv", "st", "se", "sr", "sp", "sig")}
        start, expiry = _parse_iso(fields["st"]), _parse_iso(fields["se"])
        if not all(fields.values()) or start is None or expiry is None or fields["sr"] != "b":
            return _auth_failed("Signature fields not well formed.")
        expected = self._signature(path, fields["st"], fields["se"])
        if "r" not in fields["sp"] or not hmac.compare_digest(expected, fields["sig"]):
            return _auth_failed(
                f"Signature did not match. String to sign used was r\n{fields['st']}\n"
                f"{fields['se']}\n/blob/tvmexport{path}\n\n\n{fields['sv']}"
            )
        now = datetime.now(UTC)
        if not start <= now <= expiry:
            return _auth_failed(
                f"Signature not valid in the specified time frame: Start [{_http_date(start)}]"
                f" - Expiry [{_http_date(expiry)}] - Current [{_http_date(now)}]"
            )
        with self._lock:
            part = self._parts.get(path)
        if part is None:
            return storage_error(404, "BlobNotFound", "The specified blob does not exist.")
        deadline = asyncio.get_running_loop().time() + _WAIT_SECONDS
        while not part.ready.is_set():  # listed before it was written: wait for the writer
            if asyncio.get_running_loop().time() > deadline:
                return storage_error(503, "ServerBusy", "The server is busy.")
            await asyncio.sleep(0.05)
        if part.error is not None or not part.path.is_file():
            return storage_error(
                500, "InternalError", "The server encountered an internal error. Please retry."
            )
        headers = {
            "x-ms-blob-type": "BlockBlob",
            "x-ms-version": fields["sv"],
            "x-ms-request-id": str(uuid.uuid4()),
        }
        return FileResponse(part.path, media_type="application/octet-stream", headers=headers)


def _auth_failed(detail: str) -> Response:
    return storage_error(
        403,
        "AuthenticationFailed",
        "Server failed to authenticate the request. Make sure the value of Authorization header"
        " is formed correctly including the signature.",
        detail=detail,
    )


def _iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_iso(text: str) -> datetime | None:
    try:
        value = datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        return None
    return value.replace(tzinfo=UTC)


def _http_date(t: datetime) -> str:
    return t.strftime("%a, %d %b %Y %H:%M:%S GMT")

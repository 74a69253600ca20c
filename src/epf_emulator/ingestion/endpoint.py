"""The Azure Monitor Logs Ingestion endpoint of the tenant's data collection rules, and what it
kept.

Owns ``POST /dataCollectionRules/{immutableId}/streams/{stream}?api-version=2023-01-01``
(defender-apis.md D.1-D.4), as a data collection endpoint shared by every DCR of
``ingestion.rules``: a bearer token for ``https://monitor.azure.com`` (with or without the trailing
slash the tutorial's ``//.default`` scope gives it; 401 ``InvalidToken`` otherwise; 403
``OperationFailed`` for another tenant's token), 404 for an unknown DCR or a stream that DCR does
not declare (a DCR declares at most 10), 400 for another api-version, a JSON array body plain or
gzip (413 over 1 MiB compressed or uncompressed; 400 when it is not an array of valid records, see
``ingestion.streams``), 429 with ``Retry-After`` past the per-DCR request limit, and 204 with an
empty body when every record was accepted. The receive time is the emulated clock's (so ``advance``
emulates a delivery days late): a ``TimeGenerated`` more than 2 days before it or more than a day
after it is replaced with it (``ingestion.streams``). ``Ingested`` keeps the accepted rows per
table and the counters ``/_emulator/stats`` shows; both are thread-safe. Error bodies are
``{"error": {"code", "message"}}`` (D.3); the wording of those the docs do not give is ours.
A body is decoded and checked in a server thread, or in the ``checker`` executor when given (a
process pool: bench/ingest_receiver.py's endpoint checks several bodies at once); same answers.

Imports only ``common.responses``, ``identity.entra``, ``ingestion.rules`` and ``ingestion.streams``
of the emulator: it shares no code with the collector.
"""

from __future__ import annotations

import asyncio
import bisect
import hashlib
import math
import pickle
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from epf_emulator.common.responses import json_response
from epf_emulator.identity.entra import MONITOR_AUDIENCES, Identity, TokenError
from epf_emulator.ingestion.rules import DataCollectionRule
from epf_emulator.ingestion.streams import RecordError, Stream, check_records

__all__ = [
    "API_VERSION",
    "DEFAULT_RATE_LIMIT",
    "MAX_BODY_BYTES",
    "Ingested",
    "IngestionApi",
    "Received",
]

API_VERSION = "2023-01-01"
#: One call, compressed and uncompressed (service limits, D.2).
MAX_BODY_BYTES = 1_048_576
#: The uncompressed JSON may exceed it by the array's separators: the official SDK fills
#: chunks with 1 MiB of records and does not count the `[`, `, ` and `]` around them (D.4),
#: and the service takes those chunks. So the separators get this much room.
UNCOMPRESSED_SLACK_BYTES = 65_536
#: Requests per DCR when ``ingestion_rate_limit`` is not set: 12,000 a minute (D.2).
DEFAULT_RATE_LIMIT = (12_000, 60.0)
_JSON = "application/json; charset=utf-8"
_OTHER_TENANT = "The token was issued by another tenant."  # identity.validate's refusal


@dataclass
class _Counters:
    requests: int = 0
    accepted: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    bytes: int = 0
    truncated_fields: int = 0


@dataclass(frozen=True)
class Received:
    """One accepted request: its stream, its body as received, the receive time, and what
    its check counted. Its rows are the check's conversion of the body (``Ingested.rows``)."""

    stream: Stream
    body: bytes
    encoding: str
    at: datetime
    rows: int
    truncated_fields: int


class Ingested:
    """The requests the DCR accepted, per table, and the endpoint's request counters.

    Each accepted body waits, as it was received, in an anonymous temporary file per table,
    not in memory: a month of a 20,000-device tenant is tens of millions of rows. Its rows
    are converted again when read (the check is a pure function of the body, the stream and
    the receive time), so a request costs its check and one write of its compressed body;
    keeping converted rows cost as much again as the check. The files are only ever read by
    this process, and vanish with it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._files: dict[str, IO[bytes]] = {}
        self._counts: dict[str, int] = {}
        self._counters = _Counters()

    def accept(self, received: Received) -> None:
        """Count one 204 and keep its body."""
        table = received.stream.table
        with self._lock:
            if received.rows:
                if table not in self._files:
                    self._files[table] = tempfile.TemporaryFile(prefix="epf-emulator-ingested-")
                pickle.dump(received, self._files[table], protocol=pickle.HIGHEST_PROTOCOL)
                self._counts[table] = self._counts.get(table, 0) + received.rows
            self._counters.requests += 1
            self._counters.accepted += 1
            self._counters.bytes += len(received.body)
            self._counters.truncated_fields += received.truncated_fields

    def counts_with_distinct(self) -> dict[str, dict[str, int]]:
        """Per table: rows accepted (``raw``) and distinct rows (``distinct``), identical
        meaning every column but ``TimeGenerated``, which the service may set on arrival (a
        re-sent upload is the same rows with the same ``BatchId``: the documented dedup)."""
        with self._lock:
            tables = list(self._counts)
        counts = {}
        for table in tables:
            seen: set[bytes] = set()
            rows = self.rows(table)
            for row in rows:
                identity = repr(sorted((k, v) for k, v in row.items() if k != "TimeGenerated"))
                seen.add(hashlib.blake2b(identity.encode(), digest_size=16).digest())
            counts[table] = {"raw": len(rows), "distinct": len(seen)}
        return counts

    def reject(self, status: int) -> None:
        """Count one refused request (nothing of it is kept)."""
        with self._lock:
            self._counters.requests += 1
            key = str(status)
            self._counters.rejected[key] = self._counters.rejected.get(key, 0) + 1

    def rows(self, table: str) -> list[dict[str, Any]]:
        """The accepted rows of ``table``, in arrival order, as Log Analytics keeps them."""
        with self._lock:
            kept = self._files.get(table)
            if kept is None:
                return []
            accepted: list[Received] = []
            kept.seek(0)
            try:
                while True:
                    accepted.append(pickle.load(kept))  # written by this object only
            except EOFError:
                pass
            kept.seek(0, 2)  # back to the end, for the next request
        rows: list[dict[str, Any]] = []
        for received in accepted:
            records = _records_of(received.body, received.encoding)
            rows.extend(check_records(received.stream, records, now=received.at).rows)
        return rows

    def row_counts(self) -> dict[str, int]:
        """Rows per table, only tables with rows."""
        with self._lock:
            return {table: n for table, n in sorted(self._counts.items()) if n}

    def close(self) -> None:
        """Drop the kept rows (the files go with the process anyway)."""
        with self._lock:
            for kept in self._files.values():
                kept.close()
            self._files.clear()

    def counters(self) -> dict[str, Any]:
        """``requests``, ``accepted`` (204s), ``rejected`` by status, ``bytes`` (the accepted
        bodies as received, compressed or not) and ``truncated_fields``."""
        with self._lock:
            c = self._counters
            return {
                "requests": c.requests,
                "accepted": c.accepted,
                "rejected": dict(sorted(c.rejected.items())),
                "bytes": c.bytes,
                "truncated_fields": c.truncated_fields,
            }


class _Refused(Exception):
    """A request answered with an error: status, error code, message, extra headers."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}

    def __reduce__(self) -> tuple[Any, ...]:
        # Raised in a checker process, it is pickled back whole.
        return (_Refused, (self.status, self.code, self.message, self.headers))


class _Window:
    """A sliding window of admitted calls; refused calls are not counted."""

    def __init__(self, calls: int, seconds: float) -> None:
        self._calls = calls
        self._seconds = seconds
        self._times: list[float] = []
        self._lock = threading.Lock()

    def acquire(self) -> int | None:
        """Admit one call (None), or the seconds to wait before a slot frees."""
        with self._lock:
            now = time.monotonic()
            del self._times[: bisect.bisect_right(self._times, now - self._seconds)]
            if len(self._times) >= self._calls:
                wait = self._times[len(self._times) - self._calls] + self._seconds - now
                return max(1, math.ceil(wait))
            self._times.append(now)
            return None


class IngestionApi:
    """The Logs Ingestion route of ``rules``: each takes only the streams it declares."""

    def __init__(
        self,
        *,
        identity: Identity,
        ingested: Ingested,
        rules: Sequence[DataCollectionRule],
        now: Callable[[], datetime],
        rate_limit: tuple[int, float] | None,
        checker: Executor | None = None,
    ) -> None:
        self._identity = identity
        self._checker = checker
        self._ingested = ingested
        self._rules = {rule.immutable_id: rule for rule in rules}
        self._now = now
        calls, seconds = rate_limit or DEFAULT_RATE_LIMIT
        # The request limit is per DCR (D.2).
        self._windows = {dcr: _Window(calls, seconds) for dcr in self._rules}

    def routes(self) -> list[Route]:
        return [
            Route(
                "/dataCollectionRules/{dcr}/streams/{stream}",
                self._upload,
                methods=["POST"],
            )
        ]

    async def _upload(self, request: Request) -> Response:
        # Read (and drain) the whole body first: answering before it is read would make the
        # server close the connection under a client still sending.
        body, oversized = await _read_capped(request, MAX_BODY_BYTES)
        try:
            stream = self._admit(request)
            if oversized:
                raise _Refused(413, "ContentLengthLimitExceeded", _too_large("request body"))
            encoding = request.headers.get("content-encoding", "").strip().lower()
            received = await self._check_body(stream, body, encoding)
        except _Refused as refused:
            self._ingested.reject(refused.status)
            return _error(refused)
        self._ingested.accept(received)
        return Response(status_code=204)

    def _admit(self, request: Request) -> Stream:
        """Token, api-version, DCR, stream and rate limit, in that order."""
        self._authorize(request)
        version = request.query_params.get("api-version")
        if version != API_VERSION:
            raise _Refused(
                400,
                "InvalidApiVersion",
                f"The api-version '{version or ''}' is not supported; use '{API_VERSION}'.",
            )
        dcr = request.path_params["dcr"]
        rule = self._rules.get(dcr)
        if rule is None:
            raise _Refused(
                404,
                "NotFound",
                f"The data collection rule with immutable Id '{dcr}' was not found.",
            )
        name = request.path_params["stream"]
        stream = rule.streams.get(name)
        if stream is None:
            # Another DCR's stream is refused all the same: a DCR ingests only its own.
            raise _Refused(
                404,
                "NotFound",
                f"The stream '{name}' is not declared by the data collection rule with"
                f" immutable Id '{dcr}'.",
            )
        retry_after = self._windows[dcr].acquire()
        if retry_after is not None:
            raise _Refused(
                429,
                "TooManyRequests",
                "The request rate for the data collection rule is over its limit. Retry after"
                f" {retry_after} seconds.",
                {"Retry-After": str(retry_after)},
            )
        return stream

    def _authorize(self, request: Request) -> None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _Refused(
                401,
                "InvalidToken",
                "The Authorization header is missing or is not a Bearer token.",
                {"WWW-Authenticate": "Bearer"},
            )
        try:
            self._identity.validate(token.strip(), audiences=MONITOR_AUDIENCES)
        except TokenError as exc:
            if str(exc) == _OTHER_TENANT:
                # Signed and in date, but no role assignment on this DCR can name it (D.3).
                dcr = request.path_params["dcr"]
                raise _Refused(
                    403,
                    "OperationFailed",
                    "The authentication token provided does not have access to ingest data for"
                    f" the data collection rule with immutable Id '{dcr}' PipelineAccessResult:"
                    " AccessGranted: False, IsRbacPresent: False, IsDcrDceBindingValid: ,"
                    " DcrArmId: , Message: The token was issued by another tenant.",
                ) from exc
            raise _Refused(
                401,
                "InvalidToken",
                f"The access token is not valid: {exc}",
                {"WWW-Authenticate": 'Bearer error="invalid_token"'},
            ) from exc

    async def _check_body(self, stream: Stream, body: bytes, encoding: str) -> Received:
        """Decode, parse and check the body (up to 1 MiB of JSON) in a worker thread, or in
        the ``checker`` (the body goes there, its counts come back)."""
        now = self._now()
        if self._checker is None:
            rows, truncated = await run_in_threadpool(_checked_counts, stream, body, encoding, now)
        else:
            work = self._checker.submit(_checked_counts, stream, body, encoding, now)
            rows, truncated = await asyncio.wrap_future(work)
        return Received(stream, body, encoding, now, rows, truncated)


def _checked_counts(stream: Stream, body: bytes, encoding: str, now: datetime) -> tuple[int, int]:
    """(records, field values truncated) of a body the stream accepts; ``_Refused`` if not."""
    records = _records_of(body, encoding)
    try:
        checked = check_records(stream, records, now=now, keep=False)
    except RecordError as exc:
        raise _Refused(400, "InvalidPayload", str(exc)) from exc
    return checked.count, checked.truncated_fields


def _records_of(body: bytes, encoding: str) -> list[Any]:
    """The JSON array of a body sent with ``encoding``; 400 (or 413) when it is not one."""
    if encoding == "gzip":
        text = _gunzip(body)
    elif encoding in ("", "identity"):
        text = body
    else:
        message = f"The Content-Encoding '{encoding}' is not supported; send gzip or none."
        raise _Refused(400, "InvalidContentEncoding", message)
    try:
        records = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise _Refused(400, "InvalidPayload", f"The body is not valid JSON: {exc}") from exc
    if not isinstance(records, list):
        raise _Refused(400, "InvalidPayload", "The body must be a JSON array of objects.")
    return records


async def _read_capped(request: Request, limit: int) -> tuple[bytes, bool]:
    """The body (at most ``limit`` bytes kept) and whether it was longer than ``limit``."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size <= limit:
            chunks.append(chunk)
    return b"".join(chunks), size > limit


def _gunzip(body: bytes) -> bytes:
    """The decompressed body; 413 past ``MAX_BODY_BYTES``, 400 when it is not gzip."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        text = inflater.decompress(body, MAX_BODY_BYTES + UNCOMPRESSED_SLACK_BYTES + 1)
    except zlib.error as exc:
        raise _Refused(400, "InvalidPayload", f"The gzip body cannot be read: {exc}") from exc
    if len(text) > MAX_BODY_BYTES + UNCOMPRESSED_SLACK_BYTES:
        raise _Refused(413, "ContentLengthLimitExceeded", _too_large("uncompressed body"))
    if not inflater.eof:
        raise _Refused(400, "InvalidPayload", "The gzip body is truncated.")
    return text


def _too_large(what: str) -> str:
    return f"The {what} is larger than the limit of {MAX_BODY_BYTES} bytes."


def _error(refused: _Refused) -> Response:
    body = {"error": {"code": refused.code, "message": refused.message}}
    return json_response(body, status=refused.status, content_type=_JSON, headers=refused.headers)

"""The emulated TVM export APIs: the ``...ByMachine`` JSON exports, the delta and the via-files exports.

Owns (defender-apis.md B.0, B.2, B.5.2-B.5.6, B.6) ``GET /api/machines/
SoftwareVulnerabilitiesByMachine``, ``SecureConfigurationsAssessmentByMachine``,
``SoftwareInventoryByMachine`` (``pageSize`` default 50,000, max 200,000; ``$top`` returns no
nextLink; next links carry a base64-JSON ``$skiptoken`` naming the snapshot and the line),
``SoftwareVulnerabilityChangesByMachine`` (``sinceTime`` required, at most 14 days back; the
6-hour bucket it falls in and every later one), and the ``...Export`` endpoints
(``SoftwareVulnerabilitiesExport``, ``SecureConfigurationsAssessmentExport``,
``SoftwareInventoryExport``, ``InfoGatheringExport``; ``sasValidHours``), each behind its
app role and its own rate limit. Pages stream from a snapshot as of the emulated now; a
``$skiptoken`` keeps reading the snapshot it started on, so a walk is consistent even
across an ``advance``. The datasets come from ``world.tvm_datasets``, the snapshots from
``world.snapshots`` and the via-files jobs from ``tvm.file_exports``.

Imports only ``common`` (clock, limits, responses), ``identity.entra``, ``tvm.file_exports``,
``world.snapshots`` and ``world.tvm_datasets`` of the emulator: it shares no code with the
collector.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import orjson
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from epf_emulator.common.clock import EmulatedClock, epoch_us, from_epoch_us
from epf_emulator.common.limits import RateLimiter
from epf_emulator.common.responses import MDE_CONTENT_TYPE, json_response, mde_error
from epf_emulator.identity.entra import Identity
from epf_emulator.tvm.file_exports import Exports
from epf_emulator.world.snapshots import Snapshots
from epf_emulator.world.tvm_datasets import DATASETS

__all__ = ["TvmApi"]

DEFAULT_PAGE_SIZE = 50_000
MAX_PAGE_SIZE = 200_000
DELTA_WINDOW = timedelta(days=14)
_BUCKET_US = 6 * 3_600_000_000
_VULNERABILITY = ("Vulnerability.Read.All",)
_SOFTWARE = ("Software.Read.All",)


@dataclass(frozen=True)
class _Export:
    dataset: str
    roles: tuple[str, ...]
    limit: str
    max_hours: int
    default_hours: float


_PAGED = {
    "SoftwareVulnerabilitiesByMachine": (
        "vulnerabilities",
        _VULNERABILITY,
        "software_vulnerabilities_by_machine",
    ),
    "SecureConfigurationsAssessmentByMachine": (
        "secure_config",
        _VULNERABILITY,
        "secure_config_by_machine",
    ),
    "SoftwareInventoryByMachine": ("software", _SOFTWARE, "software_inventory_by_machine"),
    "SoftwareVulnerabilityChangesByMachine": (
        "changes",
        _VULNERABILITY,
        "software_vulnerability_changes",
    ),
}
_EXPORTS = {
    "SoftwareVulnerabilitiesExport": _Export(
        "vulnerabilities", _VULNERABILITY, "software_vulnerabilities_export", 6, 1
    ),
    "SecureConfigurationsAssessmentExport": _Export(
        "secure_config", _VULNERABILITY, "secure_config_export", 6, 1
    ),
    "SoftwareInventoryExport": _Export("software", _SOFTWARE, "software_inventory_export", 6, 1),
    # Antivirus health via files: Vulnerability.Read.All, URLs valid 3 h (B.2). Its pages
    # disagree on sasValidHours (at most 24, or 6 like the other exports): the stricter.
    "InfoGatheringExport": _Export("av", _VULNERABILITY, "info_gathering_export", 6, 3),
}
#: Every path this module serves, for case-insensitive routing (the service ignores case).
PATHS = tuple(
    f"{prefix}/machines/{name}" for prefix in ("/api", "/api/v1.0") for name in (*_PAGED, *_EXPORTS)
)


class TvmApi:
    """Routes of the TVM exports over one tenant's snapshots."""

    def __init__(
        self,
        *,
        identity: Identity,
        limiter: RateLimiter,
        clock: EmulatedClock,
        snapshots: Snapshots,
        exports: Exports,
        sas_valid_seconds: float | None,
        ready: Callable[[], None],
    ) -> None:
        self._identity = identity
        self._limiter = limiter
        self._clock = clock
        self._snapshots = snapshots
        self._exports = exports
        self._sas_seconds = sas_valid_seconds
        self._ready = ready  # blocks until the posture tables exist

    def routes(self) -> list[Route]:
        routes = []
        for prefix in ("/api", "/api/v1.0"):
            for name in _PAGED:
                routes.append(
                    Route(f"{prefix}/machines/{name}", self._page, methods=["GET"], name=name)
                )
            for name in _EXPORTS:
                routes.append(
                    Route(f"{prefix}/machines/{name}", self._export, methods=["GET"], name=name)
                )
        return routes

    # --- JSON exports ----------------------------------------------------------------------
    async def _page(self, request: Request) -> Response:
        endpoint = request.url.path.rsplit("/", 1)[-1]
        dataset, roles, limit = _PAGED[endpoint]
        refused = self._admit(request, roles, limit)
        if refused is not None:
            return refused
        params = {k.lower(): v for k, v in request.query_params.items()}
        try:
            page_size = _bounded(params.get("pagesize"), "pageSize", DEFAULT_PAGE_SIZE) or 1
            top = _bounded(params.get("$top"), "$top", None, minimum=0)
            token = _read_token(params.get("$skiptoken"))
        except ValueError as exc:
            return mde_error(400, str(exc), code="BadRequest")
        await run_in_threadpool(self._ready)
        at = token.get("Snapshot", self._clock.now_us()) if token else self._clock.now_us()
        since: int | None = None
        since_text = params.get("sincetime")
        if dataset == "changes":
            if token and "Since" in token:
                since = int(token["Since"])
            else:
                if not since_text:
                    return mde_error(
                        400, "The sinceTime parameter is required.", code="MissingRequiredParameter"
                    )
                try:
                    since = _since_bucket(since_text, now=from_epoch_us(at))
                except ValueError as exc:
                    return mde_error(400, str(exc), code="BadRequest")
        position = int(token.get("Position", 0)) if token else 0
        count = top if top is not None else page_size

        def open_page() -> tuple[int, Iterator[list[str]]]:
            with self._snapshots.pinned(dataset, at, since) as snapshot:
                total = snapshot.rows
            return total, self._lines(dataset, at, since, position, count)

        total, lines = await run_in_threadpool(open_page)
        base = str(request.base_url).rstrip("/")
        context = f"{base}/api/$metadata#{DATASETS[dataset].context}"
        next_link = None
        if top is None and position + count < total:
            query = f"pagesize={page_size}"
            if since_text:
                query += "&sinceTime=" + quote(since_text, safe="")
            token_text = _write_token(at, since, position + count, self._exports_part_rows())
            next_link = f"{base}{request.url.path}?{query}&$skiptoken={quote(token_text, safe='')}"
        return StreamingResponse(
            iterate_in_threadpool(_envelope(context, lines, next_link)),
            media_type=MDE_CONTENT_TYPE,
            headers={"OData-Version": "4.0"},
        )

    def _lines(
        self, dataset: str, at: int, since: int | None, position: int, count: int
    ) -> Iterator[list[str]]:
        with self._snapshots.pinned(dataset, at, since) as snapshot:
            yield from self._snapshots.lines(snapshot, position, count)

    def _exports_part_rows(self) -> int:
        return self._exports.part_rows

    # --- via files -------------------------------------------------------------------------
    async def _export(self, request: Request) -> Response:
        endpoint = request.url.path.rsplit("/", 1)[-1]
        spec = _EXPORTS[endpoint]
        refused = self._admit(request, spec.roles, spec.limit)
        if refused is not None:
            return refused
        params = {k.lower().lstrip("$"): v for k, v in request.query_params.items()}
        try:
            hours = _bounded(
                params.get("sasvalidhours"), "sasValidHours", None, maximum=spec.max_hours
            )
        except ValueError as exc:
            return mde_error(400, str(exc), code="BadRequest")
        seconds = self._sas_seconds or (hours or spec.default_hours) * 3600
        await run_in_threadpool(self._ready)
        at = self._clock.now_us()
        folder = DATASETS[spec.dataset].export_folder or spec.dataset
        job = await run_in_threadpool(self._exports.job, spec.dataset, folder, at)
        base = str(request.base_url).rstrip("/")
        body = {
            "@odata.context": f"{base}/api/$metadata#microsoft.windowsDefenderATP.api.ExportFilesResponse",
            "exportFiles": [self._exports.signed_url(base, p.url_path, seconds) for p in job.parts],
            "generatedTime": job.generated_time,
        }
        return json_response(body)

    def _admit(self, request: Request, roles: tuple[str, ...], limit: str) -> Response | None:
        refused = self._identity.authorize(request, dialect="mde", roles=roles)
        if refused is not None:
            return refused
        throttled = self._limiter.acquire(limit)
        if throttled is not None:
            retry = {"Retry-After": str(throttled.retry_after)}
            return mde_error(429, throttled.message, code="TooManyRequests", headers=retry)
        return None


def _envelope(context: str, lines: Iterator[list[str]], next_link: str | None) -> Iterator[bytes]:
    """``{"@odata.context": ..., "value": [...], "@odata.nextLink": ...}``, streamed."""
    yield b'{"@odata.context":' + orjson.dumps(context) + b',"value":['
    first = True
    for batch in lines:
        chunk = ",".join(batch).encode()
        yield chunk if first else b"," + chunk
        first = False
    tail = b"]"
    if next_link is not None:
        tail += b',"@odata.nextLink":' + orjson.dumps(next_link)
    yield tail + b"}"


def _bounded(
    value: str | None,
    name: str,
    default: int | None,
    *,
    minimum: int = 1,
    maximum: int = MAX_PAGE_SIZE,
) -> int | None:
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"The value '{value}' of '{name}' is not a valid integer.") from None
    if not minimum <= number <= maximum:
        raise ValueError(f"'{name}' must be between {minimum} and {maximum}; got {number}.")
    return number


def _since_bucket(text: str, *, now: datetime) -> int:
    """The start of the 6-hour bucket ``sinceTime`` falls in (epoch µs).

    Raises:
        ValueError: not ISO 8601, or more than 14 days before now.
    """
    try:
        since = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"sinceTime '{text}' is not a valid ISO 8601 date and time.") from None
    if since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    if since < now - DELTA_WINDOW:
        raise ValueError(
            f"sinceTime '{text}' is more than 14 days in the past; the maximum is 14 days."
        )
    us = epoch_us(since)
    return us - us % _BUCKET_US


def _write_token(at: int, since: int | None, position: int, part_rows: int) -> str:
    """The documented token shape (B.0), plus the snapshot it reads, so paging is stable."""
    when = from_epoch_us(at)
    definition: dict[str, object] = {"TimePath": f"{when:%Y-%m-%d}/{when:%H%M}/", "Snapshot": at}
    if since is not None:
        definition["Since"] = since
    token = {
        "ExportDefinition": definition,
        "ExportFileIndex": position // part_rows,
        "LineStoppedAt": position % part_rows,
        "PartRows": part_rows,
    }
    return base64.b64encode(orjson.dumps(token)).decode()


def _read_token(text: str | None) -> dict[str, int] | None:
    if not text:
        return None
    try:
        token = orjson.loads(base64.b64decode(text + "=" * (-len(text) % 4)))
        definition = token["ExportDefinition"]
        parsed = {
            "Snapshot": int(definition["Snapshot"]),
            "Position": int(token["ExportFileIndex"]) * int(token["PartRows"])
            + int(token["LineStoppedAt"]),
        }
        if "Since" in definition:
            parsed["Since"] = int(definition["Since"])
    except (binascii.Error, ValueError, TypeError, KeyError, orjson.JSONDecodeError):
        raise ValueError("The $skiptoken is not valid.") from None
    if parsed["Position"] < 0:
        raise ValueError("The $skiptoken is not valid.")
    return parsed

"""The threat feeds: CISA's KEV catalogue and FIRST's EPSS scores, read from a URL (streamed
to the run's scratch folder) or from a file or folder as published (air-gapped sites import
the files unchanged). Vulnrichment is in ``sources.vulnrichment``.

Each read is one unit, the whole copy. A copy that is not the feed's format fails the dataset
(nothing is written, so the last good copy stays the newest in the table) and the error names
that copy from the cursor, which holds the version of the last good read; a malformed entry
in a good copy is quarantined with its reason. May import ``http``, ``config``, ``contracts``,
``errors``, ``tables`` and the other ``sources`` modules.
"""

from __future__ import annotations

import csv
import gzip
import io
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson

from endpoint_forensics.config import FeedLocation
from endpoint_forensics.contracts import Batch, Row, Unit, batch_of
from endpoint_forensics.errors import EpfError, PermanentError
from endpoint_forensics.sources import Cursor, FeedContext, Fetched
from endpoint_forensics.sources.wire import (
    Fields,
    Invalid,
    as_bool,
    as_datetime,
    as_float,
    as_str,
    list_of,
)
from endpoint_forensics.tables.feeds import EPSS, KEV

__all__ = [
    "FeedFormatError",
    "feed_copy",
    "fetch_epss",
    "fetch_kev",
    "guarded",
    "last_good",
    "source_name",
]

_BATCH_ROWS = 20_000


class FeedFormatError(PermanentError):
    """The copy read is not the feed's published format."""


def source_name(location: FeedLocation) -> str:
    """Where a copy came from, for ``FeedSource``: a path, or a URL without query or fragment
    (a mirror's link may carry a signature)."""
    if location.path is not None:
        return str(location.path)
    assert location.url is not None
    return urlunsplit(urlsplit(location.url)._replace(query="", fragment=""))


def feed_copy(ctx: FeedContext, dataset: str, pattern: str) -> tuple[Path, str]:
    """The copy of ``dataset`` to read, and its ``FeedSource``: the configured file, the newest
    file matching ``pattern`` in the configured folder (published names sort by date), or the
    URL downloaded into the run's scratch folder (redirects followed: EPSS's "current" file
    is one)."""
    location = ctx.feeds.location(dataset)
    if location.path is not None:
        path = location.path
        if path.is_dir():
            found = sorted(p for p in path.glob(pattern) if p.is_file())
            if not found:
                raise FeedFormatError(f"no {pattern} file in the folder {str(path)!r}")
            path = found[-1]
        return path, str(path)
    assert location.url is not None
    ctx.work_dir.mkdir(parents=True, exist_ok=True)
    dest = ctx.work_dir / f"{dataset}.download"
    ctx.client.download(location.url, dest, follow_redirects=True, signed=False)
    return dest, source_name(location)


def last_good(ctx: FeedContext) -> str:
    """What the error of a failed read adds: which copy stays in use."""
    cursor = ctx.cursor or {}
    if not cursor.get("version"):
        return "no earlier copy was read, so triage has none of this feed"
    return (
        f"the last good copy stays in use: {cursor['version']} from {cursor.get('source')},"
        f" read {cursor.get('read')}"
    )


def guarded(ctx: FeedContext, read: Callable[[], Iterator[Unit]]) -> Iterator[Unit]:
    """``read``'s units; a failure, finding the copy or reading its rows, says which copy
    stays in use."""
    try:
        for unit in read():
            unit.batches = _guarded_batches(ctx, unit.batches)
            yield unit
    except EpfError as exc:
        raise _with_last_good(ctx, exc) from None


def _guarded_batches(ctx: FeedContext, batches: Iterator[Batch]) -> Iterator[Batch]:
    try:
        yield from batches
    except EpfError as exc:
        raise _with_last_good(ctx, exc) from None


def _with_last_good(ctx: FeedContext, exc: EpfError) -> EpfError:
    exc.args = (f"{exc}; {last_good(ctx)}",)
    return exc


def fetch_kev(ctx: FeedContext) -> Fetched:
    """The whole KEV catalogue as one unit; the cursor keeps its ``catalogVersion``."""
    found: dict[str, Any] = {}

    def read() -> Iterator[Unit]:
        path, source = feed_copy(ctx, "kev", "known_exploited_vulnerabilities*.json")
        catalogue = _kev_catalogue(path)
        context = _kev_context(catalogue, source)
        version = context["FeedVersion"]
        entries = catalogue["vulnerabilities"]
        found.update(version=version, source=source)
        yield Unit(
            f"kev-{version}",
            (
                batch_of(KEV, entries[i : i + _BATCH_ROWS], lambda e: _kev_row(e, context))
                for i in range(0, len(entries), _BATCH_ROWS)
            ),
        )

    yield from guarded(ctx, read)
    return _cursor(ctx, found)


def _kev_catalogue(path: Path) -> dict[str, Any]:
    # A few MB even as the catalogue grows: read whole, checked before any row is written.
    try:
        catalogue = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise FeedFormatError(f"the KEV copy is not JSON ({exc})") from None
    if not isinstance(catalogue, dict) or not isinstance(catalogue.get("vulnerabilities"), list):
        raise FeedFormatError("the KEV copy has no 'vulnerabilities' list: not a KEV catalogue")
    if not catalogue.get("catalogVersion"):
        raise FeedFormatError("the KEV copy has no catalogVersion")
    return catalogue


def _kev_context(catalogue: dict[str, Any], source: str) -> dict[str, Any]:
    """The columns every row of the catalogue shares: its version, source and release date."""
    try:
        released = as_datetime(catalogue.get("dateReleased"))
    except Invalid as exc:
        raise FeedFormatError(f"the KEV copy's dateReleased: {exc}") from None
    version = str(catalogue["catalogVersion"])
    return {"FeedVersion": version, "FeedSource": source, "DateReleased": released}


def _kev_row(entry: Any, context: dict[str, Any]) -> Row | str:
    try:
        f = Fields(entry)
        cve = f.get_as("cveID", as_str)
        if not cve:
            return "no cveID"
        row: Row = {
            "CveId": cve,
            "VendorProject": f.get_as("vendorProject", as_str),
            "Product": f.get_as("product", as_str),
            "VulnerabilityName": f.get_as("vulnerabilityName", as_str),
            "DateAdded": f.get_as("dateAdded", as_datetime),
            "ShortDescription": f.get_as("shortDescription", as_str),
            "RequiredAction": f.get_as("requiredAction", as_str),
            "DueDate": f.get_as("dueDate", as_datetime),
            "KnownRansomwareCampaignUse": f.get_as("knownRansomwareCampaignUse", as_str),
            "ForensicTriage": f.get_as("forensicTriage", as_bool),
            "Notes": f.get_as("notes", as_str),
            "Cwes": f.get_as("cwes", list_of(as_str)),
            **context,
        }
    except Invalid as exc:
        return str(exc)
    row["AdditionalFields"] = f.rest()
    return row


def fetch_epss(ctx: FeedContext) -> Fetched:
    """One day's EPSS scores as one unit, streamed from the gzip CSV; the cursor keeps the
    model version and score date."""
    found: dict[str, Any] = {}

    def read() -> Iterator[Unit]:
        path, source = feed_copy(ctx, "epss", "epss_scores-*.csv.gz")
        model, score_date = _epss_copy_header(path)
        version = f"{model} {score_date:%Y-%m-%d}"
        context = {
            "ModelVersion": model,
            "ScoreDate": score_date,
            "FeedVersion": version,
            "FeedSource": source,
        }
        found.update(version=version, source=source)
        yield Unit(f"epss-{score_date:%Y-%m-%d}", _epss_batches(path, context))

    yield from guarded(ctx, read)
    return _cursor(ctx, found)


def _open_epss(path: Path) -> io.TextIOWrapper:
    """The file as published (gzip), or already unpacked by whoever carried it in."""
    with path.open("rb") as raw:
        gzipped = raw.read(2) == b"\x1f\x8b"
    if gzipped:
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    return path.open(encoding="utf-8", newline="")


# What reading a corrupt or truncated copy raises: gzip's errors, and text that is not UTF-8.
_UNREADABLE = (OSError, EOFError, UnicodeDecodeError, zlib.error, csv.Error)


def _epss_copy_header(path: Path) -> tuple[str, Any]:
    """The model version and score date of the copy at ``path``, from its first line."""
    try:
        with _open_epss(path) as handle:
            line = handle.readline()
    except _UNREADABLE as exc:
        raise FeedFormatError(f"the EPSS copy's first line cannot be read ({exc})") from None
    return _epss_header(line)


def _epss_header(line: str) -> tuple[str, Any]:
    """``#model_version:v2025.03.14,score_date:2025-03-14T00:00:00+0000``."""
    if not line.startswith("#"):
        raise FeedFormatError(
            "the EPSS copy does not start with its '#model_version:...,score_date:...' line"
        )
    fields = dict(p.split(":", 1) for p in line[1:].strip().split(",") if ":" in p)
    model, when = fields.get("model_version"), fields.get("score_date")
    if not model or not when:
        raise FeedFormatError(f"the EPSS header names no model_version or score_date: {line!r}")
    try:
        score_date = as_datetime(when.replace("+0000", "+00:00"))
    except Invalid as exc:
        raise FeedFormatError(f"the EPSS score_date: {exc}") from None
    return model, score_date


def _epss_batches(path: Path, context: dict[str, Any]) -> Iterator[Batch]:
    with _open_epss(path) as handle:
        try:
            handle.readline()  # the model and date, read already
            reader = csv.reader(handle)
            header = next(reader, None)
            if header != ["cve", "epss", "percentile"]:
                raise FeedFormatError(f"the EPSS columns are {header}, not cve,epss,percentile")
            chunk: list[list[str]] = []
            for record in reader:
                chunk.append(record)
                if len(chunk) == _BATCH_ROWS:
                    yield batch_of(EPSS, chunk, lambda r: _epss_row(r, context))
                    chunk = []
            if chunk:
                yield batch_of(EPSS, chunk, lambda r: _epss_row(r, context))
        except _UNREADABLE as exc:  # a truncated or corrupt gzip, or text that is not UTF-8
            raise FeedFormatError(f"the EPSS copy cannot be read to its end ({exc})") from None


def _epss_row(record: list[str], context: dict[str, Any]) -> Row | str:
    if len(record) != 3:
        return f"expected 3 fields (cve, epss, percentile), got {len(record)}"
    cve, epss, percentile = record
    try:
        score, rank = as_float(epss), as_float(percentile)
    except Invalid as exc:
        return str(exc)
    if not cve.startswith("CVE-") or score is None or not 0 <= score <= 1:
        return f"not a CVE with a score from 0 to 1: {cve!r}, {epss!r}"
    return {"CveId": cve, "Epss": score, "Percentile": rank, **context}


def _cursor(ctx: FeedContext, found: dict[str, Any]) -> Cursor:
    return {**found, "read": ctx.now.strftime("%Y-%m-%dT%H:%M:%SZ")}

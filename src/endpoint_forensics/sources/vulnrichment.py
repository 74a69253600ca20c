"""CISA Vulnrichment: the SSVC options CISA's ADP container adds to CVE records, read from the
repository's archive (a zip, from its URL or a file) or from a folder (a clone).

Only records with a ``CISA-ADP`` container carrying an ``ssvc`` metric give a row; the others
are not CVEs CISA assessed and are skipped, not quarantined. A record that is not JSON, or
whose options are not the CISA Coordinator vocabulary, is quarantined with its reason.
``FeedVersion`` names the copy: the archive's SHA-256, or the folder's newest file time.
Members are read one at a time: memory stays bounded however large the repository grows.
May import ``http``, ``config``, ``contracts``, ``errors``, ``tables`` and the other
``sources`` modules.
"""

from __future__ import annotations

import hashlib
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from endpoint_forensics.contracts import Batch, Reject, Row, Unit
from endpoint_forensics.sources import FeedContext, Fetched
from endpoint_forensics.sources.feeds import FeedFormatError, guarded, source_name
from endpoint_forensics.sources.wire import Invalid, as_datetime, as_str
from endpoint_forensics.tables.feeds import VULNRICHMENT

__all__ = ["fetch_vulnrichment", "vulnrichment_row"]

_BATCH_ROWS = 5_000
# The CISA Coordinator 2.0.3 values a record may give (Vulnrichment spells PoC "poc").
_VALUES = {
    "Exploitation": ("none", "poc", "active"),
    "Automatable": ("no", "yes"),
    "Technical Impact": ("partial", "total"),
}


def fetch_vulnrichment(ctx: FeedContext) -> Fetched:
    """Every enriched CVE record of the copy, as one unit."""
    found: dict[str, Any] = {}

    def read() -> Iterator[Unit]:
        location = ctx.feeds.location("vulnrichment")
        if location.path is not None and location.path.is_dir():
            version, records = _folder(location.path)
            source = str(location.path)
        else:
            if location.path is not None:
                archive, source = location.path, str(location.path)
            else:
                ctx.work_dir.mkdir(parents=True, exist_ok=True)
                archive = ctx.work_dir / "vulnrichment.zip"
                assert location.url is not None
                ctx.client.download(location.url, archive, follow_redirects=True, signed=False)
                source = source_name(location)
            version, records = _archive(archive)
        found.update(version=version, source=source)
        context = {"FeedVersion": version, "FeedSource": source}
        yield Unit("vulnrichment", _batches(records, context))

    yield from guarded(ctx, read)
    return {**found, "read": ctx.now.strftime("%Y-%m-%dT%H:%M:%SZ")}


def _archive(path: Path) -> tuple[str, Iterator[tuple[str, bytes]]]:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    if not zipfile.is_zipfile(path):
        raise FeedFormatError("the Vulnrichment copy is not a zip archive of the repository")

    def members() -> Iterator[tuple[str, bytes]]:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                name = info.filename.rsplit("/", 1)[-1]
                if name.startswith("CVE-") and name.endswith(".json"):
                    yield info.filename, archive.read(info)

    return f"archive sha256:{digest.hexdigest()[:16]}", members()


def _folder(path: Path) -> tuple[str, Iterator[tuple[str, bytes]]]:
    files = sorted(path.rglob("CVE-*.json"))
    if not files:
        raise FeedFormatError(f"no CVE-*.json record in the folder {str(path)!r}")
    newest = max(f.stat().st_mtime for f in files)
    version = f"folder, newest record file {datetime.fromtimestamp(newest, UTC):%Y-%m-%dT%H:%M:%SZ}"
    return version, ((str(f.relative_to(path)), f.read_bytes()) for f in files)


def _batches(records: Iterator[tuple[str, bytes]], context: dict[str, Any]) -> Iterator[Batch]:
    batch = Batch(VULNRICHMENT)
    for name, body in records:
        row = vulnrichment_row(body)
        if isinstance(row, str):
            batch.rejects.append(Reject(f"{name}: {row}", body.decode(errors="replace")[:2000]))
        elif row is not None:
            batch.rows.append({**row, **context})
        if len(batch.rows) + len(batch.rejects) >= _BATCH_ROWS:
            yield batch
            batch = Batch(VULNRICHMENT)
    if batch.rows or batch.rejects:
        yield batch


def vulnrichment_row(body: bytes) -> Row | str | None:
    """The row of one CVE record, its reject reason, or None (no CISA SSVC assessment)."""
    try:
        record = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return f"not JSON ({exc})"
    if not isinstance(record, dict):
        return "not a CVE record (not an object)"
    containers = record.get("containers")
    adp = containers.get("adp") if isinstance(containers, dict) else None
    for container in adp if isinstance(adp, list) else ():
        if not isinstance(container, dict):
            continue
        provider = container.get("providerMetadata") or {}
        if not isinstance(provider, dict) or provider.get("shortName") != "CISA-ADP":
            continue
        metrics = container.get("metrics") or []
        if not isinstance(metrics, list):
            return f"the CISA-ADP metrics are a {type(metrics).__name__}, not a list"
        for metric in metrics:
            other = metric.get("other") if isinstance(metric, dict) else None
            if isinstance(other, dict) and other.get("type") == "ssvc":
                return _ssvc_row(other.get("content"), provider.get("dateUpdated"))
    return None


def _ssvc_row(content: Any, updated: Any) -> Row | str:
    if not isinstance(content, dict) or not content.get("id"):
        return "the ssvc metric has no content with an id"
    listed = content.get("options") or []
    if not isinstance(listed, list):
        return f"the ssvc options are a {type(listed).__name__}, not a list"
    options: dict[str, str] = {}
    for option in listed:
        if isinstance(option, dict):
            options.update({str(k): str(v).lower() for k, v in option.items()})
    for name, allowed in _VALUES.items():
        if options.get(name) not in allowed:
            return f"{name} is {options.get(name)!r}, not one of {', '.join(allowed)}"
    try:
        assessed = as_datetime(content.get("timestamp"))
        record_updated = as_datetime(updated)
        cve, role, version = (_text(content, key) for key in ("id", "role", "version"))
    except Invalid as exc:
        return str(exc)
    return {
        "CveId": cve,
        "Exploitation": options["Exploitation"],
        "Automatable": options["Automatable"],
        "TechnicalImpact": options["Technical Impact"],
        "SsvcRole": role,
        "SsvcVersion": version,
        "AssessedAt": assessed,
        "RecordUpdated": record_updated,
    }


def _text(content: dict[str, Any], key: str) -> str | None:
    try:
        return as_str(content.get(key))
    except Invalid as exc:
        raise Invalid(f"the ssvc {key}: {exc}") from None

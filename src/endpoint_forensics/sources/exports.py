"""The large-tenant path: TVM exports "via files" (defender-apis.md B.5.3).

Owns requesting an export within its budget (5/min, 20/h), downloading each gzip JSON-lines part
from its signed URL (no Authorization header; an expired link is re-requested), and delivering
each part as one resumable unit, decoded by ``sources.decode``.
May import ``http``, ``contracts``, ``tables`` and the other ``sources`` modules.
"""

from __future__ import annotations

import gzip
import logging
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from endpoint_forensics.contracts import Batch, RedoUnit, SnapshotChanged, Unit
from endpoint_forensics.errors import LinkExpired, PermanentError, TransientError
from endpoint_forensics.sources import FetchContext
from endpoint_forensics.sources.decode import ExportSpec, decode_part

__all__ = ["export_units"]

log = logging.getLogger(__name__)


def export_units(ctx: FetchContext, spec: ExportSpec) -> Iterator[Unit]:
    """One unit per export part, resuming after the last delivered part of the same export."""
    links = _request_export(ctx, spec)
    start = 0
    if ctx.resume and ctx.resume.get("mode") == "files":
        if ctx.resume.get("generated") != links.generated:
            raise SnapshotChanged(
                f"the {spec.endpoint} export was regenerated "
                f"({ctx.resume.get('generated')} -> {links.generated})"
            )
        start = int(ctx.resume["part"]) + 1
    elif ctx.resume:
        raise SnapshotChanged("the unfinished snapshot was read as JSON pages, not files")
    careful = spec.convert is not None
    for index in range(start, len(links.urls)):
        path = ctx.work_dir / f"part-{index:05d}.json.gz"

        def fallback(i: int = index, p: Path = path) -> Iterator[Batch]:
            return _part_batches(ctx, spec, links, i, p, careful=True, again=True)

        yield Unit(
            f"part-{index:05d}",
            _part_batches(ctx, spec, links, index, path, careful=careful),
            {"mode": "files", "generated": links.generated, "part": index},
            fallback=fallback,
        )


@dataclass
class _Links:
    urls: list[str]
    generated: str


def _request_export(ctx: FetchContext, spec: ExportSpec) -> _Links:
    tenant = ctx.tenant
    body = ctx.client.request_json(
        "GET",
        f"{tenant.mde_base_url}/api/machines/{spec.endpoint}",
        scope=tenant.mde_scope,
        budget=ctx.budget(spec.endpoint),
        params={"sasValidHours": str(tenant.sas_valid_hours)},
    )
    urls = body.get("exportFiles") if isinstance(body, dict) else None
    if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
        raise PermanentError(f"{spec.endpoint}: the answer has no exportFiles list")
    generated = body.get("generatedTime") if isinstance(body, dict) else None
    return _Links(list(urls), str(generated))


def _part_batches(
    ctx: FetchContext,
    spec: ExportSpec,
    links: _Links,
    index: int,
    path: Path,
    *,
    careful: bool,
    again: bool = False,
) -> Iterator[Batch]:
    """The part's batches, downloaded first if need be. A part whose gzip stream ends early
    (cut short on the way, with a complete HTTP answer) is downloaded again, once: the unit
    is redone from the start (``RedoUnit``), so no row of the broken copy stays."""
    if not path.exists():
        _download(ctx, spec, links, index, path)
    try:
        yield from decode_part(path, spec, careful=careful)
    except RedoUnit:
        raise  # the careful pass reads the same file
    except (EOFError, gzip.BadGzipFile, zlib.error, PermanentError) as exc:
        path.unlink(missing_ok=True)
        if isinstance(exc, PermanentError) and "GZIP" not in str(exc).upper():
            raise
        what = f"{spec.endpoint}: part {index} arrived cut short (its gzip stream ends early)"
        if again:
            raise TransientError(f"{what}, twice; the next run downloads it again") from exc
        log.info("%s; downloading it again", what)
        raise RedoUnit(what) from exc
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    path.unlink(missing_ok=True)


def _download(ctx: FetchContext, spec: ExportSpec, links: _Links, index: int, path: Path) -> None:
    for _ in range(3):
        try:
            ctx.client.download(links.urls[index], path)
            return
        except LinkExpired as exc:
            # Links last an hour by default; a long run outlives them. Same export: new links.
            fresh = _request_export(ctx, spec)
            if fresh.generated != links.generated or len(fresh.urls) != len(links.urls):
                raise SnapshotChanged(
                    f"the {spec.endpoint} export changed while downloading"
                ) from exc
            links.urls = fresh.urls
    raise PermanentError(f"{spec.endpoint}: part {index} kept answering 403 with fresh links")

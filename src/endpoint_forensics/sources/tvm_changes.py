"""Vulnerability changes since the last run: the delta of Defender Vulnerability Management
(defender-apis.md B.5.4, ``SoftwareVulnerabilityChangesByMachine``).

Reads from the dataset's cursor, spills the pages to disk as they come, removes the Fixed/New
pairs that a device moving between device groups produces (in SQL, over the spill), and returns
the new cursor: the newest event time delivered and the keys of the events in its 6-hour
bucket, which the service serves again. The pipeline stores it only when every unit is
delivered. May import ``contracts``, ``errors``, ``tables`` and the other ``sources`` modules.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from endpoint_forensics.contracts import Batch, Unit
from endpoint_forensics.errors import HttpStatusError, PermanentError
from endpoint_forensics.sources import FetchContext, Fetched
from endpoint_forensics.sources.decode import LINE_FIELD, ExportSpec, decode_part, memory_mb_for
from endpoint_forensics.sources.decode_sql import scratch_duckdb
from endpoint_forensics.sources.tvm import VULNERABILITY_FIELDS
from endpoint_forensics.sources.wire import Fields, Invalid, as_datetime
from endpoint_forensics.tables import VULNERABILITY_CHANGES

__all__ = ["CHANGES", "fetch_vulnerability_changes", "group_move_lines"]

log = logging.getLogger(__name__)

CHANGES = ExportSpec(
    "SoftwareVulnerabilityChangesByMachine",
    VULNERABILITY_CHANGES,
    {
        **VULNERABILITY_FIELDS,
        "status": "Status",
        "eventTimestamp": "EventTimestamp",
        "isOnboarded": "IsOnboarded",
    },
    ("DeviceId", "RecordId", "Status"),
)
_DELTA_MAX_DAYS = 14  # sinceTime may go back at most 14 days (B.5.4)
_BUCKET = timedelta(hours=6)  # changes are computed in 6-hour buckets
_SPILL_LINES = 50_000


def fetch_vulnerability_changes(ctx: FetchContext) -> Fetched:
    """New, Fixed and Updated vulnerabilities since the cursor (at most 14 days back).

    The pages go to a spill file as they come (a 14-day delta of a large tenant is hundreds of
    thousands of rows), the device-group move pairs are found there with SQL, and the rest is
    decoded like an export part. The cursor keeps the newest event time delivered and the keys
    of the events in the bucket it falls in, because the service serves that bucket again.
    """
    cursor = ctx.cursor or {}
    earliest = ctx.now - timedelta(days=_DELTA_MAX_DAYS) + timedelta(seconds=1)
    since = as_datetime(cursor.get("since")) or earliest
    if since < earliest:
        # Beyond the service's 14 days the changes are gone: record the hole, never hide it.
        reason = "vulnerability changes older than the API's 14 days cannot be fetched again"
        ctx.gaps.append({"start": since.isoformat(), "end": earliest.isoformat(), "reason": reason})
        log.warning(
            "tenant %s: no vulnerability changes between %s and %s: %s (the baseline covers "
            "the state)",
            ctx.tenant.name,
            since.isoformat(),
            earliest.isoformat(),
            reason,
        )
        since = earliest
    spill = ctx.work_dir / "changes"
    try:
        tally = _spill_changes(ctx, since, earliest, set(cursor.get("seen", [])), spill)
    except HttpStatusError as exc:
        if exc.status != 400 or since > earliest:
            raise
        # Our clock is behind Defender's: 14 days back is already too far for it. The
        # next bucket is the earliest it can still serve.
        since = _bucket_start(since) + _BUCKET
        log.warning(
            "tenant %s: sinceTime refused (%s); asking from %s", ctx.tenant.name, exc, since
        )
        tally = _spill_changes(ctx, since, earliest, set(cursor.get("seen", [])), spill)
    moves = group_move_lines(tally.files) if tally.lines else set()
    log.info(
        "tenant %s: %d changes since %s (%d already delivered, %d device-group move rows removed)",
        ctx.tenant.name,
        tally.lines - len(moves),
        since.isoformat(),
        tally.repeated,
        len(moves),
    )
    # Units of at most _SPILL_LINES rows: a sink holds a unit in one transaction.
    for number, path in enumerate(tally.files):

        def fallback(p: Path = path) -> Iterator[Batch]:
            return decode_part(p, CHANGES, careful=True, skip_lines=moves)

        batches = decode_part(path, CHANGES, skip_lines=moves)
        yield Unit(f"delta-{number:05d}", batches, {}, fallback)
    return tally.cursor()


def group_move_lines(spill: Path | list[Path]) -> set[int]:
    """The lines of spill files that are device-group move pairs (B.5.4).

    Such a pair has the same record id and event time, Fixed under the old group and New under
    the new one: the exposure did not change. Each Fixed pairs with at most one New. A line
    that is not an object (the spill keeps whatever a page held) is no pair, and the decode
    rejects it: the pairing reads past it (``ignore_errors``) rather than fail the delta.
    """
    import duckdb

    columns = (
        "{'_line': 'BIGINT', 'id': 'VARCHAR', 'eventTimestamp': 'VARCHAR', 'status': 'VARCHAR', "
        "'rbacGroupName': 'VARCHAR', 'rbacGroupId': 'VARCHAR'}"
    )
    files = spill if isinstance(spill, list) else [spill]
    con = scratch_duckdb(files[0].parent, threads=1, memory_mb=memory_mb_for(1))
    con.execute("SET preserve_insertion_order = false")  # the pairing needs no order
    try:
        found = con.execute(
            f"""
            WITH c AS (
                SELECT * FROM read_json($path, format = 'newline_delimited', columns = {columns},
                                        ignore_errors = true)
                WHERE status IN ('Fixed', 'New')
            ),
            ranked AS (
                SELECT *, row_number() OVER (
                    PARTITION BY id, eventTimestamp, status ORDER BY _line) AS k
                FROM c
            )
            SELECT f._line, n._line
            FROM ranked f JOIN ranked n
              ON f.id = n.id AND f.eventTimestamp = n.eventTimestamp AND f.k = n.k
            WHERE f.status = 'Fixed' AND n.status = 'New'
              AND (f.rbacGroupName IS DISTINCT FROM n.rbacGroupName
                   OR f.rbacGroupId IS DISTINCT FROM n.rbacGroupId)
            """,
            {"path": [str(p) for p in files]},
        ).fetchall()
    except UnicodeDecodeError as exc:  # DuckDB's message quoted a line cut inside a character
        raise PermanentError("pairing device-group moves failed: a line DuckDB refused") from exc
    except duckdb.Error as exc:
        raise PermanentError(f"pairing device-group moves failed: {exc}".splitlines()[0]) from exc
    finally:
        con.close()
    return {line for pair in found for line in pair}


@dataclass
class _Tally:
    since: datetime
    seen: set[str]
    files: list[Path] = field(default_factory=list)
    lines: int = 0
    repeated: int = 0
    newest: datetime | None = None
    recent: dict[str, datetime] = field(default_factory=dict)

    def cursor(self) -> dict[str, Any]:
        newest = self.newest or self.since
        boundary = newest - _BUCKET
        keys = {k for k, t in self.recent.items() if t > boundary}
        keys |= {k for k in self.seen if _key_time(k) > boundary}
        return {"since": newest.isoformat(), "seen": sorted(keys)}


def _spill_changes(
    ctx: FetchContext, since: datetime, earliest: datetime, seen: set[str], spill: Path
) -> _Tally:
    tally = _Tally(since, seen)
    tenant = ctx.tenant
    endpoint = CHANGES.endpoint
    pages = ctx.client.iter_odata_pages(
        f"{tenant.mde_base_url}/api/machines/{endpoint}",
        scope=tenant.mde_scope,
        budget=ctx.budget(endpoint),
        params={"sinceTime": _iso(since), "pageSize": str(tenant.export_page_size)},
    )
    fh = None
    try:
        for page in pages:
            for record in page.value:
                if isinstance(record, dict):
                    key, event = _raw_change_key(record)
                    if key in seen:
                        tally.repeated += 1
                        continue  # delivered by an earlier run: its bucket is served again
                    if event is not None:
                        if tally.newest is None or event > tally.newest:
                            tally.newest = event
                        tally.recent[key] = event
                    record = {**record, LINE_FIELD: tally.lines}
                if tally.lines % _SPILL_LINES == 0:
                    if fh is not None:
                        fh.close()
                    tally.files.append(
                        spill.with_name(f"{spill.name}-{len(tally.files):05d}.jsonl")
                    )
                    fh = tally.files[-1].open("wb")
                assert fh is not None
                fh.write(orjson.dumps(record) + b"\n")
                tally.lines += 1
            if tally.newest is not None and len(tally.recent) > 50_000:
                boundary = tally.newest - _BUCKET  # keep only what the cursor will need
                tally.recent = {k: t for k, t in tally.recent.items() if t > boundary}
    finally:
        if fh is not None:
            fh.close()
    return tally


def _raw_change_key(record: dict[str, Any]) -> tuple[str, datetime | None]:
    f = Fields(record)
    try:
        event = f.get_as("eventTimestamp", as_datetime)
    except Invalid:
        event = None
    when = event.isoformat() if event is not None else ""
    rid, group, status = (f.get(k) for k in ("id", "rbacGroupName", "status"))
    return f"{when}|{rid}|{group}|{status}", event


def _key_time(key: str) -> datetime:
    parsed = as_datetime(key.split("|", 1)[0])
    return parsed if parsed is not None else datetime.min.replace(tzinfo=UTC)


def _bucket_start(when: datetime) -> datetime:
    day = when.replace(hour=0, minute=0, second=0, microsecond=0)
    return day + _BUCKET * ((when - day) // _BUCKET)


def _iso(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")

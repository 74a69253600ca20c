"""The v3 integration API of the Defender for IoT management console (C.3): paging and the
per-sensor watermarks of its timestamped deltas.

A delta answers ``{"u_count": N, "u_<items>": [...]}`` a page at a time (``page`` from 0,
``size``) for everything updated *after* the timestamp in its path. ``sensorId`` takes one id
(a comma list is documented only for ``/external/v1/devices``), so a console restricted to some
sensors reads one series per sensor, each resumed from its own watermark: the newest
``u_last_update`` delivered and the keys at that instant (in case the console counts the
boundary in). A sensor without a watermark of its own starts from the all-sensor one, which
covered it too.
May import ``contracts``, ``errors`` and the other ``sources`` modules.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from endpoint_forensics.contracts import Row
from endpoint_forensics.errors import WireFormatError
from endpoint_forensics.sources import ConsoleContext
from endpoint_forensics.sources.wire import Fields, Invalid, as_int, to_epoch_ms

__all__ = ["V3", "cursor_ms", "delta_rows", "pages", "sensor_ids", "sensor_list"]

V3 = "/external/v3/integration"


def sensor_ids(ctx: ConsoleContext) -> tuple[int, ...]:
    """The console sensor ids the config restricts to (each once); () means every sensor."""
    return tuple(dict.fromkeys(ctx.appliance.sensor_ids))


def sensor_list(ctx: ConsoleContext) -> dict[str, str] | None:
    """``sensorId`` as a comma list: documented for ``/external/v1/devices`` only."""
    ids = sensor_ids(ctx)
    return {"sensorId": ",".join(str(i) for i in ids)} if ids else None


def pages(
    ctx: ConsoleContext, path: str, items: str, params: Mapping[str, str]
) -> Iterator[list[Any]]:
    """Each page of a v3 list, from page 0 to the end (``u_count`` items, or an empty page)."""
    size = ctx.appliance.page_size
    page = 0
    while True:
        body = ctx.get(path, {**params, "page": str(page), "size": str(size)})
        if not isinstance(body, Mapping):
            raise WireFormatError(
                f"GET {path}: expected an object with u_count and {items}, got "
                f"{type(body).__name__}",
                method="GET",
                url=path,
            )
        f = Fields(body)
        found = f.get(items)
        found = found if isinstance(found, list) else []
        try:
            total = f.get_as("u_count", as_int) or 0
        except Invalid as exc:  # the page's items may be fine, but not where the list ends
            raise WireFormatError(
                f"GET {path}: {exc}: cannot tell where the list ends", method="GET", url=path
            ) from None
        yield found
        page += 1
        # u_count is the total over all pages; a short or empty page also ends the list.
        if not found or len(found) < size or page * size >= total:
            return


def cursor_ms(cursor: Mapping[str, Any] | None, key: str) -> int:
    return int((cursor or {}).get(key) or 0)


_Mark = tuple[int, list[str]]  # (newest u_last_update delivered, keys at that instant)


def _mark(cursor: Mapping[str, Any], sensor: int | None) -> _Mark:
    """Where the series of ``sensor`` (None: every sensor) resumes: its own watermark, else the
    all-sensor one, which covered this sensor too."""
    own = (cursor.get("by_sensor") or {}).get(str(sensor)) if sensor is not None else None
    source = own if isinstance(own, Mapping) else cursor
    return cursor_ms(source, "after_ms"), list(source.get("keys_at") or [])


def _marks_cursor(cursor: Mapping[str, Any], marks: Mapping[int | None, _Mark]) -> dict[str, Any]:
    after, keys_at = marks[None] if None in marks else _mark(cursor, None)
    by_sensor = dict(cursor.get("by_sensor") or {})
    for sensor, (mark_after, mark_keys) in marks.items():
        if sensor is not None:
            by_sensor[str(sensor)] = {"after_ms": mark_after, "keys_at": mark_keys}
    return {
        "after_ms": after,
        "keys_at": keys_at,
        **({"by_sensor": by_sensor} if by_sensor else {}),
    }


def delta_rows(
    ctx: ConsoleContext,
    name: str,
    items: str,
    params: Mapping[str, str],
    parse: Callable[[list[Any]], list[Row]],
) -> tuple[list[Row], dict[str, Any]]:
    """The rows (with ``DeviceId`` and ``LastUpdate``) of the v3 delta ``name`` not delivered
    yet, and the cursor after them: one series per configured sensor (``sensorId`` takes one
    id), each paged to its end; a device that two series list at the same update comes once."""
    cursor = ctx.cursor or {}
    marks: dict[int | None, _Mark] = {}
    fresh: list[Row] = []
    delivered: set[str] = set()
    for sensor in sensor_ids(ctx) or (None,):
        after, keys_at = _mark(cursor, sensor)
        query = {**params, **({"sensorId": str(sensor)} if sensor is not None else {})}
        rows: list[Row] = []
        for page in pages(ctx, f"{V3}/{name}/{after}", items, query):
            rows.extend(parse(page))
        new_rows, newest, at_newest = _newest(rows, after, keys_at, "DeviceId")
        marks[sensor] = (newest, at_newest)
        for row in new_rows:
            ident = f"{row['DeviceId']}@{row.get('LastUpdate')}"
            if ident not in delivered:
                delivered.add(ident)
                fresh.append(row)
    return fresh, _marks_cursor(cursor, marks)


def _newest(
    rows: list[Row], after_ms: int, keys_at: list[str], key: str
) -> tuple[list[Row], int, list[str]]:
    """Rows not delivered yet, and the new (newest LastUpdate, keys at that instant)."""
    fresh = []
    newest, at_newest = after_ms, set(keys_at)
    for row in rows:
        stamp = to_epoch_ms(row["LastUpdate"]) if row.get("LastUpdate") else None
        ident = f"{row[key]}@{stamp}"
        if stamp is not None and stamp <= after_ms and ident in keys_at:
            continue
        fresh.append(row)
        if stamp is not None and stamp > newest:
            newest, at_newest = stamp, {ident}
        elif stamp is not None and stamp == newest:
            at_newest.add(ident)
    return fresh, newest, sorted(at_newest)

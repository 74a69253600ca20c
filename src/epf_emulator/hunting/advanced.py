"""Advanced-hunting query execution shared by the MDE legacy and Graph endpoints.

Owns turning posted KQL into rows the way the service answers (defender-apis.md B.3):
translate with duckdb-kql (writes refused), run it on a cursor that sees only the requested
time window, type every column as the documented schema does (``world.hunting_schema``: String,
DateTime, Boolean, Int32, Int64, Double, Object), format datetimes as ISO 8601 with 7
fractional digits and ``Z``, keep lists and dynamic values as JSON, truncate silently past
each API's row limit, and refuse results over 124 MB. Also each API's time limit (MDE: 200 s
per request; Graph: about 3 minutes) and, on request, a simulated execution time (a delay per
query and per result row) so that a client's handling of slow and timed-out queries can be
tested in seconds: a query whose simulated time passes the limit answers as timed out once
the limit has passed. Every query run is counted per API and query text (``RequestStats``).
Rows are serialised by DuckDB itself (``to_json``), several times faster than in Python.

Imports only ``common.limits``, ``common.settings``, ``world.database`` and ``world.hunting_schema``
of the emulator: it shares no code with the collector.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any, Literal

from starlette.concurrency import run_in_threadpool

from epf_emulator.common.limits import RequestStats
from epf_emulator.common.settings import EmulatorSettings
from epf_emulator.world.database import HUNTING_SCHEMA, Store
from epf_emulator.world.hunting_schema import schema_type_of_duckdb

__all__ = [
    "HuntingApi",
    "HuntingLimits",
    "HuntingQueryError",
    "HuntingResult",
    "HuntingService",
    "HuntingTimedOut",
    "run_hunting",
]

HuntingApi = Literal["mde", "graph"]

#: Result size limit of the MDE API (defender-apis.md B.3); Graph is assumed the same.
MAX_RESULT_BYTES = 124 * 1024 * 1024
_TOO_LARGE = (
    "Query execution has exceeded the allowed result size. Optimize your query by limiting the "
    "number of results and try again"
)

# An ISO instant with 7 fractional digits: DuckDB has microseconds, the service 100 ns ticks.
_ISO = "strftime(CAST({c} AS TIMESTAMP), '%Y-%m-%dT%H:%M:%S.%f') || '0Z'"
# KQL timespan text, [-][d.]hh:mm:ss[.fffffff], from an INTERVAL.
_TIMESPAN = (
    "CASE WHEN {c} IS NULL THEN NULL ELSE "
    "(CASE WHEN epoch_us({c}) < 0 THEN '-' ELSE '' END)"
    " || (CASE WHEN abs(epoch_us({c})) >= 86400000000"
    " THEN CAST(abs(epoch_us({c})) // 86400000000 AS VARCHAR) || '.' ELSE '' END)"
    " || lpad(CAST(abs(epoch_us({c})) // 3600000000 % 24 AS VARCHAR), 2, '0')"
    " || ':' || lpad(CAST(abs(epoch_us({c})) // 60000000 % 60 AS VARCHAR), 2, '0')"
    " || ':' || lpad(CAST(abs(epoch_us({c})) // 1000000 % 60 AS VARCHAR), 2, '0')"
    " || (CASE WHEN abs(epoch_us({c})) % 1000000 <> 0"
    " THEN '.' || lpad(CAST(abs(epoch_us({c})) % 1000000 AS VARCHAR), 6, '0') || '0' ELSE '' END) END"
)


class HuntingQueryError(Exception):
    """The query cannot be translated or run; the message is what the 400 body says."""


class HuntingTimedOut(Exception):
    """The query ran (or would have run) past the API's time limit."""


@dataclass(frozen=True)
class HuntingLimits:
    """One hunting API's limits, and the simulated execution time of its queries."""

    row_limit: int
    time_limit_seconds: float
    delay_seconds: float = 0.0  # every query takes at least this long
    seconds_per_row: float = 0.0  # plus this per row of its full result (before the row cap)

    @classmethod
    def of(cls, settings: EmulatorSettings, api: HuntingApi) -> HuntingLimits:
        graph = api == "graph"
        return cls(
            row_limit=settings.graph_hunting_row_limit if graph else settings.hunting_row_limit,
            time_limit_seconds=(
                settings.graph_hunting_timeout_seconds
                if graph
                else settings.hunting_timeout_seconds
            ),
            delay_seconds=settings.hunting_delay_seconds,
            seconds_per_row=settings.hunting_seconds_per_row,
        )


@dataclass(frozen=True)
class HuntingResult:
    """Column names and types, one encoded JSON object per row, and whether rows were cut."""

    columns: list[tuple[str, str]]
    rows: list[bytes]
    truncated: bool = False
    total_rows: int | None = None  # the full result's rows, when counted


class HuntingService:
    """Runs hunting queries for both APIs, each with its own limits, and counts them."""

    def __init__(
        self, store: Store, *, stats: RequestStats, limits: Mapping[HuntingApi, HuntingLimits]
    ) -> None:
        self._store = store
        self._stats = stats
        self._limits = dict(limits)

    @classmethod
    def of(cls, store: Store, settings: EmulatorSettings, stats: RequestStats) -> HuntingService:
        limits: dict[HuntingApi, HuntingLimits] = {
            "mde": HuntingLimits.of(settings, "mde"),
            "graph": HuntingLimits.of(settings, "graph"),
        }
        return cls(store, stats=stats, limits=limits)

    async def run(
        self, api: HuntingApi, query: str, *, start: datetime, end: datetime, now: datetime
    ) -> HuntingResult:
        """Run ``query`` for ``api``; answers no sooner than its simulated execution time.

        Raises:
            HuntingQueryError: as ``run_hunting``.
            HuntingTimedOut: the query ran, or its simulated time would run, past the limit;
                raised once the limit has passed, as the service answers.
        """
        limits = self._limits[api]
        self._stats.hunting_query(api, query)  # counted on arrival: a client may give up
        began = time.monotonic()
        run = partial(
            run_hunting,
            self._store,
            query,
            start=start,
            end=end,
            now=now,
            row_limit=limits.row_limit,
            time_limit_seconds=limits.time_limit_seconds,
            count_rows=limits.seconds_per_row > 0,
        )
        try:
            result: HuntingResult = await run_in_threadpool(run)
        except HuntingTimedOut:
            self._stats.hunting_outcome(api, query, "timed_out")
            raise
        except HuntingQueryError:
            self._stats.hunting_outcome(api, query, "refused")
            raise
        simulated = limits.delay_seconds + limits.seconds_per_row * (result.total_rows or 0)
        if simulated > limits.time_limit_seconds:
            await _sleep_until(began + limits.time_limit_seconds)
            self._stats.hunting_outcome(api, query, "timed_out")
            raise HuntingTimedOut(f"simulated execution time {simulated:.1f} s")
        await _sleep_until(began + simulated)
        self._stats.hunting_outcome(api, query, "truncated" if result.truncated else "answered")
        return result


def run_hunting(
    store: Store,
    query: str,
    *,
    start: datetime,
    end: datetime,
    now: datetime,
    row_limit: int,
    time_limit_seconds: float = 200.0,
    count_rows: bool = False,
) -> HuntingResult:
    """Run KQL ``query`` over the tables as of ``now``, seeing rows in ``[start, end]`` only.

    Blocking: call it from a worker thread, never on the event loop. With ``count_rows`` the
    full result's row count is computed too (it costs a second run of the query).

    Raises:
        HuntingQueryError: empty query, a construct duckdb-kql refuses, a syntax, schema or
            runtime error, or a result over 124 MB.
        HuntingTimedOut: the query ran past ``time_limit_seconds``.
    """
    import duckdb

    sql, params = _translate(query, now)
    with store.window(start, end) as cursor:
        timer = threading.Timer(time_limit_seconds, cursor.interrupt)
        timer.daemon = True
        timer.start()
        try:
            relation = cursor.sql(sql, params=params) if params else cursor.sql(sql)
            if relation is None:
                raise HuntingQueryError("The query does not return a table.")
            return _fetch(relation, row_limit=row_limit, count_rows=count_rows)
        except duckdb.InterruptException as exc:
            raise HuntingTimedOut(f"ran past {time_limit_seconds:g} seconds") from exc
        except duckdb.Error as exc:
            raise HuntingQueryError(_first_line(exc)) from exc
        finally:
            timer.cancel()


def _translate(query: str, now: datetime) -> tuple[str, dict[str, Any]]:
    """(DuckDB SQL, its parameters) of KQL ``query``, with ``now()`` as ``now``; writes refused.

    Raises:
        HuntingQueryError: empty query, or one duckdb-kql refuses or cannot translate.
    """
    import duckdb_kql

    if not query.strip():
        raise HuntingQueryError("The query is empty.")
    try:
        sql = duckdb_kql.to_sql(
            query,
            schema=HUNTING_SCHEMA,
            allow_write=False,
            query_now=now.astimezone(UTC).replace(tzinfo=None),
        )
    except duckdb_kql.KqlError as exc:
        raise HuntingQueryError(_first_line(exc)) from exc
    except Exception as exc:  # a translator bug must still be a clean 400, not a 500
        raise HuntingQueryError(f"The query could not be translated: {_first_line(exc)}") from exc
    return str(sql), dict(sql.parameters or {})


def _fetch(relation: Any, *, row_limit: int, count_rows: bool) -> HuntingResult:
    """The first ``row_limit`` rows of ``relation`` as JSON, its typed columns and, with
    ``count_rows``, its full row count.

    Raises:
        HuntingQueryError: the rows add up to more than 124 MB.
    """
    names, kinds = list(relation.columns), [str(t) for t in relation.types]
    columns = [(name, schema_type_of_duckdb(kind)) for name, kind in zip(names, kinds, strict=True)]
    # One row past the limit tells whether the cap cut the result.
    encoded = relation.limit(row_limit + 1).project(_row_json(names, kinds))
    rows: list[bytes] = []
    size = 0
    for (text,) in encoded.fetchall():
        data = text.encode()
        size += len(data) + 1
        if size > MAX_RESULT_BYTES:
            raise HuntingQueryError(_TOO_LARGE)
        rows.append(data)
    truncated = len(rows) > row_limit
    del rows[row_limit:]
    total = None
    if count_rows:
        counted = relation.aggregate("count(*)").fetchall()
        total = int(counted[0][0]) if counted else 0
    return HuntingResult(columns=columns, rows=rows, truncated=truncated, total_rows=total)


async def _sleep_until(deadline: float) -> None:
    remaining = deadline - time.monotonic()
    if remaining > 0:
        await asyncio.sleep(remaining)


def _row_json(names: list[str], types: list[str]) -> str:
    """A projection that renders each row as one JSON object, values in the service's format."""
    items = []
    for name, kind in zip(names, types, strict=True):
        column = '"' + name.replace('"', '""') + '"'
        items.append(f"'{name.replace(chr(39), chr(39) * 2)}': {_render(column, kind.upper())}")
    return "to_json({" + ", ".join(items) + "})"


def _render(column: str, kind: str) -> str:
    if kind.startswith("TIMESTAMP") or kind == "DATE":
        return _ISO.format(c=column)
    if kind == "INTERVAL":
        return _TIMESPAN.format(c=column)
    if kind in ("DOUBLE", "FLOAT", "REAL") or kind.startswith("DECIMAL"):
        # JSON has no NaN or infinity; the service would not send them as numbers either.
        number = f"CAST({column} AS DOUBLE)"
        return f"CASE WHEN isfinite({number}) THEN {number} ELSE NULL END"
    if kind == "BLOB":
        return f"base64({column})"
    if kind in ("TIME", "UUID") or kind.startswith(("TIME ", "BIT", "ENUM")):
        return f"CAST({column} AS VARCHAR)"
    return column


def _first_line(exc: BaseException) -> str:
    """The useful part of an error (DuckDB appends 'Did you mean ...' lines about its catalog)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__

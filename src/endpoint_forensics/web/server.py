"""``epf serve``: the dashboard, read-only, over a local workspace.

Owns the web application (Starlette): the access token (a ``?token=`` in the URL ``epf serve``
prints, then an HttpOnly cookie), GET only, a strict Content-Security-Policy and no caching on
every answer, and the JSON the page reads: the workbook's sections (``web.panels``), a device's
posture at a time (``analytics.forensics``) with its triage items, and KQL as ``epf query`` runs
it, within a row limit and a time limit. Every answer comes from a copy of the last committed
state (``web.snapshot``), so a sync can write meanwhile. The page itself is
``assets/app.html`` with ``app.js``, which renders with ``workbook.js`` like the reports.
"""

from __future__ import annotations

import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from endpoint_forensics.errors import ConfigError, EpfError
from endpoint_forensics.web.snapshot import WorkspaceBusy
from endpoint_forensics.workspace import store
from endpoint_forensics.workspace.store import QueryError

__all__ = [
    "ASSETS",
    "COOKIE",
    "RunningServer",
    "ServeLimits",
    "create_app",
    "is_loopback",
    "start_server",
]

COOKIE = "epf_token"
#: The files the page loads, and their types: nothing else is served from the package.
ASSETS = {
    "app.js": "text/javascript",
    "workbook.js": "text/javascript",
    "report.css": "text/css",
    "app.css": "text/css",
    "vendor/chart.umd.min.js": "text/javascript",
}
_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
    " connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
_HEADERS = {
    "Content-Security-Policy": _POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


@dataclass(frozen=True)
class ServeLimits:
    query_rows: int = 1000  # rows a query page shows
    query_seconds: float = 30.0  # then the query is interrupted


class _AnswerCache:
    """Answers already computed, by (workspace copy, question): a copy never changes, so they
    hold until the snapshot moves on. One computation per question at a time: a second asker
    waits for the first's answer instead of computing it again."""

    def __init__(self, size: int = 64) -> None:
        self._size = size
        self._done: OrderedDict[Hashable, bytes] = OrderedDict()
        self._pending: dict[Hashable, threading.Lock] = {}
        self._lock = threading.Lock()

    def get(self, key: Hashable, compute: Callable[[], bytes]) -> bytes:
        with self._lock:
            if key in self._done:
                self._done.move_to_end(key)
                return self._done[key]
            pending = self._pending.setdefault(key, threading.Lock())
        with pending:
            with self._lock:
                if key in self._done:
                    return self._done[key]
            value = compute()
            with self._lock:
                self._done[key] = value
                self._pending.pop(key, None)
                while len(self._done) > self._size:
                    self._done.popitem(last=False)
            return value


def _asset(name: str) -> bytes:
    return resources.files("endpoint_forensics.web").joinpath("assets", name).read_bytes()


def _json(value: Any, status: int = 200) -> Response:
    return Response(
        orjson.dumps(value, default=str), status_code=status, media_type="application/json"
    )


def _error(message: str, status: int = 400) -> Response:
    return _json({"error": message}, status)


class _Gate:
    """Outermost: GET and HEAD only, the token, and the security headers on every answer."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self._app = app
        self._token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return

        async def secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(k.lower().encode(), v.encode()) for k, v in _HEADERS.items()]
                message = {**message, "headers": headers}
            await send(message)

        request = Request(scope)
        if request.method not in ("GET", "HEAD"):
            await PlainTextResponse("read-only: GET only", 405)(scope, receive, secured)
            return
        if self._token is not None:
            given = request.query_params.get("token")
            if given is not None and secrets.compare_digest(given.encode(), self._token.encode()):
                # Trade the token in the URL for a cookie, and take it out of the address bar.
                rest = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
                target = request.url.path + (f"?{urlencode(rest)}" if rest else "")
                response = RedirectResponse(target, 303)
                response.set_cookie(COOKIE, self._token, httponly=True, samesite="strict")
                await response(scope, receive, secured)
                return
            cookie = request.cookies.get(COOKIE, "")
            if not secrets.compare_digest(cookie.encode(), self._token.encode()):
                refused = PlainTextResponse(
                    "401: open the address `epf serve` printed, with its token", 401
                )
                await refused(scope, receive, secured)
                return
        await self._app(scope, receive, secured)


def _interrupting(con: Any, seconds: float) -> threading.Timer:
    timer = threading.Timer(seconds, con.interrupt)
    timer.daemon = True
    timer.start()
    return timer


def create_app(
    snapshot: Any,
    *,
    token: str | None,
    limits: ServeLimits = ServeLimits(),
    prewarm: bool = False,
) -> ASGIApp:
    """The dashboard over ``snapshot`` (a ``web.snapshot.WorkspaceSnapshot``); ``token`` None
    serves without one (loopback only: the command refuses it elsewhere). ``prewarm`` starts
    answering the first view at once, while the user opens the page."""
    from endpoint_forensics.analytics.forensics import device_posture
    from endpoint_forensics.analytics.functions import registry
    from endpoint_forensics.analytics.triage_report import device_triage_items
    from endpoint_forensics.web.panels import answer_workbook, sections

    def guarded(handler: Callable[[Request], Response]) -> Callable[[Request], Response]:
        def run(request: Request) -> Response:
            try:
                return handler(request)
            except WorkspaceBusy as exc:
                return _error(str(exc), 503)
            except EpfError as exc:  # an expected failure: said, not a traceback
                return _error(str(exc))

        return run

    def page(request: Request) -> Response:
        return Response(_asset("app.html"), media_type="text/html; charset=utf-8")

    def asset(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in ASSETS:
            return PlainTextResponse("not found", 404)
        return Response(_asset(name), media_type=ASSETS[name])

    def views(request: Request) -> Response:
        return _json({"sections": sections(), "workspace": snapshot.source.name})

    cache = _AnswerCache()

    def answer(section: str | None, values: dict[str, str], at: datetime | None) -> bytes:
        db = snapshot.current()
        key = (str(db), section, at, tuple(sorted(values.items())))
        return cache.get(key, lambda: answer_workbook(db, values, section=section, at=at).to_json())

    def workbook(request: Request) -> Response:
        values = {
            k: request.query_params[k]
            for k in ("Tenant", "Group", "OS")
            if k in request.query_params
        }
        body = answer(request.query_params.get("section"), values, _time_param(request))
        return Response(body, media_type="application/json")

    if prewarm:

        def warm() -> None:
            try:
                answer(sections()[0], {}, None)  # what the page asks for first
            except EpfError:
                pass  # said to the user when the page asks

        threading.Thread(target=warm, name="epf-serve-prewarm", daemon=True).start()

    def device(request: Request) -> Response:
        name = request.query_params.get("device", "").strip()
        if not name:
            return _error("device: give a device id or name")
        db = snapshot.current()
        at = _time_param(request) or _newest_collection(db)  # default: the workspace's "now"
        answer = device_posture(db, name, at, window=timedelta(days=7))
        answer["triage"] = device_triage_items(db, str(answer["device"]["DeviceId"]), at)
        return _json(answer)

    def query(request: Request) -> Response:
        text = request.query_params.get("q", "").strip()
        if not text:
            return _error("q: give a KQL query")
        from endpoint_forensics.analytics.kql_check import sentinel_refusal

        refused = sentinel_refusal(text)
        if refused:
            return _error(refused)
        con = store.connect(snapshot.current(), read_only=True)
        timer = _interrupting(con, limits.query_seconds)
        try:
            found = store.query_on(con, text, functions=registry(), limit=limits.query_rows + 1)
        except QueryError as exc:
            message = str(exc)
            if "INTERRUPT" in message.upper():
                message = f"the query ran past {limits.query_seconds:g} s and was stopped"
            return _error(message)
        finally:
            timer.cancel()
            con.close()
        rows = found.records()
        return _json(
            {
                "columns": found.columns,
                "rows": [list(r.values()) for r in rows[: limits.query_rows]],
                "truncated": len(rows) > limits.query_rows,
            }
        )

    routes = [
        Route("/", page),
        Route("/assets/{name:path}", asset),
        Route("/api/views", guarded(views)),
        Route("/api/workbook", guarded(workbook)),
        Route("/api/device", guarded(device)),
        Route("/api/query", guarded(query)),
    ]
    return _Gate(Starlette(routes=routes), token)


def _time_param(request: Request) -> datetime | None:
    """The request's ``at`` (ISO 8601, UTC if no zone), None if not given.

    Raises:
        ConfigError: ``at`` is not an ISO 8601 time.
    """
    text = request.query_params.get("at", "").strip()
    if not text:
        return None
    try:
        at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(
            f"at: {text!r} is not an ISO 8601 time (e.g. 2026-11-03T14:00:00Z)"
        ) from None
    try:
        # In UTC, with room for the windows the answers look back over (a week, a quarter).
        at = at.astimezone(UTC) if at.tzinfo else at.replace(tzinfo=UTC)
        if not _EARLIEST <= at <= _LATEST:
            raise OverflowError
    except OverflowError:
        raise ConfigError(
            f"at: {text!r} is out of range: give a time from the year 2 to 9998"
        ) from None
    return at


_EARLIEST = datetime(2, 1, 1, tzinfo=UTC)
_LATEST = datetime(9998, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)


def _newest_collection(db: Path) -> datetime:
    """The newest device snapshot of the workspace (now, if it has none)."""
    rows = store.run_query(db, "SELECT max(SnapshotTime) FROM EPF_Devices_CL", sql=True).rows
    newest = rows[0][0] if rows else None
    return newest if isinstance(newest, datetime) else datetime.now(UTC)


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (127.0.0.0/8, ::1, localhost)."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass
class RunningServer:
    """A dashboard served from a daemon thread; ``url`` carries the token, as printed."""

    url: str
    base_url: str
    server: Any
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def start_server(app: ASGIApp, *, host: str, port: int, token: str | None) -> RunningServer:
    """Bind ``host:port`` (0: any free port), serve ``app`` over HTTP in a daemon thread, and
    return once it accepts connections.

    Raises:
        ConfigError: the address cannot be bound (in use, not this machine's).
    """
    import socket
    import time

    import uvicorn

    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot serve on {host}:{port}: {exc.strerror or exc}") from exc
    bound = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="epf-serve", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    name = f"[{host.strip('[]')}]" if family == socket.AF_INET6 else host
    base = f"http://{name}:{bound}"
    url = f"{base}/" + (f"?token={token}" if token else "")
    return RunningServer(url=url, base_url=base, server=server, thread=thread)

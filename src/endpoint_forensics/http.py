"""The one HTTP client: TLS, bearer tokens, rate budgets, retries, OData paging.

Owns every request the collector makes to a remote API, and the conversion of httpx errors
into ours. Behaviour (STYLE.md 14): follows ``@odata.nextLink`` verbatim without re-adding
parameters; honours ``Retry-After`` (seconds or an HTTP date); retries 429, 5xx, timeouts and
connection errors with capped, jittered backoff; re-acquires the token once after a 401;
logs sanitized URLs only, at DEBUG. May import ``auth``, ``ratelimit`` and ``errors``.
"""

from __future__ import annotations

import email.utils
import logging
import platform
import random
import ssl
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import orjson

from endpoint_forensics import __version__
from endpoint_forensics.auth import TokenProvider
from endpoint_forensics.errors import (
    AuthError,
    CertificateUntrusted,
    HttpStatusError,
    LinkExpired,
    RequestTimedOut,
    TransientError,
)
from endpoint_forensics.ratelimit import RateBudget
from endpoint_forensics.tls import PIN_MISMATCH

__all__ = [
    "BEARER",
    "RAW_TOKEN",
    "USER_AGENT",
    "ApiClient",
    "AuthStyle",
    "ODataPage",
    "retry_after_seconds",
    "sanitize_url",
]

log = logging.getLogger(__name__)

USER_AGENT = f"epf/{__version__} python/{platform.python_version()}"
_SECRET_PARAMS = {"sig", "signature", "token", "access_token", "client_secret", "code", "key"}
_MAX_THROTTLED = 30  # 429s waited out per request before giving up
_BACKOFF_BASE_SECONDS = 1.0
_BACKOFF_CAP_SECONDS = 60.0
_RETRY_AFTER_CAP_SECONDS = 3600.0


@dataclass(frozen=True)
class AuthStyle:
    """How a remote API takes its credential, and what to tell the user when it is refused."""

    prefix: str  # put before the token in the Authorization header
    renew_on_401: bool  # a 401 may mean an expired token: get a fresh one and retry once
    refused: str
    forbidden: str
    untrusted: str


BEARER = AuthStyle(
    prefix="Bearer ",
    renew_on_401=True,
    refused="the API refused a fresh token",
    # The MDE API answers a token for another resource with 403 too (a wrong mde_scope).
    forbidden="the app lacks a permission for this API (grant it and admin consent in Entra "
    "ID), or the token is for another API (check mde_scope and graph_scope; `epf doctor` tells)",
    untrusted="set ca_bundle in the tenant config to the CA that issued it",
)
# Defender for IoT appliances: the access token itself, no scheme (C.1), and it never expires.
RAW_TOKEN = AuthStyle(
    prefix="",
    renew_on_401=False,
    refused="the appliance refused the access token; create a new one under System Settings "
    "> Integrations > Access Tokens and put it in the config",
    forbidden="the appliance refused the access token for this API",
    untrusted="set ca_bundle to its certificate (or issuer), or pin it with "
    "certificate_fingerprint",
)


@dataclass(frozen=True)
class ODataPage:
    value: list[Any]
    next_link: str | None


class ApiClient:
    """Authenticated JSON requests to one tenant's APIs, within their rate budgets."""

    def __init__(
        self,
        tokens: TokenProvider,
        *,
        verify: ssl.SSLContext | bool = True,
        timeout_seconds: float = 120.0,
        max_retries: int = 6,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        auth_style: AuthStyle = BEARER,
    ) -> None:
        self._tokens = tokens
        self._style = auth_style
        self._max_retries = max_retries
        self._sleep = sleep
        self._http = httpx.Client(
            verify=verify,
            timeout=httpx.Timeout(timeout_seconds, connect=min(30.0, timeout_seconds)),
            headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
            transport=transport,
            follow_redirects=False,
        )
        # Per budget name: requests, throttled, retries. Read by the pipeline for EPF_Runs_CL.
        self.stats: dict[str, Counter[str]] = {}

    def close(self) -> None:
        self._http.close()
        close_tokens = getattr(self._tokens, "close", None)
        if close_tokens is not None:
            close_tokens()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request_json(
        self,
        method: str,
        url: str,
        *,
        scope: str,
        budget: RateBudget,
        params: Mapping[str, str] | None = None,
        json_body: Any = None,
        timeout_seconds: float | None = None,
        retry_timeouts: bool = True,
    ) -> Any:
        """Send one request and return its decoded JSON body, retrying what may succeed later.

        Args:
            timeout_seconds: how long to wait for this request's answer, instead of the
                client's timeout (a query the service may run for minutes).
            retry_timeouts: False: a read timeout or a 504 raises ``RequestTimedOut`` at once
                instead of sending the same request again (429 is still waited out).

        Raises:
            AuthError: 401 (after a fresh token, for bearer tokens), or 403.
            CertificateUntrusted: the server's certificate is not trusted, or not the pinned one.
            HttpStatusError: any other 4xx (carries status, OData code, request id).
            RequestTimedOut: with ``retry_timeouts=False``, a read timeout or a 504.
            TransientError: retries exhausted on 429, 5xx, timeouts or network errors.
        """
        stats = self.stats.setdefault(budget.limit.name, Counter())
        content = orjson.dumps(json_body) if json_body is not None else None
        timeout = self._http.timeout
        if timeout_seconds is not None:
            timeout = httpx.Timeout(timeout_seconds, connect=min(30.0, timeout_seconds))
        attempt = 0
        throttled = 0
        reauthenticated = False
        while True:
            budget.acquire()
            headers = {"Authorization": self._style.prefix + self._tokens.get_token(scope)}
            if content is not None:
                headers["Content-Type"] = "application/json; charset=utf-8"
            stats["requests"] += 1
            safe_url = sanitize_url(url if not params else f"{url}?{urlencode(params)}")
            try:
                response = self._http.request(
                    method, url, params=params, content=content, headers=headers, timeout=timeout
                )
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                problem = f"{method} {safe_url}: {type(exc).__name__}: {_scrub(str(exc))}"
                if isinstance(exc, httpx.ReadTimeout) and not retry_timeouts:
                    stats["timed_out"] += 1
                    raise RequestTimedOut(f"{problem}: no answer in time") from exc
                # Trust is configuration: retrying cannot help, so neither is retried.
                if isinstance(exc, httpx.ConnectError) and PIN_MISMATCH in str(exc):
                    presented = str(exc).rsplit(" ", 1)[-1]
                    raise CertificateUntrusted(
                        f"{method} {safe_url}: the server's TLS certificate is not the pinned "
                        f"one (certificate_fingerprint); it presented SHA-256 {presented}. "
                        "Nothing was sent. If the appliance's certificate was renewed, pin the "
                        "new fingerprint"
                    ) from exc
                if isinstance(exc, httpx.ConnectError) and "CERTIFICATE_VERIFY_FAILED" in str(exc):
                    raise CertificateUntrusted(
                        f"{method} {safe_url}: the server's TLS certificate is not trusted; "
                        f"{self._style.untrusted}"
                    ) from exc
                attempt = self._backoff_or_raise(attempt, problem, stats, exc)
                continue
            log.debug("%s %s -> %s", method, safe_url, response.status_code)
            status = response.status_code
            if status == 204:
                return None
            if 200 <= status < 300:
                try:
                    return orjson.loads(response.content)
                except orjson.JSONDecodeError as exc:
                    # An empty or cut-short body (the export APIs answer an empty 200 now and
                    # then, B.5): the same request usually succeeds.
                    what = "an empty body" if not response.content else "invalid JSON"
                    problem = f"{method} {safe_url}: {status} with {what}"
                    attempt = self._backoff_or_raise(attempt, problem, stats, exc)
                    continue
            code, message = _odata_error(response)
            request_id = response.headers.get("request-id") or response.headers.get(
                "x-ms-request-id"
            )
            where = f"{method} {safe_url} -> {status}"
            detail = f"{code}: {message}" if code else message
            if status == 401 and self._style.renew_on_401 and not reauthenticated:
                reauthenticated = True
                self._tokens.invalidate(scope)
                stats["reauthenticated"] += 1
                continue
            if status == 401:
                raise AuthError(f"{where}: {self._style.refused} ({detail})")
            if status == 403:
                raise AuthError(f"{where}: {self._style.forbidden} ({detail})")
            if status == 429:
                throttled += 1
                stats["throttled"] += 1
                if throttled > _MAX_THROTTLED:
                    raise TransientError(f"{where}: still throttled after {throttled} waits")
                wait = retry_after_seconds(response.headers.get("Retry-After"))
                if wait is None:
                    wait = _backoff_seconds(throttled)
                log.debug("throttled, waiting %.1f s: %s", wait, where)
                self._sleep(wait)
                continue
            if status == 504 and not retry_timeouts:
                stats["timed_out"] += 1
                raise RequestTimedOut(f"{where}: {detail}", status=status)
            if status >= 500:
                attempt = self._backoff_or_raise(attempt, f"{where}: {detail}", stats, None)
                continue
            raise HttpStatusError(
                f"{where}: {detail}",
                method=method,
                url=safe_url,
                status=status,
                code=code,
                request_id=request_id,
            )

    def get_odata_page(
        self,
        url: str,
        *,
        scope: str,
        budget: RateBudget,
        params: Mapping[str, str] | None = None,
    ) -> ODataPage:
        """One OData page: its ``value`` array ([] when absent) and its ``@odata.nextLink``.

        Raises:
            HttpStatusError: the answer is not an OData object, or any ``request_json`` 4xx.
        """
        body = self.request_json("GET", url, scope=scope, budget=budget, params=params)
        if not isinstance(body, dict):
            where = sanitize_url(url if not params else f"{url}?{urlencode(params, safe='$')}")
            raise HttpStatusError(
                f"GET {where}: expected an OData object, got {type(body).__name__}",
                method="GET",
                url=where,
                status=200,
            )
        value = body.get("value")
        link = body.get("@odata.nextLink")
        return ODataPage(
            value if isinstance(value, list) else [],
            link if isinstance(link, str) and link else None,
        )

    def iter_odata_pages(
        self,
        url: str,
        *,
        scope: str,
        budget: RateBudget,
        params: Mapping[str, str] | None = None,
    ) -> Iterator[ODataPage]:
        """Yield each page's ``value`` array and next link, following ``@odata.nextLink`` to the end."""
        next_url: str | None = url
        next_params = params
        while next_url is not None:
            page = self.get_odata_page(next_url, scope=scope, budget=budget, params=next_params)
            # The link is opaque and complete ($skip or $skiptoken): never re-add parameters.
            next_url, next_params = page.next_link, None
            yield page

    def download(self, url: str, dest: Path, *, chunk_bytes: int = 1 << 20) -> int:
        """Stream a signed (SAS) URL to ``dest`` with no Authorization header; return its size.

        The SAS query is the credential (B.5.3), so a bearer token must not go along.

        Raises:
            LinkExpired: 403: the signature expired or is not valid; ask for fresh links.
            HttpStatusError: any other 4xx.
            TransientError: retries exhausted on 5xx, timeouts or network errors.
        """
        stats = self.stats.setdefault("downloads", Counter())
        safe_url = sanitize_url(url)
        attempt = 0
        while True:
            stats["requests"] += 1
            try:
                with self._http.stream("GET", url, headers={"Accept": "*/*"}) as response:
                    status = response.status_code
                    if status == 200:
                        size = 0
                        with dest.open("wb") as fh:
                            for chunk in response.iter_bytes(chunk_bytes):
                                fh.write(chunk)
                                size += len(chunk)
                        stats["bytes"] += size
                        return size
                    response.read()
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                problem = f"GET {safe_url}: {type(exc).__name__}: {_scrub(str(exc))}"
                attempt = self._backoff_or_raise(attempt, problem, stats, exc)
                continue
            where = f"GET {safe_url} -> {status}"
            if status == 403:
                raise LinkExpired(f"{where}: the signed link expired or was refused")
            if status >= 500 or status == 429:
                wait = retry_after_seconds(response.headers.get("Retry-After"))
                attempt = self._backoff_or_raise(attempt, where, stats, None, wait=wait)
                continue
            raise HttpStatusError(
                f"{where}: {response.text[:200].strip()}",
                method="GET",
                url=safe_url,
                status=status,
            )

    def _backoff_or_raise(
        self,
        attempt: int,
        problem: str,
        stats: Counter[str],
        exc: BaseException | None,
        *,
        wait: float | None = None,
    ) -> int:
        attempt += 1
        if attempt > self._max_retries:
            raise TransientError(f"{problem} (gave up after {attempt} attempts)") from exc
        stats["retries"] += 1
        if wait is None:
            wait = _backoff_seconds(attempt)
        log.debug("retry %d in %.1f s: %s", attempt, wait, problem)
        self._sleep(wait)
        return attempt


def retry_after_seconds(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    return min(max(seconds, 0.0), _RETRY_AFTER_CAP_SECONDS)


def sanitize_url(url: str) -> str:
    """The URL with secret-bearing query values (SAS signatures, tokens) replaced."""
    parts = urlsplit(url)
    if not parts.query:
        return url
    query = [
        (k, "REDACTED" if k.lower() in _SECRET_PARAMS else v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
    ]
    return urlunsplit(parts._replace(query=urlencode(query, safe="$,'():/")))


def _backoff_seconds(attempt: int) -> float:
    ceiling: float = min(_BACKOFF_CAP_SECONDS, _BACKOFF_BASE_SECONDS * 2 ** (attempt - 1))
    return ceiling * random.uniform(0.5, 1.0)  # jitter: concurrent clients do not retry in step


def _odata_error(response: httpx.Response) -> tuple[str | None, str]:
    """The ``error.code`` and ``error.message`` of an MDE/Graph error body, or the status text."""
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        text = response.text.strip().splitlines()[0][:200] if response.text.strip() else ""
        return None, text or response.reason_phrase
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return (
            str(error.get("code")) if error.get("code") else None,
            str(error.get("message") or response.reason_phrase)[:500],
        )
    return None, response.reason_phrase


def _scrub(text: str) -> str:
    """Drop anything that looks like a URL query from an exception text."""
    return " ".join(w.split("?")[0] if "://" in w else w for w in text.split())[:300]

"""The one HTTP client: TLS, bearer tokens, rate budgets, OData paging, under the retry policy.

Owns every request the collector makes to a remote API; what a failure says (the errors,
secrets kept out) is ``http.failures``. Behaviour (STYLE.md 14): follows ``@odata.nextLink``
verbatim without re-adding parameters; retries what ``retry.classify_status`` and
``retry.classify_error`` say, as the ``RetryPolicy`` says (``Retry-After``, capped jittered
backoff); re-acquires the token once after a 401; logs sanitized URLs only, at DEBUG. May
import ``identity.credentials``, ``http.failures``, ``http.odata_lines``, ``http.ratelimit``,
``http.retry`` and ``errors``.
"""

from __future__ import annotations

import copy
import logging
import platform
import ssl
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import ijson
import orjson

from endpoint_forensics import __version__
from endpoint_forensics.errors import HttpStatusError, LinkExpired, WireFormatError
from endpoint_forensics.http.failures import (
    BEARER,
    RAW_TOKEN,
    AuthStyle,
    no_answer,
    odata_error,
    refused,
    sanitize_url,
)
from endpoint_forensics.http.odata_lines import NotAnObject, SavedPage, page_to_lines
from endpoint_forensics.http.ratelimit import RateBudget
from endpoint_forensics.http.retry import (
    RETRIED,
    Attempts,
    RetryPolicy,
    Verdict,
    classify_status,
    retry_after_seconds,
)
from endpoint_forensics.identity.credentials import TokenProvider

__all__ = [
    "BEARER",
    "RAW_TOKEN",
    "USER_AGENT",
    "ApiClient",
    "AuthStyle",
    "ODataPage",
    "sanitize_url",
]

log = logging.getLogger(__name__)

USER_AGENT = f"epf/{__version__} python/{platform.python_version()}"
_JSON_CONTENT = {"Content-Type": "application/json; charset=utf-8"}


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
        self._retry = RetryPolicy(max_retries=max_retries)
        self._sleep = sleep
        self._http = httpx.Client(
            verify=verify,
            timeout=_timeout(timeout_seconds),
            headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
            transport=transport,
            follow_redirects=False,
        )
        # Per budget: requests, throttled, retries, timed_out... (the pipeline reads them).
        self.stats: dict[str, Counter[str]] = {}
        self._owns_connections = True

    def sibling(self) -> ApiClient:
        """A client on this one's connections and tokens that counts its own requests in its
        own ``stats``: for work beside this client's in another thread (httpx's client and
        the token providers are thread-safe). Closing it closes nothing they share."""
        twin = copy.copy(self)
        twin.stats, twin._owns_connections = {}, False
        return twin

    def close(self) -> None:
        if not self._owns_connections:
            return
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
            timeout_seconds: this request's wait for an answer (a query may run for minutes).
            retry_timeouts: False: a read timeout or a 504 raises ``RequestTimedOut`` at once
                instead of sending the same request again (429 is still waited out).

        Raises:
            AuthError: 401 (after a fresh token, for bearer tokens), or 403.
            CertificateUntrusted: the server's certificate is not trusted, or not the pinned one.
            HttpStatusError: any other status not retried (status, OData code, request id).
            RequestTimedOut: with ``retry_timeouts=False``, a read timeout or a 504.
            TransientError: retries spent (429, 5xx, timeouts, network, empty or cut 2xx bodies).
        """
        retries = self._attempts(budget.limit.name, retry_timeouts=retry_timeouts)
        content = orjson.dumps(json_body) if json_body is not None else None
        timeout = self._http.timeout if timeout_seconds is None else _timeout(timeout_seconds)
        headers = _JSON_CONTENT if content is not None else None
        request = self._http.build_request(
            method, url, params=params, content=content, headers=headers, timeout=timeout
        )
        safe_url = sanitize_url(url if not params else f"{url}?{urlencode(params)}")
        renewed = False
        while True:
            try:
                response = self._send(request, scope=scope, budget=budget)
            except httpx.TransportError as exc:
                retries.wait(*no_answer(self._style, exc, method, safe_url), cause=exc)
                continue
            status = response.status_code
            verdict = classify_status(status)
            if verdict is Verdict.ACCEPT:
                try:
                    return None if status == 204 else orjson.loads(response.content)
                except orjson.JSONDecodeError as exc:
                    # An empty or cut-short body (the export APIs answer an empty 200 now and
                    # then, B.5): the same request usually succeeds.
                    what = "an empty body" if not response.content else "invalid JSON"
                    problem = f"{method} {safe_url}: {status} with {what}"
                    retries.wait(Verdict.RETRY, problem, cause=exc)
                    continue
            renewed = self._not_accepted(
                response, verdict, (method, safe_url), scope, budget, retries, renewed
            )

    def _not_accepted(
        self,
        response: httpx.Response,
        verdict: Verdict,
        sent: tuple[str, str],
        scope: str,
        budget: RateBudget,
        retries: Attempts,
        renewed: bool,
    ) -> bool:
        """An answer not accepted: renew the token once on a 401 (True: send again now), wait
        out what may succeed later (False), or raise what will not."""
        if verdict is Verdict.REAUTHENTICATE and self._style.renew_on_401 and not renewed:
            self._tokens.invalidate(scope)
            self.stats[budget.limit.name]["reauthenticated"] += 1
            return True
        method, safe_url = sent
        if verdict not in RETRIED:
            raise refused(self._style, response, method, safe_url)
        status = response.status_code
        retry_after = retry_after_seconds(response.headers.get("Retry-After"))
        problem = f"{method} {safe_url} -> {status}: {odata_error(response)[1]}"
        retries.wait(verdict, problem, retry_after=retry_after, status=status)
        return renewed

    def save_odata_page(
        self,
        url: str,
        lines: Path,
        *,
        scope: str,
        budget: RateBudget,
        params: Mapping[str, str] | None = None,
    ) -> SavedPage:
        """One OData page's records written to ``lines`` as JSON lines, with its count and
        ``@odata.nextLink``: the body goes to disk as it arrives and its records are read from
        there one at a time (``odata_lines``), so a page takes a few records' memory whatever
        its size. Retried as ``request_json`` retries, an empty or cut-short body included.

        Raises:
            WireFormatError: the answer is not an OData object.
            AuthError, HttpStatusError, TransientError: as ``request_json``.
        """
        retries = self._attempts(budget.limit.name)
        request = self._http.build_request("GET", url, params=params)
        safe_url = sanitize_url(url if not params else f"{url}?{urlencode(params, safe='$')}")
        body = lines.with_name(lines.name + ".body")
        renewed = False
        try:
            while True:
                try:
                    response = self._send(request, scope=scope, budget=budget, stream=True)
                    try:
                        verdict = classify_status(response.status_code)
                        if verdict is Verdict.ACCEPT:
                            _save(response, body, 1 << 20)
                        else:
                            response.read()
                    finally:
                        response.close()
                except httpx.TransportError as exc:
                    retries.wait(*no_answer(self._style, exc, "GET", safe_url), cause=exc)
                    continue
                if verdict is not Verdict.ACCEPT:
                    renewed = self._not_accepted(
                        response, verdict, ("GET", safe_url), scope, budget, retries, renewed
                    )
                    continue
                try:
                    link, written = page_to_lines(body, lines)
                    return SavedPage(lines, written, link)
                except NotAnObject as exc:
                    raise WireFormatError(
                        f"GET {safe_url}: expected an OData object, got JSON starting with {exc}",
                        method="GET",
                        url=safe_url,
                    ) from exc
                except ijson.JSONError as exc:
                    # An empty or cut-short body (B.5): the same request usually succeeds.
                    empty = body.stat().st_size == 0
                    problem = f"GET {safe_url}: {response.status_code} with" + (
                        " an empty body" if empty else " invalid JSON"
                    )
                    retries.wait(Verdict.RETRY, problem, cause=exc)
        finally:
            body.unlink(missing_ok=True)

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
            WireFormatError: the answer is not an OData object.
            AuthError, HttpStatusError, TransientError: as ``request_json``.
        """
        body = self.request_json("GET", url, scope=scope, budget=budget, params=params)
        if not isinstance(body, dict):
            where = sanitize_url(url if not params else f"{url}?{urlencode(params, safe='$')}")
            raise WireFormatError(
                f"GET {where}: expected an OData object, got {type(body).__name__}",
                method="GET",
                url=where,
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

    def download(
        self,
        url: str,
        dest: Path,
        *,
        chunk_bytes: int = 1 << 20,
        follow_redirects: bool = False,
        signed: bool = True,
    ) -> int:
        """Stream a signed (SAS) URL to ``dest`` with no Authorization header; return its size.

        The SAS query is the credential (B.5.3), so a bearer token must not go along. A public
        file (a threat feed) is ``signed=False``: a 403 is then a refusal like any other, not
        an expired link. ``follow_redirects`` for a URL that points at the current copy.

        Raises:
            LinkExpired: 403: the signature expired or is not valid; ask for fresh links.
            CertificateUntrusted: the storage's certificate is not trusted.
            HttpStatusError: any other status that is not retried.
            TransientError: retries exhausted on 429, 5xx, timeouts or network errors.
        """
        retries = self._attempts("downloads")
        stats = self.stats["downloads"]
        safe_url = sanitize_url(url)
        while True:
            stats["requests"] += 1
            try:
                with self._http.stream(
                    "GET", url, headers={"Accept": "*/*"}, follow_redirects=follow_redirects
                ) as response:
                    if response.status_code == 200:
                        size = _save(response, dest, chunk_bytes)
                        stats["bytes"] += size
                        return size
                    response.read()
            except httpx.TransportError as exc:
                retries.wait(*no_answer(self._style, exc, "GET", safe_url), cause=exc)
                continue
            status = response.status_code
            where = f"GET {safe_url} -> {status}"
            verdict = classify_status(status)
            if status == 403 and signed:
                raise LinkExpired(f"{where}: the signed link expired or was refused")
            if verdict not in RETRIED:
                detail = response.text[:200].strip()
                raise HttpStatusError(
                    f"{where}: {detail}", method="GET", url=safe_url, status=status
                )
            retry_after = retry_after_seconds(response.headers.get("Retry-After"))
            retries.wait(verdict, where, retry_after=retry_after, status=status)

    def _attempts(self, counter: str, *, retry_timeouts: bool = True) -> Attempts:
        """The retries of one request, counted under ``counter`` in ``stats``."""
        stats = self.stats.setdefault(counter, Counter())
        return self._retry.attempts(stats=stats, sleep=self._sleep, retry_timeouts=retry_timeouts)

    def _send(
        self, request: httpx.Request, *, scope: str, budget: RateBudget, stream: bool = False
    ) -> httpx.Response:
        """Send a copy of ``request`` (each attempt stays as sent) with a current token."""
        budget.acquire()
        headers = request.headers.copy()
        headers["Authorization"] = self._style.prefix + self._tokens.get_token(scope)
        attempt = httpx.Request(
            request.method,
            request.url,
            headers=headers,
            content=request.content,
            extensions=request.extensions,
        )
        self.stats[budget.limit.name]["requests"] += 1
        response = self._http.send(attempt, stream=stream)
        log.debug(
            "%s %s -> %s", request.method, sanitize_url(str(request.url)), response.status_code
        )
        return response


def _timeout(seconds: float) -> httpx.Timeout:
    return httpx.Timeout(seconds, connect=min(30.0, seconds))


def _save(response: httpx.Response, dest: Path, chunk_bytes: int) -> int:
    size = 0
    with dest.open("wb") as fh:
        for chunk in response.iter_bytes(chunk_bytes):
            fh.write(chunk)
            size += len(chunk)
    return size

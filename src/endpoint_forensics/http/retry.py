"""The one retry policy for every outgoing request: what an answer means, and how long to wait.

Owns the classification of answers and failures (``Verdict``), used alike by the HTTP client
(``http.client``) and the Sentinel sink:

- 429: wait ``Retry-After`` (seconds or an HTTP date), or back off, and retry; counted as
  throttled, up to ``max_throttled`` waits per request;
- 500, 502, 503, a reset or refused connection: back off and retry, up to ``max_retries``;
- 504 and read timeouts: the same, unless the caller must not send the request again
  (``retry_timeouts=False``: ``RequestTimedOut`` at once);
- a TLS certificate that is not trusted, or not the pinned one: never retried (configuration);
- 401: once more with a fresh token, where the credential can be renewed; any other status:
  no retry.

Backoff is exponential, capped and jittered (concurrent clients do not retry in step); a
``Retry-After`` on a retried answer is honoured as the service says, up to an hour. Imports
``errors`` and ``http.tls`` only (azure-core exceptions inside a function).
"""

from __future__ import annotations

import email.utils
import logging
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

import httpx

from endpoint_forensics.errors import RequestTimedOut, TransientError
from endpoint_forensics.http.tls import PIN_MISMATCH

__all__ = [
    "RETRIED",
    "Attempts",
    "RetryPolicy",
    "Verdict",
    "classify_error",
    "classify_status",
    "retry_after_seconds",
]

log = logging.getLogger(__name__)

_RETRY_AFTER_CAP_SECONDS = 3600.0
_UNTRUSTED = "CERTIFICATE_VERIFY_FAILED"  # the ssl module's verification failure, in any wrapper


class Verdict(StrEnum):
    """What to do about one answer, or about a request that got none."""

    ACCEPT = "accept"  # 2xx: take the answer
    THROTTLED = "throttled"  # 429: wait Retry-After (or back off), then send again
    RETRY = "retry"  # 500, 502, 503, a transport failure: back off, then send again
    TIMED_OUT = "timed_out"  # 504, a read timeout: as RETRY, unless it must not be re-sent
    UNTRUSTED = "untrusted"  # the TLS certificate is not trusted or not the pin: never again
    REAUTHENTICATE = "reauthenticate"  # 401: once more with a fresh token, if it can be renewed
    REFUSED = "refused"  # any other status: sending it again cannot help


# The verdicts a request is sent again for, within the policy's limits.
RETRIED = frozenset({Verdict.THROTTLED, Verdict.RETRY, Verdict.TIMED_OUT})


def classify_status(status: int) -> Verdict:
    """The verdict on an answer with HTTP ``status``."""
    if 200 <= status < 300:
        return Verdict.ACCEPT
    if status == 429:
        return Verdict.THROTTLED
    if status in (500, 502, 503):
        return Verdict.RETRY
    if status == 504:
        return Verdict.TIMED_OUT
    if status == 401:
        return Verdict.REAUTHENTICATE
    return Verdict.REFUSED


def classify_error(error: BaseException) -> Verdict:
    """The verdict on a request that got no answer (an httpx or azure-core transport error)."""
    text = str(error)
    if _UNTRUSTED in text or PIN_MISMATCH in text:
        return Verdict.UNTRUSTED
    if _is_read_timeout(error):
        return Verdict.TIMED_OUT
    return Verdict.RETRY


def retry_after_seconds(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date), capped
    at an hour; None when absent or unreadable."""
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


@dataclass(frozen=True)
class RetryPolicy:
    """How often a request is sent again, and how long to wait in between."""

    max_retries: int = 6  # per request: 5xx, timeouts and transport failures
    max_throttled: int = 30  # per request: 429s waited out
    backoff_base_seconds: float = 1.0
    backoff_cap_seconds: float = 60.0

    def backoff_seconds(self, attempt: int) -> float:
        """The wait before retry number ``attempt`` (1 for the first): doubling, capped, and
        jittered down to half."""
        ceiling = min(self.backoff_cap_seconds, self.backoff_base_seconds * 2 ** (attempt - 1))
        return float(ceiling * random.uniform(0.5, 1.0))

    def attempts(
        self,
        *,
        stats: Counter[str],
        sleep: Callable[[float], None] = time.sleep,
        retry_timeouts: bool = True,
    ) -> Attempts:
        """The retries of one request under this policy, counted into ``stats``."""
        return Attempts(self, stats=stats, sleep=sleep, retry_timeouts=retry_timeouts)


class Attempts:
    """One request's retries: counts them (``retries``, ``throttled``, ``timed_out`` in the
    given counter), says how long to wait, and says when they are spent."""

    def __init__(
        self,
        policy: RetryPolicy,
        *,
        stats: Counter[str],
        sleep: Callable[[float], None],
        retry_timeouts: bool,
    ) -> None:
        self._policy = policy
        self._stats = stats
        self._sleep = sleep
        self._retry_timeouts = retry_timeouts
        self._retries = 0
        self._throttled = 0

    def next_wait(self, verdict: Verdict, *, retry_after: float | None = None) -> float | None:
        """Seconds to wait before sending the request again, counting the retry; None when
        ``verdict`` is not retried here or the request's retries are spent."""
        if verdict is Verdict.THROTTLED:
            self._throttled += 1
            if self._throttled > self._policy.max_throttled:
                return None
            self._stats["throttled"] += 1  # 429s waited out
            count = self._throttled
        elif verdict is Verdict.RETRY or (verdict is Verdict.TIMED_OUT and self._retry_timeouts):
            self._retries += 1
            if self._retries > self._policy.max_retries:
                return None
            self._stats["retries"] += 1
            count = self._retries
        else:
            return None
        return retry_after if retry_after is not None else self._policy.backoff_seconds(count)

    def wait(
        self,
        verdict: Verdict,
        problem: str,
        *,
        retry_after: float | None = None,
        status: int | None = None,
        cause: BaseException | None = None,
    ) -> None:
        """Wait before sending the request again, or raise: ``problem`` says what went wrong.

        Raises:
            RequestTimedOut: a timeout (``status`` 504, or None for a read timeout) of a request
                that must not be sent again.
            TransientError: the request's retries (or throttled waits) are spent.
            ValueError: ``verdict`` is not one a request is retried for.
        """
        if verdict not in RETRIED:
            raise ValueError(f"{verdict} is not retried: {problem}")
        if verdict is Verdict.TIMED_OUT and not self._retry_timeouts:
            self._stats["timed_out"] += 1
            raise RequestTimedOut(f"{problem}: no answer in time", status=status) from cause
        seconds = self.next_wait(verdict, retry_after=retry_after)
        if seconds is None:
            if verdict is Verdict.THROTTLED:
                waits = self._policy.max_throttled
                raise TransientError(f"{problem}: still throttled after {waits} waits") from cause
            raise TransientError(f"{problem} (gave up after {self._retries} attempts)") from cause
        log.debug("%s, waiting %.1f s: %s", verdict, seconds, problem)
        self._sleep(seconds)


def _is_read_timeout(error: BaseException) -> bool:
    """The request went out but no answer came in time (it may have been acted on)."""
    if isinstance(error, httpx.ReadTimeout):
        return True
    from azure.core.exceptions import ServiceResponseTimeoutError

    return isinstance(error, ServiceResponseTimeoutError)

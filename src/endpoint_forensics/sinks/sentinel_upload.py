"""The posting of one Sentinel upload: the Azure SDK's ``LogsIngestionClient`` (one a thread
and endpoint: its transport is not shared across threads), under ``http.retry``'s policy alone
(the SDK's retries are off). Imports ``config``, ``http.retry`` and ``identity.credentials``."""

from __future__ import annotations

import io
import threading
from collections import Counter
from typing import Any

from endpoint_forensics.config import SentinelConfig
from endpoint_forensics.http.retry import (
    RetryPolicy,
    Verdict,
    classify_error,
    classify_status,
    retry_after_seconds,
)
from endpoint_forensics.identity.credentials import build_credential

__all__ = ["Uploader"]

# A few quick retries: an upload that still fails waits in the outbox for the next run. 429s
# are waited out as long as the service says (up to 30 times).
_RETRY = RetryPolicy(max_retries=3, backoff_base_seconds=0.5, backoff_cap_seconds=30.0)


class Uploader:
    """Posts uploads to the endpoints of ``config``; stops retrying once ``halted`` is set."""

    def __init__(self, config: SentinelConfig, halted: threading.Event) -> None:
        self.config = config
        self._halted = halted
        self._lock = threading.Lock()
        self._local = threading.local()
        self._credential: Any = None

    def post(
        self, endpoint: str, rule_id: str, stream: str, body: bytes, *, stats: Counter[str]
    ) -> None:
        """Post one upload under the retry policy: a 429 is waited out, as long as the
        service says, so a busy DCR slows the run down instead of stopping it; a 401 is sent
        once more (the SDK's policy drops its token on a 401, so that try asks for a fresh
        one), and an answer that broke off is retried as a lost connection; once halted, no
        more retries. ``stats`` counts the throttled answers. Raises the last azure-core
        error when the policy does not retry it or its retries are spent."""
        from azure.core.exceptions import (
            DecodeError,
            HttpResponseError,
            ServiceRequestError,
            ServiceResponseError,
        )

        retries = _RETRY.attempts(stats=stats)
        renewed = False
        failure: Exception
        while True:
            try:
                self._client(endpoint).upload(
                    rule_id=rule_id, stream_name=stream, logs=io.BytesIO(body)
                )
                return
            except DecodeError as exc:  # the answer broke off mid-body: as a lost one
                failure, verdict, retry_after = exc, Verdict.RETRY, None
            except HttpResponseError as exc:  # a token refused too: its status is None
                failure = exc
                verdict = classify_status(exc.status_code or 0)
                headers: Any = getattr(exc.response, "headers", None) or {}
                retry_after = retry_after_seconds(headers.get("Retry-After"))
                if verdict is Verdict.REAUTHENTICATE and not renewed:
                    renewed = True
                    continue
            except (ServiceRequestError, ServiceResponseError) as exc:
                failure, verdict, retry_after = exc, classify_error(exc), None
            wait = retries.next_wait(verdict, retry_after=retry_after)
            if wait is None or self._halted.wait(wait):
                raise failure

    def close(self) -> None:
        if self._credential is not None:
            self._credential.close()

    def _client(self, endpoint: str) -> Any:
        clients: dict[str, Any] = self._local.__dict__.setdefault("clients", {})
        client = clients.get(endpoint)
        if client is None:
            from azure.monitor.ingestion import LogsIngestionClient

            with self._lock:
                if self._credential is None:
                    self._credential = build_credential(self.config)
            options: dict[str, Any] = {
                "credential_scopes": [self.config.scope],
                "retry_total": 0,  # retries are ours (post): a 429 is waited out once
                "connection_timeout": min(30.0, self.config.timeout_seconds),
                "read_timeout": self.config.timeout_seconds,
            }
            if self.config.ca_bundle is not None:
                options["connection_verify"] = str(self.config.ca_bundle)
            client = LogsIngestionClient(endpoint, self._credential, **options)
            clients[endpoint] = client
        return client

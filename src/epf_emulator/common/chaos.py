"""Chaos: one kind of fault injected into a share of requests, at random (seeded), for the
reliability harness (`make chaos`) and its smaller pass in the tests.

Unlike a ``Fault`` (the Nth request to a path), chaos strikes any eligible request with
probability ``rate``, so a whole sync meets the fault wherever it falls: mid-export, mid-page,
mid-upload. Each kind is what a real service or network does:

- ``throttle``: 429 with ``Retry-After: 1``, in the service's own error dialect;
- ``server_error``: 500 or 503;
- ``reset``: the connection drops mid-answer (a 200 whose body stops short);
- ``slow``: the request is served, its answer sent after ``slow_seconds``, past the client's
  timeout (an upload is accepted though its client gave up);
- ``truncated_export``: an export file (a SAS blob) cut short, its gzip broken;
- ``expired_link``: an export file's SAS link refused as expired (403 AuthenticationFailed);
- ``token_expiry``: an API refuses the bearer token as expired (401), as after clock skew or
  a token that expired in flight;
- ``keyvault_down``: the Key Vault answers 503 (at rate 1: down for the whole run);
- ``ingestion_down``: the Logs Ingestion endpoint answers 503 (at rate 1: down for the run).

The control paths (``/_emulator/``) are never struck. Imports nothing of the emulator.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any

__all__ = ["CHAOS_KINDS", "Chaos", "ChaosDrop", "ChaosInjector"]

CHAOS_KINDS = (
    "throttle",
    "server_error",
    "reset",
    "slow",
    "truncated_export",
    "expired_link",
    "token_expiry",
    "keyvault_down",
    "ingestion_down",
)

_BLOB = "/tvm-export/"
_SECRETS = "/secrets/"
_INGESTION = "/dataCollectionRules/"
_TOKEN_PATHS = ("/oauth2/", "/openid-configuration", "/msi/", "/.well-known/")


@dataclass(frozen=True)
class Chaos:
    kind: str
    rate: float = 0.1
    seed: int = 0
    slow_seconds: float = 4.0

    def __post_init__(self) -> None:
        if self.kind not in CHAOS_KINDS:
            raise ValueError(f"unknown chaos kind {self.kind!r}; one of {', '.join(CHAOS_KINDS)}")
        if not 0 < self.rate <= 1:
            raise ValueError(f"chaos rate must be in (0, 1]: {self.rate}")


class ChaosDrop(Exception):
    """Raised mid-answer so that the server drops the connection (``reset``)."""


class _QuietDrops(logging.Filter):
    """The server logs an app's exception with its traceback: not for a drop on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        # A client that gave up on a slow answer disconnects while its body is read.
        return not (isinstance(error, ChaosDrop) or type(error).__name__ == "ClientDisconnect")


logging.getLogger("uvicorn.error").addFilter(_QuietDrops())


class ChaosInjector:
    """Which requests chaos strikes, and what it answers; settable while running."""

    def __init__(self, chaos: Chaos | None = None) -> None:
        self._lock = threading.Lock()
        self._chaos: Chaos | None = None
        self._random = random.Random(0)
        self.struck: Counter[str] = Counter()
        self.set(chaos)

    def set(self, chaos: Chaos | None) -> None:
        with self._lock:
            self._chaos = chaos
            self._random = random.Random(chaos.seed if chaos is not None else 0)

    @property
    def chaos(self) -> Chaos | None:
        return self._chaos

    def strike(self, path: str, method: str, *, appliance: bool = False) -> Chaos | None:
        """The chaos to answer this request with, or None to serve it."""
        chaos = self._chaos
        if (
            chaos is None
            or path.startswith("/_emulator/")
            or not _eligible(chaos.kind, path, method, appliance)
        ):
            return None
        with self._lock:
            if self._random.random() >= chaos.rate:
                return None
            self.struck[chaos.kind] += 1
        return chaos

    def coin(self) -> bool:
        with self._lock:
            return self._random.random() < 0.5

    def snapshot(self) -> dict[str, Any]:
        chaos = self._chaos
        with self._lock:
            return {
                "kind": chaos.kind if chaos else None,
                "rate": chaos.rate if chaos else 0.0,
                "struck": dict(self.struck),
            }


def _eligible(kind: str, path: str, method: str, appliance: bool) -> bool:
    if kind in ("throttle", "server_error", "reset", "slow"):
        return True
    if appliance:  # the sensors and the console have no blobs, vault, DCRs or Entra tokens
        return False
    if kind == "truncated_export":
        return path.startswith(_BLOB) and method == "GET"
    if kind == "expired_link":
        return path.startswith(_BLOB)
    if kind == "keyvault_down":
        return path.startswith(_SECRETS)
    if kind == "ingestion_down":
        return path.startswith(_INGESTION)
    # token_expiry: an API that takes a bearer token (not the token endpoints, not a SAS blob)
    return not path.startswith((_BLOB, *_TOKEN_PATHS)) and not any(p in path for p in _TOKEN_PATHS)


async def serve_struck(
    chaos: Chaos, injector: ChaosInjector, scope: Any, receive: Any, send: Any, app: Any,
    error: Any,
) -> None:  # fmt: skip
    """Answer a struck request: ``error(status, message, retry_after)`` gives the service's
    own error response; ``app`` serves the request when the chaos needs the real answer."""
    kind = chaos.kind
    if kind == "throttle":
        await error(429, "Too many requests (chaos).", 1)(scope, receive, send)
    elif kind == "server_error":
        status = 503 if injector.coin() else 500
        await error(status, "The service is unavailable (chaos).", None)(scope, receive, send)
    elif kind in ("keyvault_down", "ingestion_down"):
        await error(503, "The service is unavailable (chaos).", None)(scope, receive, send)
    elif kind == "token_expiry":
        await error(401, "Access token has expired or is not yet valid.", None)(
            scope, receive, send
        )
    elif kind == "expired_link":
        await error(403, "Signature not valid in the specified time frame (chaos).", None)(
            scope, receive, send
        )
    elif kind == "slow":
        # The request is served (an upload is accepted), its answer held back past the
        # client's timeout: a client that sends it again sends it twice.
        held: list[Any] = []

        async def holding(message: Any) -> None:
            held.append(message)

        await app(scope, receive, holding)
        await asyncio.sleep(chaos.slow_seconds)
        for message in held:
            await send(message)
    elif kind == "reset":
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"4096")],
            }
        )
        await send({"type": "http.response.body", "body": b'{"value": [', "more_body": True})
        raise ChaosDrop("chaos: the connection dropped mid-answer")
    else:  # truncated_export: the real file, cut at half its length
        await app(scope, receive, _cut_in_half(send))


def _cut_in_half(send: Any) -> Any:
    state: dict[str, int] = {}

    async def cutting(message: Any) -> None:
        if message["type"] == "http.response.start":
            headers = dict(message.get("headers", []))
            length = int(headers.get(b"content-length", b"0"))
            if message["status"] != 200 or length < 2:
                state["left"] = -1  # not a file answer: pass it through
                await send(message)
                return
            state["left"] = length // 2
            kept = [(k, v) for k, v in message.get("headers", []) if k != b"content-length"]
            kept.append((b"content-length", str(length // 2).encode()))
            await send({**message, "headers": kept})
            return
        left = state.get("left", -1)
        if left < 0:
            await send(message)
            return
        if state.get("done"):
            return
        body = message.get("body", b"")[:left]
        state["left"] = left - len(body)
        done = state["left"] == 0 or not message.get("more_body", False)
        state["done"] = int(done)
        await send({"type": "http.response.body", "body": body, "more_body": not done})

    return cutting

"""The error tree: one root, subtrees by what the caller must do.

::

    EpfError
    ├── ConfigError        fix the config (exit 2)
    │   ├── CertificateUntrusted  a server's TLS certificate is not trusted, or not the pin
    │   └── StateNotWritable   the state folder cannot be created or written
    ├── RunInProgress      another run holds the state folder: try again later (exit 75)
    │   └── WorkspaceBusy  another process writes the workspace file
    ├── AuthError          fix credentials or consent (exit 1)
    │   └── CredentialRefused  the authority refused the app's credentials
    ├── TransientError     429, 5xx, timeouts, connection failures: retry later
    │   └── RequestTimedOut  no answer in time (read timeout, 504), not to be sent again
    ├── PermanentError     400, 403, 404, schema rejected: skip and report
    │   ├── HttpStatusError  a remote API answered with an error status
    │   ├── WireFormatError  a remote API answered 2xx with a body of the wrong shape
    │   └── LinkExpired      a signed download link expired: request fresh links
    └── SinkError          a sink could not store a unit (out of memory, disk): that dataset
        │                  fails alone, and the next run collects it again
        └── OutboxFull     a remote sink's outbox is at its cap and cannot drain: collection
                           stops before reading more

Errors whose ``stops_source`` is true fail every dataset of a source alike (refused credentials,
an untrusted certificate): the run stops asking that source at once. Foreign exceptions (httpx,
azure-core, DuckDB in sinks) are converted at the boundary, always ``raise ... from exc``.
Messages never carry secrets or full URLs with query strings. Imports nothing of ours.
"""

from __future__ import annotations


class EpfError(Exception):
    """Root of every error the product raises on purpose."""

    exit_code = 1
    stops_source = False  # every dataset of the source would fail the same way


class ConfigError(EpfError):
    """The configuration is missing, malformed or names something that does not exist."""

    exit_code = 2


class CertificateUntrusted(ConfigError):
    """A server's TLS certificate is not trusted by the configured CA bundle, or is not the
    pinned one: no retry can help, only a change of ``ca_bundle`` or the pin."""

    stops_source = True


class StateNotWritable(ConfigError):
    """The state folder (checkpoints, outbox, quarantine) cannot be created or written."""


class RunInProgress(EpfError):
    """Another run holds the state folder's run lock: this one did not start and changed
    nothing. Exit 75 (EX_TEMPFAIL): a scheduler may simply try again later."""

    exit_code = 75


class WorkspaceBusy(RunInProgress):
    """Another process has the workspace file open for writing (DuckDB allows one writing
    process, and no reader beside it): try again when it has finished."""


class AuthError(EpfError):
    """A credential was refused, or consent for a permission is missing."""


class CredentialRefused(AuthError):
    """The token authority refused the app's credentials: nothing of the tenant can be read."""

    stops_source = True


class TransientError(EpfError):
    """A remote failure that may succeed later (throttling, 5xx, timeouts, network)."""


class RequestTimedOut(TransientError):
    """The server did not answer in time: the client's read timeout or a 504 gateway timeout.

    Raised at once, without a retry, for requests whose caller asked not to re-send them as
    they were (an advanced hunting query: the same query would time out again, and burn the
    tenant's CPU quota doing so).
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status  # 504, or None for the client's own read timeout


class PermanentError(EpfError):
    """A remote failure that will not succeed by retrying (bad request, not found, forbidden)."""


class HttpStatusError(PermanentError):
    """A remote API answered with an error status; carries the facts, never a secret."""

    def __init__(
        self,
        message: str,
        *,
        method: str,
        url: str,
        status: int,
        code: str | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.method = method
        self.url = url
        self.status = status
        self.code = code
        self.request_id = request_id


class WireFormatError(PermanentError):
    """A remote API answered with success but a body of the wrong shape (not JSON, no
    ``value`` list, a field of the wrong type): retrying cannot help; the message says what
    was expected, naming the path without its query string."""

    def __init__(self, message: str, *, method: str, url: str) -> None:
        super().__init__(message)
        self.method = method
        self.url = url


class LinkExpired(PermanentError):
    """A signed (SAS) download link expired or was refused: the export must be requested again."""


class SinkError(EpfError):
    """A sink could not store a unit (the workspace ran out of memory or disk, or refused the
    write). The unit is rolled back whole, so the dataset fails alone and is collected again."""


def local_failure(exc: BaseException) -> str:
    """One line for a failure of this machine's disk (full, read-only, no permission) or any
    error of ours: what happened and where, without the traceback."""
    if isinstance(exc, OSError) and exc.strerror:
        where = f" ({exc.filename})" if exc.filename else ""
        text = f"{exc.strerror}{where}"
    else:
        text = str(exc)
    if out_of_disk(exc) and _NO_ROOM_HINT not in text:
        text += _NO_ROOM_HINT
    return text


_NO_ROOM_HINT = ": make room or make it writable; the next run goes on"


#: The errnos of a disk that takes no more: full, over its quota, read-only.
_NO_ROOM = {28: "No space left on device", 122: "Disk quota exceeded", 30: "Read-only file system"}


def out_of_disk(exc: BaseException) -> bool:
    """Whether ``exc`` is this machine's disk refusing writes: an OSError of that kind, or an
    error of ours that carries one (DuckDB says it in its message)."""
    if isinstance(exc, OSError):
        return exc.errno in _NO_ROOM
    cause = exc.__cause__
    text = f"{exc} {cause or ''}"
    return (cause is not None and out_of_disk(cause)) or any(m in text for m in _NO_ROOM.values())


class OutboxFull(SinkError):
    """A remote sink's outbox reached its cap and its senders cannot drain it now (the endpoint
    is down, or the uploads wait for a route): nothing more is read from the sources, every
    dataset not yet collected fails with the same line, and nothing already collected is lost."""

    stops_source = True

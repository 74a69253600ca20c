"""The error tree: one root, subtrees by what the caller must do.

::

    EpfError
    ├── ConfigError        fix the config (exit 2)
    ├── AuthError          fix credentials or consent (exit 1)
    │   └── CredentialRefused  the authority refused the app's credentials
    ├── TransientError     429, 5xx, timeouts, connection failures: retry later
    └── PermanentError     400, 403, 404, schema rejected: skip and report
        ├── HttpStatusError  a remote API answered with an error status
        └── LinkExpired      a signed download link expired: request fresh links

Foreign exceptions (httpx, azure-core) are converted at the boundary, always
``raise ... from exc``. Messages never carry secrets or full URLs with query strings.
Imports nothing of ours.
"""

from __future__ import annotations


class EpfError(Exception):
    """Root of every error the product raises on purpose."""

    exit_code = 1


class ConfigError(EpfError):
    """The configuration is missing, malformed or names something that does not exist."""

    exit_code = 2


class AuthError(EpfError):
    """A credential was refused, or consent for a permission is missing."""


class CredentialRefused(AuthError):
    """The token authority refused the app's credentials: nothing of the tenant can be read."""


class TransientError(EpfError):
    """A remote failure that may succeed later (throttling, 5xx, timeouts, network)."""


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


class LinkExpired(PermanentError):
    """A signed (SAS) download link expired or was refused: the export must be requested again."""

"""Azure in the configuration: the Microsoft Sentinel output (Logs Ingestion API and its
DCRs), the Key Vault identity for ``keyvault:`` references, and the output profile.
May import ``config.models`` and ``config.workspace``."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from endpoint_forensics.config.models import AppIdentity, Model, https_url
from endpoint_forensics.config.workspace import WorkspaceRef

__all__ = [
    "MAX_STREAMS_PER_DCR",
    "DcrRoute",
    "KeyVaultConfig",
    "KeyVaultOnly",
    "OutputConfig",
    "SentinelConfig",
    "too_many_streams",
]

#: Azure Monitor service limits, "Data collection rules": at most 10 data streams and 10 data
#: flows per DCR, so Azure refuses to create a DCR with streams for more tables than that
#: (defender-apis.md D.2; the deployment template spreads the tables over DCRs accordingly).
MAX_STREAMS_PER_DCR = 10


class DcrRoute(Model):
    """One data collection rule and the tables it has streams for (a DCR holds at most 10)."""

    immutable_id: str = Field(pattern=r"^dcr-[0-9a-fA-F]{32}$")
    tables: tuple[str, ...] = Field(min_length=1)
    # The DCR's own logs-ingestion endpoint; empty: [sentinel].endpoint.
    endpoint: str = ""

    @field_validator("endpoint")
    @classmethod
    def _https_url(cls, value: str) -> str:
        if value and (not value.startswith("https://") or len(value) <= len("https://")):
            raise ValueError("must be an https:// URL")
        return value.rstrip("/")

    @field_validator("tables")
    @classmethod
    def _table_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        # The template's output lists streams ("Custom-EPF_Devices_CL"): take either.
        return tuple(t.removeprefix("Custom-") for t in value)


class SentinelConfig(AppIdentity):
    """Microsoft Sentinel output: the Logs Ingestion API (defender-apis.md D) of its DCRs.

    ``endpoint`` is the DCRs' logs-ingestion endpoint (or a DCE's). Each ``[[sentinel.dcrs]]``
    entry names a DCR's ``immutableId`` and its tables (``epf deploy arm`` outputs them); a DCR
    declares at most 10 streams, so an entry with more tables is refused here, as Azure could
    never have created that DCR. ``dcr_immutable_id`` takes the tables no entry names (a
    one-DCR deployment). A table no DCR takes is never delivered: ``epf doctor`` names it and
    a sync keeps its rows in the outbox. The identity needs the Monitoring Metrics Publisher
    role on each DCR: an app registration (secret or certificate) or a managed identity.
    """

    endpoint: str
    # The DCR for every table no `dcrs` entry names (at most 10 of them: one DCR's streams).
    dcr_immutable_id: str | None = Field(default=None, pattern=r"^dcr-[0-9a-fA-F]{32}$")
    # Several DCRs (Azure allows 10 streams per DCR): as `epf deploy arm` outputs them.
    dcrs: tuple[DcrRoute, ...] = ()
    scope: str = "https://monitor.azure.com/.default"
    stream_prefix: str = "Custom-"
    max_concurrency: int = Field(default=4, ge=1, le=32)
    timeout_seconds: float = Field(default=120.0, gt=0)
    # Where batches wait until the endpoint accepts them; default <state dir>/outbox/sentinel.
    outbox_dir: Path | None = None
    # The outbox's cap on disk: past it, collection waits for the senders, and stops before
    # reading more when they cannot send (the endpoint down, a table no DCR takes).
    outbox_max_mb: float = Field(default=4096.0, gt=0)
    # The workspace, for `epf doctor` to check its tables ([sentinel.workspace]); optional.
    workspace: WorkspaceRef | None = None

    @field_validator("endpoint")
    @classmethod
    def _https_endpoint(cls, value: str) -> str:
        return https_url(value)

    @model_validator(mode="after")
    def _routes(self) -> SentinelConfig:
        if self.dcr_immutable_id is None and not self.dcrs:
            raise ValueError("set dcr_immutable_id, or list the DCRs in [[sentinel.dcrs]]")
        routed = [t for d in self.dcrs for t in d.tables]
        twice = sorted({t for t in routed if routed.count(t) > 1})
        if twice:
            raise ValueError(f"a table may go to one DCR only; listed twice: {', '.join(twice)}")
        per_dcr: dict[str, int] = {}
        for dcr in self.dcrs:  # a DCR listed in two entries has the streams of both
            key = dcr.immutable_id.lower()
            per_dcr[key] = per_dcr.get(key, 0) + len(dcr.tables)
        for dcr in self.dcrs:
            count = per_dcr.pop(dcr.immutable_id.lower(), 0)
            if count > MAX_STREAMS_PER_DCR:
                raise ValueError(too_many_streams(dcr.immutable_id, count))
        return self

    def route(self, table: str) -> tuple[str, str] | None:
        """(endpoint, DCR immutable id) for ``table``, or None when no DCR takes it."""
        for dcr in self.dcrs:
            if table in dcr.tables:
                return dcr.endpoint or self.endpoint, dcr.immutable_id
        if self.dcr_immutable_id is not None:
            return self.endpoint, self.dcr_immutable_id
        return None

    @property
    def name(self) -> str:
        return "sentinel"


def too_many_streams(immutable_id: str, count: int) -> str:
    """Why a DCR that would have a stream for each of ``count`` tables cannot exist."""
    return (
        f"{count} tables go to the DCR {immutable_id}, but a DCR declares at most "
        f"{MAX_STREAMS_PER_DCR} streams and 10 data flows (Azure refuses to create a larger one): "
        "list the tables of each DCR in its own [[sentinel.dcrs]] entry, as the "
        "dataCollectionRules output of `epf deploy arm` gives them"
    )


class KeyVaultConfig(AppIdentity):
    """The identity that reads ``keyvault:`` secret references (the Key Vault data plane, A.7).

    It needs the 'Key Vault Secrets User' role on each vault (or an access policy granting
    secret get): an app registration (secret or certificate) or a managed identity. Its own
    secrets are ``env:``, ``file:`` or literal, never ``keyvault:``. ``authority_host`` and
    ``ca_bundle`` serve sovereign clouds and the emulator (``ca_bundle`` is trusted for the
    vault too).
    """


class KeyVaultOnly(BaseModel):
    """The [keyvault] section alone: validated before the rest, as the references need it."""

    model_config = ConfigDict(extra="ignore", arbitrary_types_allowed=True)
    keyvault: KeyVaultConfig


class OutputConfig(Model):
    """What is written besides the EPF_* tables."""

    # Also write the original 2021 connector's tables, so its workbook keeps working.
    compat: bool = False

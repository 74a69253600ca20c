"""The configuration's building blocks: dataset names and schedules, secrets, the store, the
state folder and a Defender tenant. Imports only the dataset registry (``tables.datasets``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from endpoint_forensics.tables.datasets import SourceKind, dataset_names, spec_of

__all__ = [
    "CONSOLE_DATASETS",
    "DATASETS",
    "ENV_PREFIX",
    "FEED_DATASETS",
    "KNOWN_AUTHORITIES",
    "SENSOR_DATASETS",
    "AppIdentity",
    "ConsoleDataset",
    "Dataset",
    "FeedDataset",
    "Model",
    "Secret",
    "SensorDataset",
    "StateConfig",
    "StoreConfig",
    "TenantConfig",
    "existing_file",
    "existing_path",
    "https_url",
    "interval_hours",
]


def _dataset_of(kind: SourceKind) -> AfterValidator:
    """A check that a name is one of ``kind``'s datasets (the error names the position)."""

    def check(name: str) -> str:
        known = dataset_names(kind)
        if name not in known:
            raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(known)}")
        return name

    return AfterValidator(check)


# Dataset names come from the registry (tables.datasets): a dataset is declared once, there.
Dataset = Annotated[str, _dataset_of("tenant")]
SensorDataset = Annotated[str, _dataset_of("sensor")]
ConsoleDataset = Annotated[str, _dataset_of("console")]
FeedDataset = Annotated[str, _dataset_of("feed")]
DATASETS: tuple[str, ...] = dataset_names("tenant")
SENSOR_DATASETS: tuple[str, ...] = dataset_names("sensor")
CONSOLE_DATASETS: tuple[str, ...] = dataset_names("console")
FEED_DATASETS: tuple[str, ...] = dataset_names("feed")


def interval_hours(kind: SourceKind, overrides: Mapping[str, float], dataset: str) -> float:
    """Hours between snapshots of ``dataset``: the config's override, else the registry's."""
    if dataset in overrides:
        return overrides[dataset]
    return spec_of(kind, dataset).interval_hours


ENV_PREFIX = "EPF_"

KNOWN_AUTHORITIES = frozenset(
    {
        "login.microsoftonline.com",
        "login.microsoftonline.us",
        "login.chinacloudapi.cn",
        "login.partner.microsoftonline.cn",
    }
)


class Secret:
    """A secret value that never shows itself in repr, str or logs."""

    __slots__ = ("_source", "_value")

    def __init__(self, value: str, *, source: str) -> None:
        self._value = value
        self._source = source  # "literal", "env:NAME", "file:PATH" or "keyvault:URL": safe to show

    def reveal(self) -> str:
        return self._value

    @property
    def source(self) -> str:
        return self._source

    def __repr__(self) -> str:
        return f"Secret(<hidden>, source={self._source!r})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)


class StoreConfig(Model):
    """The embedded DuckDB workspace."""

    path: Path = Path("epf.duckdb")
    # False: Sentinel only (then [sentinel] is required).
    enabled: bool = True
    # What the engine may hold (MB) for what a sync derives from the whole workspace (triage),
    # beyond which it spills to disk. None: 1,024 (``workspace.store.STAGE_MEMORY_MB``), which
    # holds a sync's peak near 1.3 GB from 100,000 devices to 200,000. Less bounds it lower and
    # takes longer; too little fails the stage (its row, not the data): at 100,000 devices,
    # 2.4M open rows, 384 held it (19.8 s against 12.4) and 256 ran out (some of the
    # engine's work cannot spill). More is faster: 4,096 took 10.6 s in 2.7 GB.
    stage_memory_mb: int | None = Field(default=None, ge=64)


class StateConfig(Model):
    """Where checkpoints and quarantined records live."""

    dir: Path = Path(".epf-state")


class AppIdentity(Model):
    """An Entra identity the collector signs in as: an app registration (client secret or
    certificate) or the host's managed identity, with the authority and CA bundle to reach
    it. Shared by Defender tenants, the Sentinel output and the Key Vault reader."""

    tenant_id: str = ""
    client_id: str = ""
    client_secret: Secret | None = None
    certificate_path: Path | None = None
    certificate_password: Secret | None = None
    # The host's managed identity (Azure Functions, a VM); for Defender its app roles on
    # WindowsDefenderATP and Graph are granted by app-role assignment, not in the portal (A.5).
    managed_identity: bool = False
    # A user-assigned managed identity's client id; empty: the system-assigned identity.
    managed_identity_client_id: str = ""
    authority_host: str = "https://login.microsoftonline.com"
    ca_bundle: Path | None = None

    @field_validator("authority_host")
    @classmethod
    def _https_authority(cls, value: str) -> str:
        return https_url(value)

    @field_validator("ca_bundle", "certificate_path")
    @classmethod
    def _existing_file(cls, value: Path | None) -> Path | None:
        return existing_file(value)

    @model_validator(mode="after")
    def _one_credential(self) -> AppIdentity:
        given = [
            self.client_secret is not None,
            self.certificate_path is not None,
            self.managed_identity,
        ]
        if sum(given) != 1:
            raise ValueError(
                "set exactly one of client_secret, certificate_path or managed_identity = true"
            )
        if not self.managed_identity and not (self.tenant_id and self.client_id):
            raise ValueError("tenant_id and client_id are required with an app credential")
        return self

    @property
    def authority_is_known(self) -> bool:
        host = self.authority_host.removeprefix("https://").split("/")[0]
        return host in KNOWN_AUTHORITIES


def existing_file(value: Path | None) -> Path | None:
    """``value`` if it names a file (a CA bundle, a certificate); a path given must exist."""
    if value is not None and not _is(value, Path.is_file):
        raise ValueError(f"file {str(value)!r} does not exist")
    return value


def existing_path(value: Path | None) -> Path | None:
    """``value`` if it names a file or folder that exists."""
    if value is not None and not _is(value, Path.exists):
        raise ValueError(f"{str(value)!r} does not exist")
    return value


def _is(path: Path, test: Callable[[Path], bool]) -> bool:
    """``test(path)``; a path the system cannot even look up (a name too long, a loop of
    links, no permission) is a ``ValueError`` naming why."""
    try:
        return test(path)
    except OSError as exc:
        raise ValueError(f"{str(path)[:200]!r} cannot be looked up: {exc.strerror}") from None


def https_url(value: str) -> str:
    """``value`` without a trailing slash, if it is an https:// URL."""
    if not value.startswith("https://") or len(value) <= len("https://"):
        raise ValueError("must be an https:// URL")
    return value.rstrip("/")


class TenantConfig(AppIdentity):
    """One Defender tenant and the Entra app registration that reads it."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    tenant_id: str = Field(min_length=1)
    client_id: str = Field(min_length=1)
    mde_base_url: str = "https://api.security.microsoft.com"
    graph_base_url: str = "https://graph.microsoft.com/v1.0"
    mde_scope: str = "https://api.securitycenter.microsoft.com/.default"
    graph_scope: str = "https://graph.microsoft.com/.default"
    hunting_api: Literal["graph", "mde"] = "graph"
    datasets: tuple[Dataset, ...] = DATASETS
    page_size: int = Field(default=10_000, ge=1, le=10_000)
    # The hunting APIs return at most this many rows (B.3). The query carries its own row
    # count, so a cut-short result is seen whatever the cap; this is the fallback for an
    # answer without the count, where a result this long counts as cut short.
    hunting_row_limit: int = Field(default=100_000, ge=1, le=100_000)
    # How long a hunting query may take to answer. The MDE API runs one for up to 200 s and
    # Graph for about 3 minutes (B.3); a client that gives up sooner abandons a query the
    # service goes on running (and charging to the hourly CPU quota), so this must exceed 200.
    hunting_timeout_seconds: float = Field(default=300.0, gt=200.0, le=3600.0)
    timeout_seconds: float = Field(default=120.0, gt=0)
    max_retries: int = Field(default=6, ge=0, le=20)
    # Exports: JSON pages below files_threshold_devices devices, files (B.5.3) above.
    export_mode: Literal["auto", "json", "files"] = "auto"
    files_threshold_devices: int = Field(default=100_000, ge=0)
    export_page_size: int = Field(default=50_000, ge=1, le=200_000)
    sas_valid_hours: int = Field(default=6, ge=1, le=6)
    interval_hours: dict[Dataset, float] = Field(default_factory=dict)

    @field_validator("mde_base_url", "graph_base_url")
    @classmethod
    def _https_api(cls, value: str) -> str:
        return https_url(value)

    def interval_hours_for(self, dataset: str) -> float:
        """Hours between snapshots of ``dataset`` (0: every run)."""
        return interval_hours("tenant", self.interval_hours, dataset)

    def use_files(self, device_count: int | None) -> bool:
        """Whether exports go through files (large tenants) rather than JSON pages."""
        if self.export_mode != "auto":
            return self.export_mode == "files"
        return device_count is not None and device_count >= self.files_threshold_devices

"""Settings: a TOML file plus environment overrides, validated, with secret references.

Owns the configuration model and its errors. Every error names the key (``tenants[0].client_id``)
and what is wrong with it, never the value: a value may be a secret.

Environment overrides: ``EPF_<KEY>`` with ``__`` between levels and list indices as numbers,
e.g. ``EPF_STORE__PATH=/data/epf.duckdb`` or ``EPF_TENANTS__0__CLIENT_SECRET=env:CONTOSO_SECRET``.
(pydantic-settings cannot override one field of one tenant in a list, so the overlay is ours;
pydantic does the validation.)

Secret references: ``env:NAME`` (an environment variable), ``file:PATH`` (a file's content,
stripped; relative to the config file), ``keyvault:<vault>/<secret>[/<version>]`` (an Azure Key
Vault secret, read at load time with the ``[keyvault]`` identity; ``<vault>`` is a vault name or
its https URL, and the secret identifier ``keyvault:https://<vault host>/secrets/<secret>`` works
too), anything else is the literal secret.
May import only ``tables`` and ``errors`` (and, lazily, ``secrets_keyvault`` when a
``keyvault:`` reference exists).
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from endpoint_forensics.errors import ConfigError

__all__ = [
    "CONSOLE_DATASETS",
    "DATASETS",
    "SENSOR_DATASETS",
    "ConsoleConfig",
    "DcrRoute",
    "KeyVaultConfig",
    "OutputConfig",
    "Secret",
    "SensorConfig",
    "SentinelConfig",
    "Settings",
    "StateConfig",
    "StoreConfig",
    "TenantConfig",
    "load_settings",
    "settings_from_mapping",
]

Dataset = Literal[
    "machines",
    "agent_health",
    "av_health",
    "secure_config",
    "vulnerabilities",
    "vulnerability_changes",
    "software_inventory",
    "recommendations",
    "cve_catalog",
]
DATASETS: tuple[Dataset, ...] = get_args(Dataset)
# Hours between two snapshots of a dataset; the rest are taken on every run. The full
# vulnerability baseline is weekly and the delta runs in between (B.5.4).
DEFAULT_INTERVAL_HOURS: dict[str, float] = {
    "vulnerabilities": 168.0,
    "secure_config": 24.0,
    "software_inventory": 24.0,
    "cve_catalog": 24.0,
}
# Defender for IoT: per sensor and per management console.
SensorDataset = Literal["devices", "connections", "cves", "alerts", "events", "exposure"]
SENSOR_DATASETS: tuple[SensorDataset, ...] = get_args(SensorDataset)
ConsoleDataset = Literal["devices", "device_changes", "connections", "cves", "alerts", "sensors"]
CONSOLE_DATASETS: tuple[ConsoleDataset, ...] = get_args(ConsoleDataset)
# Inventory-like IoT snapshots are daily; alerts, events and the console's deltas run every time.
DEFAULT_SENSOR_INTERVAL_HOURS: dict[str, float] = {
    "connections": 24.0,
    "cves": 24.0,
    "exposure": 24.0,
}
DEFAULT_CONSOLE_INTERVAL_HOURS: dict[str, float] = {"devices": 24.0}
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


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)


class StoreConfig(_Model):
    """The embedded DuckDB workspace."""

    path: Path = Path("epf.duckdb")
    # False: Sentinel only (then [sentinel] is required).
    enabled: bool = True


class StateConfig(_Model):
    """Where checkpoints and quarantined records live."""

    dir: Path = Path(".epf-state")


class TenantConfig(_Model):
    """One Defender tenant and the Entra app registration that reads it."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    tenant_id: str = Field(min_length=1)
    client_id: str = Field(min_length=1)
    client_secret: Secret | None = None
    certificate_path: Path | None = None
    certificate_password: Secret | None = None
    authority_host: str = "https://login.microsoftonline.com"
    mde_base_url: str = "https://api.security.microsoft.com"
    graph_base_url: str = "https://graph.microsoft.com/v1.0"
    mde_scope: str = "https://api.securitycenter.microsoft.com/.default"
    graph_scope: str = "https://graph.microsoft.com/.default"
    ca_bundle: Path | None = None
    hunting_api: Literal["graph", "mde"] = "graph"
    datasets: tuple[Dataset, ...] = DATASETS
    page_size: int = Field(default=10_000, ge=1, le=10_000)
    # The hunting APIs return at most this many rows (B.3); a result this long may be cut
    # short, so the query is split. Lower only to test the split.
    hunting_row_limit: int = Field(default=100_000, ge=1, le=100_000)
    timeout_seconds: float = Field(default=120.0, gt=0)
    max_retries: int = Field(default=6, ge=0, le=20)
    # Exports: JSON pages below files_threshold_devices devices, files (B.5.3) above.
    export_mode: Literal["auto", "json", "files"] = "auto"
    files_threshold_devices: int = Field(default=100_000, ge=0)
    export_page_size: int = Field(default=50_000, ge=1, le=200_000)
    sas_valid_hours: int = Field(default=6, ge=1, le=6)
    interval_hours: dict[Dataset, float] = Field(default_factory=dict)

    @field_validator("authority_host", "mde_base_url", "graph_base_url")
    @classmethod
    def _https_url(cls, value: str) -> str:
        if not value.startswith("https://") or len(value) <= len("https://"):
            raise ValueError("must be an https:// URL")
        return value.rstrip("/")

    @field_validator("ca_bundle", "certificate_path")
    @classmethod
    def _existing_file(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"file {str(value)!r} does not exist")
        return value

    @model_validator(mode="after")
    def _one_credential(self) -> TenantConfig:
        if (self.client_secret is None) == (self.certificate_path is None):
            raise ValueError("set exactly one of client_secret or certificate_path")
        return self

    def interval_hours_for(self, dataset: str) -> float:
        """Hours between snapshots of ``dataset`` (0: every run)."""
        default = DEFAULT_INTERVAL_HOURS.get(dataset, 0.0)
        return next((h for name, h in self.interval_hours.items() if name == dataset), default)

    def use_files(self, device_count: int | None) -> bool:
        """Whether exports go through files (large tenants) rather than JSON pages."""
        if self.export_mode != "auto":
            return self.export_mode == "files"
        return device_count is not None and device_count >= self.files_threshold_devices

    @property
    def authority_is_known(self) -> bool:
        host = self.authority_host.removeprefix("https://").split("/")[0]
        return host in KNOWN_AUTHORITIES


_Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]


class _ApplianceConfig(_Model):
    """An on-premises Defender for IoT appliance: its URL, access token and how to trust it.

    Appliances present self-signed certificates as a rule: trust one with ``ca_bundle`` (a PEM
    with the certificate or the CA that issued it) or pin its SHA-256 fingerprint with
    ``certificate_fingerprint``; with neither, the system's trust store decides.
    """

    name: _Name
    url: str
    token: Secret
    ca_bundle: Path | None = None
    certificate_fingerprint: str | None = None
    timeout_seconds: float = Field(default=60.0, gt=0)
    max_retries: int = Field(default=4, ge=0, le=20)
    # Stamped as DefenderTenantId, so IoT rows can sit beside the tenant's MDE rows.
    defender_tenant_id: str = ""

    @field_validator("url")
    @classmethod
    def _https_url(cls, value: str) -> str:
        if not value.startswith("https://") or len(value) <= len("https://"):
            raise ValueError("must be an https:// URL (the appliance APIs are HTTPS only)")
        return value.rstrip("/")

    @field_validator("ca_bundle")
    @classmethod
    def _existing_file(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"file {str(value)!r} does not exist")
        return value

    @field_validator("certificate_fingerprint")
    @classmethod
    def _fingerprint(cls, value: str | None) -> str | None:
        if value is None:
            return None
        digits = value.lower().removeprefix("sha256:").replace(":", "").replace(" ", "")
        if len(digits) != 64 or any(c not in "0123456789abcdef" for c in digits):
            raise ValueError(
                "must be the certificate's SHA-256 fingerprint: 64 hex digits, colons allowed"
            )
        return digits

    @model_validator(mode="after")
    def _one_trust(self) -> _ApplianceConfig:
        if self.ca_bundle is not None and self.certificate_fingerprint is not None:
            raise ValueError("set ca_bundle or certificate_fingerprint, not both")
        return self


class SensorConfig(_ApplianceConfig):
    """A Defender for IoT OT sensor (``https://<sensor>/api/v1/...``)."""

    datasets: tuple[SensorDataset, ...] = SENSOR_DATASETS
    interval_hours: dict[SensorDataset, float] = Field(default_factory=dict)
    # Labels for the sensor's rows: its API does not say where it sits.
    site: str = ""
    zone: str = ""
    # Only authorized (True) or unauthorized (False) devices; None lists every device.
    authorized: bool | None = None
    alerts_api: Literal["v1", "v2"] = "v2"
    # CVEs per address asked for (the API's default of 100 cuts the list short); an address
    # that returns this many is asked again with a larger top.
    cve_top: int = Field(default=1_000, ge=1, le=100_000)
    # The first events poll looks back this far; later polls start where the last one ended.
    events_initial_minutes: int = Field(default=4_320, ge=1, le=4_320)
    # Polls overlap by this much (clock skew, and events stamped in the same millisecond).
    events_overlap_minutes: int = Field(default=2, ge=1, le=60)
    alerts_overlap_minutes: int = Field(default=10, ge=0, le=1_440)
    # Event types to poll one by one when a window comes back full, besides those seen so far.
    event_types: tuple[str, ...] = ()

    def interval_hours_for(self, dataset: str) -> float:
        default = DEFAULT_SENSOR_INTERVAL_HOURS.get(dataset, 0.0)
        return next((h for name, h in self.interval_hours.items() if name == dataset), default)


class ConsoleConfig(_ApplianceConfig):
    """A Defender for IoT on-premises management console (``https://<cm>/external/...``)."""

    datasets: tuple[ConsoleDataset, ...] = CONSOLE_DATASETS
    interval_hours: dict[ConsoleDataset, float] = Field(default_factory=dict)
    # Page size of the v3 integration API (its default is 50).
    page_size: int = Field(default=200, ge=1, le=10_000)
    # Only these sensors (console sensor ids); empty: all.
    sensor_ids: tuple[int, ...] = ()
    alerts_api: Literal["v1", "v2"] = "v2"
    alerts_overlap_minutes: int = Field(default=10, ge=0, le=1_440)

    def interval_hours_for(self, dataset: str) -> float:
        default = DEFAULT_CONSOLE_INTERVAL_HOURS.get(dataset, 0.0)
        return next((h for name, h in self.interval_hours.items() if name == dataset), default)


class DcrRoute(_Model):
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


class SentinelConfig(_Model):
    """Microsoft Sentinel output: the Logs Ingestion API (defender-apis.md D) of a DCR.

    ``endpoint`` is the DCR's logs-ingestion endpoint (or a DCE's), ``dcr_immutable_id`` the
    DCR's ``immutableId`` (``epf deploy arm`` outputs both). The identity needs the Monitoring
    Metrics Publisher role on the DCR: an app registration (secret or certificate) or a managed
    identity.
    """

    endpoint: str
    # The DCR for every table no `dcrs` entry names (a single DCR, as in the emulator).
    dcr_immutable_id: str | None = Field(default=None, pattern=r"^dcr-[0-9a-fA-F]{32}$")
    # Several DCRs (Azure allows 10 streams per DCR): as `epf deploy arm` outputs them.
    dcrs: tuple[DcrRoute, ...] = ()
    tenant_id: str = ""
    client_id: str = ""
    client_secret: Secret | None = None
    certificate_path: Path | None = None
    certificate_password: Secret | None = None
    managed_identity: bool = False
    # A user-assigned managed identity's client id; empty: the system-assigned identity.
    managed_identity_client_id: str = ""
    authority_host: str = "https://login.microsoftonline.com"
    scope: str = "https://monitor.azure.com/.default"
    ca_bundle: Path | None = None
    stream_prefix: str = "Custom-"
    max_concurrency: int = Field(default=4, ge=1, le=32)
    timeout_seconds: float = Field(default=120.0, gt=0)
    # Where batches wait until the endpoint accepts them; default <state dir>/outbox/sentinel.
    outbox_dir: Path | None = None

    @field_validator("endpoint", "authority_host")
    @classmethod
    def _https_url(cls, value: str) -> str:
        if not value.startswith("https://") or len(value) <= len("https://"):
            raise ValueError("must be an https:// URL")
        return value.rstrip("/")

    @field_validator("ca_bundle", "certificate_path")
    @classmethod
    def _existing_file(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"file {str(value)!r} does not exist")
        return value

    @model_validator(mode="after")
    def _one_credential(self) -> SentinelConfig:
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
        if self.dcr_immutable_id is None and not self.dcrs:
            raise ValueError("set dcr_immutable_id, or list the DCRs in [[sentinel.dcrs]]")
        routed = [t for d in self.dcrs for t in d.tables]
        twice = sorted({t for t in routed if routed.count(t) > 1})
        if twice:
            raise ValueError(f"a table may go to one DCR only; listed twice: {', '.join(twice)}")
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

    @property
    def authority_is_known(self) -> bool:
        host = self.authority_host.removeprefix("https://").split("/")[0]
        return host in KNOWN_AUTHORITIES


class KeyVaultConfig(_Model):
    """The identity that reads ``keyvault:`` secret references (the Key Vault data plane, A.7).

    It needs the 'Key Vault Secrets User' role on each vault (or an access policy granting
    secret get): an app registration (secret or certificate) or a managed identity. Its own
    secrets are ``env:``, ``file:`` or literal, never ``keyvault:``. ``authority_host`` and
    ``ca_bundle`` serve sovereign clouds and the emulator (``ca_bundle`` is trusted for the
    vault too).
    """

    tenant_id: str = ""
    client_id: str = ""
    client_secret: Secret | None = None
    certificate_path: Path | None = None
    certificate_password: Secret | None = None
    managed_identity: bool = False
    # A user-assigned managed identity's client id; empty: the system-assigned identity.
    managed_identity_client_id: str = ""
    authority_host: str = "https://login.microsoftonline.com"
    ca_bundle: Path | None = None

    @field_validator("authority_host")
    @classmethod
    def _https_url(cls, value: str) -> str:
        if not value.startswith("https://") or len(value) <= len("https://"):
            raise ValueError("must be an https:// URL")
        return value.rstrip("/")

    @field_validator("ca_bundle", "certificate_path")
    @classmethod
    def _existing_file(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"file {str(value)!r} does not exist")
        return value

    @model_validator(mode="after")
    def _one_credential(self) -> KeyVaultConfig:
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


class _KeyVaultOnly(BaseModel):
    """The [keyvault] section alone: validated before the rest, as the references need it."""

    model_config = ConfigDict(extra="ignore", arbitrary_types_allowed=True)
    keyvault: KeyVaultConfig


class OutputConfig(_Model):
    """What is written besides the EPF_* tables."""

    # Also write the original 2021 connector's tables, so its workbook keeps working.
    compat: bool = False


class Settings(_Model):
    """The whole configuration: any mix of Defender tenants, IoT sensors and consoles, into
    the local store and/or Microsoft Sentinel."""

    store: StoreConfig = StoreConfig()
    state: StateConfig = StateConfig()
    sentinel: SentinelConfig | None = None
    keyvault: KeyVaultConfig | None = None
    output: OutputConfig = OutputConfig()
    tenants: tuple[TenantConfig, ...] = ()
    sensors: tuple[SensorConfig, ...] = ()
    consoles: tuple[ConsoleConfig, ...] = ()

    @model_validator(mode="after")
    def _unique_names(self) -> Settings:
        if not (self.tenants or self.sensors or self.consoles):
            raise ValueError(
                "nothing to collect: configure at least one [[tenants]], [[sensors]] or "
                "[[consoles]] entry"
            )
        if not self.store.enabled and self.sentinel is None:
            raise ValueError("store.enabled is false and there is no [sentinel]: nowhere to write")
        # Names key checkpoints, quarantine files and every IoT row: one name, one source.
        names = [
            *(t.name for t in self.tenants),
            *(s.name for s in self.sensors),
            *(c.name for c in self.consoles),
        ]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(
                f"tenant, sensor and console names must be unique; repeated: {', '.join(dupes)}"
            )
        return self


def load_settings(
    path: Path,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Read, overlay and validate the config file at ``path``.

    Args:
        path: the TOML file.
        environ: the environment to read ``EPF_*`` overrides and ``env:`` secrets from.
        overrides: dotted keys set last (the CLI's ``--db`` is ``{"store.path": ...}``).

    Raises:
        ConfigError: the file is missing or unreadable, is not TOML, or a key is invalid.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {str(path)!r} cannot be read: {exc}") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    return settings_from_mapping(
        data, base_dir=path.parent, source=str(path), environ=environ, overrides=overrides
    )


def settings_from_mapping(
    data: Mapping[str, Any],
    *,
    base_dir: Path,
    source: str = "config",
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Validate an already parsed config mapping (see :func:`load_settings`)."""
    env = os.environ if environ is None else environ
    merged = _apply_env(_deep_copy(data), env, source)
    # Default paths are relative to the config file too, not to wherever epf runs from.
    if isinstance(merged.get("store", {}), dict):
        merged.setdefault("store", {}).setdefault("path", "epf.duckdb")
    if isinstance(merged.get("state", {}), dict):
        merged.setdefault("state", {}).setdefault("dir", ".epf-state")
    for dotted, value in (overrides or {}).items():
        _set_path(merged, dotted.split("."), value, source)
    _resolve_in_place(merged, base_dir, env, source)
    try:
        return Settings.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source)) from None


def _deep_copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value


def _apply_env(data: dict[str, Any], env: Mapping[str, str], source: str) -> dict[str, Any]:
    for name in sorted(env):
        if not name.startswith(ENV_PREFIX):
            continue
        parts = name[len(ENV_PREFIX) :].lower().split("__")
        if parts[0] not in Settings.model_fields:
            continue  # EPF_CONFIG and friends are not settings
        value: Any = env[name]
        if value.startswith(
            "["
        ):  # a list, written as JSON: EPF_TENANTS__0__DATASETS='["machines"]'
            try:
                value = json.loads(value)
            except ValueError:
                raise ConfigError(f"environment variable {name}: not a JSON list") from None
        _set_path(data, parts, value, f"environment variable {name}")
    return data


def _set_path(data: dict[str, Any], parts: list[str], value: Any, source: str) -> None:
    node: Any = data
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"{source}: {'.'.join(parts)}: no list item {part}")
            if last:
                node[int(part)] = value
            else:
                node = node[int(part)]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, {})
        else:
            raise ConfigError(f"{source}: {'.'.join(parts[:i])} is not a table")


_PATH_KEYS = {"path", "dir", "ca_bundle", "certificate_path", "outbox_dir"}
_SECRET_KEYS = {"client_secret", "certificate_password", "token"}
_KV = "keyvault:"


def _resolve_in_place(data: Any, base_dir: Path, env: Mapping[str, str], source: str) -> None:
    """Turn path strings into absolute paths and secret references into Secrets."""
    # keyvault: references wait until the walk is done: the [keyvault] identity reads them.
    vault_refs: list[tuple[dict[str, Any], str, str, str]] = []

    def walk(node: Any, loc: str) -> None:
        if isinstance(node, dict):
            for key, value in list(node.items()):
                here = f"{loc}.{key}" if loc else key
                if key in _SECRET_KEYS and isinstance(value, str) and value.startswith(_KV):
                    vault_refs.append((node, key, here, value))
                elif key in _SECRET_KEYS and isinstance(value, str):
                    node[key] = _resolve_secret(value, here, base_dir, env, source)
                elif key in _PATH_KEYS and isinstance(value, str | Path):
                    node[key] = (base_dir / Path(value).expanduser()).resolve()
                else:
                    walk(value, here)
        elif isinstance(node, list):
            for i, item in enumerate(node):
                walk(item, f"{loc}[{i}]")

    walk(data, "")
    if vault_refs:
        _resolve_keyvault(data, vault_refs, source)


def _resolve_keyvault(
    data: dict[str, Any], refs: list[tuple[dict[str, Any], str, str, str]], source: str
) -> None:
    """Fetch every ``keyvault:`` reference (each secret once) and put its Secret in place."""
    from endpoint_forensics import secrets_keyvault as kv

    parsed: list[tuple[dict[str, Any], str, str, kv.SecretReference]] = []
    for node, key, loc, text in refs:
        if loc.startswith("keyvault."):
            raise ConfigError(
                f"{source}: {loc}: the Key Vault credential cannot come from Key Vault; "
                "use env:, file: or a literal"
            )
        try:
            parsed.append((node, key, loc, kv.parse_reference(text)))
        except ValueError as exc:
            raise ConfigError(f"{source}: {loc}: {exc}") from None
    if not isinstance(data.get("keyvault"), dict):
        raise ConfigError(
            f"{source}: {parsed[0][2]}: a keyvault: reference needs a [keyvault] section "
            "(the identity that reads the vault)"
        )
    try:
        vault = _KeyVaultOnly.model_validate(data).keyvault
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source)) from None
    try:
        fetched = kv.fetch_secrets(vault, [ref for _, _, _, ref in parsed])
    except kv.SecretFetchError as exc:
        where = ", ".join(loc for _, _, loc, ref in parsed if ref == exc.reference)
        raise ConfigError(f"{source}: {where or exc.setting}: {exc}") from None
    for node, key, _, ref in parsed:
        node[key] = fetched[ref]


def _resolve_secret(
    ref: str, loc: str, base_dir: Path, env: Mapping[str, str], source: str
) -> Secret:
    if ref.startswith("env:"):
        name = ref[4:]
        if not name or name not in env or not env[name]:
            raise ConfigError(f"{source}: {loc}: environment variable {name!r} is not set")
        return Secret(env[name], source=ref)
    if ref.startswith("file:"):
        file = (base_dir / Path(ref[5:]).expanduser()).resolve()
        try:
            value = file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(
                f"{source}: {loc}: cannot read secret file {str(file)!r}: {exc.strerror}"
            ) from None
        if not value:
            raise ConfigError(f"{source}: {loc}: secret file {str(file)!r} is empty")
        return Secret(value, source=f"file:{file}")
    if not ref:
        raise ConfigError(f"{source}: {loc}: is empty")
    return Secret(ref, source="literal")


def _describe(exc: ValidationError, source: str) -> str:
    problems = []
    for err in exc.errors(include_input=False, include_url=False):
        loc = ""
        for part in err["loc"]:
            loc += f"[{part}]" if isinstance(part, int) else (f".{part}" if loc else str(part))
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "missing":
            msg = "is required"
        problems.append(f"{loc or '(top level)'}: {msg}")
    return f"{source}: " + "; ".join(problems)

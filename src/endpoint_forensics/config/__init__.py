"""Settings: a TOML file plus environment overrides, validated, with secret references.

Owns loading, the overlay, secret resolution and the whole ``Settings``; its parts live in
``config.models`` (tenants, store, state, secrets, dataset names), ``config.appliances``
(Defender for IoT sensors and consoles), ``config.azure`` (Sentinel, Key Vault, output) and
``config.workspace`` (the Sentinel workspace doctor reads),
and every public name is exported here. Owns the errors too. Every error names the key (``tenants[0].client_id``)
and what is wrong with it, never the value: a value may be a secret.

Environment overrides: ``EPF_<KEY>`` with ``__`` between levels and list indices as numbers,
e.g. ``EPF_STORE__PATH=/data/epf.duckdb`` or ``EPF_TENANTS__0__CLIENT_SECRET=env:CONTOSO_SECRET``.
(pydantic-settings cannot override one field of one tenant in a list, so the overlay is ours;
pydantic does the validation.)

Secret references: ``env:NAME`` (an environment variable), ``file:PATH`` (a file's content,
stripped; relative to the config file), ``keyvault:<vault>/<secret>[/<version>]`` (an Azure Key
Vault secret, read at load time with the ``[keyvault]`` identity; ``<vault>`` is a vault name or
its https URL, and the secret identifier ``keyvault:https://<vault host>/secrets/<secret>`` works
too), anything else is the literal secret. The loader does not read Key Vault itself: its caller
passes a ``KeyVaultResolver`` (the commands pass ``identity.keyvault.resolve_references``), so
the config stays below the identity code that depends on it.
May import only ``config.*``, ``tables`` and ``errors``.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError, model_validator

from endpoint_forensics.config.appliances import ConsoleConfig, SensorConfig
from endpoint_forensics.config.azure import (
    DcrRoute,
    KeyVaultConfig,
    KeyVaultOnly,
    OutputConfig,
    SentinelConfig,
)
from endpoint_forensics.config.feeds import FeedLocation, FeedsConfig
from endpoint_forensics.config.history import HistoryConfig, HistoryMode
from endpoint_forensics.config.models import (
    CONSOLE_DATASETS,
    DATASETS,
    ENV_PREFIX,
    SENSOR_DATASETS,
    AppIdentity,
    Model,
    Secret,
    StateConfig,
    StoreConfig,
    TenantConfig,
)
from endpoint_forensics.config.triage import DeviceRule, MissionRule, TriageConfig
from endpoint_forensics.config.workspace import WorkspaceRef
from endpoint_forensics.errors import ConfigError

__all__ = [
    "CONSOLE_DATASETS",
    "DATASETS",
    "SENSOR_DATASETS",
    "AppIdentity",
    "ConsoleConfig",
    "DcrRoute",
    "DeviceRule",
    "FeedLocation",
    "FeedsConfig",
    "HistoryConfig",
    "HistoryMode",
    "KeyVaultConfig",
    "KeyVaultResolver",
    "MissionRule",
    "OutputConfig",
    "Secret",
    "SecretReferenceError",
    "SensorConfig",
    "SentinelConfig",
    "Settings",
    "StateConfig",
    "StoreConfig",
    "TenantConfig",
    "TriageConfig",
    "WorkspaceRef",
    "load_settings",
    "settings_from_mapping",
]

#: Reads ``keyvault:`` references with the ``[keyvault]`` identity: given that section and the
#: references as written, returns the Secret of each. Raises ``SecretReferenceError``.
KeyVaultResolver = Callable[[KeyVaultConfig, Sequence[str]], Mapping[str, Secret]]


class SecretReferenceError(Exception):
    """A ``KeyVaultResolver`` could not read a reference; the message names no value.

    ``references`` are the failed references as written, or empty when the ``[keyvault]``
    identity itself is unusable (``setting`` is then the key to fix).
    """

    def __init__(
        self, message: str, *, references: Sequence[str] = (), setting: str = "keyvault"
    ) -> None:
        super().__init__(message)
        self.references = tuple(references)
        self.setting = setting


class Settings(Model):
    """The whole configuration: any mix of Defender tenants, IoT sensors and consoles, and
    the threat feeds, into the local store and/or Microsoft Sentinel."""

    store: StoreConfig = StoreConfig()
    state: StateConfig = StateConfig()
    sentinel: SentinelConfig | None = None
    keyvault: KeyVaultConfig | None = None
    output: OutputConfig = OutputConfig()
    history: HistoryConfig = HistoryConfig()
    tenants: tuple[TenantConfig, ...] = ()
    sensors: tuple[SensorConfig, ...] = ()
    consoles: tuple[ConsoleConfig, ...] = ()
    feeds: FeedsConfig | None = None
    triage: TriageConfig = TriageConfig()

    @model_validator(mode="after")
    def _unique_names(self) -> Settings:
        if not (self.tenants or self.sensors or self.consoles or self.feeds):
            raise ValueError(
                "nothing to collect: configure at least one [[tenants]], [[sensors]] or "
                "[[consoles]] entry, or [feeds]"
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
    keyvault_resolver: KeyVaultResolver | None = None,
) -> Settings:
    """Read, overlay and validate the config file at ``path``.

    Args:
        path: the TOML file.
        environ: the environment to read ``EPF_*`` overrides and ``env:`` secrets from.
        overrides: dotted keys set last (the CLI's ``--db`` is ``{"store.path": ...}``).
        keyvault_resolver: reads the ``keyvault:`` references
            (``identity.keyvault.resolve_references``); without one, a reference is an error.

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
        data,
        base_dir=path.parent,
        source=str(path),
        environ=environ,
        overrides=overrides,
        keyvault_resolver=keyvault_resolver,
    )


def settings_from_mapping(
    data: Mapping[str, Any],
    *,
    base_dir: Path,
    source: str = "config",
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    keyvault_resolver: KeyVaultResolver | None = None,
) -> Settings:
    """Validate an already parsed config mapping (see :func:`load_settings`)."""
    env = os.environ if environ is None else environ
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: (top level): expected a table, got {type(data).__name__}")
    merged = _apply_env(_deep_copy(data), env, source)
    # Default paths are relative to the config file too, not to wherever epf runs from.
    if isinstance(merged.get("store", {}), dict):
        merged.setdefault("store", {}).setdefault("path", "epf.duckdb")
    if isinstance(merged.get("state", {}), dict):
        merged.setdefault("state", {}).setdefault("dir", ".epf-state")
    for dotted, value in (overrides or {}).items():
        _set_path(merged, dotted.split("."), value, source)
    vault_refs = _resolve_in_place(merged, base_dir, env, source)
    if vault_refs:
        _resolve_keyvault(merged, vault_refs, source, keyvault_resolver)
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


_VaultRef = tuple[dict[str, Any], str, str, str]  # (node, key, location, reference)


def _resolve_in_place(
    data: Any, base_dir: Path, env: Mapping[str, str], source: str
) -> list[_VaultRef]:
    """Turn path strings into absolute paths and secret references into Secrets; return the
    ``keyvault:`` references, left in place."""
    # keyvault: references wait until the walk is done: the [keyvault] identity reads them.
    vault_refs: list[_VaultRef] = []

    def walk(node: Any, loc: str) -> None:
        if isinstance(node, dict):
            for key, value in list(node.items()):
                here = f"{loc}.{key}" if loc else key
                if key in _SECRET_KEYS and isinstance(value, str) and value.startswith(_KV):
                    vault_refs.append((node, key, here, value))
                elif key in _SECRET_KEYS and isinstance(value, str):
                    node[key] = _resolve_secret(value, here, base_dir, env, source)
                elif key in _PATH_KEYS and isinstance(value, str | Path):
                    node[key] = _absolute(value, base_dir, f"{source}: {here}")
                else:
                    walk(value, here)
        elif isinstance(node, list):
            for i, item in enumerate(node):
                walk(item, f"{loc}[{i}]")

    walk(data, "")
    return vault_refs


def _resolve_keyvault(
    data: dict[str, Any],
    refs: list[_VaultRef],
    source: str,
    resolver: KeyVaultResolver | None,
) -> None:
    """Read every ``keyvault:`` reference with ``resolver`` and put its Secret in place."""
    for _, _, loc, _ in refs:
        if loc.startswith("keyvault."):
            raise ConfigError(
                f"{source}: {loc}: the Key Vault credential cannot come from Key Vault; "
                "use env:, file: or a literal"
            )
    first = refs[0][2]
    if not isinstance(data.get("keyvault"), dict):
        raise ConfigError(
            f"{source}: {first}: a keyvault: reference needs a [keyvault] section "
            "(the identity that reads the vault)"
        )
    try:
        vault = KeyVaultOnly.model_validate(data).keyvault
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source)) from None
    if resolver is None:
        raise ConfigError(
            f"{source}: {first}: keyvault: references are not read here "
            "(the loader was given no keyvault_resolver)"
        )
    try:
        fetched = resolver(vault, [text for _, _, _, text in refs])
    except SecretReferenceError as exc:
        where = ", ".join(loc for _, _, loc, text in refs if text in exc.references)
        raise ConfigError(f"{source}: {where or exc.setting}: {exc}") from None
    for node, key, _, text in refs:
        node[key] = fetched[text]


def _absolute(value: str | Path, base_dir: Path, where: str) -> Path:
    """``value`` as an absolute path, relative to ``base_dir``, ``~`` expanded."""
    try:
        return (base_dir / Path(value).expanduser()).resolve()
    except RuntimeError:  # ~user, for a user this host does not know
        raise ConfigError(f"{where}: the home folder of {str(value)[:80]!r} is unknown") from None
    except (OSError, ValueError) as exc:  # a NUL byte, a loop of links
        raise ConfigError(f"{where}: not a usable path ({exc})") from None


def _resolve_secret(
    ref: str, loc: str, base_dir: Path, env: Mapping[str, str], source: str
) -> Secret:
    if ref.startswith("env:"):
        name = ref[4:]
        if not name or name not in env or not env[name]:
            raise ConfigError(f"{source}: {loc}: environment variable {name!r} is not set")
        return Secret(env[name], source=ref)
    if ref.startswith("file:"):
        file = _absolute(ref[5:], base_dir, f"{source}: {loc}: secret file")
        try:
            value = file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(
                f"{source}: {loc}: cannot read secret file {str(file)!r}: {exc.strerror}"
            ) from None
        except UnicodeDecodeError:
            raise ConfigError(
                f"{source}: {loc}: secret file {str(file)!r} is not UTF-8 text"
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

"""The collector config (TOML) that syncs from a running emulator.

Owns the text ``Emulator.write_config`` writes: the Defender tenants (one ``[[tenants]]`` entry
each, with its own client secret or certificate path, all pointing at the one emulator), the
Defender for IoT appliances (``[[sensors]]`` and
``[[consoles]]``, each trusting its self-signed certificate by fingerprint or as a CA bundle)
and the Sentinel output (``[sentinel]`` with one ``[[sentinel.dcrs]]`` entry per emulated DCR:
a DCR declares at most 10 streams, so no single DCR takes every table) and, when asked, the
threat feeds (``[feeds]``, the emulator's mirrors), each pointed at the emulator. Writes the documented config keys as text; reads no collector code.

Imports only ``iot.state`` (the appliances' facts) and ``feeds.paths`` (the mirrors' paths) of
the emulator: it shares no code with the
collector.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal, NamedTuple

from epf_emulator.feeds.paths import FEED_PATHS
from epf_emulator.iot.state import IotAppliance

__all__ = ["ConfigTenant", "collector_config", "iot_config_blocks"]


class ConfigTenant(NamedTuple):
    """One ``[[tenants]]`` entry: its name and app credentials (``certificate_path`` is
    written for ``credential="certificate"``)."""

    name: str
    tenant_id: str
    client_id: str
    client_secret: str
    certificate_path: Path | None


def collector_config(
    *,
    base_url: str,
    tenants: Sequence[ConfigTenant],
    credential: Literal["secret", "certificate"],
    ca_path: Path,
    dcrs: Sequence[tuple[str, Sequence[str]]],
    appliances: Sequence[IotAppliance],
    iot: Literal["pin", "ca", "none"],
    mde: bool,
    sentinel: bool,
    feeds: bool = False,
) -> str:
    """The config text, as ``Emulator.write_config`` documents it; ``dcrs`` are the
    (immutable id, tables) of each DCR. The Sentinel output uses the first tenant's app.

    Raises:
        ValueError: ``credential`` or ``iot`` is none of its choices, or a certificate
            credential lacks a tenant's ``certificate_path``.
    """
    if credential not in ("secret", "certificate"):
        raise ValueError(f"credential must be 'secret' or 'certificate': {credential!r}")
    if iot not in ("pin", "ca", "none"):
        raise ValueError(f"iot must be 'pin', 'ca' or 'none': {iot!r}")
    secrets = [_secret_line(tenant, credential) for tenant in tenants]
    ca_bundle = str(ca_path.resolve())
    what = "tenant" if len(tenants) == 1 else f"{len(tenants)} tenants"
    text = f"# Written by `epf emulator`: syncs from the emulated {what} at {base_url}\n"
    for index, tenant in enumerate(tenants if mde else ()):
        text += (
            ("\n" if index else "") + "[[tenants]]\n"
            f"name = {_toml(tenant.name)}\n"
            f"tenant_id = {_toml(tenant.tenant_id)}\n"
            f"client_id = {_toml(tenant.client_id)}\n"
            + secrets[index]
            + f"authority_host = {_toml(base_url)}\n"
            f"mde_base_url = {_toml(base_url)}\n"
            f"graph_base_url = {_toml(base_url + '/v1.0')}\n"
            f"ca_bundle = {_toml(ca_bundle)}\n"
        )
    if appliances and iot != "none":
        text += iot_config_blocks(appliances, trust="ca" if iot == "ca" else "pin")
    if sentinel:
        home = tenants[0]
        text += (
            "[sentinel]\n"
            f"endpoint = {_toml(base_url)}\n"
            f"tenant_id = {_toml(home.tenant_id)}\n"
            f"client_id = {_toml(home.client_id)}\n"
            + secrets[0]
            + f"authority_host = {_toml(base_url)}\n"
            f"ca_bundle = {_toml(ca_bundle)}\n"
        )
        for immutable_id, tables in dcrs:
            listed = ", ".join(_toml(t) for t in tables)
            text += (
                f"\n[[sentinel.dcrs]]\nimmutable_id = {_toml(immutable_id)}\ntables = [{listed}]\n"
            )
    if feeds:
        text += f"\n[feeds]\nca_bundle = {_toml(ca_bundle)}\n"
        for feed, path in FEED_PATHS.items():
            text += f"\n[feeds.{feed}]\nurl = {_toml(base_url + path)}\n"
    return text


def iot_config_blocks(appliances: Sequence[IotAppliance], *, trust: Literal["pin", "ca"]) -> str:
    """The collector config's ``[[sensors]]`` and ``[[consoles]]`` blocks (TOML).

    Each appliance's self-signed certificate is trusted by its SHA-256 fingerprint (``pin``)
    or as the CA bundle itself (``ca``).
    """
    text = ""
    for appliance in appliances:
        if trust == "pin":
            line = f"certificate_fingerprint = {_toml(appliance.fingerprint_sha256)}\n"
        else:
            line = f"ca_bundle = {_toml(str(appliance.certificate_path.resolve()))}\n"
        table = "sensors" if appliance.kind == "sensor" else "consoles"
        text += (
            f"\n[[{table}]]\n"
            f"name = {_toml(appliance.name)}\n"
            f"url = {_toml(appliance.base_url)}\n"
            f"token = {_toml(appliance.token)}\n" + line
        )
    return text


def _secret_line(tenant: ConfigTenant, credential: str) -> str:
    if credential == "secret":
        return f"client_secret = {_toml(tenant.client_secret)}\n"
    if tenant.certificate_path is None:
        raise ValueError(f"tenant {tenant.name}: a certificate credential needs its certificate")
    return f"certificate_path = {_toml(str(tenant.certificate_path.resolve()))}\n"


def _toml(value: str) -> str:
    """A TOML basic string."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'

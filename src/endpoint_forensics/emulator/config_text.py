"""The collector config (TOML) that syncs from a running emulator: the Defender tenant, the
Defender for IoT appliances and the Sentinel output, each pointed at the emulator (the Sentinel
output with one ``[[sentinel.dcrs]]`` entry per emulated DCR: a DCR declares at most 10 streams,
so no single DCR takes every table).

Writes the documented config keys as text; imports nothing of the collector.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from .iot_state import IotAppliance, iot_config_blocks

__all__ = ["collector_config"]


def collector_config(
    *,
    base_url: str,
    tenant_id: str,
    client_id: str,
    secret: tuple[str, str],
    ca_path: Path,
    dcrs: Sequence[tuple[str, Sequence[str]]],
    appliances: Sequence[IotAppliance],
    iot_trust: Literal["pin", "ca"],
    mde: bool,
    sentinel: bool,
) -> str:
    """The config text; ``secret`` is (``client_secret`` or ``certificate_path``, its value),
    ``dcrs`` the (immutable id, tables) of each DCR."""
    credential = f"{secret[0]} = {_toml(secret[1])}\n"
    text = f"# Written by `epf emulator`: syncs from the emulated tenant at {base_url}\n"
    if mde:
        text += (
            "[[tenants]]\n"
            'name = "emulated"\n'
            f"tenant_id = {_toml(tenant_id)}\n"
            f"client_id = {_toml(client_id)}\n"
            + credential
            + f"authority_host = {_toml(base_url)}\n"
            f"mde_base_url = {_toml(base_url)}\n"
            f"graph_base_url = {_toml(base_url + '/v1.0')}\n"
            f"ca_bundle = {_toml(str(ca_path))}\n"
        )
    if appliances:
        text += iot_config_blocks(appliances, trust=iot_trust)
    if sentinel:
        text += (
            "[sentinel]\n"
            f"endpoint = {_toml(base_url)}\n"
            f"tenant_id = {_toml(tenant_id)}\n"
            f"client_id = {_toml(client_id)}\n"
            + credential
            + f"authority_host = {_toml(base_url)}\n"
            f"ca_bundle = {_toml(str(ca_path))}\n"
        )
        for immutable_id, tables in dcrs:
            listed = ", ".join(_toml(t) for t in tables)
            text += (
                f"\n[[sentinel.dcrs]]\nimmutable_id = {_toml(immutable_id)}\ntables = [{listed}]\n"
            )
    return text


def _toml(value: str) -> str:
    """A TOML basic string."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'

"""``epf emulator``: serve the emulated tenant, and the options it shares with ``epf demo``.

Imports ``epf_emulator`` only inside the command, after checking that the ``demo`` extra is
installed.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer

from endpoint_forensics.cli.forensics import parse_time
from endpoint_forensics.errors import ConfigError

__all__ = ["Devices", "Seed", "emulator"]

# The options `epf demo` and `epf emulator` share, and those of `epf emulator` alone.
Devices = Annotated[int, typer.Option(min=0, help="Devices in the emulated fleet.")]
Seed = Annotated[int, typer.Option(help="Seed of the emulated fleet.")]
_Host = Annotated[str, typer.Option(help="Address to listen on (loopback by default).")]
_Port = Annotated[int, typer.Option(min=0, max=65535, help="Port; 0 picks a free one.")]
_WriteConfig = Annotated[
    Path | None,
    typer.Option("--write-config", help="Write a config file that syncs from this emulator."),
]
_Faults = Annotated[
    str | None,
    typer.Option("--faults", help='Inject faults: "STATUS@PATH[*TIMES][+AFTER]", comma-separated.'),
]
_TokenLifetime = Annotated[int, typer.Option(min=1, help="Access token lifetime in seconds.")]
_StateDir = Annotated[
    Path | None,
    typer.Option("--state-dir", help="Keep the CA and export files here (default: a temp dir)."),
]
_IotSensors = Annotated[
    int,
    typer.Option(
        "--iot-sensors", min=0, max=16, help="Defender for IoT sensors (0: none, no console)."
    ),
]
_IotEventsPerHour = Annotated[
    float,
    typer.Option("--iot-events-per-hour", min=0, help="Events each sensor records an hour."),
]
_Tenants = Annotated[
    int,
    typer.Option(
        "--tenants",
        min=1,
        max=10_000,
        help="Tenants served by this one emulator, each with --devices devices of its own"
        " (built on its first request); the IoT sensors are the first tenant's.",
    ),
]
_Sentinel = Annotated[
    bool,
    typer.Option(
        "--sentinel/--no-sentinel",
        help="Whether --write-config sends to the emulated Sentinel (Logs Ingestion API).",
    ),
]


def emulator(
    devices: Devices = 2000,
    seed: Seed = 1,
    tenants: _Tenants = 1,
    host: _Host = "127.0.0.1",
    port: _Port = 8443,
    write_config: _WriteConfig = None,
    faults: _Faults = None,
    token_lifetime: _TokenLifetime = 3599,
    state_dir: _StateDir = None,
    iot_sensors: _IotSensors = 2,
    iot_events_per_hour: _IotEventsPerHour = 120.0,
    sentinel: _Sentinel = True,
    start: Annotated[
        str | None,
        typer.Option(
            "--start",
            help="Where the emulated clock starts, ISO 8601 (default: the world's anchor,"
            " 2026-11-05T00:00:00Z; from 90 days before it to 14 days after).",
        ),
    ] = None,
) -> None:
    """Serve an emulated Defender tenant (Entra token endpoint, MDE API, advanced hunting) and
    Defender for IoT sensors with a management console; with --tenants, many tenants on one
    listener, each chosen by the token endpoint's URL or the access token's tenant."""
    from endpoint_forensics.demo import require_demo_extra

    require_demo_extra("epf emulator")  # before the emulator's web stack is imported
    from epf_emulator import Emulator, EmulatorSettings, parse_faults

    try:
        fault_list = parse_faults(faults) if faults else ()
    except ValueError as exc:
        raise ConfigError(f"--faults: {exc}") from None
    settings = EmulatorSettings(
        devices=devices,
        seed=seed,
        tenants=tenants,
        host=host,
        port=port,
        faults=fault_list,
        token_lifetime_seconds=token_lifetime,
        state_dir=state_dir.resolve() if state_dir else None,
        iot_sensors=iot_sensors,
        iot_events_per_hour=iot_events_per_hour,
    )
    if start:
        settings = replace(settings, start=parse_time(start, "--start"))
    emu = Emulator(settings).start()
    try:
        _announce_emulator(emu, write_config=write_config, sentinel=sentinel)
        emu.serve_forever()
    finally:
        emu.stop()


def _announce_emulator(emu: Any, *, write_config: Path | None, sentinel: bool) -> None:
    """Print where the emulator serves and how to reach it; write its config if asked."""
    tenants = emu.tenants
    if len(tenants) == 1:
        typer.echo(f"Emulated Defender tenant at {emu.base_url}", err=True)
        typer.echo(f"  tenant id: {emu.tenant_id}\n  client id: {emu.client_id}", err=True)
    else:
        typer.echo(f"{len(tenants)} emulated Defender tenants at {emu.base_url}", err=True)
        typer.echo(f"  first:     {tenants[0].name} tenant id {tenants[0].tenant_id}", err=True)
    typer.echo(f"  CA bundle: {emu.ca_path}", err=True)
    typer.echo(f"  truth:     {emu.base_url}/_emulator/stats", err=True)
    if len(tenants) > 1:
        typer.echo(f"             {emu.base_url}/_emulator/stats?tenant=<id or name>", err=True)
    # The emulated world lives on its own calendar: a sync collects as of its clock.
    clock = emu.now.strftime("%Y-%m-%dT%H:%M:%SZ")
    typer.echo(f"  clock:     {clock} (epf sync --now {clock})", err=True)
    for iot in emu.iot_appliances:  # Defender for IoT: self-signed, raw-token auth
        typer.echo(f"  IoT {iot.name}: {iot.base_url}  token {iot.token}", err=True)
        typer.echo(f"    certificate sha256 {iot.fingerprint_sha256}", err=True)
    if write_config:
        # Written aside and renamed, so whoever waits for the file never reads half of it.
        partial = write_config.with_name(write_config.name + ".partial")
        emu.write_config(partial, sentinel=sentinel)
        partial.replace(write_config)
        typer.echo(
            f"  config:    {write_config} (epf sync --config {write_config} --now {clock})",
            err=True,
        )
    elif len(tenants) == 1:
        typer.echo(f"  client secret: {emu.client_secret}", err=True)
    else:  # one line a tenant: name, tenant id, client id, secret
        for tenant in tenants:
            typer.echo(
                f"  {tenant.name} {tenant.tenant_id} {tenant.client_id} {tenant.client_secret}",
                err=True,
            )
    typer.echo("Ctrl-C stops it.", err=True)

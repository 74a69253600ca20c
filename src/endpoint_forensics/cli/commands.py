"""The ``epf`` command line: parse, call one library function, render. Nothing else.

Data goes to stdout; progress and logs to stderr. An expected failure (``EpfError``) is one line
on stderr and an exit code: 1 a failed run, 2 usage or config, 3 a partial sync. ``--debug``
shows the traceback.
May import every layer below it, and ``epf_emulator`` only inside the ``epf emulator`` command
(through ``demo`` otherwise), after checking that the ``demo`` extra is installed.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer

from endpoint_forensics import __version__
from endpoint_forensics.cli.deploy import deploy_app
from endpoint_forensics.cli.render import (
    Progress,
    cell,
    out,
    render_demo,
    render_outcomes,
    render_table,
)
from endpoint_forensics.errors import ConfigError, EpfError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Endpoint Forensics: Defender endpoint posture history for investigators.",
)
app.add_typer(deploy_app, name="deploy")

_state: dict[str, Any] = {"debug": False}
EXIT_PARTIAL = 3


class OutputFormat(StrEnum):
    TABLE = "table"
    JSON = "json"
    CSV = "csv"


class TablesFormat(StrEnum):
    TABLE = "table"
    JSON = "json"
    DDL = "ddl"


def main() -> None:
    """Console entry point."""
    try:
        app()
    except EpfError as exc:
        if _state["debug"]:
            raise
        typer.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)


@app.callback()
def _root(
    ctx: typer.Context,
    debug: Annotated[
        bool, typer.Option("--debug", help="Show tracebacks and request lines.")
    ] = False,
    verbose: Annotated[
        bool, typer.Option("-v", "--verbose", help="Log one line per dataset.")
    ] = False,
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    if version:
        typer.echo(f"epf {__version__}")
        raise typer.Exit()
    _state["debug"] = debug
    if ctx.invoked_subcommand in ("sync", "demo"):
        from endpoint_forensics.runtime import bound_memory

        bound_memory()  # before DuckDB or the HTTP client start threads
    level = logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(
        level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    # The Azure SDK logs every refused token at WARNING; we report it once, ourselves.
    logging.getLogger("azure").setLevel(logging.DEBUG if debug else logging.CRITICAL)
    logging.getLogger("httpx").setLevel(logging.DEBUG if debug else logging.WARNING)


@app.command()
def tables(
    format: Annotated[
        TablesFormat, typer.Option("--format", "-f", help="table, json or ddl.")
    ] = TablesFormat.TABLE,
) -> None:
    """Print the table registry: every table, its columns with KQL types, key and source."""
    from endpoint_forensics.tables import TABLES
    from endpoint_forensics.tables.datasets import filled_by

    if format is TablesFormat.JSON:
        described = [
            {**t.as_dict(), "datasets": [d.as_dict() for d in filled_by(t.name)]}
            for t in TABLES.values()
        ]
        out(orjson.dumps(described, option=orjson.OPT_INDENT_2).decode())
        return
    if format is TablesFormat.DDL:
        out("\n\n".join(t.duckdb_ddl() for t in TABLES.values()))
        return
    for t in TABLES.values():
        profile = "" if t.profile == "core" else f"; only with output.{t.profile}"
        out(f"{t.name}  (source {t.source}; key {', '.join(t.key)}{profile})")
        out(f"  {t.description}")
        for d in filled_by(t.name):
            every = f"every {d.interval_hours:g} h" if d.interval_hours else "every run"
            out(f"  filled by the {d.kind} dataset {d.name} ({every})")
        for c in t.columns:
            out(f"    {c.name:<28} {c.type.value:<9} {c.description}")
        out("")


@app.command()
def sync(
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", "-c", help="Config file (TOML). Default: $EPF_CONFIG or ./epf.toml."
        ),
    ] = None,
    db: Annotated[
        Path | None, typer.Option("--db", help="Workspace file; overrides store.path.")
    ] = None,
) -> None:
    """Run one collection of every configured dataset into the workspace."""
    from endpoint_forensics.pipeline.run import run_sync
    from endpoint_forensics.sinks import close_sinks, open_sinks

    settings = _settings(config, db)
    sinks = open_sinks(settings)
    try:
        with Progress() as progress:
            summary = run_sync(settings, sinks, progress=progress)
    finally:
        close_sinks(sinks)
    render_outcomes(summary)
    _finish(summary)


@app.command()
def run(
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", "-c", help="Config file (TOML). Default: $EPF_CONFIG or ./epf.toml."
        ),
    ] = None,
    db: Annotated[
        Path | None, typer.Option("--db", help="Workspace file; overrides store.path.")
    ] = None,
    every: Annotated[
        float, typer.Option("--every", min=0, help="Minutes from one run's start to the next.")
    ] = 5.0,
    runs: Annotated[
        int, typer.Option("--runs", min=0, help="Stop after this many (0: never).")
    ] = 0,
) -> None:
    """Repeat the collection on a schedule until stopped (Ctrl-C or SIGTERM between runs)."""
    import signal

    from endpoint_forensics.pipeline.scheduler import run_on_schedule

    settings = _settings(config, db)

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)

    def report(summary: Any) -> None:
        render_outcomes(summary)
        for line in summary.errors():
            typer.echo(f"error: {line}", err=True)

    summaries = run_on_schedule(settings, every_seconds=every * 60, runs=runs, on_summary=report)
    if summaries and summaries[-1].exit_code:
        raise typer.Exit(summaries[-1].exit_code)


# The options `epf demo` and `epf emulator` share, and those of `epf emulator` alone.
_Devices = Annotated[int, typer.Option(min=0, help="Devices in the emulated fleet.")]
_Seed = Annotated[int, typer.Option(help="Seed of the emulated fleet.")]
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
_Sentinel = Annotated[
    bool,
    typer.Option(
        "--sentinel/--no-sentinel",
        help="Whether --write-config sends to the emulated Sentinel (Logs Ingestion API).",
    ),
]


@app.command()
def demo(
    devices: _Devices = 2000,
    seed: _Seed = 1,
    db: Annotated[Path, typer.Option(help="Workspace file to sync into.")] = Path(
        "epf-demo.duckdb"
    ),
    no_serve: Annotated[
        bool, typer.Option("--no-serve", help="Do not serve the dashboard afterwards.")
    ] = False,
) -> None:
    """Start an emulated Defender tenant, sync it into a local workspace, print what it found."""
    from endpoint_forensics.demo import require_demo_extra, run_demo

    require_demo_extra("epf demo")
    typer.echo(f"Emulating a tenant of {devices:,} devices (seed {seed}) ...", err=True)
    with Progress() as progress:
        result = run_demo(devices=devices, seed=seed, db=db, progress=progress)
    summary = result.summary
    render_demo(result, db, _me())
    if not no_serve:
        out("(The dashboard is not built yet; nothing to serve.)")
    if not (result.matches_truth and result.sentinel_matches_store) and summary.exit_code == 0:
        raise typer.Exit(1)
    _finish(summary)


@app.command()
def emulator(
    devices: _Devices = 2000,
    seed: _Seed = 1,
    host: _Host = "127.0.0.1",
    port: _Port = 8443,
    write_config: _WriteConfig = None,
    faults: _Faults = None,
    token_lifetime: _TokenLifetime = 3599,
    state_dir: _StateDir = None,
    iot_sensors: _IotSensors = 2,
    iot_events_per_hour: _IotEventsPerHour = 120.0,
    sentinel: _Sentinel = True,
) -> None:
    """Serve an emulated Defender tenant (Entra token endpoint, MDE API, advanced hunting) and
    Defender for IoT sensors with a management console."""
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
        host=host,
        port=port,
        faults=fault_list,
        token_lifetime_seconds=token_lifetime,
        state_dir=state_dir.resolve() if state_dir else None,
        iot_sensors=iot_sensors,
        iot_events_per_hour=iot_events_per_hour,
    )
    emu = Emulator(settings).start()
    try:
        _announce_emulator(emu, write_config=write_config, sentinel=sentinel)
        emu.serve_forever()
    finally:
        emu.stop()


def _announce_emulator(emu: Any, *, write_config: Path | None, sentinel: bool) -> None:
    """Print where the emulator serves and how to reach it; write its config if asked."""
    typer.echo(f"Emulated Defender tenant at {emu.base_url}", err=True)
    typer.echo(f"  tenant id: {emu.tenant_id}\n  client id: {emu.client_id}", err=True)
    typer.echo(f"  CA bundle: {emu.ca_path}", err=True)
    typer.echo(f"  truth:     {emu.base_url}/_emulator/stats", err=True)
    for iot in emu.iot_appliances:  # Defender for IoT: self-signed, raw-token auth
        typer.echo(f"  IoT {iot.name}: {iot.base_url}  token {iot.token}", err=True)
        typer.echo(f"    certificate sha256 {iot.fingerprint_sha256}", err=True)
    if write_config:
        # Written aside and renamed, so whoever waits for the file never reads half of it.
        partial = write_config.with_name(write_config.name + ".partial")
        emu.write_config(partial, sentinel=sentinel)
        partial.replace(write_config)
        typer.echo(f"  config:    {write_config} (epf sync --config {write_config})", err=True)
    else:
        typer.echo(f"  client secret: {emu.client_secret}", err=True)
    typer.echo("Ctrl-C stops it.", err=True)


@app.command()
def query(
    query_text: Annotated[
        str, typer.Argument(metavar="QUERY", help="KQL (default) or SQL with --sql.")
    ],
    db: Annotated[Path, typer.Option(help="Workspace file.")] = Path("epf.duckdb"),
    sql: Annotated[bool, typer.Option("--sql", help="The query is DuckDB SQL, not KQL.")] = False,
    format: Annotated[
        OutputFormat, typer.Option("--format", "-f", help="table, json or csv.")
    ] = OutputFormat.TABLE,
) -> None:
    """Query the workspace in KQL (as in Sentinel) or SQL."""
    from endpoint_forensics.workspace.store import run_query

    result = run_query(db, query_text, sql=sql)
    records = result.records()
    if format is OutputFormat.JSON:
        out(orjson.dumps(records, option=orjson.OPT_INDENT_2).decode())
    elif format is OutputFormat.CSV:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(result.columns)
        for rec in records:
            writer.writerow([cell(v) for v in rec.values()])
        out(buf.getvalue().rstrip("\n"))
    else:
        render_table(result.columns, [[cell(v) for v in rec.values()] for rec in records])


@app.command()
def doctor(
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", "-c", help="Config file (TOML). Default: $EPF_CONFIG or ./epf.toml."
        ),
    ] = None,
) -> None:
    """Check the config, every credential, endpoint and permission; say what to fix."""
    from endpoint_forensics.doctor.run import exit_code, render, run_doctor

    settings = _settings(config, None)
    # azure-identity logs refused credentials itself; the doctor says it once, with the fix.
    logging.getLogger("azure").setLevel(logging.CRITICAL)
    checks = run_doctor(settings)
    typer.echo(render(checks), nl=False)
    raise typer.Exit(exit_code(checks))


def _settings(config: Path | None, db: Path | None) -> Any:
    """The config at ``config`` (default $EPF_CONFIG or ./epf.toml), ``--db`` applied."""
    from endpoint_forensics.config import load_settings
    from endpoint_forensics.identity.keyvault import resolve_references

    path = config or Path(os.environ.get("EPF_CONFIG", "epf.toml"))
    overrides = {"store.path": str(db.resolve())} if db else None
    return load_settings(path, overrides=overrides, keyvault_resolver=resolve_references)


def _finish(summary: Any) -> None:
    for line in summary.errors():
        typer.echo(f"error: {line}", err=True)
    code = summary.exit_code
    if code:
        raise typer.Exit(code)


def _me() -> str:
    """How the user ran epf (``.venv/bin/epf`` after ``make demo``), to suggest the next command."""
    argv0 = sys.argv[0]
    return argv0 if argv0.endswith("epf") else "epf"

"""The ``epf`` command line: parse, call one library function, render. Nothing else.

Data goes to stdout; progress and logs to stderr. An expected failure (``EpfError``) is one line
on stderr and an exit code: 1 a failed run, 2 usage or config, 3 a partial sync. ``--debug``
shows the traceback.
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
from endpoint_forensics.errors import ConfigError, EpfError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Endpoint Forensics: Defender endpoint posture history for investigators.",
)

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

    if format is TablesFormat.JSON:
        _out(
            orjson.dumps(
                [t.as_dict() for t in TABLES.values()], option=orjson.OPT_INDENT_2
            ).decode()
        )
        return
    if format is TablesFormat.DDL:
        _out("\n\n".join(t.duckdb_ddl() for t in TABLES.values()))
        return
    for t in TABLES.values():
        _out(f"{t.name}  (source {t.source}; key {', '.join(t.key)})")
        _out(f"  {t.description}")
        for c in t.columns:
            _out(f"    {c.name:<28} {c.type.value:<9} {c.description}")
        _out("")


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
    from endpoint_forensics.config import load_settings
    from endpoint_forensics.pipeline import run_sync
    from endpoint_forensics.sinks import close_sinks, open_sinks

    path = config or Path(os.environ.get("EPF_CONFIG", "epf.toml"))
    overrides = {"store.path": str(db.resolve())} if db else None
    settings = load_settings(path, overrides=overrides)
    sinks = open_sinks(settings)
    try:
        with _progress() as progress:
            summary = run_sync(settings, sinks, progress=progress)
    finally:
        close_sinks(sinks)
    _render_outcomes(summary)
    _finish(summary)


@app.command()
def demo(
    devices: Annotated[int, typer.Option(min=0, help="Devices in the emulated fleet.")] = 2000,
    seed: Annotated[int, typer.Option(help="Seed of the emulated fleet.")] = 1,
    db: Annotated[Path, typer.Option(help="Workspace file to sync into.")] = Path(
        "epf-demo.duckdb"
    ),
    no_serve: Annotated[
        bool, typer.Option("--no-serve", help="Do not serve the dashboard afterwards.")
    ] = False,
) -> None:
    """Start an emulated Defender tenant, sync it into a local workspace, print what it found."""
    from endpoint_forensics.demo import run_demo

    typer.echo(f"Emulating a tenant of {devices:,} devices (seed {seed}) ...", err=True)
    with _progress() as progress:
        result = run_demo(devices=devices, seed=seed, db=db, progress=progress)
    summary = result.summary
    _out(
        f"Synced the emulated tenant into {db} in {summary.wall_seconds:.1f} s (run {summary.run_id})"
    )
    _render_outcomes(summary)
    _out("")
    _out("Devices per platform (this snapshot):")
    for rec in result.by_platform:
        _out(f"  {rec['OSPlatform'] or '(none)':<20} {rec['Devices']:>8,}")
    _out("")
    _out("Agent health tests failing (devices):")
    for rec in result.failing_tests:
        _out(f"  {rec['Test']:<28} {rec['FailingDevices']:>8,}")
    if result.ot_sensors:
        _out("")
        _out("Defender for IoT sensors: OT devices (also in MDE), critical CVEs, console state:")
        for rec in result.ot_sensors:
            _out(
                f"  {rec['Sensor']:<20} {rec['OtDevices']:>6,} ({rec['AlsoInMde']:,})"
                f"  {rec['CriticalCves']:>6,}  {rec['ConsoleState'] or '-'}"
            )
    _out("")
    verdict = "yes" if result.matches_truth else "NO"
    detail = ", ".join(f"{t} {result.synced.get(t, 0):,}/{n:,}" for t, n in result.truth.items())
    _out(f"Row counts equal the emulator's truth: {verdict} ({detail})")
    if result.ingested:
        same = "yes" if result.sentinel_matches_store else "NO"
        rows = sum(result.ingested.values())
        _out(f"Sentinel (emulated Logs Ingestion API) received the same rows: {same} ({rows:,})")
    _out(f'Next: {_me()} query --db {db} "EPF_AgentHealth_CL | summarize count() by OSFamily"')
    if not no_serve:
        _out("(The dashboard is not built yet; nothing to serve.)")
    if not (result.matches_truth and result.sentinel_matches_store) and summary.exit_code == 0:
        raise typer.Exit(1)
    _finish(summary)


@app.command()
def emulator(
    devices: Annotated[int, typer.Option(min=0, help="Devices in the emulated fleet.")] = 2000,
    seed: Annotated[int, typer.Option(help="Seed of the emulated fleet.")] = 1,
    host: Annotated[
        str, typer.Option(help="Address to listen on (loopback by default).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port; 0 picks a free one.")] = 8443,
    write_config: Annotated[
        Path | None,
        typer.Option("--write-config", help="Write a config file that syncs from this emulator."),
    ] = None,
    faults: Annotated[
        str | None,
        typer.Option(
            "--faults", help='Inject faults: "STATUS@PATH[*TIMES][+AFTER]", comma-separated.'
        ),
    ] = None,
    token_lifetime: Annotated[
        int, typer.Option(min=1, help="Access token lifetime in seconds.")
    ] = 3599,
    state_dir: Annotated[
        Path | None,
        typer.Option(
            "--state-dir", help="Keep the CA and export files here (default: a temp dir)."
        ),
    ] = None,
    iot_sensors: Annotated[
        int,
        typer.Option(
            "--iot-sensors", min=0, max=16, help="Defender for IoT sensors (0: none, no console)."
        ),
    ] = 2,
    iot_events_per_hour: Annotated[
        float,
        typer.Option("--iot-events-per-hour", min=0, help="Events each sensor records an hour."),
    ] = 120.0,
    sentinel: Annotated[
        bool,
        typer.Option(
            "--sentinel/--no-sentinel",
            help="Whether --write-config sends to the emulated Sentinel (Logs Ingestion API).",
        ),
    ] = True,
) -> None:
    """Serve an emulated Defender tenant (Entra token endpoint, MDE API, advanced hunting) and
    Defender for IoT sensors with a management console."""
    from endpoint_forensics.emulator import Emulator, EmulatorSettings, parse_faults

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
        emu.serve_forever()
    finally:
        emu.stop()


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
    from endpoint_forensics.store import run_query

    result = run_query(db, query_text, sql=sql)
    records = result.records()
    if format is OutputFormat.JSON:
        _out(orjson.dumps(records, option=orjson.OPT_INDENT_2).decode())
    elif format is OutputFormat.CSV:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(result.columns)
        for rec in records:
            writer.writerow([_cell(v) for v in rec.values()])
        _out(buf.getvalue().rstrip("\n"))
    else:
        _render_table(result.columns, [[_cell(v) for v in rec.values()] for rec in records])


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
    from endpoint_forensics.config import load_settings
    from endpoint_forensics.doctor import exit_code, render, run_doctor

    path = config or Path(os.environ.get("EPF_CONFIG", "epf.toml"))
    settings = load_settings(path)
    # azure-identity logs refused credentials itself; the doctor says it once, with the fix.
    logging.getLogger("azure").setLevel(logging.CRITICAL)
    checks = run_doctor(settings)
    typer.echo(render(checks), nl=False)
    raise typer.Exit(exit_code(checks))


deploy_app = typer.Typer(
    help="Deployment artefacts for Microsoft Sentinel, generated from the table registry.",
    no_args_is_help=True,
)
app.add_typer(deploy_app, name="deploy")


@deploy_app.command("arm")
def deploy_arm(
    out: Annotated[Path, typer.Option("--out", "-o", help="Write the template here.")],
    compat: Annotated[
        bool,
        typer.Option("--compat", help="Also the original connector's tables (output.compat)."),
    ] = False,
) -> None:
    """Write an ARM template: every custom table, the DCRs (10 streams each) and the
    Monitoring Metrics Publisher role for the collector's identity."""
    from endpoint_forensics.azure import build_arm_template

    template = build_arm_template(compat=compat)
    out.write_text(orjson.dumps(template, option=orjson.OPT_INDENT_2).decode() + "\n")
    kinds: dict[str, int] = {}
    for resource in template["resources"]:
        kinds[resource["type"]] = kinds.get(resource["type"], 0) + 1
    summary = ", ".join(f"{n} {kind.rsplit('/', 1)[-1]}" for kind, n in kinds.items())
    typer.echo(f"Wrote {out}: {summary}", err=True)
    typer.echo(
        "Deploy it with: az deployment group create -g <resource group> --template-file "
        f"{out} -p workspaceName=<workspace> collectorPrincipalId=<object id>; then copy its "
        "dataCollectionRules output into [[sentinel.dcrs]] (immutable_id, endpoint, tables).",
        err=True,
    )


def _render_outcomes(summary: Any) -> None:
    rows = [
        [
            o.tenant,
            o.dataset,
            o.table,
            f"{o.rows:,}",
            str(o.quarantined),
            o.outcome,
            f"{o.duration_seconds:.1f}",
        ]
        for o in summary.outcomes
    ]
    _render_table(["source", "dataset", "table", "rows", "quarantined", "outcome", "seconds"], rows)
    if summary.quarantine_folder:
        typer.echo(f"Malformed records were set aside in {summary.quarantine_folder}", err=True)
    for name, report in summary.deliveries.items():
        rate = report.sent_rows / report.seconds if report.seconds else 0.0
        typer.echo(
            f"{name}: sent {report.sent_rows:,} rows in {report.sent_uploads:,} uploads "
            f"({report.raw_bytes / 1e6:,.1f} MB, {rate:,.0f} rows/s)"
            + (
                f"; {report.waiting_rows:,} rows in {report.waiting_uploads:,} uploads wait "
                "in the outbox for the next run"
                if report.waiting_uploads
                else ""
            )
            + (
                f"; {report.rejected_uploads} uploads refused and set aside"
                if report.rejected_uploads
                else ""
            ),
            err=True,
        )


def _finish(summary: Any) -> None:
    for line in summary.errors():
        typer.echo(f"error: {line}", err=True)
    code = summary.exit_code
    if code:
        raise typer.Exit(code)


def _render_table(columns: list[str], rows: list[list[str]]) -> None:
    widths = [len(c) for c in columns]
    for row in rows:
        widths = [max(w, len(v)) for w, v in zip(widths, row, strict=True)]
    _out("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for row in rows:
        _out("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return orjson.dumps(value).decode()
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _me() -> str:
    """How the user ran epf (``.venv/bin/epf`` after ``make demo``), to suggest the next command."""
    argv0 = sys.argv[0]
    return argv0 if argv0.endswith("epf") else "epf"


def _out(text: str) -> None:
    typer.echo(text)


class _progress:
    """Rich progress on a terminal; nothing otherwise (logs say enough)."""

    def __enter__(self) -> Any:
        if not sys.stderr.isatty():
            return None
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self._bar = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            TextColumn("{task.completed:,} rows"),
            TimeElapsedColumn(),
            transient=True,
        )
        self._bar.start()
        self._tasks: dict[tuple[str, str], Any] = {}

        def update(tenant: str, dataset: str, rows: int, finished: bool) -> None:
            key = (tenant, dataset)
            if key not in self._tasks:
                self._tasks[key] = self._bar.add_task(f"{tenant}: {dataset}", total=None)
            self._bar.update(self._tasks[key], completed=rows)

        return update

    def __exit__(self, *exc: object) -> None:
        if sys.stderr.isatty():
            self._bar.stop()

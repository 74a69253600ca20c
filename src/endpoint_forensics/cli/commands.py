"""The ``epf`` command line: parse, call one library function, render. Nothing else.

Data goes to stdout; progress and logs to stderr. An expected failure (``EpfError``) is one line
on stderr and an exit code: 1 a failed run, 2 usage or config, 3 a partial sync. ``--debug``
shows the traceback.
May import every layer below it, and ``epf_emulator`` only inside the ``epf emulator`` command
(``cli.emulator``; through ``demo`` otherwise), after checking that the ``demo`` extra is
installed.
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
from endpoint_forensics.cli.emulator import Devices, Seed, emulator
from endpoint_forensics.cli.forensics import forensics, lifecycle, parse_time
from endpoint_forensics.cli.render import (
    Progress,
    cell,
    out,
    render_day,
    render_demo,
    render_outcomes,
    render_table,
)
from endpoint_forensics.cli.report import report_app
from endpoint_forensics.cli.serve import serve
from endpoint_forensics.cli.triage import triage
from endpoint_forensics.errors import EpfError, RunInProgress, local_failure

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Endpoint Forensics: Defender endpoint posture history for investigators.",
)
app.add_typer(deploy_app, name="deploy")
app.add_typer(report_app, name="report")
app.command()(forensics)
app.command()(lifecycle)
app.command()(triage)
app.command()(serve)
app.command()(emulator)

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
    except OSError as exc:  # this machine's disk: full, read-only, a folder not permitted
        if _state["debug"]:
            raise
        typer.echo(f"error: {local_failure(exc)}", err=True)
        sys.exit(1)
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
    now: Annotated[
        str | None,
        typer.Option(
            "--now",
            help="Collect as of this time (ISO 8601) instead of this machine's clock: an"
            " emulated tenant's time, which `epf emulator` prints.",
        ),
    ] = None,
    wait: Annotated[
        float,
        typer.Option(
            "--wait",
            min=0,
            help="Seconds to wait for another run on the same state folder to finish (default:"
            " exit at once, with code 75).",
        ),
    ] = 0.0,
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            min=1,
            help="Collect in this many processes, one (source, dataset) at a time each, with"
            " the leases and budgets of the Azure Functions fan-out (Sentinel only:"
            " store.enabled = false).",
        ),
    ] = 1,
) -> None:
    """Run one collection of every configured dataset into the workspace."""
    from endpoint_forensics.pipeline.lock import run_lock
    from endpoint_forensics.pipeline.run import run_sync
    from endpoint_forensics.sinks import close_sinks, open_sinks

    as_of = parse_time(now, "--now") if now else None
    settings = _settings(config, db)
    if workers > 1:
        with run_lock(settings.state.dir, wait_seconds=wait, command="epf sync --workers"):
            summary = _sync_in_workers(settings, workers, as_of)
        render_outcomes(summary)
        _finish(summary)
        return
    with run_lock(settings.state.dir, wait_seconds=wait, command="epf sync"):
        sinks = open_sinks(settings)
        try:
            with Progress() as progress:
                summary = run_sync(settings, sinks, progress=progress, now=as_of)
        finally:
            close_sinks(sinks)
    render_outcomes(summary)
    _finish(summary)


def _sync_in_workers(settings: Any, workers: int, as_of: Any) -> Any:
    """The units in worker processes, their outcomes as one run's summary."""
    import uuid
    from datetime import UTC, datetime

    from endpoint_forensics.azure.work_local import run_locally
    from endpoint_forensics.pipeline.runlog import RunSummary

    started = datetime.now(UTC)
    done, poisoned = run_locally(settings, workers, now=as_of)
    summary = RunSummary(run_id=str(uuid.uuid4()), time_generated=as_of or started)
    for unit in done:
        if unit.summary is not None:
            summary.outcomes.extend(unit.summary.outcomes)
            summary.problems.extend(unit.summary.problems)
    summary.problems.extend(f"failed every try: {text}" for text in poisoned)
    summary.wall_seconds = (datetime.now(UTC) - started).total_seconds()
    return summary


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

    skipped: list[str] = []

    def skip(reason: str) -> None:
        skipped.append(reason)
        typer.echo(f"warning: tick skipped: {reason}", err=True)

    summaries = run_on_schedule(
        settings, every_seconds=every * 60, runs=runs, on_summary=report, on_skipped=skip
    )
    if summaries and summaries[-1].exit_code:
        raise typer.Exit(summaries[-1].exit_code)
    if skipped and not summaries:  # not one tick could run
        raise typer.Exit(RunInProgress.exit_code)


@app.command()
def demo(
    devices: Devices = 2000,
    seed: Seed = 1,
    db: Annotated[
        Path,
        typer.Option(
            help="Workspace file to sync into; an earlier demo's there is replaced, any other"
            " file refused."
        ),
    ] = Path("epf-demo.duckdb"),
    days: Annotated[
        int, typer.Option(min=0, max=90, help="Simulated days of history, one sync a day.")
    ] = 14,
    no_serve: Annotated[
        bool, typer.Option("--no-serve", help="Do not serve the dashboard afterwards.")
    ] = False,
    sentinel: Annotated[
        bool,
        typer.Option(
            "--sentinel",
            help="Deliver every day to the emulated Sentinel too, and check it received the"
            " rows the workspace holds (slower: every row is also encoded, sent and checked).",
        ),
    ] = False,
) -> None:
    """Start an emulated Defender tenant, sync a fortnight of its history into a local
    workspace, print what it found and the forensic answer for its incident."""
    from endpoint_forensics.demo import require_demo_extra, run_demo

    require_demo_extra("epf demo")
    typer.echo(
        f"Emulating a tenant of {devices:,} devices (seed {seed}), {days} days of history ...",
        err=True,
    )
    with Progress() as progress:
        result = run_demo(
            devices=devices,
            seed=seed,
            db=db,
            days=days,
            progress=progress,
            on_day=render_day,
            sentinel=sentinel,
        )
    summary = result.summary
    render_demo(result, db, _me())
    out("")
    out(
        f"The dashboard over this workspace: {_me()} serve --db {db} (it prints the address to open)"
    )
    if not (result.matches_truth and result.sentinel_matches_store):
        raise typer.Exit(1)
    # The failures the demo stages are its story, told above; any other is an error.
    for line in result.unexpected_errors:
        typer.echo(f"error: {line}", err=True)
    if result.unexpected_errors:
        raise typer.Exit(summary.exit_code or 1)
    if not no_serve:
        serve(db=db)


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
    """Query the workspace in KQL (as in Sentinel) or SQL. With the validation extra
    installed, a KQL query is first checked with Microsoft's parser: one Sentinel would refuse
    fails here too, with Sentinel's message."""
    result = answer_query(db, query_text, sql=sql)
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


def answer_query(db: Path, query_text: str, *, sql: bool = False) -> Any:
    """``epf query``'s answer (a ``QueryResult``): a KQL query checked with Microsoft's parser
    first (when the validation extra is installed), then run on the workspace.

    Raises:
        QueryError: the query was refused or failed, said in one line.
    """
    from endpoint_forensics.analytics.functions import registry_for
    from endpoint_forensics.analytics.kql_check import sentinel_refusal
    from endpoint_forensics.workspace.store import QueryError, run_query

    refused = None if sql else sentinel_refusal(query_text)
    if refused:
        raise QueryError(refused)
    return run_query(db, query_text, sql=sql, functions=None if sql else registry_for(query_text))


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

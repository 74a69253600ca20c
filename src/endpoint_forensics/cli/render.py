"""How the ``epf`` commands print: tables, outcome summaries, the demo report, progress.

Data goes to stdout, progress and notes to stderr. Imports nothing heavy (the CLI must start
fast). May import nothing of ours.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import orjson
import typer

__all__ = [
    "Progress",
    "cell",
    "next_query",
    "out",
    "render_day",
    "render_demo",
    "render_outcomes",
    "render_table",
]

#: The query the demo report suggests next: each device's latest agent health, by OS family.


def render_outcomes(summary: Any) -> None:
    rows = [
        [
            o.tenant,
            o.dataset,
            o.table,
            f"{o.rows:,}",
            str(o.quarantined),
            f"{o.outcome} ({o.reason})" if o.reason else o.outcome,
            f"{o.duration_seconds:.1f}",
        ]
        for o in summary.outcomes
    ]
    render_table(["source", "dataset", "table", "rows", "quarantined", "outcome", "seconds"], rows)
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


def render_table(columns: list[str], rows: list[list[str]]) -> None:
    widths = [len(c) for c in columns]
    for row in rows:
        widths = [max(w, len(v)) for w, v in zip(widths, row, strict=True)]
    out("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for row in rows:
        out("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return orjson.dumps(value).decode()
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def render_day(day: int, summary: Any) -> None:
    """One line per simulated day of ``epf demo``."""
    rows = sum(o.rows for o in summary.outcomes)
    typer.echo(
        f"  day {day:>2}  {summary.time_generated:%Y-%m-%d %H:%M}Z  {rows:>9,} rows collected"
        f"  {summary.wall_seconds:5.1f} s",
        err=True,
    )


def render_demo(result: Any, db: Path, me: str) -> None:
    """What ``epf demo`` found: the last day's outcomes, platforms, failing tests, sensors, the
    truth check, and the forensic answer for the incident."""
    from endpoint_forensics.analytics.report import as_text

    summary = result.summary
    wall = sum(s.wall_seconds for s in result.days)
    out(
        f"Synced {len(result.days)} days of the emulated tenant into {db} in {wall:.1f} s;"
        f" the last day (run {summary.run_id}):"
    )
    render_outcomes(summary)
    out("")
    out("Devices per platform (at the end):")
    for rec in result.by_platform:
        out(f"  {rec['OSPlatform'] or '(none)':<20} {rec['Devices']:>8,}")
    out("")
    out("Agent health tests failing (devices):")
    for rec in result.failing_tests:
        out(f"  {rec['Test']:<28} {rec['FailingDevices']:>8,}")
    if result.ot_sensors:
        out("")
        out("Defender for IoT sensors: OT devices (also in MDE), critical CVEs, console state:")
        for rec in result.ot_sensors:
            out(
                f"  {rec['Sensor']:<20} {rec['OtDevices']:>6,} ({rec['AlsoInMde']:,})"
                f"  {rec['CriticalCves']:>6,}  {rec['ConsoleState'] or '-'}"
            )
    out("")
    verdict = "yes" if result.matches_truth else "NO"
    detail = ", ".join(f"{t} {result.synced.get(t, 0):,}/{n:,}" for t, n in result.truth.items())
    out(
        f"Equal to the emulator's truth (the first day in full, the state at the end): {verdict} ({detail})"
    )
    if result.sentinel:
        same = "yes" if result.sentinel_matches_store else "NO"
        rows = sum(result.ingested.values())
        out(f"Sentinel (emulated Logs Ingestion API) received the same rows: {same} ({rows:,})")
    if result.incidents:
        out("")
        out("What went wrong during the fortnight, on purpose, to show how failures look:")
        for line in result.incidents:
            out(f"  {line}")
        out(
            f"  The workbook's collector panels show both: {me} report fleet --db {db} --out fleet.html"
        )
    if result.triage is not None:
        triage = result.triage
        decisions = ", ".join(f"{d} {n:,}" for d, n in triage["decisions"].items())
        forensic = next((r["items"] for r in triage["bod2604"] if "forensic" in r["outcome"]), 0)
        out("")
        out(f"Triage of {triage['open']:,} open (device, CVE) at {triage['at']}: {decisions};")
        out(
            f"  {forensic:,} need a forensic investigation within 3 days (BOD 26-04):"
            f" {me} triage --db {db}"
        )
    if result.incident_answer is not None:
        incident = result.incident
        out("")
        out(
            f"The incident: {incident['DeviceName']} was hit at {incident['at']}. What was it like?"
        )
        out("")
        out(as_text(result.incident_answer).rstrip("\n"))
        out("")
        out(
            f"Next: {me} forensics --db {db} --device {incident['DeviceName']}"
            f" --at {incident['at']} --format html --out incident.html"
        )
        out(f'      {me} query --db {db} "{next_query(incident["at"])}"')


def next_query(at: str) -> str:
    """The fleet question the demo suggests next: tamper protection off at the incident."""
    return (
        f"EPF_AgentHealthAt(datetime({at})) | where TamperProtection == 'Fail'"
        " | summarize Devices = count() by OSPlatform"
    )


def out(text: str) -> None:
    typer.echo(text)


class Progress:
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

"""``epf forensics`` (the posture of one device at time T, or the devices a predicate picks)
and ``epf lifecycle`` (remediation: MTTR and SLA breaches).

Thin: parses the options, asks ``analytics`` and prints the answer in the form asked for
(``analytics.report`` renders text, Markdown and HTML).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import orjson
import typer

from endpoint_forensics.cli.render import cell, out, render_table
from endpoint_forensics.errors import ConfigError

__all__ = ["forensics", "lifecycle"]


class ForensicsFormat(StrEnum):
    TEXT = "text"
    JSON = "json"
    MARKDOWN = "markdown"
    HTML = "html"


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([dhm])$")
_UNITS = {"d": "days", "h": "hours", "m": "minutes"}


def parse_time(text: str, option: str = "--at") -> datetime:
    """An ISO 8601 time; one without a zone is UTC."""
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(
            f"{option}: {text!r} is not an ISO 8601 time (e.g. 2026-11-03T14:00:00Z)"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def parse_window(text: str) -> timedelta:
    match = _DURATION.match(text.strip())
    if match is None:
        raise ConfigError(f"--window: {text!r} is not a duration like 7d, 36h or 90m")
    return timedelta(**{_UNITS[match[2]]: float(match[1])})


def forensics(
    at: Annotated[str, typer.Option("--at", help="The time T, ISO 8601 (UTC if no zone).")],
    db: Annotated[Path, typer.Option(help="Workspace file.")] = Path("epf.duckdb"),
    device: Annotated[
        str | None, typer.Option(help="DeviceId or DeviceName (the short host name works too).")
    ] = None,
    where: Annotated[
        str | None,
        typer.Option(help='Fleet form: a KQL predicate, e.g. TamperProtection == "Fail".'),
    ] = None,
    window: Annotated[str, typer.Option(help="How far back to list changes.")] = "7d",
    format: Annotated[
        ForensicsFormat, typer.Option("--format", "-f", help="text, json, markdown or html.")
    ] = ForensicsFormat.TEXT,
    output: Annotated[
        Path | None, typer.Option("--out", help="Write to this file instead of stdout.")
    ] = None,
) -> None:
    """Was this device healthy, protected, configured and patched at T? (--device), or which
    devices matched a predicate at T (--where)."""
    from endpoint_forensics.analytics import report
    from endpoint_forensics.analytics.forensics import device_posture, fleet_posture

    when = parse_time(at)
    if (device is None) == (where is None):
        raise ConfigError("give either --device (one device) or --where (the fleet), not both")
    if where is not None:
        rows = fleet_posture(db, when, where)
        if format is ForensicsFormat.JSON:
            _emit(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode(), output)
        elif rows:
            render_table(list(rows[0]), [[cell(v) for v in r.values()] for r in rows])
        else:
            out(f"No device matched at {when.strftime('%Y-%m-%dT%H:%M:%SZ')}.")
        return
    assert device is not None
    answer = device_posture(db, device, when, window=parse_window(window))
    if format is ForensicsFormat.JSON:
        text = orjson.dumps(answer, option=orjson.OPT_INDENT_2).decode()
    elif format is ForensicsFormat.MARKDOWN:
        text = report.as_markdown(answer)
    elif format is ForensicsFormat.HTML:
        text = report.as_html(answer)
    else:
        text = report.as_text(answer)
    _emit(text, output)


def _emit(text: str, output: Path | None) -> None:
    if output is None:
        out(text.rstrip("\n"))
        return
    output.write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")
    typer.echo(f"Wrote {output}", err=True)


def lifecycle(
    db: Annotated[Path, typer.Option(help="Workspace file.")] = Path("epf.duckdb"),
    since: Annotated[
        str | None, typer.Option(help="Start of the window, ISO 8601 (default: 90 days back).")
    ] = None,
    until: Annotated[
        str | None,
        typer.Option(help="End of the window (default: the workspace's newest snapshot)."),
    ] = None,
    sla: Annotated[
        str, typer.Option(help="Days to fix by severity, e.g. Critical=7,High=30.")
    ] = "",
    json_output: Annotated[bool, typer.Option("--json", help="The report as JSON.")] = False,
) -> None:
    """Remediation lifecycle: items fixed, still open, reopened or gone with their device; mean
    and median days to fix by severity and by device group; SLA breaches."""
    from endpoint_forensics.analytics.lifecycle import SlaPolicy, history_end, lifecycle_report

    end = parse_time(until, "--until") if until else (history_end(db) or datetime.now(UTC))
    start = parse_time(since, "--since") if since else end - timedelta(days=90)
    if start >= end:
        raise ConfigError("--since must be before --until")
    try:
        policy = SlaPolicy.parse(sla)
    except ValueError as exc:
        raise ConfigError(f"--sla: {exc}") from None
    report = lifecycle_report(db, start, end, policy)
    if json_output:
        out(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
        return
    out(f"Remediation from {report['since']} to {report['until']} (SLA days {report['sla_days']})")
    for kind in ("vulnerabilities", "configurations"):
        part = report[kind]
        statuses = ", ".join(f"{n:,} {s}" for s, n in sorted(part["by_status"].items()))
        out(
            f"\n{kind.capitalize()}: {part['items']:,} items ({statuses}); {part['reopened']:,} reopened"
        )
        for title, rows in (
            ("by severity", part["mttr_by_severity"]),
            ("by device group", part["mttr_by_group"]),
        ):
            if rows:
                out(f"Days to fix {title}:")
                render_table(list(rows[0]), [[cell(v) for v in r.values()] for r in rows])
    if report["breaches"]:
        out("\nMost overdue vulnerabilities:")
        rows = report["breaches"][:20]
        render_table(list(rows[0]), [[cell(v) for v in r.values()] for r in rows])

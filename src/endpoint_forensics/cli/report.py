"""``epf report``: self-contained HTML files for a case or a review.

Thin: parses the options, asks ``web.fleet_report`` or ``web.device_report`` and says what it
wrote.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from endpoint_forensics.cli.render import out

__all__ = ["report_app"]

report_app = typer.Typer(no_args_is_help=True, help="Self-contained HTML reports (open offline).")


@report_app.command("fleet")
def fleet(
    out_path: Annotated[Path, typer.Option("--out", help="The HTML file to write.")],
    db: Annotated[Path, typer.Option(help="Workspace file.")] = Path("epf.duckdb"),
    tenant: Annotated[str, typer.Option(help="Only this Defender tenant id.")] = "*",
    group: Annotated[str, typer.Option(help="Only this device group.")] = "*",
    os_platform: Annotated[str, typer.Option("--os", help="Only this OS platform.")] = "*",
    at: Annotated[
        str | None,
        typer.Option(
            help="The fleet as the workspace stood at this time, ISO 8601 (UTC if no zone)."
        ),
    ] = None,
) -> None:
    """The Sentinel workbook's panels answered from the workspace, as one HTML file: charts,
    tables, what to do where a panel is empty, and the data's provenance."""
    from endpoint_forensics.cli.forensics import parse_time
    from endpoint_forensics.web.fleet_report import write_fleet_report

    report = write_fleet_report(
        db,
        out_path,
        {"Tenant": tenant, "Group": group, "OS": os_platform},
        at=parse_time(at) if at else None,
    )
    out(
        f"Wrote {report.path}: {report.panels} panels, {report.answered} with rows"
        + (f"; failed: {', '.join(report.failed)}" if report.failed else "")
    )


@report_app.command("device")
def device(
    device_name: Annotated[
        str,
        typer.Option("--device", help="DeviceId or DeviceName (the short host name works too)."),
    ],
    at: Annotated[str, typer.Option("--at", help="The time T, ISO 8601 (UTC if no zone).")],
    out_path: Annotated[Path, typer.Option("--out", help="The HTML file to write.")],
    db: Annotated[Path, typer.Option(help="Workspace file.")] = Path("epf.duckdb"),
    window: Annotated[str, typer.Option(help="How far back to list changes.")] = "7d",
) -> None:
    """One device's posture at T for a case file: what was missing, its snapshots, changes,
    open vulnerabilities and triage items, and where each answer came from."""
    from endpoint_forensics.cli.forensics import parse_time, parse_window
    from endpoint_forensics.web.device_report import write_device_report

    report = write_device_report(
        db, device_name, parse_time(at), out_path, window=parse_window(window)
    )
    answer = report.answer
    out(
        f"Wrote {out_path}: {answer['device'].get('DeviceName') or answer['device']['DeviceId']}"
        f" at {answer['at']}, {len(answer['missing'])} findings,"
        f" {len(answer['vulnerabilities_open'])} open vulnerabilities,"
        f" {len(answer['triage'])} triage items"
    )

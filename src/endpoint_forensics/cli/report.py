"""``epf report``: self-contained HTML files for a case or a review.

Thin: parses the options, asks ``web.fleet_report`` and says what it wrote.
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
) -> None:
    """The Sentinel workbook's panels answered from the workspace, as one HTML file: charts,
    tables, what to do where a panel is empty, and the data's provenance."""
    from endpoint_forensics.web.fleet_report import write_fleet_report

    report = write_fleet_report(db, out_path, {"Tenant": tenant, "Group": group, "OS": os_platform})
    out(
        f"Wrote {report.path}: {report.panels} panels, {report.answered} with rows"
        + (f"; failed: {', '.join(report.failed)}" if report.failed else "")
    )

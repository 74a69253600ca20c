"""``epf triage``: the newest triage run summarised, the forensic investigations first.

Thin: parses the options, asks ``analytics.triage_report`` and prints it as text or JSON.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import orjson
import typer

from endpoint_forensics.cli.forensics import parse_time
from endpoint_forensics.cli.render import cell, out, render_table

__all__ = ["triage"]


class TriageFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


def triage(
    db: Annotated[Path, typer.Option(help="Workspace file.")] = Path("epf.duckdb"),
    at: Annotated[
        str | None, typer.Option(help="The newest triage at or before this time (ISO 8601).")
    ] = None,
    group: Annotated[
        str | None, typer.Option(help="Only devices of these groups: a pattern with * and ?.")
    ] = None,
    output_format: Annotated[
        TriageFormat, typer.Option("--format", help="text or json.")
    ] = TriageFormat.TEXT,
) -> None:
    """Vulnerability triage: SSVC decisions and CISA BOD 26-04 due dates of the newest triage
    run, the devices that need a forensic investigation first."""
    from endpoint_forensics.analytics.triage_report import triage_report

    report = triage_report(db, at=parse_time(at) if at else None, group=group)
    if output_format is TriageFormat.JSON:
        out(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
        return
    scope = f" in groups {group!r}" if group else ""
    kinds = ", ".join(f"{k} {n:,}" for k, n in report["kinds"].items())
    out(
        f"Triage at {report['at']} (run {report['run_id']}): {report['open']:,} open"
        f" (device, CVE){scope}" + (f" ({kinds})" if kinds else "")
    )
    feeds = ", ".join(f"{k} {v}" for k, v in report["feeds"].items() if v) or "none read"
    out(f"Feeds: {feeds}")
    out(
        "Decisions (CISA Coordinator): "
        + ", ".join(f"{d} {n:,}" for d, n in report["decisions"].items())
    )
    forensic = report["forensic"]
    out(f"\nForensic investigation (BOD 26-04, 3 days): {len(forensic)} item(s)")
    if forensic:
        render_table(
            ["Device", "CVE", "Flagged", "Scope by", "Evidence by", "Decision by", "Fix by"],
            [
                [
                    cell(i["DeviceName"] or i["DeviceId"]),
                    cell(i["CveId"]),
                    cell(i["Flagged"]),
                    *(cell(i["clock"][f"{s}_by"]) for s in ("scope", "evidence", "decision")),
                    cell(i["DueDate"]),
                ]
                for i in forensic
            ],
        )
        out("Posture of a device when it was flagged: " + forensic[0]["posture"])
    out("\nBOD 26-04 outcomes:")
    render_table(
        ["Outcome", "Items", "Overdue", "Next due"],
        [
            [cell(r["outcome"]), cell(r["items"]), cell(r["overdue"]), cell(r["next_due"])]
            for r in report["bod2604"]
        ],
    )

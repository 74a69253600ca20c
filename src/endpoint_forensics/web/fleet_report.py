"""``epf report fleet``: the workbook's panels on a local workspace as one HTML file.

Owns the self-contained page: the style, Chart.js and the workbook viewer inline, the answer
(``web.panels``) as a JSON block the viewer reads, and a Content-Security-Policy that allows
exactly those inline parts (by their SHA-256) and nothing from the network, so the file opens
offline and a value that carries markup stays text.
"""

from __future__ import annotations

import base64
import hashlib
import html
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from pathlib import Path

from endpoint_forensics.web.panels import WorkbookAnswer, answer_workbook

__all__ = ["FleetReport", "fleet_report_html", "write_fleet_report"]


@dataclass(frozen=True)
class FleetReport:
    path: Path
    panels: int  # query panels
    answered: int  # with rows
    failed: list[str]  # panels whose query failed


def _asset(name: str) -> str:
    return resources.files("endpoint_forensics.web").joinpath("assets", name).read_text("utf-8")


def _hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def _json_block(data: bytes) -> str:
    # Inside <script type="application/json"> only "</script" could end the block; escaping
    # every <, > and & keeps the JSON equal and the block inert.
    for raw, escaped in ((b"<", b"\\u003c"), (b">", b"\\u003e"), (b"&", b"\\u0026")):
        data = data.replace(raw, escaped)
    return data.decode()


def fleet_report_html(answer: WorkbookAnswer, *, title: str = "Endpoint Forensics: fleet") -> str:
    style = _asset("report.css")
    scripts = [_asset("vendor/chart.umd.min.js"), _asset("workbook.js")]
    policy = "; ".join(
        (
            "default-src 'none'",
            "script-src " + " ".join(_hash(s) for s in scripts),
            "style-src " + _hash(style),
            "img-src data:",
            "base-uri 'none'",
            "form-action 'none'",
        )
    )
    body_scripts = "".join(f"<script>{s}</script>\n" for s in scripts)
    return (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{html.escape(policy)}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n<style>{style}</style>\n</head>\n<body>\n"
        f'<h1>{html.escape(title)}</h1>\n<main id="epf-root"></main>\n'
        f'<script type="application/json" id="epf-answer">{_json_block(answer.to_json())}</script>\n'
        f"{body_scripts}</body>\n</html>\n"
    )


def write_fleet_report(
    db: Path, out: Path, values: dict[str, str] | None = None, *, at: datetime | None = None
) -> FleetReport:
    """Answer every workbook panel on ``db`` (as it stood at ``at``, if given) and write the
    page to ``out``.

    Raises:
        ConfigError: the workspace does not exist or cannot be opened.
    """
    answer = answer_workbook(db, values, at=at)
    out.write_text(fleet_report_html(answer), encoding="utf-8")
    results = answer.results.values()
    return FleetReport(
        path=out,
        panels=len(answer.results),
        answered=sum(1 for r in results if r.rows),
        failed=sorted(name for name, r in answer.results.items() if r.error),
    )

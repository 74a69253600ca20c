"""The forensic answer as an investigator attaches it to a case: text, Markdown or one HTML file.

Owns turning the answer of ``analytics.forensics`` (docs/forensics.md) into prose and tables.
The HTML is self-contained (inline style allowed by its hash, no script, no remote resource):
it opens offline, prints, is safe to mail, and every value in it is escaped. A report for a case
also carries the answer's provenance and the device's triage items.
"""

from __future__ import annotations

import base64
import hashlib
import html
from typing import Any

__all__ = ["as_html", "as_markdown", "as_text"]

_MAX_ROWS = 50  # per list in the text forms; the JSON has them all


def _headline(answer: dict[str, Any]) -> tuple[str, list[tuple[str, str]]]:
    device = answer["device"]
    title = f"Posture of {device.get('DeviceName') or device['DeviceId']} at {answer['at']}"
    facts = [
        ("Device id", str(device["DeviceId"])),
        ("OS", f"{device.get('OSPlatform') or '?'} {device.get('OSVersion') or ''}".strip()),
        ("Device group", str(device.get("RbacGroupName") or "-")),
        ("Tags", ", ".join(device.get("MachineTags") or []) or "-"),
        ("Health status", str(device.get("HealthStatus") or "unknown")),
        ("Onboarding", str(device.get("OnboardingStatus") or "unknown")),
        ("Last seen", str(device.get("LastSeen") or "-")),
    ]
    return title, facts


def _sections(answer: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) of each table of the report."""
    snapshots = [
        [name, s["time"], f"{s['age_hours']:.1f} h"] if s else [name, "none in look-back", "-"]
        for name, s in answer["snapshots"].items()
    ]
    tests = [[test, result] for test, result in answer["agent_health"].items()]
    av = answer.get("antivirus") or {}
    antivirus = [[k, "" if v is None else str(v)] for k, v in av.items()] or [["-", "no record"]]
    configs = [
        [c["ConfigurationId"], str(c["ConfigurationName"]), str(c["ConfigurationImpact"])]
        for c in answer["secure_config_failing"]
    ]
    vulns = [
        [v["CveId"], str(v["VulnerabilitySeverityLevel"]), str(v["ExploitabilityLevel"]),
         "yes" if v.get("InKev") else "", str(v.get("Decision") or ""),
         f"{v['SoftwareName']} {v['SoftwareVersion']}", str(v["FirstSeenTimestamp"] or "")]
        for v in answer["vulnerabilities_open"]
    ]  # fmt: skip
    changes = [
        [c["time"], c["dataset"], str(c["item"]), str(c["from"]), str(c["to"])]
        for c in answer["changes"]
    ]
    triage_rows = [
        [str(t["CveId"]), str(t["Decision"]), str(t["Bod2604Outcome"] or ""),
         str(t["DueDate"] or ""), "yes" if t["ForensicInvestigation"] else "",
         str(t["SnapshotTime"])]
        for t in answer.get("triage") or []
    ]  # fmt: skip
    triage = (
        [
            (
                f"Triage items ({len(triage_rows)})",
                ["CVE", "Decision", "BOD 26-04", "Due", "Forensic investigation", "Triaged"],
                triage_rows,
            )
        ]
        if "triage" in answer
        else []
    )
    return [
        ("Snapshots the answer comes from", ["Dataset", "Snapshot", "Age at T"], snapshots),
        ("Agent health", ["Test", "Result"], tests),
        ("Antivirus", ["Field", "Value"], antivirus),
        (f"Failing secure configurations ({len(configs)})", ["Id", "Name", "Impact"], configs),
        (
            f"Open vulnerabilities ({len(vulns)})",
            ["CVE", "Severity", "Exploit", "KEV", "Decision", "Software", "First seen"],
            vulns,
        ),
        (
            f"Changes in the window ({len(changes)})",
            ["Time", "Dataset", "Item", "From", "To"],
            changes,
        ),
        *triage,
    ]


def as_text(answer: dict[str, Any]) -> str:
    title, facts = _headline(answer)
    out = [title, "=" * len(title), ""]
    out += [f"{k + ':':<15} {v}" for k, v in facts]
    out += ["", "What was missing or weak at T:"]
    out += [f"  - {m}" for m in answer["missing"]] or ["  nothing found"]
    for section, header, rows in _sections(answer):
        out += ["", section, "-" * len(section)]
        widths = [
            max([len(h), *(len(r[i]) for r in rows[:_MAX_ROWS])]) for i, h in enumerate(header)
        ]
        widths = [min(w, 60) for w in widths]
        out.append("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip())
        for row in rows[:_MAX_ROWS]:
            out.append(
                "  ".join(c[:60].ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
            )
        if len(rows) > _MAX_ROWS:
            out.append(f"... and {len(rows) - _MAX_ROWS} more (see --format json)")
    return "\n".join(out) + "\n"


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def as_markdown(answer: dict[str, Any]) -> str:
    title, facts = _headline(answer)
    out = [f"# {_md(title)}", ""]
    out += [f"- **{k}:** {_md(v)}" for k, v in facts]
    out += ["", "## What was missing or weak at T", ""]
    out += [f"1. {_md(m)}" for m in answer["missing"]] or ["Nothing found."]
    for section, header, rows in _sections(answer):
        out += ["", f"## {section}", ""]
        if not rows:
            out.append("None.")
            continue
        out.append("| " + " | ".join(header) + " |")
        out.append("|" + "---|" * len(header))
        out += ["| " + " | ".join(_md(c) for c in row) + " |" for row in rows[:_MAX_ROWS]]
        if len(rows) > _MAX_ROWS:
            out.append(f"\n... and {len(rows) - _MAX_ROWS} more (see the JSON form).")
    return "\n".join(out) + "\n"


_STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:70em;color:#1b1b1b}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.2em .6em;
border-bottom:1px solid #eee;vertical-align:top}th{background:#f4f4f4}
.missing li{color:#9b1c1c;font-weight:600}.facts th{width:12em;background:none}
footer{margin-top:2em;color:#666;font-size:.85em}.provenance td{font-family:monospace}
@media print{body{margin:0;max-width:none;font-size:11px}h2{break-after:avoid}
tr{break-inside:avoid}}
"""
_STYLE_HASH = "'sha256-" + base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode() + "'"
#: Nothing from the network, no script, only the page's own style.
CONTENT_SECURITY_POLICY = (
    f"default-src 'none'; style-src {_STYLE_HASH}; base-uri 'none'; form-action 'none'"
)


def _provenance(provenance: dict[str, Any]) -> list[tuple[str, str]]:
    facts = [
        ("Workspace", str(provenance.get("workspace"))),
        ("Written", str(provenance.get("written_at"))),
        ("As of", str(provenance.get("as_of"))),
        ("Defender tenant", str(provenance.get("device_tenant") or "-")),
        ("Tenants of the runs", ", ".join(provenance.get("tenants") or []) or "-"),
    ]
    facts += [
        (f["table"], f"{f['version'] or '?'} from {f['source'] or '?'}, read {f['read_at']}")
        for f in provenance.get("feeds") or []
    ]
    facts += [
        (f"{t['table']} newest snapshot", f"{t['newest_snapshot']} ({t['rows']:,} rows)")
        for t in provenance.get("tables") or []
    ]
    facts.append(("SHA-256 of the answer's rows", str(provenance.get("rows_sha256"))))
    return facts


def as_html(answer: dict[str, Any], provenance: dict[str, Any] | None = None) -> str:
    """One self-contained page: no script, no remote resource; with ``provenance`` (what
    ``web.device_report`` gathers), a section that says what the answer came from."""
    e = html.escape
    title, facts = _headline(answer)
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        f'<meta http-equiv="Content-Security-Policy" content="{e(CONTENT_SECURITY_POLICY)}">',
        f"<title>{e(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{e(title)}</h1><table class=facts>",
        *(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in facts),
        "</table><h2>What was missing or weak at T</h2>",
    ]
    if answer["missing"]:
        parts.append("<ol class=missing>" + "".join(f"<li>{e(m)}</li>" for m in answer["missing"]))
        parts.append("</ol>")
    else:
        parts.append("<p>Nothing found.</p>")
    for section, header, rows in _sections(answer):
        parts.append(f"<h2>{e(section)}</h2>")
        if not rows:
            parts.append("<p>None.</p>")
            continue
        parts.append("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr>")
        parts += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in rows]
        parts.append("</table>")
    if provenance is not None:
        parts.append('<h2>Provenance</h2><table class="facts provenance">')
        parts += [f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in _provenance(provenance)]
        parts.append("</table>")
    parts.append(
        "<footer>Endpoint Forensics: each answer comes from the newest snapshot at or before T"
        " listed above.</footer></body></html>"
    )
    return "\n".join(parts) + "\n"

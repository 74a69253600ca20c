"""``epf triage``'s report: the newest triage run at or before a time, summarised.

Owns reading ``EPF_Triage_CL``: counts per decision, the BOD 26-04 outcomes with their items,
overdue items and next due date, and the "3 days & forensic investigation" items first, each
with the implementation guidance's clock (scope within 2 hours, evidence within 24 hours, a
triage decision within 72 hours, from the first triage run that asked for the investigation)
and the command that shows the device's posture then: ``epf forensics`` for a Defender
device, the sensor's exposure findings for an OT device. A device group pattern (``*``,
``?``, any case) narrows every part.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from endpoint_forensics.errors import EpfError
from endpoint_forensics.triage import ssvc
from endpoint_forensics.workspace import store

__all__ = ["FORENSIC_CLOCK", "TriageReportError", "device_triage_items", "triage_report"]

#: The forensic investigation's clock (BOD 26-04 implementation guidance), from the flagging.
FORENSIC_CLOCK = (("scope", 2), ("evidence", 24), ("decision", 72))
_DECISIONS = ("Act", "Attend", "Track*", "Track")


class TriageReportError(EpfError):
    """No triage to report (none run yet, none by that time)."""

    exit_code = 2


def triage_report(
    db: Path, *, at: datetime | None = None, group: str | None = None, limit: int = 50
) -> dict[str, Any]:
    """The report of the newest triage run at or before ``at`` (default: the newest)."""
    import duckdb

    con = store.connect(db, read_only=True)
    try:
        if "EPF_Triage_CL" not in store.table_columns(con):
            raise TriageReportError(f"workspace {db} has no triage yet: run `epf sync` first")
        run = con.execute(
            'SELECT RunId, SnapshotTime FROM "EPF_Triage_CL"'
            " WHERE SnapshotTime <= coalesce(?, SnapshotTime)"
            " ORDER BY SnapshotTime DESC LIMIT 1",
            [at],
        ).fetchall()
        if not run:
            when = f" at or before {at:%Y-%m-%dT%H:%M:%SZ}" if at else ""
            raise TriageReportError(f"no triage run{when} in {db}: run `epf sync` first")
        run_id, when = run[0]
        when = when.astimezone(UTC)
        where = "RunId = ? AND lower(coalesce(RbacGroupName, '')) GLOB ?"
        params = [run_id, (group or "*").lower()]
        rows = f'SELECT * FROM "EPF_Triage_CL" WHERE {where}'
        return {
            "at": _iso(when),
            "run_id": run_id,
            "group": group,
            "open": _scalar(con, f"SELECT count(*) FROM ({rows})", params),
            "kinds": dict(
                con.execute(
                    f"SELECT coalesce(DeviceKind, 'IT'), count(*) FROM ({rows}) GROUP BY ALL"
                    " ORDER BY 1",
                    params,
                ).fetchall()
            ),
            "decisions": _decisions(con, rows, params),
            "bod2604": sorted(
                _records(
                    con,
                    "SELECT Bod2604Outcome AS outcome, count(*) AS items,"
                    " count(*) FILTER (WHERE DueDate < ?) AS overdue,"
                    " min(DueDate) FILTER (WHERE DueDate >= ?) AS next_due"
                    f" FROM ({rows}) GROUP BY ALL",
                    [when, when, *params],
                ),
                key=_most_urgent_first,
            ),
            "forensic": _forensic(con, rows, params, when, db, limit),
            "feeds": _feeds(con, rows, params),
        }
    except duckdb.Error as exc:
        raise EpfError(f"triage: {store.first_line(str(exc))}") from exc
    finally:
        con.close()


def _most_urgent_first(row: dict[str, Any]) -> tuple[float, bool]:
    days = ssvc.bod_due_days(row["outcome"])
    return (float("inf") if days is None else days, not ssvc.is_forensic(row["outcome"]))


def _decisions(con: Any, rows: str, params: list[Any]) -> dict[str, int]:
    found = dict(
        con.execute(f"SELECT Decision, count(*) FROM ({rows}) GROUP BY ALL", params).fetchall()
    )
    return {d: int(found.get(d, 0)) for d in _DECISIONS}


def _forensic(
    con: Any, rows: str, params: list[Any], when: datetime, db: Path, limit: int
) -> list[dict[str, Any]]:
    """The items to investigate: the first triage run that flagged each starts its clock."""
    items = _records(
        con,
        "SELECT t.DeviceId, coalesce(t.DeviceKind, 'IT') AS DeviceKind, t.DeviceName,"
        " t.RbacGroupName, t.CveId, t.VulnerabilitySeverityLevel,"
        " t.ClockStart, t.DueDate, f.Flagged"
        f" FROM ({rows}) t JOIN (SELECT DefenderTenantId, DeviceId, CveId,"
        ' min(SnapshotTime) AS Flagged FROM "EPF_Triage_CL" WHERE ForensicInvestigation'
        " AND SnapshotTime <= ? GROUP BY ALL) f USING (DefenderTenantId, DeviceId, CveId)"
        " WHERE t.ForensicInvestigation ORDER BY f.Flagged, t.DueDate, t.DeviceName, t.CveId"
        f" LIMIT {int(limit)}",
        [*params, when],
    )
    for item in items:
        flagged = datetime.fromisoformat(str(item["Flagged"]).replace("Z", "+00:00"))
        item["clock"] = {
            f"{step}_by": _iso(flagged + timedelta(hours=hours)) for step, hours in FORENSIC_CLOCK
        }
        item["clock_overdue"] = [
            step for step, hours in FORENSIC_CLOCK if when > flagged + timedelta(hours=hours)
        ]
        item["posture"] = _posture_command(
            db, item["DeviceKind"], item["DeviceId"], item["Flagged"]
        )
    return items


def _posture_command(db: Path, kind: str, device: str, at: str) -> str:
    """The command that shows a device's posture at ``at``: ``epf forensics`` for a Defender
    device; for an OT device (``ot:<sensor>/<address>``), its sensor's newest exposure
    findings then (remote access, open ports, plain-text passwords, ...)."""
    if kind != "OT":
        return f"epf forensics --db {db} --device {device} --at {at}"
    sensor, _, address = device.removeprefix("ot:").rpartition("/")
    quoted = [v.replace("\\", "\\\\").replace("'", "\\'") for v in (sensor, address)]
    sensor_rows = f"EPF_IotExposure_CL | where Appliance == '{quoted[0]}'"
    query = (
        f"let report = toscalar({sensor_rows} and SnapshotTime <= datetime({at})"
        f" | summarize max(SnapshotTime)); {sensor_rows} and SnapshotTime == report"
        f" and IpAddress == '{quoted[1]}'"
    )
    return f'epf query --db {db} "{query}"'


def _feeds(con: Any, rows: str, params: list[Any]) -> dict[str, str | None]:
    """The feed copies the run's reasons name."""
    found = con.execute(
        "SELECT max(Reasons->>'$.InKev.version'), max(Reasons->>'$.Epss.version'),"
        " max(CASE WHEN Reasons->>'$.Automatable.source' = 'CISA Vulnrichment'"
        " THEN Reasons->>'$.Automatable.version' END)"
        f" FROM ({rows})",
        params,
    ).fetchall()[0]
    return dict(zip(("kev", "epss", "vulnrichment"), found, strict=True))


def _records(con: Any, sql: str, params: list[Any]) -> list[dict[str, Any]]:
    cursor = con.execute(sql, params)
    columns = [d[0] for d in cursor.description]
    return store.QueryResult(columns, ["" for _ in columns], cursor.fetchall()).records()


def _scalar(con: Any, sql: str, params: list[Any]) -> int:
    return int(con.execute(sql, params).fetchall()[0][0])


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def device_triage_items(db: Path, device_id: str, at: datetime) -> list[dict[str, Any]]:
    """One device's items of the newest triage run at or before ``at`` (none if the workspace
    has no triage yet), the forensic investigations first, then by due date."""
    from endpoint_forensics.analytics.functions import kql_datetime

    quoted = device_id.replace("\\", "\\\\").replace("'", "\\'")
    query = (
        f"let run = toscalar(EPF_Triage_CL | where SnapshotTime <= {kql_datetime(at)}"
        " | summarize max(SnapshotTime));\n"
        f"EPF_Triage_CL | where SnapshotTime == run and DeviceId == '{quoted}'\n"
        "| project CveId, Decision, Bod2604Outcome, DueDate, ForensicInvestigation, SnapshotTime\n"
        "| order by ForensicInvestigation desc, DueDate asc"
    )
    try:
        return store.run_query(db, query).records()
    except store.QueryError:
        return []  # no triage table yet

"""What the workbook's panels are made of: the ``Panel`` record, the filters by the dropdown
parameters (``{Tenant}``, ``{Group}``, ``{OS}``: ``*`` is all) and the query shapes the
sections share. Imports only ``tables``.
"""

from __future__ import annotations

from dataclasses import dataclass

from endpoint_forensics.tables import AGENT_HEALTH_TESTS

__all__ = [
    "AGENT_TESTS",
    "ALL",
    "EACH_TEST",
    "FILTER_GROUP",
    "FILTER_OS",
    "FILTER_TENANT",
    "NEWEST_VULNERABILITIES",
    "NO_COLLECTION",
    "Panel",
    "newest",
    "panel_query",
]

#: The value of a dropdown parameter that selects everything.
ALL = "*"
FILTER_GROUP = '| where "{Group}" == "*" or RbacGroupName == "{Group}"'
FILTER_OS = '| where "{OS}" == "*" or OSPlatform == "{OS}"'
FILTER_TENANT = '| where "{Tenant}" == "*" or DefenderTenantId == "{Tenant}"'


@dataclass(frozen=True)
class Panel:
    name: str
    title: str
    query: str
    visualization: str  # table, piechart, barchart, timechart, tiles
    empty: str  # what the user should do when the panel has no rows
    width: int = 50  # percent


def newest(table: str) -> str:
    return f"let newest = toscalar({table} | summarize max(SnapshotTime));\n"


# The vulnerabilities' newest news: a (weekly) snapshot, or the changes collected since it.
NEWEST_VULNERABILITIES = newest("union EPF_Vulnerabilities_CL, EPF_VulnerabilityChanges_CL\n    ")


def panel_query(
    function: str, table: str, rest: str, *, join_group: bool = False, args: str = "newest"
) -> str:
    """A panel over ``function``'s state at the newest collection of ``table``, filtered by
    tenant, group and OS; ``join_group`` takes the group from the device list, for a table
    that has none."""
    group = (
        "| join kind=leftouter (EPF_DevicesAt(newest) | project DeviceId, RbacGroupName)"
        " on DeviceId\n"
        if join_group
        else ""
    )
    filters = "\n".join((FILTER_TENANT, FILTER_GROUP, FILTER_OS))
    return f"{newest(table)}{function}({args})\n{group}{filters}\n{rest}"


AGENT_TESTS = AGENT_HEALTH_TESTS
EACH_TEST = (
    "| extend Tests = pack_array("
    + ", ".join(f'pack("Test", "{t}", "Result", {t})' for t in AGENT_TESTS)
    + ")\n| mv-expand Test = Tests\n"
    "| extend TestName = tostring(Test.Test), Result = tostring(Test.Result)\n"
)
NO_COLLECTION = "No collection in this time range: widen it, or check `epf doctor` and EPF_Runs_CL."

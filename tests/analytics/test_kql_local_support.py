"""The README's "KQL that runs locally" is what the local engine runs: each construct is
probed on a workspace, and the README's list must be the list these probes give (on a
mismatch the test prints the list to paste)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from endpoint_forensics.analytics.functions import registry
from endpoint_forensics.workspace import store
from endpoint_forensics.workspace.store import QueryError

ROOT = Path(__file__).resolve().parents[2]
T = "EPF_Devices_CL"
# (construct as KQL authors name it, a query that uses it).
PROBES = (
    (
        "where, project, extend, take, order by",
        f"{T} | where RiskScore == 'High' | extend x = 1 | project DeviceName, x | order by DeviceName asc | take 5",
    ),
    (
        "summarize: count, dcount, countif, min, max, avg, sum",
        f"{T} | summarize count(), dcount(DeviceId), countif(IsAadJoined), min(LastSeen), max(LastSeen) by OSPlatform",
    ),
    (
        "summarize: arg_max, arg_min (also with *)",
        f"{T} | summarize arg_max(SnapshotTime, *) by DeviceId",
    ),
    (
        "summarize: make_set, make_list",
        f"{T} | summarize make_set(DeviceName), make_list(OSPlatform)",
    ),
    ("summarize by bin()", f"{T} | summarize count() by bin(SnapshotTime, 1d)"),
    (
        "join: inner, leftouter, leftanti",
        f"{T} | join kind=leftouter ({T} | project DeviceId, N = DeviceName) on DeviceId | join kind=leftanti ({T} | where false) on DeviceId",
    ),
    ("lookup", f"{T} | lookup ({T} | project DeviceId, N = DeviceName) on DeviceId"),
    ("union", f"union {T}, ({T} | where false)"),
    (
        "let, toscalar",
        f"let newest = toscalar({T} | summarize max(SnapshotTime)); {T} | where SnapshotTime == newest",
    ),
    ("mv-expand", f"{T} | mv-expand Tag = MachineTags to typeof(string) | project DeviceId, Tag"),
    (
        "parse_json and dot access on dynamic",
        f"{T} | extend M = parse_json(VmMetadata) | project M.vmId",
    ),
    ("top, distinct", f"{T} | distinct OSPlatform | top 3 by OSPlatform asc"),
    (
        "case, iff, has, contains, in, between, startswith",
        f"{T} | where DeviceName has 'ws' or DeviceName contains 'srv' or OSPlatform in ('Linux') or SnapshotTime between (ago(1d) .. now()) or DeviceName startswith 'x' | extend y = iff(true, 1, 2), z = case(false, 'a', 'b')",
    ),
    (
        "ago(), now(), datetime arithmetic",
        f"{T} | where LastSeen > ago(3650d) and LastSeen < now() + 1d",
    ),
    (
        "strcat, split, tolower, tostring, todatetime",
        f"{T} | extend h = tolower(tostring(split(DeviceName, '.')[0])), s = strcat(DeviceId, '/'), t = todatetime('2026-01-01')",
    ),
    ("print, range", "range i from 1 to 3 step 1 | extend p = i * 2"),
    ("make-series", f"{T} | make-series count() on SnapshotTime step 1d"),
    ("percentiles()", f"{T} | summarize percentiles(toreal(DeviceValue), 50)"),
    ("column_ifexists()", f"{T} | project column_ifexists('Nope', '')"),
    ("parse", f"{T} | parse DeviceName with a '.' b"),
    ("evaluate bag_unpack()", f"{T} | evaluate bag_unpack(VmMetadata)"),
    ("take_any(*)", f"{T} | summarize take_any(*) by DeviceId"),
    ("distinct *", f"{T} | distinct *"),
    ("mv-apply", f"{T} | mv-apply Tag = MachineTags on (take 1)"),
)
_START, _END = "<!-- kql-local:start -->", "<!-- kql-local:end -->"


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("kql-local") / "ws.duckdb"
    store.connect(path).close()
    return path


def _runs(db: Path, query: str) -> bool:
    try:
        store.run_query(db, query, functions=registry())
    except QueryError as exc:
        assert "is not supported by the local engine" in str(exc), (query, str(exc))
        return False
    return True


def test_the_readme_lists_what_the_local_engine_runs(db: Path) -> None:
    runs = [name for name, query in PROBES if _runs(db, query)]
    lacks = [name for name, query in PROBES if name not in runs]
    expected = (
        f"{_START}\n"
        f"- **Runs locally and in Sentinel:** {'; '.join(runs)}.\n"
        f"- **Sentinel only** (`epf query` names the operator and says so): {'; '.join(lacks)}.\n"
        f"{_END}"
    )
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    found = re.search(re.escape(_START) + r".*?" + re.escape(_END), text, re.DOTALL)
    assert found is not None and found.group(0) == expected, (
        f"README.md's list differs from what the engine runs; paste:\n{expected}"
    )
    assert runs and lacks  # the probes found both kinds

"""The ``$filter`` parser against a plain-Python reference, by example and by Hypothesis."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from epf_emulator.mde.odata import ODataFilterError, compile_filter

RECORDS: list[dict[str, Any]] = [
    {
        "id": "a",
        "healthStatus": "Active",
        "riskScore": "High",
        "rbacGroupId": 140,
        "machineTags": ["VIP", "PCI"],
        "computerDnsName": "ws-0001.contoso.com",
        "lastSeen": "2026-11-27T10:00:00.1234567Z",
        "aadDeviceId": None,
    },
    {
        "id": "b",
        "healthStatus": "Inactive",
        "riskScore": "Low",
        "rbacGroupId": 0,
        "machineTags": [],
        "computerDnsName": "mac-0001.contoso.com",
        "lastSeen": "2026-11-01T10:00:00.0000001Z",
        "aadDeviceId": "x",
    },
    {
        "id": "c",
        "healthStatus": "Active",
        "riskScore": "None",
        "rbacGroupId": 210,
        "machineTags": ["Lab"],
        "computerDnsName": "it's.contoso.com",
        "lastSeen": "2026-11-27T09:59:59.9999999Z",
    },
    {
        "id": "d",
        "healthStatus": 7,
        "rbacGroupId": "oops",
        "machineTags": "VIP",
        "lastSeen": 12,
    },  # malformed
]


def matching(expression: str) -> list[str]:
    predicate = compile_filter(expression)
    return [r["id"] for r in RECORDS if predicate(r)]


@pytest.mark.parametrize(
    ("expression", "ids"),
    [
        ("healthStatus eq 'Active'", ["a", "c"]),
        ("healthStatus ne 'Active'", ["b", "d"]),
        ("riskScore eq 'High' or riskScore eq 'Low'", ["a", "b"]),
        ("rbacGroupId gt 0 and rbacGroupId lt 200", ["a"]),
        ("rbacGroupId ge 140", ["a", "c"]),
        ("rbacGroupId le 0", ["b"]),
        ("not (healthStatus eq 'Active')", ["b", "d"]),
        ("startswith(computerDnsName,'ws-')", ["a"]),
        ("endswith(computerDnsName, '.contoso.com')", ["a", "b", "c"]),
        ("contains(computerDnsName,'0001')", ["a", "b"]),
        ("computerDnsName eq 'it''s.contoso.com'", ["c"]),
        ("lastSeen gt 2026-11-27T09:59:59.9999999Z", ["a"]),
        ("lastSeen ge 2026-11-27T10:00:00.1234567Z", ["a"]),
        ("lastSeen lt 2026-11-02Z", ["b"]),
        ("lastSeen gt 2026-11-27T11:00:00+02:00", ["a", "c"]),
        ("machineTags/any(t: t eq 'VIP')", ["a"]),
        ("machineTags/any(t: startswith(t, 'L'))", ["c"]),
        ("machineTags/all(t: t ne 'PCI')", ["b", "c"]),
        ("aadDeviceId eq null", ["a", "c", "d"]),
        ("aadDeviceId ne null", ["b"]),
        (
            "((healthStatus eq 'Active') and (rbacGroupId eq 210 or riskScore eq 'High'))",
            ["a", "c"],
        ),
        (
            "healthStatus eq 'Active' and riskScore eq 'High' or rbacGroupId eq 0",
            ["a", "b"],
        ),  # and binds tighter
    ],
)
def test_examples(expression: str, ids: list[str]) -> None:
    assert matching(expression) == ids


@pytest.mark.parametrize(
    "expression",
    [
        "",
        "healthStatus",
        "healthStatus eq",
        "eq 'x'",
        "healthStatus == 'x'",
        "healthStatus eq 'x' and",
        "(healthStatus eq 'x'",
        "healthStatus eq 'x')",
        "foo eq 1",
        "osBuild eq 1",
        "healthStatus eq 1",
        "lastSeen gt 'yesterday'",
        "machineTags eq 'x'",
        "startswith(rbacGroupId,'1')",
        "healthStatus eq 'x",
        "rbacGroupId eq 1 and 2",
        "not 'x'",
        "healthStatus eq 'x' or",
        "lastSeen gt 2026-13-45Z",
        "healthStatus/any(t: t eq 'x')",
    ],
)
def test_invalid_filters_raise(expression: str) -> None:
    with pytest.raises(ODataFilterError):
        compile_filter(expression)


# --- Hypothesis: random boolean trees over string and number comparisons --------------------
STRING_FIELDS = ("healthStatus", "riskScore")
VALUES = ("Active", "Inactive", "High", "Low", "None", "it's")
OPS = {
    "eq": lambda a, b: a == b,
    "ne": lambda a, b: a != b,
    "gt": lambda a, b: a > b,
    "ge": lambda a, b: a >= b,
    "lt": lambda a, b: a < b,
    "le": lambda a, b: a <= b,
}

leaf_strings = st.tuples(
    st.sampled_from(STRING_FIELDS), st.sampled_from(["eq", "ne"]), st.sampled_from(VALUES)
)
leaf_numbers = st.tuples(st.just("rbacGroupId"), st.sampled_from(sorted(OPS)), st.integers(-1, 300))
trees = st.recursive(
    st.one_of(leaf_strings, leaf_numbers),
    lambda children: st.one_of(
        st.tuples(st.just("not"), children),
        st.tuples(st.sampled_from(["and", "or"]), children, children),
    ),
    max_leaves=8,
)
records = st.fixed_dictionaries(
    {
        "healthStatus": st.sampled_from(VALUES),
        "riskScore": st.sampled_from(VALUES),
        "rbacGroupId": st.integers(-1, 300),
    }
)


def render(tree: Any) -> str:
    if tree[0] == "not":
        return f"not ({render(tree[1])})"
    if tree[0] in ("and", "or"):
        return f"({render(tree[1])}) {tree[0]} ({render(tree[2])})"
    field, op, value = tree
    literal = "'" + value.replace("'", "''") + "'" if isinstance(value, str) else str(value)
    return f"{field} {op} {literal}"


def reference(tree: Any, record: dict[str, Any]) -> bool:
    if tree[0] == "not":
        return not reference(tree[1], record)
    if tree[0] == "and":
        return reference(tree[1], record) and reference(tree[2], record)
    if tree[0] == "or":
        return reference(tree[1], record) or reference(tree[2], record)
    field, op, value = tree
    return bool(OPS[op](record[field], value))


@settings(max_examples=300, deadline=None, database=None)
@given(tree=trees, record=records)
def test_random_filters_agree_with_python(tree: Any, record: dict[str, Any]) -> None:
    assert compile_filter(render(tree))(record) == reference(tree, record)

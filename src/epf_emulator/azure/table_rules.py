"""The Tables API's rules for one Create Or Update's properties: plans, retention, columns.

Owns what a ``PUT .../tables/{table}`` may say, property by property: the plan (TablePlanEnum:
Basic | Analytics in api-versions 2021-12-01-preview to 2025-02-01 as this emulator knows them,
Auxiliary too in 2025-07-01, where "Auxiliary" is a documented value; a later or earlier version
that might know it is, the stricter reading, refused), ``retentionInDays`` ("On Analytics table:
4-730, -1 the workspace's. On Basic and Auxiliary table: read-only property", so refused there),
``totalRetentionInDays`` (-1 or 4-4383) and the declared columns (name rules, reserved names,
the eight column types). ``azure.workspace`` applies them to its tables.

Imports nothing of the emulator: it shares no code with the collector.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from epf_emulator.azure.errors import ArmRefusal

__all__ = [
    "COLUMN_NAME",
    "FIXED_INTERACTIVE_DAYS",
    "RETENTION",
    "TABLE_PLANS_BY_API_VERSION",
    "TOTAL_RETENTION",
    "checked_plan",
    "declared_columns",
    "rendered_column",
    "retention_value",
]

_BASIC_ANALYTICS = ("Analytics", "Basic")
#: The Tables API versions this emulator serves (each has ``migrate``) and the plans each knows.
TABLE_PLANS_BY_API_VERSION: Mapping[str, tuple[str, ...]] = {
    "2021-12-01-preview": _BASIC_ANALYTICS,
    "2022-10-01": _BASIC_ANALYTICS,
    "2023-09-01": _BASIC_ANALYTICS,
    "2025-02-01": _BASIC_ANALYTICS,
    "2025-07-01": ("Analytics", "Basic", "Auxiliary"),
}
#: A Basic or Auxiliary table's interactive retention: fixed, not the workspace's.
FIXED_INTERACTIVE_DAYS = 30
COLUMN_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,44}$")
RETENTION = (4, 730)
TOTAL_RETENTION = (4, 4383)
_COLUMN_TYPES = ("string", "int", "long", "real", "boolean", "dateTime", "guid", "dynamic")
_RESERVED = frozenset(
    n.lower()
    for n in ("id", "_ResourceId", "_SubscriptionId", "TenantId", "Type", "UniqueId", "Title")
)


def checked_plan(props: Mapping[str, Any], current: str, api_version: str) -> str:
    """The plan a PUT leaves the table with (``current`` when it names none).

    Raises:
        ArmRefusal: 400 for a plan the api-version does not know, or ``retentionInDays`` set
            on a Basic or Auxiliary table (read-only there).
    """
    plan = props.get("plan", current)
    known = TABLE_PLANS_BY_API_VERSION.get(api_version, _BASIC_ANALYTICS)
    if plan not in known:
        raise ArmRefusal(
            400,
            "InvalidParameter",
            f"The table plan '{plan}' is not valid in api-version {api_version}: one of "
            f"{', '.join(known)}.",
        )
    if plan != "Analytics" and props.get("retentionInDays") is not None:
        raise ArmRefusal(
            400,
            "InvalidParameter",
            f"retentionInDays is read-only on a {plan} table: its interactive retention is "
            f"{FIXED_INTERACTIVE_DAYS} days.",
        )
    return str(plan)


def retention_value(
    props: Mapping[str, Any], key: str, bounds: tuple[int, int], default: str
) -> int | None:
    value = props.get(key)
    if value is None:
        return None
    low, high = bounds
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or (value != -1 and not low <= value <= high)
    ):
        raise ArmRefusal(
            400,
            "InvalidParameter",
            f"{key} must be -1 ({default}) or between {low} and {high} days; got {value!r}.",
        )
    return value


def declared_columns(table: str, schema: Any) -> list[dict[str, str]] | None:
    """The declared columns, types in the API's spelling; None when the PUT declares none."""
    if schema is None:
        return None
    if not isinstance(schema, dict):
        raise ArmRefusal(400, "InvalidParameter", "properties.schema must be an object.")
    named = schema.get("name")
    if named is not None and str(named).lower() != table.lower():
        raise ArmRefusal(400, "InvalidParameter", f"schema.name '{named}' is not the table's name.")
    declared = schema.get("columns")
    if declared is None:
        return None
    if not isinstance(declared, list):
        raise ArmRefusal(400, "InvalidParameter", "schema.columns must be an array.")
    columns: list[dict[str, str]] = []
    seen: set[str] = set()
    for item in declared:
        name = item.get("name") if isinstance(item, dict) else None
        kind = item.get("type") if isinstance(item, dict) else None
        if not isinstance(name, str) or not COLUMN_NAME.match(name) or len(name) < 2:
            raise ArmRefusal(
                400,
                "InvalidParameter",
                f"Column name {name!r} is not valid: a letter, then up to 44 letters, digits or "
                "underscores.",
            )
        if name.lower() in _RESERVED:
            raise ArmRefusal(400, "InvalidParameter", f"Column name '{name}' is reserved.")
        spelled = {t.lower(): t for t in _COLUMN_TYPES}.get(str(kind).lower())
        if not isinstance(kind, str) or spelled is None:
            raise ArmRefusal(
                400, "InvalidParameter", f"Column '{name}' has an unknown type {kind!r}."
            )
        if name.lower() in seen:
            raise ArmRefusal(400, "InvalidParameter", f"Column '{name}' is declared twice.")
        seen.add(name.lower())
        column = {"name": name, "type": spelled}
        if isinstance(item.get("description"), str):
            column["description"] = item["description"]
        columns.append(column)
    return columns


def rendered_column(column: Mapping[str, str]) -> dict[str, Any]:
    return {
        "name": column["name"],
        "type": column["type"],
        "description": column.get("description"),
        "isDefaultDisplay": False,
        "isHidden": False,
    }

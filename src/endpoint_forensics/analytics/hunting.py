"""The hunting queries the product ships, one YAML file each in ``analytics/hunting``, in the
format of the Azure-Sentinel repository's ``Hunting Queries`` folders (docs/hunting.md).

Owns loading them and the structural checks Azure-Sentinel's CI runs on such a file: every
required field, a GUID ``id`` unique across the queries, a version ``X.Y.Z``, tactics from the
ATT&CK tactic names Sentinel knows, techniques spelled ``T1234`` or ``T1234.567``, the tables
each query reads listed in ``requiredDataConnectors``, and no subscription id anywhere. A file
that breaks one fails loudly with its name: these files are the product, not user input.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

__all__ = ["TACTICS", "HuntingQuery", "hunting_queries", "tables_named"]

#: The tactics Sentinel accepts in a query's ``tactics`` (its ATT&CK tactic names, with the
#: ICS ones it maps onto them).
TACTICS = frozenset(
    {
        "Reconnaissance", "ResourceDevelopment", "InitialAccess", "Execution", "Persistence",
        "PrivilegeEscalation", "DefenseEvasion", "CredentialAccess", "Discovery",
        "LateralMovement", "Collection", "CommandAndControl", "Exfiltration", "Impact",
        "ImpairProcessControl", "InhibitResponseFunction",
    }
)  # fmt: skip
_REQUIRED = (
    "id", "name", "description", "requiredDataConnectors", "tactics", "relevantTechniques",
    "query", "version",
)  # fmt: skip
_TECHNIQUE = re.compile(r"T\d{4}(\.\d{3})?")
_VERSION = re.compile(r"\d+\.\d+\.\d+")
_SUBSCRIPTION = re.compile(r"/subscriptions/[0-9a-fA-F-]{36}", re.IGNORECASE)
_TABLE = re.compile(r"\b([A-Za-z][A-Za-z0-9_]*)\b")


@dataclass(frozen=True)
class HuntingQuery:
    file: str  # the file's name, e.g. kev_on_internet_facing.yaml
    id: str
    name: str
    description: str
    tactics: tuple[str, ...]
    techniques: tuple[str, ...]
    tables: tuple[str, ...]  # the dataTypes of its requiredDataConnectors
    query: str
    version: str
    text: str  # the file as shipped


@cache
def hunting_queries() -> dict[str, HuntingQuery]:
    """Every shipped hunting query by file name, checked."""
    import yaml

    found: dict[str, HuntingQuery] = {}
    folder = resources.files(__package__).joinpath("hunting")
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".yaml"):
            continue
        text = entry.read_text(encoding="utf-8")
        found[entry.name] = _checked(entry.name, yaml.safe_load(text), text)
    ids = [q.id for q in found.values()]
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        raise ValueError(f"hunting queries share an id: {', '.join(repeated)}")
    return found


def _checked(file: str, data: Any, text: str) -> HuntingQuery:
    def fail(what: str) -> ValueError:
        return ValueError(f"hunting query {file}: {what}")

    if not isinstance(data, dict):
        raise fail("not a YAML mapping")
    missing = [k for k in _REQUIRED if not data.get(k)]
    if missing:
        raise fail(f"missing {', '.join(missing)}")
    try:
        if str(uuid.UUID(str(data["id"]))) != str(data["id"]).lower():
            raise ValueError
    except ValueError:
        raise fail(f"id {data['id']!r} is not a GUID") from None
    if not _VERSION.fullmatch(str(data["version"])):
        raise fail(f"version {data['version']!r} is not X.Y.Z")
    unknown = [t for t in data["tactics"] if t not in TACTICS]
    if unknown:
        raise fail(f"unknown tactics {unknown}")
    bad = [t for t in data["relevantTechniques"] if not _TECHNIQUE.fullmatch(str(t))]
    if bad:
        raise fail(f"techniques not spelled T1234 or T1234.567: {bad}")
    if _SUBSCRIPTION.search(text):
        raise fail("names a subscription id")
    tables = tuple(
        str(t) for c in data["requiredDataConnectors"] for t in (c.get("dataTypes") or ())
    )
    connectors = [c.get("connectorId") for c in data["requiredDataConnectors"]]
    if not tables or not all(connectors):
        raise fail("every requiredDataConnectors entry needs a connectorId and dataTypes")
    return HuntingQuery(
        file=file,
        id=str(data["id"]),
        name=str(data["name"]),
        description=str(data["description"]).strip().strip("'"),
        tactics=tuple(data["tactics"]),
        techniques=tuple(str(t) for t in data["relevantTechniques"]),
        tables=tables,
        query=str(data["query"]),
        version=str(data["version"]),
        text=text,
    )


def tables_named(query: str, known: frozenset[str] | set[str]) -> set[str]:
    """The tables of ``known`` a query's text names (comments included: a query names its
    tables in code)."""
    return {t for t in _TABLE.findall(query) if t in known}

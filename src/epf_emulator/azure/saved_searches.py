"""The saved searches (and saved functions) of the emulated workspace, as Azure checks them.

Owns Saved Searches - Create Or Update / Get / List By Workspace over ``azure.workspace``'s
tables. What a ``PUT`` must hold (ARM template reference, workspaces/savedSearches 2020-08-01,
and "Functions in Azure Monitor log queries"): ``properties`` with ``category``,
``displayName`` and ``query`` (required strings); ``version`` 1 or 2; ``tags`` name/value
strings; ``functionAlias`` without spaces or special characters, not starting with an
underscore (kept for solution functions) and, where the docs are silent and so stricter,
starting with a letter and taken by one saved search only; ``functionParameters`` only with an
alias, ``name:type`` or ``name:type = default`` separated by commas, each type a KQL scalar type.
A referenced custom table (``*_CL``) must exist, and, the stricter of the docs' readings (older
pages: queries on Basic and Auxiliary tables support no user-defined functions), a function
may not read a Basic or Auxiliary table. A call to a capitalised name (KQL's own functions are
lower case) must be to a function already saved, as Kusto resolves names when it stores one.

Imports only ``azure.errors`` and ``azure.workspace`` of the emulator: it shares no code with
the collector.
"""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Mapping
from typing import Any

from epf_emulator.azure.errors import ArmRefusal
from epf_emulator.azure.workspace import WorkspaceTables, workspace_resource_id_of

__all__ = ["SAVED_SEARCHES_API_VERSIONS", "SavedSearches"]

#: The savedSearches api-versions that have ``functionAlias`` and ``functionParameters``.
SAVED_SEARCHES_API_VERSIONS = ("2020-03-01-preview", "2020-08-01", "2025-02-01", "2025-07-01")
# KQL scalar types and their synonyms (scalar data types): what a parameter may declare.
_PARAMETER_TYPES = frozenset(
    {
        "bool",
        "boolean",
        "datetime",
        "date",
        "decimal",
        "dynamic",
        "guid",
        "uuid",
        "uniqueid",
        "int",
        "long",
        "real",
        "double",
        "string",
        "timespan",
        "time",
    }
)
_ALIAS = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_PARAMETER = re.compile(
    r"^\s*(?P<name>[A-Za-z_][A-Za-z0-9_]*)\s*:\s*(?P<type>\w+)\s*(?:=\s*\S.*)?$"
)
_CUSTOM_TABLE = re.compile(r"\b[A-Za-z][A-Za-z0-9_]*_CL\b")
# KQL's own functions are lower case; a capitalised call is a workspace function.
_FUNCTION_CALL = re.compile(r"(?<![\w.])([A-Z][A-Za-z0-9_]*)\s*\(")
_LINE_COMMENT = re.compile(r"//[^\n]*")
_REQUIRED = ("category", "displayName", "query")


def _bad(message: str) -> ArmRefusal:
    return ArmRefusal(400, "BadRequest", message)


class SavedSearches:
    """The workspace's saved searches, by id (case-insensitive); thread-safe."""

    def __init__(self, tables: WorkspaceTables) -> None:
        self._tables = tables
        self._lock = threading.Lock()
        self._searches: dict[str, tuple[str, dict[str, Any]]] = {}

    def put(self, search_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Create or replace a saved search; the saved search as stored.

        Raises:
            ArmRefusal: 400 for what Azure refuses (see the module docstring).
        """
        props = body.get("properties")
        if not isinstance(props, dict):
            raise _bad("The request body has no 'properties' object.")
        checked = _checked(props)
        self._check_tables(checked)
        with self._lock:
            alias = checked.get("functionAlias")
            for key, (other_id, other) in self._searches.items():
                if alias and key != search_id.lower() and other.get("functionAlias") == alias:
                    raise ArmRefusal(
                        409,
                        "Conflict",
                        f"The function alias '{alias}' is already used by saved search "
                        f"'{other_id}'.",
                    )
            self._searches[search_id.lower()] = (search_id, checked)
            return self._rendered(search_id, checked)

    def get(self, search_id: str) -> dict[str, Any]:
        """One saved search.

        Raises:
            ArmRefusal: 404 for an id the workspace lacks.
        """
        with self._lock:
            found = self._searches.get(search_id.lower())
        if found is None:
            raise ArmRefusal(
                404, "ResourceNotFound", f"The saved search '{search_id}' was not found."
            )
        return self._rendered(*found)

    def list(self) -> dict[str, Any]:
        """Every saved search, as Saved Searches - List By Workspace answers."""
        with self._lock:
            found = list(self._searches.values())
        return {"value": [self._rendered(i, p) for i, p in found]}

    def _check_tables(self, props: Mapping[str, Any]) -> None:
        code = _LINE_COMMENT.sub("", props["query"])
        for table in sorted(set(_CUSTOM_TABLE.findall(code))):
            plan = self._tables.plan_of(table)
            if plan is None:
                raise _bad(f"The query references the table '{table}', which does not exist.")
            if props.get("functionAlias") and plan != "Analytics":
                raise _bad(
                    f"The function '{props['functionAlias']}' reads the {plan} table "
                    f"'{table}': user-defined functions are not supported on Basic and "
                    "Auxiliary tables."
                )
        with self._lock:
            aliases = {p.get("functionAlias") for _, p in self._searches.values()}
        for called in sorted(set(_FUNCTION_CALL.findall(code)) - aliases):
            raise _bad(
                f"The query calls '{called}', which is neither a KQL function nor a function "
                "of this workspace."
            )

    def _rendered(self, search_id: str, props: Mapping[str, Any]) -> dict[str, Any]:
        workspace = workspace_resource_id_of(self._tables.subscription)
        return {
            "id": f"{workspace}/savedSearches/{search_id}",
            "etag": f'W/"{uuid.uuid5(uuid.NAMESPACE_URL, repr(sorted(props.items())))}"',
            "name": search_id,
            "type": "Microsoft.OperationalInsights/savedSearches",
            "properties": dict(props),
        }


def _checked(props: Mapping[str, Any]) -> dict[str, Any]:
    for key in _REQUIRED:
        if not isinstance(props.get(key), str) or not props[key].strip():
            raise _bad(f"properties.{key} is required and must be a non-empty string.")
    version = props.get("version", 2)
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= 2:
        raise _bad(f"properties.version must be 1 or 2; got {version!r}.")
    tags = props.get("tags", [])
    if not isinstance(tags, list) or not all(
        isinstance(t, dict) and isinstance(t.get("name"), str) and isinstance(t.get("value"), str)
        for t in tags
    ):
        raise _bad("properties.tags must be a list of {name, value} strings.")
    checked = {k: props[k] for k in _REQUIRED}
    checked.update(version=version, tags=tags)
    alias = props.get("functionAlias")
    parameters = props.get("functionParameters")
    if alias is not None:
        if not isinstance(alias, str) or not _ALIAS.match(alias):
            raise _bad(
                f"The function alias {alias!r} is not valid: letters, digits and underscores, "
                "starting with a letter."
            )
        checked["functionAlias"] = alias
    if parameters is not None:
        if alias is None:
            raise _bad("properties.functionParameters needs a functionAlias.")
        checked["functionParameters"] = _checked_parameters(parameters)
    return checked


def _checked_parameters(parameters: Any) -> str:
    if not isinstance(parameters, str):
        raise _bad("properties.functionParameters must be a string.")
    names: set[str] = set()
    for declared in parameters.split(",") if parameters.strip() else ():
        match = _PARAMETER.match(declared)
        if match is None:
            raise _bad(
                f"The function parameter {declared.strip()!r} is not 'name:type' or "
                "'name:type = default'."
            )
        if match["type"].lower() not in _PARAMETER_TYPES:
            raise _bad(f"The function parameter type '{match['type']}' is not a KQL scalar type.")
        if match["name"].lower() in names:
            raise _bad(f"The function parameter '{match['name']}' is declared twice.")
        names.add(match["name"].lower())
    return parameters

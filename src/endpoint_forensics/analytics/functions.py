"""The KQL functions the product ships: one text for Sentinel and for the local workspace.

Owns loading ``analytics/kql/<Name>.kql`` (first line ``// Name(param:type, ...)``, then comment
lines that describe it, then the body). In Sentinel each body is a saved function
(``functionAlias``); locally duckdb-kql takes the same definitions as stored functions
(``definitions``), so an analyst writes the same query in both places.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from typing import Any

__all__ = [
    "STATE_FUNCTIONS",
    "KqlFunction",
    "StateFunction",
    "calls",
    "definitions",
    "functions",
    "kql_datetime",
    "registry",
    "registry_for",
    "with_callees",
]

_SIGNATURE = re.compile(r"^//\s*(?P<name>\w+)\((?P<params>[^)]*)\)\s*$")


@dataclass(frozen=True)
class StateFunction:
    """The function that gives a change-tracked table's state at a time."""

    table: str
    function: str


#: Each change-tracked table's ``<Name>At(at)`` function.
STATE_FUNCTIONS = (
    StateFunction("EPF_Devices_CL", "EPF_DevicesAt"),
    StateFunction("EPF_AgentHealth_CL", "EPF_AgentHealthAt"),
    StateFunction("EPF_AvHealth_CL", "EPF_AvHealthAt"),
    StateFunction("EPF_SecureConfig_CL", "EPF_SecureConfigAt"),
    StateFunction("EPF_Vulnerabilities_CL", "EPF_VulnerabilitiesAt"),
    StateFunction("EPF_SoftwareInventory_CL", "EPF_SoftwareAt"),
)


@dataclass(frozen=True)
class KqlFunction:
    name: str
    parameters: tuple[tuple[str, str], ...]  # (name, KQL type), in call order
    description: str
    body: str  # the KQL after the header comments, as Sentinel stores it
    defaults: tuple[tuple[str, str], ...] = ()  # (name, KQL literal) of the optional ones

    @property
    def signature(self) -> str:
        """``at:datetime, days:long = 15``: the ``functionParameters`` of a saved function."""
        defaults = dict(self.defaults)
        return ", ".join(
            f"{n}:{t}" + (f" = {defaults[n]}" if n in defaults else "") for n, t in self.parameters
        )


@cache
def functions() -> dict[str, KqlFunction]:
    """Every shipped function by name."""
    found: dict[str, KqlFunction] = {}
    for entry in sorted(resources.files(__package__).joinpath("kql").iterdir(), key=str):
        if entry.name.endswith(".kql"):
            function = _parse(entry.name.removesuffix(".kql"), entry.read_text(encoding="utf-8"))
            found[function.name] = function
    return found


def _parse(file_name: str, text: str) -> KqlFunction:
    lines = text.splitlines()
    match = _SIGNATURE.match(lines[0]) if lines else None
    if match is None or match["name"] != file_name:
        raise ValueError(f"{file_name}.kql must start with '// {file_name}(param:type, ...)'")
    parameters, defaults = [], []
    for declared in (p for p in match["params"].split(",") if p.strip()):
        name, _, rest = declared.partition(":")
        kind, _, default = rest.partition("=")
        parameters.append((name.strip(), kind.strip()))
        if default.strip():
            defaults.append((name.strip(), default.strip()))
    described = 1
    while described < len(lines) and lines[described].startswith("//"):
        described += 1
    description = " ".join(line.removeprefix("//").strip() for line in lines[1:described])
    body = "\n".join(lines[described:]).strip()
    return KqlFunction(match["name"], tuple(parameters), description, body, tuple(defaults))


@cache
def registry(*names: str) -> Any:
    """``definitions`` parsed once: duckdb-kql takes the parsed registry as ``functions=``,
    and parsing every text costs about a second (a pure-Python ANTLR parser). Given
    ``names``, only those functions and the ones they call: what a caller that runs a few of
    them (the triage stage of every run) needs, in a fraction of the time."""
    from duckdb_kql.stored_functions import parse_functions

    if not names:
        return parse_functions(definitions())
    wanted = with_callees(names)
    return parse_functions(
        [d for f, d in zip(functions(), definitions(), strict=True) if f in wanted]
    )


def registry_for(text: str) -> Any:
    """The parsed functions ``text`` calls and those they call, none if it calls none: a
    query over the tables alone (``epf forensics``'s reads) parses nothing, where the whole
    registry costs a new process more than half a second."""
    called = with_callees(calls(text))
    if called:
        return registry(*sorted(called))
    return _no_functions()


@cache
def _no_functions() -> Any:
    from duckdb_kql.stored_functions import parse_functions

    return parse_functions([])


def with_callees(names: Iterable[str]) -> set[str]:
    """The shipped functions among ``names`` (any text's calls, say) and every shipped
    function they call, at any depth."""
    known = functions()
    wanted: set[str] = set()
    pending = [n for n in names if n in known]
    while pending:
        name = pending.pop()
        if name not in wanted:
            wanted.add(name)
            pending += [c for c in calls(known[name].body) if c in known]
    return wanted


def calls(text: str) -> list[str]:
    """The names a KQL text calls that look like ours (``EPF_...(``), shipped or not."""
    return _CALLED.findall(text)


# A shipped function's call of another: its name then an opening parenthesis.
_CALLED = re.compile(r"\b(EPF_\w+)\s*\(")


def kql_datetime(at: datetime) -> str:
    """``at`` as a KQL datetime literal, in UTC to the microsecond."""
    return f"datetime({at.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%S.%fZ')})"


def definitions() -> list[str]:
    """Every function as a Kusto definition, ``function Name(params) { body }``: what the
    local engine takes as stored functions (duckdb-kql's ``functions=``)."""
    return [f"function {f.name}({f.signature}) {{\n{f.body}\n}}" for f in functions().values()]

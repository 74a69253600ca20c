"""Deploying a generated template's tables and saved functions into the emulated workspace, as
ARM would.

ARM sends each ``Microsoft.OperationalInsights/workspaces/tables`` resource as one Tables -
Create Or Update: ``PUT <workspace>/tables/<name>?api-version=<its apiVersion>`` with the
resource's ``properties``, every expression evaluated; then, its ``dependsOn`` (the tables it
reads) deployed, each ``workspaces/savedSearches`` resource as ``PUT
<workspace>/savedSearches/<name>``. These resources only use ``[parameters('...')]`` and the
``[[`` escape; anything else fails here, loudly.
"""

from __future__ import annotations

import re
from typing import Any

import httpx

from epf_emulator import Emulator

TABLE_TYPE = "Microsoft.OperationalInsights/workspaces/tables"
SAVED_SEARCH_TYPE = "Microsoft.OperationalInsights/workspaces/savedSearches"
_NAME = re.compile(r"\[concat\(parameters\('workspaceName'\), '/([\w-]+)'\)\]")
_PARAMETER = re.compile(r"\[parameters\('(\w+)'\)\]")


def arm_token(emu: Emulator) -> str:
    """A Resource Manager token of the emulated app."""
    return emu.token("https://management.azure.com")


def evaluated(value: Any, parameters: dict[str, Any]) -> Any:
    """``value`` with ``[parameters('x')]`` replaced and ``[[`` unescaped."""
    if isinstance(value, dict):
        return {k: evaluated(v, parameters) for k, v in value.items()}
    if isinstance(value, list):
        return [evaluated(v, parameters) for v in value]
    if isinstance(value, str) and value.startswith("[["):
        return value[1:]
    if isinstance(value, str) and value.startswith("[") and value.endswith("]"):
        match = _PARAMETER.fullmatch(value)
        assert match, f"a table resource uses an expression this helper cannot evaluate: {value}"
        return parameters[match.group(1)]
    return value


def _put_each(
    client: httpx.Client,
    emu: Emulator,
    workspace_id: str,
    template: dict[str, Any],
    token: str,
    kind: str,
    parameters: dict[str, Any],
) -> dict[str, httpx.Response]:
    values = {name: spec.get("defaultValue") for name, spec in template["parameters"].items()}
    values.update(parameters)
    collection = "tables" if kind == TABLE_TYPE else "savedSearches"
    answers = {}
    for resource in _in_dependency_order([r for r in template["resources"] if r["type"] == kind]):
        match = _NAME.fullmatch(resource["name"])
        assert match, resource["name"]
        name = match.group(1)
        answers[name] = client.put(
            f"{emu.base_url}{workspace_id}/{collection}/{name}",
            params={"api-version": resource["apiVersion"]},
            json={"properties": evaluated(resource["properties"], values)},
            headers={"Authorization": f"Bearer {token}"},
        )
    return answers


def _in_dependency_order(resources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """As Resource Manager deploys them: a resource after those of its kind it depends on (a
    saved function after the functions it calls)."""
    names = {_NAME.fullmatch(r["name"]).group(1): r for r in resources}  # type: ignore[union-attr]
    done: list[str] = []

    def visit(name: str) -> None:
        if name in done:
            return
        for needed in names[name].get("dependsOn", []):
            for other in names:
                if f"'{other}')]" in needed and other != name:
                    visit(other)
        done.append(name)

    for name in names:
        visit(name)
    return [names[n] for n in done]


def deploy_tables(
    client: httpx.Client,
    emu: Emulator,
    workspace_id: str,
    template: dict[str, Any],
    token: str,
    **parameters: Any,
) -> dict[str, httpx.Response]:
    """PUT every table of ``template``; each table's response, by name."""
    return _put_each(client, emu, workspace_id, template, token, TABLE_TYPE, parameters)


def deploy_saved_searches(
    client: httpx.Client,
    emu: Emulator,
    workspace_id: str,
    template: dict[str, Any],
    token: str,
    **parameters: Any,
) -> dict[str, httpx.Response]:
    """PUT every saved search (function) of ``template``; each response, by name."""
    return _put_each(client, emu, workspace_id, template, token, SAVED_SEARCH_TYPE, parameters)

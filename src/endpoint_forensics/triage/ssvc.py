"""The SSVC decision models triage uses, read from the tables vendored from CERT/CC's data
(``decision_tables/``, provenance in its ``SOURCE.md``): CISA Coordinator 2.0.3, CISA BOD 26-04
1.0.0 and the Deployer patch application priority 1.0.0.

A decision is always a lookup in one of those files, never a branch written here: this module
only translates between the values ``EPF_Triage_CL`` stores (``poc``, ``Track*``, booleans) and
the spellings of the files (``public poc``, ``track*``, ``yes``/``no``). A file that does not
give exactly one outcome for every combination of its inputs is refused when it is read.
Imports nothing of the product.
"""

from __future__ import annotations

import csv
import itertools
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

__all__ = [
    "BOD_2604",
    "COORDINATOR",
    "DEPLOYER",
    "DecisionPoint",
    "DecisionTable",
    "bod_due_days",
    "display",
    "is_forensic",
    "model_versions",
]

_FOLDER = Path(__file__).with_name("decision_tables")
# "Exploitation v1.1.0", "In KEV v1.0.0 (cisa)", "Defer, Scheduled, Out-of-Cycle, Immediate v1.0.0"
_HEADER = re.compile(r"^(?P<name>.+?) v(?P<version>\d+\.\d+\.\d+)(?: \((?P<ns>[^)]+)\))?$")
# The values triage stores where the files spell them otherwise (the files' own on the right).
_TO_FILE: dict[str | bool, str] = {"poc": "public poc", True: "yes", False: "no"}


@dataclass(frozen=True)
class DecisionPoint:
    """One column of a decision table: its name, version and namespace as the file's header
    says, and its values in the order the file first uses them."""

    name: str
    version: str
    namespace: str
    values: tuple[str, ...]

    @property
    def label(self) -> str:
        return f"{self.namespace}:{self.name} v{self.version}"


@dataclass(frozen=True)
class DecisionTable:
    """One vendored decision table: ``decide`` looks an outcome up by the inputs' values."""

    key: str  # what ModelVersions calls it
    title: str
    version: str
    file: str
    inputs: tuple[DecisionPoint, ...]
    outcome: DecisionPoint
    mapping: Mapping[tuple[str, ...], str] = field(repr=False)

    @property
    def label(self) -> str:
        return f"{self.title} {self.version}"

    def decide(self, *values: str | bool) -> str:
        """The outcome for ``values`` (one per input, in the table's order), as the file
        spells it. Our spellings (``poc``, booleans) are translated first.

        Raises:
            ValueError: a value the table does not know, or the wrong number of them.
        """
        if len(values) != len(self.inputs):
            raise ValueError(f"{self.label} takes {len(self.inputs)} inputs, not {len(values)}")
        spelled = tuple(_TO_FILE.get(v, str(v)) for v in values)
        for point, value in zip(self.inputs, spelled, strict=True):
            if value not in point.values:
                raise ValueError(f"{self.label}: {point.name} cannot be {value!r}")
        return self.mapping[spelled]

    def combinations(self) -> Iterator[tuple[str, ...]]:
        """Every combination of the inputs' values, as the file spells them."""
        return itertools.product(*(p.values for p in self.inputs))


def _read(key: str, title: str, file: str) -> DecisionTable:
    with (_FOLDER / file).open(newline="", encoding="utf-8") as handle:
        header, *rows = list(csv.reader(handle))
    if not header or header[0] != "row":
        raise ValueError(f"{file}: not a CERT/CC decision table (no leading 'row' column)")
    points = []
    for column, text in enumerate(header[1:], start=1):
        match = _HEADER.match(text)
        if match is None:
            raise ValueError(f"{file}: column {text!r} names no version")
        values = tuple(dict.fromkeys(r[column] for r in rows))
        points.append(DecisionPoint(match["name"], match["version"], match["ns"] or "ssvc", values))
    *inputs, outcome = points
    mapping: dict[tuple[str, ...], str] = {}
    for r in rows:
        combination = tuple(r[1:-1])
        if combination in mapping:
            raise ValueError(f"{file}: row {r[0]} repeats the inputs {combination}")
        mapping[combination] = r[-1]
    missing = [c for c in itertools.product(*(p.values for p in inputs)) if c not in mapping]
    if missing:
        raise ValueError(f"{file}: no outcome for {missing[0]} (and {len(missing) - 1} more)")
    version = file.removesuffix(".csv").rsplit("_", 3)[-3:]
    return DecisionTable(key, title, ".".join(version), file, tuple(inputs), outcome, mapping)


@cache
def _tables() -> dict[str, DecisionTable]:
    return {
        t.key: t
        for t in (
            _read("Coordinator", "CISA Coordinator", "cisa_coordinator_2_0_3.csv"),
            _read("Bod2604", "CISA BOD 26-04", "cisa_bod_26_04_1_0_0.csv"),
            _read(
                "Deployer",
                "SSVC Deployer patch application priority",
                "deployer_patch_application_priority_1_0_0.csv",
            ),
        )
    }


COORDINATOR = _tables()["Coordinator"]
BOD_2604 = _tables()["Bod2604"]
DEPLOYER = _tables()["Deployer"]


def model_versions(*, short: bool = False) -> dict[str, str]:
    """Each table's title and version; ``short``, the version alone (``ModelVersions`` of a
    triage row, where the keys name the tables)."""
    return {key: table.version if short else table.label for key, table in _tables().items()}


_DAYS = re.compile(r"^(\d+) days\b")


def bod_due_days(outcome: str) -> int | None:
    """Days to remediate under a BOD 26-04 outcome, read from the outcome's own text
    (``"14 days"`` is 14); None for ``fix on system upgrade``, which sets no date."""
    if outcome not in BOD_2604.outcome.values:
        raise ValueError(f"{BOD_2604.label} has no outcome {outcome!r}")
    found = _DAYS.match(outcome)
    return int(found.group(1)) if found else None


def is_forensic(outcome: str) -> bool:
    """Whether a BOD 26-04 outcome asks for a forensic investigation of the asset."""
    return "forensic investigation" in outcome


def display(table: DecisionTable, outcome: str) -> str:
    """An outcome as ``EPF_Triage_CL`` stores it: ``Track*``, ``Out-of-Cycle``. The spelling
    is the outcome column's own list where its name has one, else the file's with a capital."""
    for name in table.outcome.name.split(", "):
        if name.lower() == outcome:
            return name
    return outcome[:1].upper() + outcome[1:]

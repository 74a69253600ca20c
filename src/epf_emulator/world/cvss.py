"""CVSS v3.1 base scores: vectors the emulated CVE catalogue carries and the scores they imply.

Owns the FIRST CVSS v3.1 specification's base-score equations (section 7.1, with its
``Roundup``) and severity bands, so every ``cvssVector`` the emulator serves is a valid
``CVSS:3.1/...`` string whose score and severity agree with ``cvssV3`` and ``severity``.

Imports nothing of the emulator: it shares no code with the collector.
"""

from __future__ import annotations

import math

__all__ = ["METRICS", "base_score", "severity"]

#: Base metrics in vector order, with the values they may take (CVSS v3.1 section 2).
METRICS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("AV", ("N", "A", "L", "P")),
    ("AC", ("L", "H")),
    ("PR", ("N", "L", "H")),
    ("UI", ("N", "R")),
    ("S", ("U", "C")),
    ("C", ("H", "L", "N")),
    ("I", ("H", "L", "N")),
    ("A", ("H", "L", "N")),
)
_AV = {"N": 0.85, "A": 0.62, "L": 0.55, "P": 0.2}
_AC = {"L": 0.77, "H": 0.44}
_PR_UNCHANGED = {"N": 0.85, "L": 0.62, "H": 0.27}
_PR_CHANGED = {"N": 0.85, "L": 0.68, "H": 0.5}
_UI = {"N": 0.85, "R": 0.62}
_CIA = {"H": 0.56, "L": 0.22, "N": 0.0}


def base_score(vector: str) -> float:
    """The v3.1 base score of ``CVSS:3.1/AV:_/AC:_/PR:_/UI:_/S:_/C:_/I:_/A:_``.

    Raises:
        ValueError: not a complete v3.x base vector.
    """
    prefix, _, rest = vector.partition("/")
    if prefix not in ("CVSS:3.1", "CVSS:3.0"):
        raise ValueError(f"not a CVSS v3 vector: {vector!r}")
    values = dict(item.split(":", 1) for item in rest.split("/") if ":" in item)
    try:
        changed = values["S"] == "C"
        iss = 1 - (1 - _CIA[values["C"]]) * (1 - _CIA[values["I"]]) * (1 - _CIA[values["A"]])
        pr = (_PR_CHANGED if changed else _PR_UNCHANGED)[values["PR"]]
        exploitability = 8.22 * _AV[values["AV"]] * _AC[values["AC"]] * pr * _UI[values["UI"]]
    except KeyError as exc:
        raise ValueError(f"incomplete or invalid CVSS vector {vector!r}: {exc}") from None
    if changed:
        impact = 7.52 * (iss - 0.029) - 3.25 * (iss - 0.02) ** 15
    else:
        impact = 6.42 * iss
    if impact <= 0:
        return 0.0
    total = (impact + exploitability) * (1.08 if changed else 1.0)
    return _roundup(min(total, 10.0))


def severity(score: float) -> str:
    """The qualitative rating of a score (v3.1 section 5); MDE has no "None" CVEs."""
    if score >= 9.0:
        return "Critical"
    if score >= 7.0:
        return "High"
    if score >= 4.0:
        return "Medium"
    return "Low"


def _roundup(value: float) -> float:
    """Appendix A of the v3.1 specification: round up to one decimal, free of float noise."""
    scaled = round(value * 100_000)
    if scaled % 10_000 == 0:
        return scaled / 100_000.0
    return (math.floor(scaled / 10_000) + 1) / 10.0

"""The ``missing`` sentences of a forensic answer: what was missing or weak at T, most severe first.

Owns the rules of docs/forensics.md ("The missing rules"), applied to the other keys of an
answer, so that every form of the answer (JSON, text, HTML) says the same.
"""

from __future__ import annotations

from typing import Any

from endpoint_forensics.tables import AGENT_HEALTH_TESTS

__all__ = ["STALE_SIGNATURE_HOURS", "missing_sentences"]

_EXPLOITS = (
    ("ExploitIsVerified", "verified"),
    ("ExploitIsInKit", "in-kit"),
    ("ExploitIsPublic", "public"),
)
_SPELLED_OUT = {"TamperProtection", "RealtimeProtection"}  # rules 2 and 3 name them
#: Signatures older than this are stale (rule 5); the signature crossing in `changes` is at it.
STALE_SIGNATURE_HOURS = 168


def missing_sentences(answer: dict[str, Any]) -> list[str]:
    """The sentences for ``answer`` (which has every key but ``missing``), in rule order."""
    out: list[str] = []
    health = (answer.get("device") or {}).get("HealthStatus")
    if health != "Active":
        out.append(f"Device health was {health or 'unknown'}.")
    tests = answer.get("agent_health") or {}
    if tests.get("TamperProtection") == "Fail":
        out.append("Tamper protection was off.")
    if tests.get("RealtimeProtection") == "Fail":
        out.append("Real-time protection was off.")
    av = answer.get("antivirus")
    mode = (av or {}).get("AvMode")
    if mode != "Active":
        out.append(f"Antivirus was not in active mode ({mode or 'no antivirus record'}).")
    age = (av or {}).get("SignatureAgeHours")
    if age is not None and age > STALE_SIGNATURE_HOURS:
        out.append(f"Antivirus signatures were {int(age // 24)} days old.")
    vulnerabilities = answer.get("vulnerabilities_open") or []
    for level, word in _EXPLOITS:
        cves = sorted(
            {v["CveId"] for v in vulnerabilities if v.get("ExploitabilityLevel") == level}
        )
        if cves:
            counted = _plural(len(cves), "open vulnerability", "open vulnerabilities")
            out.append(f"{counted} with a {word} exploit: {', '.join(cves[:5])}.")
    critical = {
        v["CveId"] for v in vulnerabilities if v.get("VulnerabilitySeverityLevel") == "Critical"
    }
    if critical:
        out.append(
            f"{_plural(len(critical), 'open critical vulnerability', 'open critical vulnerabilities')}."
        )
    for test in AGENT_HEALTH_TESTS:
        if test not in _SPELLED_OUT and tests.get(test) == "Fail":
            out.append(f"Agent health test {test} failed.")
    high = [c["ConfigurationId"] for c in answer.get("secure_config_failing") or []
            if (c.get("ConfigurationImpact") or 0) >= 7]  # fmt: skip
    if high:
        counted = _plural(
            len(high), "high-impact secure configuration", "high-impact secure configurations"
        )
        out.append(f"{counted} failed: {', '.join(high[:5])}.")
    return out


def _plural(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"

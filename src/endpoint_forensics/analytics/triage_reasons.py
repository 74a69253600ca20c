"""The SQL of each triage input's reason: its value, source, why and, when a feed gave it, the
copy's version, as a JSON object over the columns of ``analytics.triage``'s CVE and device
parts (docs/triage.md has the rules). Imports nothing of ours.
"""

from __future__ import annotations

__all__ = [
    "automatable_reason",
    "case",
    "epss_reason",
    "exploitation_reason",
    "exposed_reason",
    "impact_reason",
    "kev_reason",
    "reason",
]


def case(whens: list[tuple[str, str]], otherwise: str) -> str:
    """``CASE WHEN ... END``, or ``otherwise`` alone when there is no condition."""
    if not whens:
        return otherwise
    return "CASE " + "".join(f"WHEN {c} THEN {v} " for c, v in whens) + f"ELSE {otherwise} END"


def reason(value: str, source: str, why: str, version: str = "NULL") -> str:
    """One input's reason: its value, source and why, and the feed version when one gave it
    (kept short: a reason travels with every row of every triage run)."""
    plain = f"json_object('value', {value}, 'source', {source}, 'why', {why})"
    if version == "NULL":
        return plain
    return (
        f"CASE WHEN {version} IS NULL THEN {plain} ELSE json_object('value', {value},"
        f" 'source', {source}, 'why', {why}, 'version', {version}) END"
    )


def kev_reason() -> str:
    return reason("InKev", "'CISA KEV'", _kev_detail(), "KevCopy")


def epss_reason() -> str:
    return (
        f"CASE WHEN EpssCopy IS NULL THEN json_object('source', 'FIRST EPSS', 'why', {_epss_detail()})"
        f" ELSE json_object('source', 'FIRST EPSS', 'why', {_epss_detail()}, 'version', EpssCopy) END"
    )


def _kev_detail() -> str:
    return (
        "CASE WHEN InKev THEN 'listed ' || strftime(KevDateAdded, '%Y-%m-%d')"
        " || CASE WHEN KevForensicTriage THEN ', forensicTriage Yes' ELSE '' END"
        " WHEN KevCopy IS NULL THEN 'no copy read' ELSE 'not listed' END"
    )


def _epss_detail() -> str:
    return (
        "CASE WHEN Epss IS NOT NULL THEN 'scored: the Epss and EpssPercentile columns'"
        " WHEN EpssCopy IS NULL THEN 'no copy read' ELSE 'not scored' END"
    )


# One branch of an input's reason: (when, source, why, feed version); the last is the else.
_Branch = tuple[str, str, str, str]


def _branched_reason(value: str, branches: list[_Branch]) -> str:
    """An input's reason from the first branch whose condition holds."""

    def pick(i: int) -> str:
        if len({b[i] for b in branches}) == 1:
            return branches[0][i]
        return case([(b[0], b[i]) for b in branches[:-1]], branches[-1][i])

    return reason(value, pick(1), pick(2), pick(3))


_DEFENDER_EXPLOIT = "('ExploitIsInKit', 'ExploitIsVerified', 'ExploitIsPublic')"
# Who gave the device's own facts: Defender for Endpoint, or an OT device's sensor.
_DEFENDER = "CASE WHEN DeviceKind = 'OT' THEN 'Defender for IoT' ELSE 'Defender' END"
_NO_LEVEL = (
    "CASE WHEN DeviceKind = 'OT' THEN 'the sensor gives no exploit level'"
    " ELSE 'Defender ' || coalesce(ExploitabilityLevel, 'has no exploit level') END"
)
_URGENT = "'no Vulnrichment record, no CVSS vector: the more urgent value'"


def exploitation_reason() -> str:
    kev = (
        "'known exploited' || CASE WHEN VrExploitation IS NOT NULL AND VrExploitation <> 'active'"
        " THEN '; Vulnrichment says ' || VrExploitation || ', KEV prevails' ELSE '' END"
    )
    vr = "'CISA Vulnrichment'"
    return _branched_reason(
        "Exploitation",
        [
            ("InKev", "'CISA KEV'", kev, "KevCopy"),
            ("VrExploitation = 'active'", vr, "'assessed active'", "VrCopy"),
            (
                f"ExploitabilityLevel IN {_DEFENDER_EXPLOIT}",
                _DEFENDER,
                "ExploitabilityLevel",
                "NULL",
            ),
            ("VrExploitation = 'poc'", vr, "'assessed poc'", "VrCopy"),
            ("VrExploitation IS NOT NULL", vr, f"'assessed none; ' || {_NO_LEVEL}", "VrCopy"),
            (
                "TRUE",
                _DEFENDER,
                f"'not in KEV, no Vulnrichment record; ' || {_NO_LEVEL}",
                "KevCopy",
            ),
        ],
    )


def automatable_reason() -> str:
    return _branched_reason(
        "Automatable",
        [
            (
                "VrAutomatable IS NOT NULL",
                "'CISA Vulnrichment'",
                "'assessed ' || VrAutomatable",
                "VrCopy",
            ),
            (
                "_av <> ''",
                "'CVSS vector (derived)'",
                "'AV:' || _av || ' PR:' || _pr || ' UI:' || _ui",
                "NULL",
            ),
            (
                "_sensor_av NOT IN ('', 'NETWORK')",
                "'Defender for IoT attack vector (derived)'",
                "_sensor_av || ': not over the network'",
                "NULL",
            ),
            (
                "_sensor_av = 'NETWORK'",
                "'assumed'",
                "'NETWORK attack vector from the sensor, privileges and user interaction"
                " unknown: the more urgent value'",
                "NULL",
            ),
            ("TRUE", "'assumed'", _URGENT, "NULL"),
        ],
    )


def impact_reason() -> str:
    return _branched_reason(
        "TechnicalImpact",
        [
            (
                "VrTechnicalImpact IS NOT NULL",
                "'CISA Vulnrichment'",
                "'assessed ' || VrTechnicalImpact",
                "VrCopy",
            ),
            ("_c <> ''", "'CVSS vector (derived)'", "'C:' || _c || ' I:' || _i", "NULL"),
            ("TRUE", "'assumed'", _URGENT, "NULL"),
        ],
    )


def exposed_reason() -> str:
    report = "Appliance || '''s newest security report'"
    ot = "DeviceKind = 'OT'"
    return _branched_reason(
        "PubliclyExposed",
        [
            (
                "IsInternetFacing",
                _DEFENDER,
                f"CASE WHEN {ot} THEN 'internet connections in ' || {report}"
                " ELSE 'internet-facing' END",
                "NULL",
            ),
            ("_exposed_rule IS NOT NULL", "'config'", "_exposed_rule", "NULL"),
            (
                "IsInternetFacing = FALSE",
                _DEFENDER,
                f"CASE WHEN {ot} THEN 'no internet connections in ' || {report}"
                " ELSE 'not internet-facing' END || '; no triage.exposed rule'",
                "NULL",
            ),
            (
                "TRUE",
                _DEFENDER,
                f"CASE WHEN {ot} THEN 'no security report from the sensor in 7 days'"
                " ELSE 'no internet-facing signal in 2 days' END || '; no triage.exposed rule'",
                "NULL",
            ),
        ],
    )

"""The emulator's mirrors of the threat feeds, drawn from its own CVE catalogue so that they
overlap the fleet's vulnerabilities: CISA's KEV catalogue, FIRST's daily EPSS file and CISA's
Vulnrichment records, each as of the emulated day and in the published format.

- KEV: about 60% of the CVEs with a verified exploit by then (and always the incident's CVE),
  each added one to five days after its exploit was seen, due three weeks later; a quarter of
  them (and the incident's) with ``forensicTriage: "Yes"`` (BOD 26-04), the rest ``"No"``.
- EPSS: every CVE published by then, its catalogue EPSS moved up to 30% either way each day
  (scores move fast), percentiles ranked over the day's file; model ``v2025.03.14``.
- OT CVEs: the CVEs the OT sensors list join the catalogue the mirrors draw from
  (``ot_feed_cves``), a tenth of them with a verified exploit, so KEV, EPSS and Vulnrichment
  meet OT devices too.
- Vulnrichment: about 70% of the CVEs published two days or more before, with CISA
  Coordinator 2.0.3 options: exploitation as the exploit facts say, except some KEV CVEs left
  at ``none`` (Vulnrichment has had KEV CVEs marked so): the incident's, every third KEV CVE
  of the fleet's products, a tenth of the others; automatable and technical impact from the
  CVSS vector, a tenth of them the other way (a human assessment, not a rule).

A pure function of the seed and the emulated day. Imports ``world.database`` only.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from epf_emulator.world.database import Store

__all__ = [
    "EPSS_MODEL",
    "FeedCve",
    "OtFeedInput",
    "epss_csv",
    "feed_cves",
    "kev_document",
    "ot_feed_cves",
    "vulnrichment_zip",
]

EPSS_MODEL = "v2025.03.14"
_DAY_US = 86_400_000_000
_EXPLOITED = ("ExploitIsVerified", "ExploitIsInKit")


@dataclass(frozen=True)
class FeedCve:
    id: str
    vendor: str
    product: str
    description: str
    vector: str
    pub_us: int
    level: str
    exploit_us: int | None
    epss: float
    fleet: bool  # it affects a product the fleet runs


def feed_cves(store: Store) -> list[FeedCve]:
    """The catalogue's CVEs, with what the mirrors draw from."""
    cursor = store.cursor()
    try:
        rows = cursor.execute(
            "SELECT id, vendor, product, description, vector, pub_us, level, exploit_us, epss,"
            " prod IS NOT NULL FROM tvm.cve ORDER BY idx"
        ).fetchall()
    finally:
        cursor.close()
    return [FeedCve(*row) for row in rows]


@dataclass(frozen=True)
class OtFeedInput:
    """A CVE an OT sensor lists, as the mirrors need it."""

    id: str
    tenths: int  # the CVSS score times ten
    attack_vector: str  # NETWORK, ADJACENT_NETWORK, LOCAL or PHYSICAL
    description: str
    vendor: str


_AV = {"NETWORK": "N", "ADJACENT_NETWORK": "A", "LOCAL": "L", "PHYSICAL": "P"}


def ot_feed_cves(listed: list[OtFeedInput], known: set[str], seed: int) -> list[FeedCve]:
    """The OT sensors' CVEs (the first listing of each id, ids in ``known`` left out) as
    catalogue CVEs: published in the year the id names, a CVSS vector that agrees with the
    sensor's attack vector and score, a tenth with a verified exploit within 200 days."""
    found: dict[str, FeedCve] = {}
    for cve in listed:
        if cve.id in known or cve.id in found:
            continue
        year = int(cve.id.split("-")[1])
        pub = datetime(year, 1, 1, tzinfo=UTC) + timedelta(
            days=int(_unit(seed, "ot-pub", cve.id) * 330)
        )
        pub_us = int(pub.timestamp() * 1e6)
        high = cve.tenths >= 70
        privileges = "N" if cve.tenths >= 80 or _unit(seed, "ot-pr", cve.id) < 0.5 else "L"
        interaction = "N" if _unit(seed, "ot-ui", cve.id) < 0.7 else "R"
        impact = "H" if high else "L"
        vector = (
            f"CVSS:3.1/AV:{_AV.get(cve.attack_vector, 'N')}/AC:L/PR:{privileges}"
            f"/UI:{interaction}/S:U/C:{impact}/I:{impact}/A:H"
        )
        exploited = _unit(seed, "ot-exploit", cve.id) < 0.1
        found[cve.id] = FeedCve(
            id=cve.id,
            vendor=cve.vendor,
            product="firmware",
            description=cve.description,
            vector=vector,
            pub_us=pub_us,
            level="ExploitIsVerified" if exploited else "NoExploit",
            exploit_us=(
                pub_us + int(_unit(seed, "ot-exploit-at", cve.id) * 200) * _DAY_US
                if exploited
                else None
            ),
            epss=round(0.0005 + _unit(seed, "ot-epss", cve.id) * (0.6 if exploited else 0.05), 5),
            fleet=True,
        )
    return list(found.values())


def _unit(seed: int, *parts: object) -> float:
    """A number in [0, 1) fixed by the seed and ``parts``."""
    digest = hashlib.sha256(":".join(map(str, (seed, *parts))).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _exploited_at(cve: FeedCve) -> int | None:
    if cve.level not in _EXPLOITED:
        return None
    return cve.exploit_us if cve.exploit_us is not None else cve.pub_us


def _day(us: int) -> datetime:
    return datetime.fromtimestamp(us // _DAY_US * _DAY_US / 1e6, tz=UTC)


def kev_entries(
    cves: list[FeedCve], seed: int, now_us: int, incident_cve: str | None
) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    for cve in cves:
        exploited = _exploited_at(cve)
        incident = cve.id == incident_cve
        if exploited is None and not incident:
            continue
        if not incident and _unit(seed, "kev", cve.id) >= 0.6:
            continue
        seen = exploited if exploited is not None else cve.pub_us
        added = _day(seen) + timedelta(days=1 + int(_unit(seed, "kev-added", cve.id) * 5))
        if added.timestamp() * 1e6 > now_us:
            continue
        forensic = incident or _unit(seed, "kev-forensic", cve.id) < 0.25
        entries.append(
            {
                "cveID": cve.id,
                "vendorProject": cve.vendor,
                "product": cve.product,
                "vulnerabilityName": f"{cve.vendor} {cve.product} Vulnerability",
                "dateAdded": f"{added:%Y-%m-%d}",
                "shortDescription": cve.description,
                "requiredAction": "Apply mitigations per vendor instructions, follow applicable"
                " BOD 22-01 guidance for cloud services, or discontinue use of the product if"
                " mitigations are unavailable.",
                "dueDate": f"{added + timedelta(days=21):%Y-%m-%d}",
                "knownRansomwareCampaignUse": (
                    "Known" if _unit(seed, "kev-ransom", cve.id) < 0.2 else "Unknown"
                ),
                "notes": f"https://nvd.nist.gov/vuln/detail/{cve.id}",
                "cwes": [],
                "forensicTriage": "Yes" if forensic else "No",
            }
        )
    entries.sort(key=lambda e: (e["dateAdded"], e["cveID"]), reverse=True)
    return entries


def kev_document(cves: list[FeedCve], seed: int, now_us: int, incident_cve: str | None) -> bytes:
    """``known_exploited_vulnerabilities.json`` as of ``now_us``."""
    entries = kev_entries(cves, seed, now_us, incident_cve)
    released = datetime.fromtimestamp(now_us / 1e6, tz=UTC).replace(
        minute=0, second=0, microsecond=0
    )
    return orjson.dumps(
        {
            "title": "CISA Catalog of Known Exploited Vulnerabilities",
            "catalogVersion": f"{released:%Y.%m.%d}",
            "dateReleased": released.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
            "count": len(entries),
            "vulnerabilities": entries,
        },
        option=orjson.OPT_INDENT_2,
    )


def epss_scores(cves: list[FeedCve], seed: int, day: datetime) -> list[tuple[str, float, float]]:
    """(cve, epss, percentile) of the CVEs published by the end of ``day``."""
    end_us = int(day.timestamp() * 1e6) + _DAY_US
    scored = []
    for cve in cves:
        if cve.pub_us >= end_us:
            continue
        moved = cve.epss * (0.7 + 0.6 * _unit(seed, "epss", cve.id, f"{day:%Y-%m-%d}"))
        scored.append((cve.id, round(min(max(moved, 0.00001), 0.99999), 5)))
    ranked = sorted(s for _, s in scored)
    total = len(ranked)
    rank: dict[float, int] = {}
    for position, score in enumerate(ranked):
        rank[score] = position + 1  # the last position of a score: ties share the higher rank
    return [(cve, score, round(rank[score] / total, 5)) for cve, score in scored]


def epss_csv(cves: list[FeedCve], seed: int, day: datetime) -> bytes:
    """``epss_scores-YYYY-MM-DD.csv.gz`` for ``day``."""
    text = io.StringIO()
    text.write(f"#model_version:{EPSS_MODEL},score_date:{day:%Y-%m-%d}T00:00:00+0000\n")
    text.write("cve,epss,percentile\n")
    for cve, score, percentile in epss_scores(cves, seed, day):
        text.write(f"{cve},{score:.5f},{percentile:.5f}\n")
    return gzip.compress(text.getvalue().encode(), mtime=0)


def _vector_parts(vector: str) -> dict[str, str]:
    return dict(p.split(":", 1) for p in vector.split("/")[1:] if ":" in p)


def vulnrichment_options(
    cve: FeedCve, seed: int, now_us: int, kev_none: bool
) -> list[dict[str, str]]:
    exploited = _exploited_at(cve)
    if kev_none:
        exploitation = "none"
    elif exploited is not None and exploited <= now_us:
        exploitation = "active"
    elif cve.level != "NoExploit":
        exploitation = "poc"
    else:
        exploitation = "none"
    metrics = _vector_parts(cve.vector)
    automatable = metrics.get("AV") == "N" and metrics.get("PR") == "N" and metrics.get("UI") == "N"
    total = metrics.get("C") == "H" and metrics.get("I") == "H"
    if _unit(seed, "vr-auto", cve.id) < 0.1:
        automatable = not automatable
    if _unit(seed, "vr-impact", cve.id) < 0.1:
        total = not total
    return [
        {"Exploitation": exploitation},
        {"Automatable": "yes" if automatable else "no"},
        {"Technical Impact": "total" if total else "partial"},
    ]


def vulnrichment_record(cve: FeedCve, seed: int, now_us: int, kev_none: bool) -> dict[str, Any]:
    assessed = _day(cve.pub_us) + timedelta(days=2, hours=int(_unit(seed, "vr-at", cve.id) * 20))
    return {
        "dataType": "CVE_RECORD",
        "dataVersion": "5.1",
        "cveMetadata": {"cveId": cve.id, "state": "PUBLISHED"},
        "containers": {
            "cna": {
                "descriptions": [{"lang": "en", "value": cve.description}],
                "metrics": [{"format": "CVSS", "cvssV3_1": {"vectorString": cve.vector}}],
            },
            "adp": [
                {
                    "title": "CISA ADP Vulnrichment",
                    "metrics": [
                        {
                            "other": {
                                "type": "ssvc",
                                "content": {
                                    "id": cve.id,
                                    "role": "CISA Coordinator",
                                    "options": vulnrichment_options(cve, seed, now_us, kev_none),
                                    "version": "2.0.3",
                                    "timestamp": assessed.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                                },
                            }
                        }
                    ],
                    "providerMetadata": {
                        "orgId": "134c704f-9b21-4f2e-91b3-4a467353bcc0",
                        "shortName": "CISA-ADP",
                        "dateUpdated": assessed.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
                    },
                }
            ],
        },
    }


def kev_marked_none(
    cves: list[FeedCve], kev: set[str], seed: int, incident_cve: str | None
) -> set[str]:
    """The KEV CVEs Vulnrichment leaves at exploitation ``none``: the incident's, every third
    one of the fleet's products (so that triage meets some on devices), a tenth of the rest."""
    fleet = sorted(c.id for c in cves if c.fleet and c.id in kev)
    others = {
        c.id for c in cves if not c.fleet and c.id in kev and _unit(seed, "vr-none", c.id) < 0.1
    }
    return {*fleet[::3], *others, *([incident_cve] if incident_cve in kev else [])}


def vulnrichment_zip(
    cves: list[FeedCve], seed: int, now_us: int, incident_cve: str | None
) -> bytes:
    """The repository's archive as GitHub serves it (``vulnrichment-develop/YYYY/Nxxx/…``)."""
    kev = {e["cveID"] for e in kev_entries(cves, seed, now_us, incident_cve)}
    none = kev_marked_none(cves, kev, seed, incident_cve)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("vulnrichment-develop/README.md", "# Vulnrichment (emulated mirror)\n")
        for cve in cves:
            if cve.id not in none and (
                cve.pub_us > now_us - 2 * _DAY_US or _unit(seed, "vr", cve.id) >= 0.7
            ):
                continue
            _, year, number = cve.id.split("-")
            folder = f"{number[:-3]}xxx"
            record = vulnrichment_record(cve, seed, now_us, cve.id in none)
            archive.writestr(
                f"vulnrichment-develop/{year}/{folder}/{cve.id}.json",
                orjson.dumps(record, option=orjson.OPT_INDENT_2),
            )
    return out.getvalue()

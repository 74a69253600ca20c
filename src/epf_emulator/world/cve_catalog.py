"""The emulated CVE catalogue: which CVEs exist, what they affect, how bad and how exploited.

Owns generating, deterministically from the seed, every CVE of the tenant's world
(defender-apis.md B.5.8): for each product of ``world.software`` a number of CVEs scaled so that
devices average the configured CVE rows, each affecting the versions older than its fix
(some have no fix yet), with a valid CVSS v3.1 vector and the score and severity it implies,
exploit facts (8% of the unexploited become exploited during the timeline, half of them in
the three weeks around the anchor, which is what ``Updated`` delta rows report), EPSS,
support status, publication times spread through the timeline (6% in the two weeks before
the anchor, 3% in the two weeks after, 21% in the 106 days before those: at 2,000 devices
about 8 new CVEs of the fleet's products every two weeks early in the timeline and about 20
in the last two weeks before the anchor, each found within 6 hours on every device running an affected
version), and CVEs of products nobody runs: about 15% more, then older ones until the
catalogue holds ``CATALOGUE_MIN`` CVEs
whatever the fleet size. Defender's catalogue is the world's (hundreds of thousands of
CVEs, most with ``exposedMachines`` 0), so it always pages past the 8,000 ``$top`` cap of
``/api/vulnerabilities``; these come from their own random stream, so the CVEs that affect
devices, and the fleet's vulnerability posture, do not depend on them. Built in Python
(about 12,000 rows), then loaded into DuckDB by ``world.posture``.

The incident story (``world.incident``) adds one last CVE: Critical, exploit verified,
published 40 days before the incident, affecting the incident device's OS version and older.

Imports only ``world.cvss``, ``world.incident`` and ``world.software`` of the emulator: it shares
no code with the collector.
"""

from __future__ import annotations

import functools
import itertools
import random
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from epf_emulator.world.cvss import METRICS, base_score, severity
from epf_emulator.world.incident import INCIDENT_CVE_PUBLISHED_US
from epf_emulator.world.software import KINDS, PRODUCTS

__all__ = ["CATALOGUE_MIN", "CVE_COLUMNS", "Cve", "build_cves"]

DAY_US = 86_400_000_000
#: CVEs in the catalogue at least, published before the anchor (half again the 8,000 cap).
CATALOGUE_MIN = 12_000
_LEVELS = (("NoExploit", 0.62), ("ExploitIsPublic", 0.86), ("ExploitIsVerified", 0.96))
_EXPLOIT_TYPES = ("Local privilege escalation", "Denial of service", "Local")
_KINDS_OF_FLAW = (
    ("Remote code execution", "execute arbitrary code"),
    ("Elevation of privilege", "gain elevated privileges"),
    ("Information disclosure", "read sensitive information"),
    ("Denial of service", "make the product stop responding"),
    ("Security feature bypass", "bypass a security feature"),
)
# Vector metric weights, in METRICS order: mostly network-reachable, low complexity.
_METRIC_WEIGHTS = (
    (0.7, 0.03, 0.25, 0.02),
    (0.85, 0.15),
    (0.55, 0.35, 0.10),
    (0.6, 0.4),
    (0.85, 0.15),
    (0.55, 0.25, 0.20),
    (0.55, 0.25, 0.20),
    (0.5, 0.2, 0.3),
)
# The same draws as weights=, without summing them again for each of ~100,000 choices.
_CUM_METRIC_WEIGHTS = tuple(tuple(itertools.accumulate(w)) for w in _METRIC_WEIGHTS)
_score = functools.lru_cache(maxsize=None)(base_score)  # 2,592 vectors in all
_HISTORY_DAYS = 120  # the timeline starts this long before the anchor (world.posture)
_FUTURE_DAYS = 14
_INCIDENT_VECTOR = "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"  # 9.8, Critical
_NOT_IN_FLEET = (
    ("fortinet", "fortios"),
    ("cisco", "ios_xe"),
    ("juniper", "junos"),
    ("vmware", "esxi"),
    ("citrix", "netscaler_adc"),
    ("paloaltonetworks", "pan-os"),
    ("ivanti", "connect_secure"),
    ("atlassian", "confluence_server"),
)
#: Columns of the DuckDB ``cve`` table, in ``Cve`` field order.
CVE_COLUMNS: dict[str, str] = {
    "idx": "INTEGER",
    "id": "VARCHAR",
    "prod": "INTEGER",  # NULL: a product nobody in the fleet runs
    "fix": "INTEGER",  # versions with an index below this are affected
    "vendor": "VARCHAR",
    "product": "VARCHAR",
    "description": "VARCHAR",
    "vector": "VARCHAR",
    "score": "DOUBLE",
    "severity": "VARCHAR",
    "pub_us": "BIGINT",
    "updated_us": "BIGINT",
    "level": "VARCHAR",  # exploitability once exploit_us has passed (or always, when NULL)
    "exploit_us": "BIGINT",
    "exploit_types": "VARCHAR[]",
    "exploit_uris": "VARCHAR[]",
    "epss": "DOUBLE",
    "supportability": "VARCHAR",
    "update_available": "BOOLEAN",
    "update_name": "VARCHAR",
    "update_id": "VARCHAR",
    "update_url": "VARCHAR",
}


@dataclass(frozen=True)
class Cve:
    idx: int
    id: str
    prod: int | None
    fix: int
    vendor: str
    product: str
    description: str
    vector: str
    score: float
    severity: str
    pub_us: int
    updated_us: int
    level: str
    exploit_us: int | None
    exploit_types: list[str]
    exploit_uris: list[str]
    epss: float
    supportability: str
    update_available: bool
    update_name: str | None
    update_id: str | None
    update_url: str | None


def build_cves(
    seed: int,
    anchor_us: int,
    *,
    per_device: float,
    os_versions: Mapping[tuple[int, int], int],
    kinds: Mapping[str, int],
    incident_os: tuple[int, int] | None = None,
) -> list[Cve]:
    """The catalogue, scaled so a device averages ``per_device`` CVE rows at the anchor.

    ``os_versions`` counts sensor devices per (OS product, version index) and ``kinds``
    per device kind; the scale is solved on the expected value, so the realised average
    is close to, not exactly, ``per_device``. ``incident_os`` (OS product, version index)
    adds the incident's CVE last.
    """
    weights = [p.cve_weight for p in PRODUCTS]
    scale = _solve_scale(weights, per_device, os_versions, kinds)
    rng = random.Random(f"epf-cves:{seed}")
    cves: list[Cve] = []
    for prod in range(len(PRODUCTS)):
        for _ in range(round(weights[prod] * scale)):
            cves.append(_cve(rng, len(cves), prod, anchor_us))
    # About 15% more that no device runs: the catalogue is the world's, not the fleet's.
    for _ in range(max(3, len(cves) * 15 // 100)):
        cves.append(_cve(rng, len(cves), None, anchor_us))
    # Then older CVEs of products nobody here runs, from a stream of their own (the ones
    # above stay as they were), until the catalogue is larger than one $top page.
    world = random.Random(f"epf-cves-world:{seed}")
    vectors = [_vector(world) for _ in range(512)]
    published = sum(1 for c in cves if c.pub_us <= anchor_us)
    while published < CATALOGUE_MIN:
        cves.append(_cve(world, len(cves), None, anchor_us, old=True, vectors=vectors))
        published += 1
    if incident_os is not None:
        rng = random.Random(f"epf-cves-incident:{seed}")
        cves.append(_incident_cve(rng, len(cves), incident_os, anchor_us))
    return cves


def _incident_cve(rng: random.Random, idx: int, os: tuple[int, int], anchor_us: int) -> Cve:
    """The incident's CVE: Critical, exploit verified, on the incident device's OS version."""
    prod, version = os
    published = anchor_us + INCIDENT_CVE_PUBLISHED_US
    cve = _cve(rng, idx, prod, published, vectors=[_INCIDENT_VECTOR])
    product = PRODUCTS[prod]
    n = len(product.versions)
    fixed = (
        f"versions before {product.versions[version + 1]}" if version + 1 < n else "all versions"
    )
    return replace(
        cve,
        id=f"CVE-2026-{21000 + idx * 7}",
        description=(
            f"Remote code execution vulnerability in {product.vendor}"
            f" {product.name.replace('_', ' ')} ({fixed}): an attacker who exploits it could"
            " execute arbitrary code."
        ),
        fix=version + 1,
        pub_us=published,
        updated_us=published,
        level="ExploitIsVerified",
        exploit_us=None,
        exploit_types=["Remote code execution"],
        exploit_uris=[f"https://www.exploit-db.com/exploits/{50000 + idx}"],
        update_available=version + 1 < n,
    )


def _solve_scale(
    weights: list[float],
    target: float,
    os_versions: Mapping[tuple[int, int], int],
    kinds: Mapping[str, int],
) -> float:
    """Bisect the CVEs-per-weight scale whose expected rows per device meet ``target``."""
    devices = sum(kinds.values())
    if devices == 0 or target <= 0:
        return 0.0

    def expected(scale: float) -> float:
        rows = 0.0
        for (prod, version), count in os_versions.items():
            rows += count * _affecting(round(weights[prod] * scale), version, prod)
        for kind in KINDS:
            for prod, product in enumerate(PRODUCTS):
                share = dict(product.install).get(kind, 0.0)
                if share and kinds.get(kind):
                    per_version = sum(
                        w * _affecting(round(weights[prod] * scale), v, prod)
                        for v, w in enumerate(product.version_weights())
                    )
                    rows += kinds[kind] * share * per_version
        return rows / devices

    low, high = 0.0, 1.0
    while expected(high) < target and high < 1e6:
        high *= 2
    for _ in range(40):
        middle = (low + high) / 2
        low, high = (middle, high) if expected(middle) < target else (low, middle)
    return high


def _affecting(count: int, version: int, prod: int) -> float:
    """Expected CVEs of ``count`` that affect ``version``: fixes are uniform over 1..n."""
    n = len(PRODUCTS[prod].versions)
    return count * (n - version) / n


def _vector(rng: random.Random) -> str:
    vector = "CVSS:3.1/" + "/".join(
        f"{metric}:{rng.choices(values, cum_weights=w)[0]}"
        for (metric, values), w in zip(METRICS, _CUM_METRIC_WEIGHTS, strict=True)
    )
    if vector.endswith("C:N/I:N/A:N"):
        vector = vector[: -len("C:N/I:N/A:N")] + "C:L/I:N/A:N"  # a CVE always has an impact
    return vector


def _cve(
    rng: random.Random,
    idx: int,
    prod: int | None,
    anchor_us: int,
    *,
    old: bool = False,
    vectors: list[str] | None = None,
) -> Cve:
    """One CVE; ``old`` ones were published before the timeline, ``vectors`` is a pool to
    draw the vector from (cheaper than drawing each metric)."""
    if prod is None:
        vendor, name = rng.choice(_NOT_IN_FLEET)
        versions: tuple[str, ...] = ("1.0",)
        no_fix_share = 0.04
    else:
        product = PRODUCTS[prod]
        vendor, name, versions = product.vendor, product.name, product.versions
        no_fix_share = product.no_fix_share
    n = len(versions)
    no_fix = rng.random() < no_fix_share
    fix = n if no_fix else rng.randint(1, n)
    vector = rng.choice(vectors) if vectors else _vector(rng)
    score = _score(vector)
    pub_us, updated_us = _published(rng, anchor_us, old=old)
    level, exploit_us = _exploitability(rng, pub_us, anchor_us)
    exploited = level != "NoExploit"
    year = (datetime(1970, 1, 1) + timedelta(microseconds=pub_us)).year
    flaw, effect = _KINDS_OF_FLAW[rng.randrange(len(_KINDS_OF_FLAW))]
    fixed = f"versions before {versions[fix]}" if fix < n else "all current versions"
    microsoft = vendor == "microsoft"
    kb = str(5030000 + rng.randrange(60000)) if microsoft and not no_fix else None
    return Cve(
        idx=idx,
        id=f"CVE-{year}-{21000 + idx * 7 + rng.randrange(7)}",
        prod=prod,
        fix=fix,
        vendor=vendor,
        product=name,
        description=(
            f"{flaw} vulnerability in {vendor} {name.replace('_', ' ')} ({fixed}): an attacker"
            f" who exploits it could {effect}."
        ),
        vector=vector,
        score=score,
        severity=severity(score),
        pub_us=pub_us,
        updated_us=updated_us,
        level=level,
        exploit_us=exploit_us,
        exploit_types=[rng.choice(_EXPLOIT_TYPES)] if exploited else [],
        exploit_uris=[f"https://www.exploit-db.com/exploits/{50000 + idx}"] if exploited else [],
        epss=round(min(1.0, rng.random() ** (2 if exploited else 7)), 5),
        supportability=rng.choices(
            ("Supported", "supported", "Not Supported", "SupportedInPremium"),
            weights=(0.88, 0.04, 0.04, 0.04),  # the doc's sample spells it "supported"
        )[0],
        update_available=not no_fix,
        update_name=None if no_fix else _update_name(name, kb, versions, fix, microsoft),
        update_id=kb,
        update_url=(
            f"https://catalog.update.microsoft.com/v7/site/Search.aspx?q=KB{kb}" if kb else None
        ),
    )


def _published(rng: random.Random, anchor_us: int, *, old: bool) -> tuple[int, int]:
    """(published, last updated) in epoch microseconds; ``old`` ones before the timeline."""
    r = 1.0 if old else rng.random()
    if r < 0.06:  # published in the last two weeks: found on devices during the timeline
        pub_us = anchor_us - int(rng.uniform(0, 14) * DAY_US)
    elif r < 0.09:  # published in the coming two weeks: found after an advance
        pub_us = anchor_us + int(rng.uniform(0.1, _FUTURE_DAYS) * DAY_US)
    elif r < 0.30:  # published earlier in the timeline
        pub_us = anchor_us - int(rng.uniform(14, _HISTORY_DAYS) * DAY_US)
    else:
        pub_us = anchor_us - int((_HISTORY_DAYS + 900 * rng.random() ** 1.5) * DAY_US)
    updated_us = min(pub_us + int(rng.uniform(0, 40) * DAY_US), max(pub_us, anchor_us))
    return pub_us, updated_us


def _exploitability(rng: random.Random, pub_us: int, anchor_us: int) -> tuple[str, int | None]:
    """(exploitability level, when an exploit appears during the timeline, or None)."""
    level = next((name for name, cut in _LEVELS if rng.random() < cut), "ExploitIsInKit")
    exploit_us = None
    if level == "NoExploit" and rng.random() < 0.08:
        # An exploit is published during the timeline: Updated rows in the delta.
        level = rng.choice(("ExploitIsPublic", "ExploitIsPublic", "ExploitIsVerified"))
        # Half anywhere in the timeline, half in the three weeks around the anchor.
        if rng.random() < 0.5:
            start = max(pub_us, anchor_us - _HISTORY_DAYS * DAY_US)
            span = anchor_us + _FUTURE_DAYS * DAY_US - start
            exploit_us = start + int(rng.uniform(0.01, 1) * span)
        else:
            start = max(pub_us, anchor_us - 13 * DAY_US)
            exploit_us = start + int(rng.uniform(0.2, 8) * DAY_US)
    return level, exploit_us


def _update_name(
    name: str, kb: str | None, versions: tuple[str, ...], fix: int, microsoft: bool
) -> str:
    """The fixing update's name: its KB for Microsoft products, else the fixed version."""
    suffix = f" {versions[fix]}" if fix < len(versions) and not microsoft else ""
    return f"{'KB' + kb if kb else 'Update'} for {name.replace('_', ' ')}" + suffix

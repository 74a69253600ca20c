"""``[feeds]``: the threat feeds triage reads (CISA KEV, FIRST EPSS, CISA Vulnrichment), each
from its published URL by default, from another URL (a mirror), or from a file or folder for
an air-gapped site. Imports ``config.models``.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator, model_validator

from endpoint_forensics.config.models import (
    FEED_DATASETS,
    FeedDataset,
    Model,
    existing_file,
    existing_path,
    interval_hours,
)

__all__ = ["PUBLISHED", "FeedLocation", "FeedsConfig"]

#: Where each feed is published. EPSS's "current" file redirects to the dated one.
PUBLISHED = {
    "kev": "https://www.cisa.gov/sites/default/files/feeds/known_exploited_vulnerabilities.json",
    "epss": "https://epss.empiricalsecurity.com/epss_scores-current.csv.gz",
    "vulnrichment": "https://github.com/cisagov/vulnrichment/archive/refs/heads/develop.zip",
}


class FeedLocation(Model):
    """Where one feed is read: ``url`` (HTTPS), or ``path``, a file as published or a folder
    (the newest published file in it; for Vulnrichment, a clone of its repository)."""

    url: str | None = None
    path: Path | None = None

    @field_validator("url")
    @classmethod
    def _https(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("https://"):
            raise ValueError("must be an https:// URL (a feed decides triage: no plain HTTP)")
        return value

    @field_validator("path")
    @classmethod
    def _exists(cls, value: Path | None) -> Path | None:
        return existing_path(value)

    @model_validator(mode="after")
    def _one_place(self) -> FeedLocation:
        if self.url is not None and self.path is not None:
            raise ValueError("set url or path, not both")
        return self


class FeedsConfig(Model):
    """The threat feeds, collected like any source (``EPF_Runs_CL`` has a row per feed read).

    A feed whose read fails writes nothing: the last good copy stays the newest in its table,
    and the run's error says which copy that is."""

    datasets: tuple[FeedDataset, ...] = FEED_DATASETS
    interval_hours: dict[FeedDataset, float] = Field(default_factory=dict)
    kev: FeedLocation = FeedLocation()
    epss: FeedLocation = FeedLocation()
    vulnrichment: FeedLocation = FeedLocation()
    # A PEM bundle to trust instead of the system's store (a mirror with a private CA).
    ca_bundle: Path | None = None
    timeout_seconds: float = Field(default=300.0, gt=0)
    max_retries: int = Field(default=4, ge=0, le=20)

    @property
    def name(self) -> str:
        return "feeds"

    @field_validator("ca_bundle")
    @classmethod
    def _existing_file(cls, value: Path | None) -> Path | None:
        return existing_file(value)

    def location(self, dataset: str) -> FeedLocation:
        """Where ``dataset`` is read: as configured, else its published URL."""
        found: FeedLocation = getattr(self, dataset)
        if found.url is None and found.path is None:
            return FeedLocation(url=PUBLISHED[dataset])
        return found

    def interval_hours_for(self, dataset: str) -> float:
        return interval_hours("feed", self.interval_hours, dataset)

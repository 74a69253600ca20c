"""Where the emulator serves each threat-feed mirror (what ``[feeds]`` of its config points at);
a module of its own so that writing a config loads no server stack."""

from __future__ import annotations

__all__ = ["FEED_PATHS"]

FEED_PATHS = {
    "kev": "/feeds/kev/known_exploited_vulnerabilities.json",
    "epss": "/feeds/epss/epss_scores-current.csv.gz",
    "vulnrichment": "/feeds/vulnrichment/archive/refs/heads/develop.zip",
}

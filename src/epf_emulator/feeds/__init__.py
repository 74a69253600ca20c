"""Mirrors of the public threat feeds (CISA KEV, FIRST EPSS, CISA Vulnrichment), drawn from the
emulated world's CVE catalogue."""

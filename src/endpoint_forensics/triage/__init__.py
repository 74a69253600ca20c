"""Vulnerability triage: the SSVC decision models (``ssvc``), vendored from CERT/CC's data.

Pure: reads nothing but its own decision tables. May import ``tables``.
"""

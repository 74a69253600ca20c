"""Endpoint Forensics: endpoint security posture history from Microsoft Defender.

Collects device inventory and health from Microsoft Defender for Endpoint (and later
Defender for IoT), keeps every snapshot in an embedded DuckDB workspace and/or
Microsoft Sentinel, and answers "was this device healthy when it was hit?".
May import nothing of ours (the commands and the HTTP client read its ``__version__``).
"""

__version__ = "0.1.0"

"""The emulated Defender for Endpoint world: devices, software, CVEs, posture over time.

Modules: ``fleet``, ``devices``, ``device_traits`` (who the machines are); ``software``,
``cve_catalog``, ``cvss`` (what they run and its CVEs); ``posture`` (the timeline, in DuckDB
SQL); ``scid_catalog``, ``secure_config_history`` (secure configuration); ``av_health``;
``hunting_schema``, ``database`` (the DuckDB database and its hunting tables);
``tvm_datasets``, ``snapshots``, ``catalog_records`` (the datasets as of an instant).
Nothing here serves HTTP: ``mde``, ``tvm`` and ``hunting`` do.

Imports only ``common.clock`` of the emulator, besides its own modules.
"""

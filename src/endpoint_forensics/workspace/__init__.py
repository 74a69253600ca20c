"""The embedded DuckDB workspace: schema from the registry, KQL and SQL queries.

May import nothing (``workspace.store`` is imported by name).
"""

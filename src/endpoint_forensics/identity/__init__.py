"""Credentials: bearer tokens from azure-identity, and `keyvault:` secret references.

May import nothing (its modules are imported by name).
"""

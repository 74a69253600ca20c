"""Emulated Azure services: Key Vault secrets and one Log Analytics workspace's tables.

Modules: ``keyvault`` (``GET /secrets/{name}`` with the challenge the SDK expects),
``workspace`` (the workspace's facts, its tables and the Tables API's rules for them) and
``resource_manager`` (that workspace over the Resource Manager API).

Imports only ``common`` and ``identity`` modules of the emulator.
"""

"""Emulated Azure services: Key Vault secrets and one Log Analytics workspace's tables and
saved searches.

Modules: ``keyvault`` (``GET /secrets/{name}`` with the challenge the SDK expects),
``errors`` (ARM's error answer), ``table_rules`` (what a Tables API ``PUT`` may say: plans per
api-version, retention, columns), ``workspace`` (the workspace's facts, its tables and the
Tables API's rules for them), ``saved_searches`` (its saved searches and functions) and
``resource_manager`` (that workspace over the Resource Manager API).

Imports only ``common`` and ``identity`` modules of the emulator.
"""

"""Emulated advanced hunting: KQL over the hunting tables, for the MDE API and Graph.

Modules: ``advanced`` (running posted KQL with each API's limits, shared by
``mde.machines``'s ``POST /api/advancedqueries/run``) and ``graph`` (Graph's
``POST /v1.0/security/runHuntingQuery``).

Imports only ``common``, ``identity`` and ``world`` modules of the emulator.
"""

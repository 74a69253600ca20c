"""The emulated Defender for Endpoint API: machines, collections, OData ``$filter``.

Modules: ``machines`` (``/api/machines`` and the legacy ``POST /api/advancedqueries/run``),
``collections`` (``/api/deviceavinfo``, ``/api/recommendations``, ``/api/vulnerabilities``),
``odata`` (the ``$filter`` parser and evaluator) and ``odata_lexer`` (its tokens).

Imports only ``common``, ``hunting``, ``identity`` and ``world`` modules of the emulator.
"""

"""The emulated vulnerability-management exports: JSON pages, the delta, via-files exports.

Modules: ``json_exports`` (the ``...ByMachine`` pages, the delta and the ``...Export``
endpoints) and ``file_exports`` (the via-files jobs, their gzip parts and the SAS blob
endpoint).

Imports only ``common``, ``identity`` and ``world`` modules of the emulator.
"""

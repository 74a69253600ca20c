"""The emulated Azure Monitor Logs Ingestion API: DCRs, their streams, uploads.

Modules: ``streams`` (one ``Custom-<Table>`` stream per registry table, and the record
checks), ``rules`` (the DCRs that declare them, at most 10 streams each) and ``endpoint``
(the upload route and the rows it accepted).

Imports only ``common`` and ``identity`` modules of the emulator and ``endpoint_forensics.tables``
(the registry whose tables the streams declare).
"""

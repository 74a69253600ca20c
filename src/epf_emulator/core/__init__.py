"""The emulator's assembly: one tenant, its ASGI app, and ``Emulator`` that runs it.

Modules: ``tenant`` (everything one start serves from, and the ``/_emulator/stats``
document), ``truth`` (the posture datasets' ground truth), ``app`` (the ASGI app: every
service's routes and the control plane), ``credentials`` (what a start issues: fresh secrets,
the state directory, the test CA), ``server`` (``Emulator``: lifecycle and public facts) and
``config_text`` (the collector config that points at a running emulator).

Imports every other subpackage of the emulator (and, in ``tenant``,
``endpoint_forensics.tables``); none of them imports this one.
"""

"""The emulator's assembly: its tenants, their ASGI apps, and ``Emulator`` that runs them.

Modules: ``tenant`` (one tenant's world, and its ``/_emulator/stats`` document), ``seats``
(every tenant of a start: each one's credentials, clock, limits and counters, its world built
on first use), ``truth`` (the posture datasets' ground truth), ``app`` (one tenant's ASGI app:
every service's routes), ``routing`` (which tenant a request names), ``front`` (the one
listener's outermost layer: the tenant chosen, faults, counts), ``control`` (the control
plane), ``credentials`` (what a start issues: fresh secrets, the state directory, the test
CA), ``server`` (``Emulator``: lifecycle and public facts), ``process`` (an ``Emulator`` in a
child process), ``startup`` (start time and peak RSS) and ``config_text`` (the collector
config that points at a running emulator).

Imports every other subpackage of the emulator (and, in ``tenant``,
``endpoint_forensics.tables``); none of them imports this one.
"""

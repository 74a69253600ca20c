"""What every emulated service shares: settings, the clock, limits, wire shapes, listeners.

Modules: ``settings`` (``EmulatorSettings``, ``Fault``, the ``--faults`` syntax), ``clock``
(the emulated now), ``limits`` (rate limits, fault injection, request counts), ``responses``
(JSON bodies and each service's error dialect) and ``listen`` (sockets, uvicorn servers and
their threads). The services (``identity``, ``azure``, ``world``, ``mde``, ``tvm``,
``hunting``, ``ingestion``, ``iot``) build on these; ``core`` assembles them.

Imports nothing of the emulator outside this package (``limits`` reads ``settings``), so every
service may import it and no service imports ``core``.
"""

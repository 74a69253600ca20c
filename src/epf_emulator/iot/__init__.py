"""The emulated Defender for IoT: OT sensors and the on-premises management console.

Modules: ``model`` (the OT model's types), ``catalog`` (vocabularies), ``fleet`` (generating
the OT devices, connections and CVEs), ``reports`` (what the vulnerability reports say),
``timeline`` (alerts and events over time), ``state`` (the IoT side of one start), ``render``
(wire shapes), ``sensor_api`` and ``console_api`` (the routes), ``server`` (one HTTPS listener
per appliance) and ``truth`` (the IoT datasets' ground truth).

Imports only ``common`` modules (clock, limits, listen, settings), ``world.devices`` and its own.
"""

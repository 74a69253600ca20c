"""The emulated Defender tenant: a faithful local stand-in for the remote APIs.

Used by ``epf demo``, ``epf emulator``, tests and benchmarks. A real HTTPS server on loopback
(uvicorn + Starlette, certificate from a generated test CA) serving the Entra token endpoint
(client secret or certificate assertion), the MDE machines, advanced-hunting, AV health, TVM
export (JSON pages, delta, via files with SAS blob downloads), recommendations and
vulnerabilities APIs and Graph ``runHuntingQuery`` over a deterministic synthetic fleet and
its posture timeline (``advance`` moves the emulated clock), the Defender for IoT sensors and
management console, the Logs Ingestion API, Key Vault, the managed identity endpoint and the
workspace's tables over Resource Manager, with the documented rate limits, declarative fault
injection and a ``/_emulator/stats`` ground truth; one tenant or many on the one listener
(``EmulatorSettings.tenants``). Built from the documented wire format
(shared/reference/defender-apis.md), quirks included.

Subpackages (each module's docstring says what it owns and what it imports):

- ``common``: what every service shares. ``settings`` (settings, the ``--faults`` syntax),
  ``clock`` (the emulated now), ``limits`` (rate limits, faults, counters), ``responses`` (wire
  shapes, error dialects), ``listen`` (sockets, uvicorn servers and their threads).
- ``core``: the assembly, which imports every other subpackage and none imports. ``tenant``
  (one tenant's world), ``seats`` (every tenant of a start, each built on first use),
  ``truth`` (posture ground truth), ``app`` (one tenant's ASGI app), ``routing``, ``front``
  (one listener for every tenant: the tenant chosen by the Entra path, the token's ``tid``
  or the blob's ``OrgId``), ``control`` (the control plane), ``server`` (``Emulator``),
  ``process`` (``EmulatorProcess``: one in a child process), ``credentials`` (what a start
  issues: fresh secrets, the state directory, the test CA), ``config_text`` (the collector
  config for an emulator).
- ``identity``: Entra ID. ``entra`` (token endpoints, tokens, ``authorize``), ``client_auth``
  (client secrets and certificate assertions), ``managed_identity`` (``IDENTITY_ENDPOINT``).
- ``azure``: ``keyvault`` (secrets with the challenge flow), ``workspace`` (one Log Analytics
  workspace's tables and the Tables API's rules), ``resource_manager`` (that API over HTTP).
- ``world``: the emulated Defender for Endpoint world. ``fleet``, ``devices``,
  ``device_traits`` (the machines); ``software``, ``cve_catalog``, ``cvss``, ``posture``
  (software, CVEs and the vulnerability timeline, in DuckDB SQL); ``scid_catalog``,
  ``secure_config_history`` (secure configuration); ``av_health``; ``database``,
  ``hunting_schema`` (DuckDB, the hunting tables); ``tvm_datasets``, ``snapshots``,
  ``catalog_records`` (the posture datasets as of an instant and their renderings).
- ``mde``: ``machines`` (``/api/machines``, legacy hunting), ``collections`` (AV health,
  recommendations, vulnerabilities), ``odata``, ``odata_lexer`` (``$filter``).
- ``tvm``: ``json_exports`` (the ``...ByMachine`` pages, the delta, the ``...Export``
  endpoints), ``file_exports`` (via-files jobs and the SAS blob endpoint).
- ``hunting``: ``advanced`` (running KQL for both APIs), ``graph`` (``runHuntingQuery``).
- ``ingestion``: ``endpoint`` (the upload route, what it accepted), ``rules`` (the DCRs),
  ``streams`` (one stream per registry table, record checks).
- ``iot``: Defender for IoT. ``model`` (the OT model's types), ``catalog`` (vocabularies),
  ``fleet`` (OT devices, connections, CVEs, their changes), ``reports`` (vulnerability
  reports), ``timeline`` (alerts and events), ``state`` (the IoT side of one start),
  ``render`` (wire shapes), ``sensor_api``, ``console_api`` (routes), ``server`` (one
  self-signed HTTPS listener per appliance, raw-token auth), ``truth``.

Importing this package loads none of uvicorn, Starlette or DuckDB; they load when an emulator
starts.

Imports only its own modules and ``endpoint_forensics.tables`` (the wire contract it serves):
the emulator shares no parsing code with the collector, so a wire-format bug cannot hide.
"""

from __future__ import annotations

from epf_emulator.common.chaos import CHAOS_KINDS, Chaos
from epf_emulator.common.settings import EmulatorSettings, Fault, parse_faults
from epf_emulator.core.process import EmulatorError, EmulatorProcess
from epf_emulator.core.server import Emulator

__all__ = [
    "CHAOS_KINDS",
    "Chaos",
    "Emulator",
    "EmulatorError",
    "EmulatorProcess",
    "EmulatorSettings",
    "Fault",
    "parse_faults",
]

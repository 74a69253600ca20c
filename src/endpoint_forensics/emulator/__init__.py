"""The emulated Defender tenant: a faithful local stand-in for the remote APIs.

Used by ``epf demo``, ``epf emulator``, tests and benchmarks. A real HTTPS server on loopback
(uvicorn + Starlette, certificate from a generated test CA) serving the Entra token endpoint
(client secret or certificate assertion), the MDE machines, advanced-hunting, AV health, TVM
export (JSON pages, delta, via files with SAS blob downloads), recommendations and
vulnerabilities APIs and Graph ``runHuntingQuery`` over a deterministic synthetic fleet and
its posture timeline (``advance`` moves the emulated clock), with the documented rate limits,
declarative fault injection and a ``/_emulator/stats`` ground truth. Built from the
documented wire format (shared/reference/defender-apis.md), quirks included.

Must not import anything of the package except ``tables`` (it currently needs nothing): the
emulator shares no parsing code with the collector, so a wire-format bug cannot hide.

Modules: ``settings`` (settings, the ``--faults`` syntax); ``clock`` (the emulated now);
``fleet``, ``devices`` (the machines); ``tvm``, ``sca`` (secure configuration catalogue and
history); ``software``, ``cves``, ``cvss``, ``posture`` (software, CVEs and the vulnerability
timeline, in DuckDB SQL); ``store``, ``hunting`` (DuckDB, KQL); ``datasets``, ``av``,
``snapshots``, ``catalog``, ``truth`` (the posture datasets as of now, their renderings and
counts); ``identity``, ``client_auth`` (Entra); ``mde``, ``graph``, ``tvm_api``,
``catalog_api``, ``exports`` (the APIs and the export blobs); ``odata``, ``odata_lexer``
($filter); ``limits`` (rate limits, faults, counters); ``responses`` (wire shapes);
``tenant``, ``app``, ``server``, ``listen`` (assembly, TLS, background threads).
Defender for IoT (C): ``iot_catalog`` (vocabularies), ``iot_fleet`` (OT devices, connections,
CVEs, their changes), ``iot_timeline`` (alerts and events), ``iot_reports`` (vulnerability
reports), ``iot_render`` (wire shapes), ``iot_sensor_api``, ``iot_console_api`` (routes),
``iot_server`` (one self-signed HTTPS listener per appliance, raw-token auth), ``iot_state``,
``iot_truth``. Azure Monitor Logs Ingestion (D): ``ingestion_streams`` (the DCR, one stream
per registry table, record checks), ``ingestion`` (the upload route and what it accepted). Azure: ``keyvault`` (Key Vault secrets
with the challenge flow), ``managed_identity`` (the App Service managed identity endpoint),
``arm_workspace`` and ``arm_tables`` (the Sentinel workspace's tables over Resource Manager).
Importing this package loads none of uvicorn, Starlette or DuckDB; they load
when an emulator starts.
"""

from __future__ import annotations

from .server import Emulator
from .settings import EmulatorSettings, Fault, parse_faults

__all__ = ["Emulator", "EmulatorSettings", "Fault", "parse_faults"]

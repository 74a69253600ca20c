"""One emulated Defender tenant: its fleet, clock, tables, identity, limits, faults and counters.

Owns building the world a tenant serves from (its ``EmulatorSettings``, the world's anchor,
its state directory and its ``TenantAccess``: the ids, clock, identity, rate limits and
counters its seat made first, ``core.seats``): the fleet and its machine records
(``world.fleet``), the DuckDB database (``world.database``: hunting tables at once; the
posture timeline in a background thread, so a start stays fast: requests that need it wait;
what exceeds its memory limit spills to ``duckdb-spill`` in the state directory), the
snapshots and the via-files exports, the machine records as of the emulated clock's now,
rebuilt after every ``advance`` (who is listed, last seen, health, device-group moves), the
Defender for IoT model (``iot.state``; its listeners start in ``core.server``), the rows the
Logs Ingestion endpoint accepted (``ingestion.endpoint.Ingested``), and the
``/_emulator/stats`` document, whose ``truth`` is computed from the emulator's own data (the
machine records it serves, SQL over its own tables in ``core.truth``, the OT model in
``iot.truth``), never through any collector logic, with the incident story's device
(``world.incident``), what each rate-limit budget saw (``budgets``, ``common.limits``), and
whose ``process`` is the start's timings and the peak RSS (``core.startup``); and the
``/_emulator/posture`` document (``world.posture_at``).

Imports only emulator modules and ``endpoint_forensics.tables`` (the registry of datasets).
"""

from __future__ import annotations

import logging
import shutil
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from endpoint_forensics.tables.datasets import dataset_names
from epf_emulator.common.chaos import ChaosInjector
from epf_emulator.common.clock import INCIDENT_AT, EmulatedClock, epoch_us
from epf_emulator.common.limits import FaultInjector, RateLimiter, RequestStats
from epf_emulator.common.settings import EmulatorSettings
from epf_emulator.core.startup import Startup
from epf_emulator.core.truth import posture_truth
from epf_emulator.identity.entra import Identity
from epf_emulator.ingestion.endpoint import Ingested
from epf_emulator.iot.state import IotState, build_iot_state
from epf_emulator.iot.truth import iot_truth
from epf_emulator.tvm.file_exports import Exports
from epf_emulator.world.catalog_records import cve_records, recommendation_records
from epf_emulator.world.database import Store
from epf_emulator.world.devices import RBAC_GROUPS
from epf_emulator.world.fleet import Fleet, build_fleet, record_at
from epf_emulator.world.incident import INCIDENT_CVE_PUBLISHED_US, INCIDENT_TABLE
from epf_emulator.world.posture import RbacMove, build_posture
from epf_emulator.world.posture_at import device_posture
from epf_emulator.world.snapshots import Snapshots

__all__ = ["DATASETS_PER_SYNC", "Tenant", "TenantAccess"]

#: The datasets of a complete sync, one ``EPF_Runs_CL`` row each: the collector's registry,
#: which is the wire contract this emulator serves (defender-apis.md C.2, C.3 for IoT).
DATASETS_PER_SYNC = dataset_names("tenant")
SENSOR_DATASETS_PER_SYNC = dataset_names("sensor")
CONSOLE_DATASETS_PER_SYNC = dataset_names("console")
_POSTURE_TIMEOUT_SECONDS = 600.0
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TenantAccess:
    """What a tenant has before its world is built (``core.seats``): who it is, its clock, its
    request counters, its identity (app registration and tokens), its rate limits, and the
    process's fault injectors."""

    tenant_id: str
    client_id: str
    clock: EmulatedClock
    stats: RequestStats
    identity: Identity
    limiter: RateLimiter
    faults: FaultInjector
    chaos: ChaosInjector


class Tenant:
    """Everything one tenant serves from; ``close`` releases the database."""

    def __init__(
        self,
        settings: EmulatorSettings,
        *,
        access: TenantAccess,
        anchor: datetime,
        state_dir: Path,
        startup: Startup | None = None,
    ) -> None:
        self.settings = settings
        self.startup = startup if startup is not None else Startup()
        self.anchor = anchor
        self.clock = access.clock
        self.tenant_id, self.client_id = access.tenant_id, access.client_id
        self.fleet: Fleet = build_fleet(settings.devices, settings.seed, anchor)
        # Injected records are appended verbatim (copied, so callers cannot change them later).
        self._extra_records = [dict(record) for record in settings.extra_machine_records]
        self._devices = {d.id.lower(): d for d in self.fleet.devices}
        # The records as of now: replaced in place after every advance (``_follow_clock``).
        self.records: list[dict[str, Any]] = []
        self._export_dir = state_dir / "exports"
        self._spill_dir = state_dir / "duckdb-spill"  # what DuckDB's memory limit spills
        for folder in (self._export_dir, self._spill_dir):
            shutil.rmtree(folder, ignore_errors=True)  # files of an earlier start
            folder.mkdir(parents=True)
        self.store = Store(
            self.fleet.devices,
            anchor,
            seed=settings.seed,
            export_dir=self._export_dir,
            temp_dir=self._spill_dir,
        )
        self.fleet.drop_device_info()
        self.snapshots = Snapshots(self.store, seed=settings.seed, anchor_us=epoch_us(anchor))
        self.exports = Exports(
            self.snapshots,
            self._export_dir,
            tenant_id=self.tenant_id,
            seed=settings.seed,
            part_rows=settings.export_part_rows,
        )
        self.stats = access.stats
        self.identity = access.identity
        self.limiter = access.limiter
        self.faults = access.faults
        self.chaos = access.chaos
        # What the Logs Ingestion endpoint accepted (the emulated Sentinel workspace).
        self.ingested = Ingested()
        # Defender for IoT (None without sensors); its listeners share the clock and faults.
        # (The OT model keeps its own timeline, relative to where the clock starts.)
        self.iot: IotState | None = build_iot_state(
            settings, epoch_us(settings.start) // 1000, self.fleet.machine_records()
        )
        self._moves: list[RbacMove] = []
        self._moves_lock = threading.Lock()
        self._records_lock = threading.Lock()
        self._follow_clock()
        self._posture_error: BaseException | None = None
        self._posture_ready = threading.Event()
        self._closing = threading.Event()
        self._renewing: threading.Thread | None = None
        self.clock.on_advance(lambda before, after: self._follow_clock())
        self.clock.on_advance(lambda before, after: self._renew_exports(epoch_us(after)))
        self._posture_thread = threading.Thread(
            target=self._build_posture, name="epf-emulator-posture", daemon=True
        )
        self._posture_thread.start()

    def close(self) -> None:
        self._closing.set()
        self._posture_thread.join(_POSTURE_TIMEOUT_SECONDS)
        if self._renewing is not None:  # it stops before its next dataset
            self._renewing.join(_POSTURE_TIMEOUT_SECONDS)
        self.exports.close()
        self.store.close()
        self.ingested.close()
        shutil.rmtree(self._export_dir, ignore_errors=True)
        shutil.rmtree(self._spill_dir, ignore_errors=True)

    # --- the posture timeline ----------------------------------------------------------------
    def _renew_exports(self, at: int) -> None:
        """Export again, in the background, what was exported before (``Exports.renew``)."""

        def current() -> int:  # no instant is current once closing
            return -1 if self._closing.is_set() else self.clock.now_us()

        def renew() -> None:
            try:
                self.wait_ready()
                self.exports.renew(at, current=current)
            except Exception:  # a request for it makes it again, and says what failed
                if not self._closing.is_set():  # closing ends it midway: nothing failed
                    _log.warning("renewing the exports as of %s failed", at, exc_info=True)

        self._renewing = threading.Thread(target=renew, name="epf-export-renew", daemon=True)
        self._renewing.start()

    def wait_ready(self) -> None:
        """Block until the posture tables exist.

        Raises:
            RuntimeError: building them failed or took too long.
        """
        if not self._posture_ready.wait(_POSTURE_TIMEOUT_SECONDS):
            raise RuntimeError("the emulator's posture data is not ready")
        if self._posture_error is not None:
            raise RuntimeError(
                "building the emulator's posture data failed"
            ) from self._posture_error

    def _build_posture(self) -> None:
        try:
            cursor = self.store.cursor()
            try:
                moves = build_posture(
                    cursor,
                    seed=self.settings.seed,
                    anchor=self.anchor,
                    per_device=self.settings.vulnerabilities_per_device,
                )
            finally:
                cursor.close()
            with self._moves_lock:
                self._moves = moves
            self._follow_clock()
        except BaseException as exc:  # reported by wait_ready, in the requesting thread
            _log.exception("building the posture timeline failed")
            self._posture_error = exc
        finally:
            self.startup.ready()
            self._posture_ready.set()

    def _follow_clock(self) -> None:
        """The machine records as of now: who is listed, last seen, health, device group."""
        now = self.clock.now_us()
        records = self.fleet.records_at(now)
        self._apply_moves(records, now)
        with self._records_lock:
            self.records[:] = records + self._extra_records

    def _apply_moves(self, records: list[dict[str, Any]], at: int) -> None:
        with self._moves_lock:
            moves = {m.device_id: m for m in self._moves}
        for record in records:
            move = moves.get(record["id"])
            if move is not None:
                group = move.new_group if at >= move.move_us else move.old_group
                record["rbacGroupId"] = group
                record["rbacGroupName"] = RBAC_GROUPS[group]

    # --- the emulator's own forensic answer --------------------------------------------------
    def posture_document(self, device_id: str, at: datetime) -> dict[str, Any] | None:
        """``/_emulator/posture``: the device's posture at ``at`` (``world.posture_at``), or
        None for an unknown device or one not yet seen then."""
        self.wait_ready()
        device = self._devices.get(device_id.lower())
        at_us = epoch_us(at)
        record = None
        if device is not None:
            record = record_at(device, epoch_us(self.anchor), at_us, unlisted=True)
        if record is None:
            return None
        self._apply_moves([record], at_us)
        return device_posture(
            self.store,
            seed=self.settings.seed,
            anchor_us=epoch_us(self.anchor),
            record=record,
            at_us=at_us,
        )

    def incident(self) -> dict[str, Any] | None:
        """The incident story's device and CVE (``world.incident``); None without one."""
        self.wait_ready()
        cursor = self.store.cursor()
        try:
            row = cursor.execute(
                f"SELECT dv.id, dv.name, c.id FROM {INCIDENT_TABLE} i"
                " JOIN tvm.dev dv ON dv.idx = i.d"
                " JOIN tvm.vrow v ON v.d = i.d AND v.p = dv.os_prod"
                " JOIN tvm.cve c ON c.idx = v.cve"
                f" WHERE c.pub_us = {epoch_us(self.anchor) + INCIDENT_CVE_PUBLISHED_US}"
                " AND c.severity = 'Critical'"
                " AND c.level = 'ExploitIsVerified' ORDER BY c.idx DESC LIMIT 1"
            ).fetchone()
        finally:
            cursor.close()
        if row is None:
            return None
        at = INCIDENT_AT.strftime("%Y-%m-%dT%H:%M:%SZ")
        return {"DeviceId": row[0], "DeviceName": row[1], "at": at, "CveId": row[2]}

    # --- records of the small collections ----------------------------------------------------
    def av_records(self, at: int) -> list[dict[str, Any]]:
        with self.snapshots.pinned("av", at) as snapshot:
            return self.snapshots.records(snapshot)

    def recommendation_records(self, at: int) -> list[dict[str, Any]]:
        return recommendation_records(self.store, seed=self.settings.seed, at=at)

    def cve_records(self, at: int) -> list[dict[str, Any]]:
        return cve_records(self.store, at=at)

    # --- stats -------------------------------------------------------------------------------
    def _datasets_per_sync(self) -> int:
        if self.iot is None:
            return len(DATASETS_PER_SYNC)
        sensors = self.settings.iot_sensors * len(SENSOR_DATASETS_PER_SYNC)
        console = len(CONSOLE_DATASETS_PER_SYNC) if self.settings.iot_console else 0
        return len(DATASETS_PER_SYNC) + sensors + console

    def stats_document(self) -> dict[str, Any]:
        """The ``/_emulator/stats`` JSON: ground truth per table, request counts, fleet."""
        self.wait_ready()
        now = self.clock.now()
        served_ids = {r["id"] for r in self.records if isinstance(r.get("id"), str) and r["id"]}
        posture, details = posture_truth(self.store, epoch_us(now))
        iot: dict[str, int] = {}
        if self.iot is not None:  # no IoT tables at all without sensors
            iot, details["iot"] = iot_truth(self.iot, epoch_us(now) // 1000)
        return {
            "truth": {
                "EPF_Devices_CL": len(served_ids),
                "EPF_AgentHealth_CL": self.store.agent_health_truth(now),
                **posture,
                # The exposure score and the Secure Score for Devices, one row each per run.
                "EPF_TenantScores_CL": 2,
                # One row per dataset of each source per run.
                "EPF_Runs_CL": self._datasets_per_sync(),
                **iot,
            },
            "truth_detail": details,
            "incident": self.incident(),
            "requests": self.stats.requests(),
            "budgets": self.limiter.usage(),
            "hunting_queries": self.stats.hunting_queries(),
            "iot_requests": self.iot.request_counts() if self.iot is not None else {},
            "tokens_issued": self.stats.tokens_issued,
            "ingested": self.ingested.row_counts(),
            "ingestion": self.ingested.counters(),
            "faults": self.faults.snapshot(),
            "chaos": self.chaos.snapshot(),
            "process": self.startup.document(),
            "clock": {
                "now": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                "advanced_hours": self.clock.advanced_hours,
            },
            "fleet": {
                "devices": len(self.fleet.devices),
                "seed": self.settings.seed,
                "anchor": self.anchor.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "by_platform": self.fleet.by_platform(),
                "extra_machine_records": len(self.settings.extra_machine_records),
                "hunting_rows": self.store.row_counts(),
                "posture_rows": self.store.posture_counts(),
            },
        }

"""What a running emulator holds that tests and tools read, beside serving it.

Owns ``RunningFacts``, a base of ``Emulator``: the secrets handed out (every token, client
assertion and SAS signature of every tenant, for the checks that the collector never writes
one anywhere), tenant 0's Defender for IoT appliances and their truth (the appliances, a
token revoked, the plain-text passwords, the CVEs listed, the console's delta counts), and its
Logs Ingestion DCRs and the rows they accepted.

Imports only emulator modules: it shares no code with the collector.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from epf_emulator.common.settings import EmulatorSettings
from epf_emulator.ingestion.rules import emulated_rules
from epf_emulator.iot.state import IotAppliance

if TYPE_CHECKING:
    from collections.abc import Collection

    from epf_emulator.core.seats import Seats
    from epf_emulator.core.tenant import Tenant
    from epf_emulator.iot.server import IotListeners

__all__ = ["RunningFacts"]


class RunningFacts:
    """The facts of a running emulator; ``Emulator`` gives the running tenants."""

    settings: EmulatorSettings
    _iot_listeners: IotListeners | None

    def _running_tenant(self) -> Tenant:
        raise NotImplementedError

    def _running_seats(self) -> Seats:
        raise NotImplementedError

    @property
    def iot_appliances(self) -> list[IotAppliance]:
        """The running Defender for IoT appliances (sensors, then the console); [] without."""
        self._running_tenant()
        return list(self._iot_listeners.appliances) if self._iot_listeners is not None else []

    def issued_token_signatures(self) -> set[str]:
        """The signature part of every access token the tenants' identities minted (a token
        found anywhere in the collector's output shows it)."""
        seats = self._running_seats().seats
        return set().union(*(seat.identity.issued_signatures for seat in seats))

    def received_assertion_signatures(self) -> set[str]:
        """The signature part of every client assertion (certificate credential) the token
        endpoints received: like a token, found anywhere in the collector's output it leaks."""
        seats = self._running_seats().seats
        return set().union(*(seat.identity.assertion_signatures for seat in seats))

    def issued_sas_signatures(self) -> set[str]:
        """Every SAS signature of an export link handed out so far (secrets: a check that the
        collector never writes one anywhere looks for these)."""
        tenants = [seat.tenant for seat in self._running_seats().seats]
        return set().union(*(t.exports.signatures for t in tenants if t is not None))

    def ingested_counts(self) -> dict[str, dict[str, int]]:
        """Per table, the rows the Logs Ingestion endpoint accepted: ``raw``, and ``distinct``
        (one per identical row: an upload re-sent after a lost answer carries the same
        ``BatchId`` and values, so this is the count after the documented dedup)."""
        return self._running_tenant().ingested.counts_with_distinct()

    def revoke_iot_token(self, name: str) -> None:
        """Delete the access token of the running appliance ``name`` (a sensor or the
        console), as its console's user would: calls with it are refused (401) from now on.

        Raises:
            KeyError: no running appliance has that name.
        """
        self._running_tenant()
        if self._iot_listeners is None:
            raise KeyError(name)
        self._iot_listeners.revoke_token(name)

    def iot_plaintext_passwords(self) -> set[str]:
        """Every plain-text password the sensors' reports show (distinct, 8+ characters)."""
        iot = self._running_tenant().iot
        return set(iot.model.passwords.issued) if iot is not None else set()

    def iot_open_cves(self) -> set[tuple[str, str, str]]:
        """(sensor name, device address, CVE id) of every CVE the sensors list now."""
        tenant = self._running_tenant()
        if tenant.iot is None:
            return set()
        now_ms = tenant.clock.now_us() // 1000
        return {
            (sensor.name, device.ips[0], cve.cve_id)
            for sensor in tenant.iot.sensors
            for device in sensor.alive_devices(now_ms)
            for cve in device.cves
        }

    def iot_changes_after(
        self, after_ms: int, sensors: Collection[int] | None = None
    ) -> dict[str, int]:
        """The console's v3 counts strictly after ``after_ms`` (epoch ms) as of now: devices
        (new and updated), deleted devices, connections and (device, CVE) pairs; of the
        sensors numbered ``sensors`` only, if given."""
        from epf_emulator.iot.truth import changes_after

        tenant = self._running_tenant()
        if tenant.iot is None:
            return {"devices": 0, "deleted": 0, "connections": 0, "cves": 0}
        return changes_after(tenant.iot, after_ms, tenant.clock.now_us() // 1000, sensors)

    @property
    def dcrs(self) -> list[tuple[str, tuple[str, ...]]]:
        """(immutable id, tables) of each emulated DCR, as an ``epf deploy arm`` template would
        deploy them: the registry's tables by profile, at most 10 to a DCR (defender-apis.md
        D.5). Deterministic from the seed; no need to be running."""
        return [(rule.immutable_id, rule.tables) for rule in emulated_rules(self.settings.seed)]

    @property
    def dcr_immutable_id(self) -> str:
        """The first DCR's ``immutableId``: it declares the first 10 core tables
        (``EPF_Devices_CL``, ``EPF_AgentHealth_CL``, ``EPF_AvHealth_CL``...) and no other."""
        return self.dcrs[0][0]

    def dcr_for(self, table: str) -> str:
        """The ``immutableId`` of the DCR that declares ``table``'s stream.

        Raises:
            KeyError: no emulated DCR declares ``table`` (it is not in the registry).
        """
        for immutable_id, tables in self.dcrs:
            if table in tables:
                return immutable_id
        raise KeyError(f"no emulated DCR declares a stream for {table}")

    def ingested_rows(self, table: str) -> list[dict[str, Any]]:
        """The rows the Logs Ingestion endpoint accepted into ``table`` (its stream
        ``Custom-<table>``), in arrival order, every column of the stream present: strings,
        ints, floats, bools, aware UTC datetimes and parsed JSON (dynamic)."""
        return self._running_tenant().ingested.rows(table)

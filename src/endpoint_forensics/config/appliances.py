"""Defender for IoT appliances in the configuration: OT sensors and management consoles, each
with its own URL, access token and TLS trust. Imports ``config.models``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from endpoint_forensics.config.models import (
    CONSOLE_DATASETS,
    SENSOR_DATASETS,
    ConsoleDataset,
    Model,
    Secret,
    SensorDataset,
    existing_file,
    interval_hours,
)

__all__ = ["ConsoleConfig", "SensorConfig"]

_Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]


class _ApplianceConfig(Model):
    """An on-premises Defender for IoT appliance: its URL, access token and how to trust it.

    Appliances present self-signed certificates as a rule: trust one with ``ca_bundle`` (a PEM
    with the certificate or the CA that issued it) or pin its SHA-256 fingerprint with
    ``certificate_fingerprint``; with neither, the system's trust store decides.
    """

    name: _Name
    url: str
    token: Secret
    ca_bundle: Path | None = None
    certificate_fingerprint: str | None = None
    timeout_seconds: float = Field(default=60.0, gt=0)
    max_retries: int = Field(default=4, ge=0, le=20)
    # Stamped as DefenderTenantId, so IoT rows can sit beside the tenant's MDE rows.
    defender_tenant_id: str = ""

    @field_validator("url")
    @classmethod
    def _https_url(cls, value: str) -> str:
        if not value.startswith("https://") or len(value) <= len("https://"):
            raise ValueError("must be an https:// URL (the appliance APIs are HTTPS only)")
        return value.rstrip("/")

    @field_validator("ca_bundle")
    @classmethod
    def _existing_file(cls, value: Path | None) -> Path | None:
        return existing_file(value)

    @field_validator("certificate_fingerprint")
    @classmethod
    def _fingerprint(cls, value: str | None) -> str | None:
        if value is None:
            return None
        digits = value.lower().removeprefix("sha256:").replace(":", "").replace(" ", "")
        if len(digits) != 64 or any(c not in "0123456789abcdef" for c in digits):
            raise ValueError(
                "must be the certificate's SHA-256 fingerprint: 64 hex digits, colons allowed"
            )
        return digits

    @model_validator(mode="after")
    def _one_trust(self) -> _ApplianceConfig:
        if self.ca_bundle is not None and self.certificate_fingerprint is not None:
            raise ValueError("set ca_bundle or certificate_fingerprint, not both")
        return self


class SensorConfig(_ApplianceConfig):
    """A Defender for IoT OT sensor (``https://<sensor>/api/v1/...``)."""

    datasets: tuple[SensorDataset, ...] = SENSOR_DATASETS
    interval_hours: dict[SensorDataset, float] = Field(default_factory=dict)
    # Labels for the sensor's rows: its API does not say where it sits.
    site: str = ""
    zone: str = ""
    # Only authorized (True) or unauthorized (False) devices; None lists every device.
    authorized: bool | None = None
    alerts_api: Literal["v1", "v2"] = "v2"
    # CVEs per address asked for (the API's default of 100 cuts the list short); an address
    # that returns this many is asked again with a larger top.
    cve_top: int = Field(default=1_000, ge=1, le=100_000)
    # The first events poll looks back this far; later polls start where the last one ended.
    events_initial_minutes: int = Field(default=4_320, ge=1, le=4_320)
    # Polls overlap by this much (clock skew, and events stamped in the same millisecond).
    events_overlap_minutes: int = Field(default=2, ge=1, le=60)
    alerts_overlap_minutes: int = Field(default=10, ge=0, le=1_440)
    # Event types to poll one by one when a window comes back full, besides those seen so far.
    event_types: tuple[str, ...] = ()

    def interval_hours_for(self, dataset: str) -> float:
        return interval_hours("sensor", self.interval_hours, dataset)


class ConsoleConfig(_ApplianceConfig):
    """A Defender for IoT on-premises management console (``https://<cm>/external/...``)."""

    datasets: tuple[ConsoleDataset, ...] = CONSOLE_DATASETS
    interval_hours: dict[ConsoleDataset, float] = Field(default_factory=dict)
    # Page size of the v3 integration API (its default is 50).
    page_size: int = Field(default=200, ge=1, le=10_000)
    # Only these sensors (console sensor ids, the u_id of /external/v3/integration/sensors);
    # empty: all. Deletions (which name no sensor) are recorded for every sensor.
    sensor_ids: tuple[int, ...] = ()
    alerts_api: Literal["v1", "v2"] = "v2"
    alerts_overlap_minutes: int = Field(default=10, ge=0, le=1_440)

    def interval_hours_for(self, dataset: str) -> float:
        return interval_hours("console", self.interval_hours, dataset)

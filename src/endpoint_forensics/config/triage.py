"""``[triage]``: what the collector cannot learn from Defender. The mission and well-being
impact of each device (SSVC's last input) and the devices to treat as publicly exposed besides
Defender's internet-facing signal, by device group, tag or name pattern. Imports
``config.models``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from endpoint_forensics.config.models import Model

__all__ = ["DeviceRule", "MissionRule", "TriageConfig"]

MissionWellbeing = Literal["low", "medium", "high"]


class DeviceRule(Model):
    """Devices picked by one of: ``group`` (Defender device group), ``tag`` (a machine tag) or
    ``name`` (the device name); each a pattern with ``*`` and ``?``, any case."""

    group: str | None = Field(default=None, min_length=1)
    tag: str | None = Field(default=None, min_length=1)
    name: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _one_match(self) -> DeviceRule:
        given = [k for k in ("group", "tag", "name") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of group, tag or name")
        return self

    @property
    def described(self) -> str:
        """``group "Servers-*"``: how a reason names the rule."""
        for key in ("group", "tag", "name"):
            value = getattr(self, key)
            if value is not None:
                return f'{key} "{value}"'
        raise AssertionError("a rule has one match")


class MissionRule(DeviceRule):
    value: MissionWellbeing


class TriageConfig(Model):
    """The first ``mission`` rule a device matches gives its mission and well-being impact;
    none matching, ``mission_default`` (``medium``: a device whose loss would hurt but not
    stop the organisation, until configured otherwise). A device an ``exposed`` rule matches
    is publicly exposed whatever Defender says."""

    mission_default: MissionWellbeing = "medium"
    # Hours between triage runs; 0: every run that delivered posture or a feed copy.
    interval_hours: float = Field(default=0.0, ge=0)
    mission: tuple[MissionRule, ...] = ()
    exposed: tuple[DeviceRule, ...] = ()

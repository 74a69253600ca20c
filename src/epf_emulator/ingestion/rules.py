"""The emulated data collection rules (DCRs): which streams each declares, under Azure's limits.

Owns what the Logs Ingestion endpoint knows of its DCRs (defender-apis.md D.2, D.5): a DCR
declares its input streams (``streamDeclarations``) and routes each through a data flow to its
table; it holds at most 10 streams and 10 data flows (Azure Monitor service limits, "Data
collection rules"), so a definition past either limit cannot be built here, as Azure refuses to
create it. The emulated tenant has the DCRs an ``epf deploy arm`` template would deploy: the
registry's tables by profile (core, then compat), in registry order, 10 to a DCR. The grouping
is this module's own (the emulator shares no code with the collector), from the registry as it
is when the app is built. Immutable ids are ``dcr-`` and 32 hex digits, derived from the seed
and the DCR's name.

Imports only ``ingestion.streams`` of the emulator and ``endpoint_forensics.tables`` (no
Starlette), so that ``core.server`` can name the DCRs without loading the server stack.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from endpoint_forensics.tables import TABLES, Table
from epf_emulator.ingestion.streams import STREAM_PREFIX, Stream, declared_streams

__all__ = [
    "MAX_DATA_FLOWS_PER_DCR",
    "MAX_STREAMS_PER_DCR",
    "DataCollectionRule",
    "DataFlow",
    "emulated_rules",
    "rule_immutable_id",
]

#: Azure Monitor service limits, "Data collection rules" (azure-monitor-docs
#: includes/azure-monitor-limits-data-collection-rules.md, ms.date 2025-05-21).
MAX_STREAMS_PER_DCR = 10
MAX_DATA_FLOWS_PER_DCR = 10
# Profiles in DCR order, as the deployment template has them: core tables never share a DCR
# with the compat tables.
_PROFILES = ("core", "compat")
_NAME_PREFIX = "epf-dcr"


@dataclass(frozen=True)
class DataFlow:
    """One ``dataFlows`` entry: the input streams it takes and the table stream it feeds."""

    streams: tuple[str, ...]
    output_stream: str


@dataclass(frozen=True)
class DataCollectionRule:
    """One DCR of kind Direct: its name, immutable id, declared streams and data flows.

    Raises:
        ValueError: more than 10 streams or 10 data flows, or a data flow naming a stream the
            DCR does not declare (Azure answers such a PUT with 400 ``InvalidPayload``, "Data
            collection rule is invalid": the DCR never exists).
    """

    name: str
    immutable_id: str
    streams: Mapping[str, Stream]
    data_flows: tuple[DataFlow, ...]

    def __post_init__(self) -> None:
        if len(self.streams) > MAX_STREAMS_PER_DCR:
            raise ValueError(
                f"data collection rule {self.name}: {len(self.streams)} streams declared; a DCR"
                f" declares at most {MAX_STREAMS_PER_DCR}"
            )
        if len(self.data_flows) > MAX_DATA_FLOWS_PER_DCR:
            raise ValueError(
                f"data collection rule {self.name}: {len(self.data_flows)} data flows; a DCR"
                f" has at most {MAX_DATA_FLOWS_PER_DCR}"
            )
        for index, flow in enumerate(self.data_flows):
            unknown = [s for s in flow.streams if s not in self.streams]
            if unknown:
                raise ValueError(
                    f"data collection rule {self.name}: dataFlows[{index}] takes"
                    f" {', '.join(unknown)}, which streamDeclarations does not declare"
                )

    @property
    def tables(self) -> tuple[str, ...]:
        """The tables the DCR's streams feed, in declaration order."""
        return tuple(stream.table for stream in self.streams.values())


def rule_immutable_id(seed: int, name: str) -> str:
    """The ``immutableId`` of the DCR ``name`` for ``seed``: ``dcr-`` and 32 lowercase hex."""
    digest = hashlib.sha256(f"epf-emulator/dcr/{seed}/{name}".encode()).hexdigest()
    return "dcr-" + digest[:32]


def emulated_rules(seed: int) -> tuple[DataCollectionRule, ...]:
    """The tenant's DCRs: every registry table as of now, by profile, 10 streams to a DCR."""
    streams = declared_streams()
    by_profile: dict[str, list[Table]] = {profile: [] for profile in _PROFILES}
    for table in TABLES.values():
        by_profile.setdefault(table.profile, []).append(table)
    rules = []
    for profile, tables in by_profile.items():
        for start in range(0, len(tables), MAX_STREAMS_PER_DCR):
            name = f"{_NAME_PREFIX}-{profile}-{start // MAX_STREAMS_PER_DCR + 1}"
            chunk = tables[start : start + MAX_STREAMS_PER_DCR]
            rules.append(_rule(name, rule_immutable_id(seed, name), chunk, streams))
    return tuple(rules)


def _rule(
    name: str, immutable_id: str, tables: Sequence[Table], streams: Mapping[str, Stream]
) -> DataCollectionRule:
    declared = {f"{STREAM_PREFIX}{t.name}": streams[f"{STREAM_PREFIX}{t.name}"] for t in tables}
    # One data flow per stream: the table names end in _CL, so the output stream is the input's.
    flows = tuple(DataFlow(streams=(stream,), output_stream=stream) for stream in declared)
    return DataCollectionRule(
        name=name, immutable_id=immutable_id, streams=declared, data_flows=flows
    )

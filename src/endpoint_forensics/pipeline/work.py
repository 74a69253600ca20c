"""Collection as units of work: one (source, dataset) each, run by any worker that holds it.

Owns ``WorkItem`` (a unit of work, and its queue message), the items of a config, the
endpoint budgets each spends, and the config a worker runs one with (``narrowed``: that
source, asking only for that dataset, its state in the unit's own folder). A unit's state
holds only its own dataset's checkpoint, change-only history and outbox, so workers of one
source never write the same file.
May import ``pipeline`` modules, ``config``, ``tables`` and ``errors``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import get_args

import orjson

from endpoint_forensics.config import Settings
from endpoint_forensics.errors import EpfError
from endpoint_forensics.pipeline.plan import Source, sources_of
from endpoint_forensics.tables.datasets import IOT_APPLIANCE_LIMIT, RateLimit, SourceKind, spec_of

__all__ = [
    "BadWorkMessage",
    "WorkItem",
    "budget_limits",
    "narrowed",
    "source_of",
    "work_items",
]

_KINDS: tuple[SourceKind, ...] = get_args(SourceKind)


class BadWorkMessage(EpfError):
    """A queue message that is not a unit of work of this config: said, never retried."""

    exit_code = 2


@dataclass(frozen=True)
class WorkItem:
    """One dataset of one source; ``continued`` counts the continuations of one collection
    (a unit that ran out of its time budget enqueues itself again)."""

    kind: SourceKind
    source: str
    dataset: str
    continued: int = 0

    @property
    def key(self) -> str:
        """The unit's name: its lease's and its state's (``<kind>s/<source>/<dataset>``)."""
        return f"{self.kind}s/{self.source}/{self.dataset}"

    def message(self) -> str:
        return orjson.dumps(
            {"kind": self.kind, "source": self.source, "dataset": self.dataset}
            | ({"continued": self.continued} if self.continued else {})
        ).decode()

    def continuation(self) -> WorkItem:
        return WorkItem(self.kind, self.source, self.dataset, self.continued + 1)

    @classmethod
    def from_message(cls, text: str | bytes, settings: Settings) -> WorkItem:
        """The unit a message names, checked against ``settings``.

        Raises:
            BadWorkMessage: not JSON, a field missing, or a source or dataset not configured.
        """
        try:
            body = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise BadWorkMessage(f"a work message is not JSON ({exc})") from exc
        if not isinstance(body, dict):
            raise BadWorkMessage("a work message is not a JSON object")
        kind, source, dataset = body.get("kind"), body.get("source"), body.get("dataset")
        continued = body.get("continued", 0)
        if kind not in _KINDS or not isinstance(source, str) or not isinstance(dataset, str):
            raise BadWorkMessage(
                "a work message needs kind (tenant, sensor, console or feed), source and"
                f" dataset; it has {sorted(body)}"
            )
        if not isinstance(continued, int) or continued < 0:
            raise BadWorkMessage("a work message's continued is a count (0 or more)")
        item = cls(kind, source, dataset, continued)
        if WorkItem(kind, source, dataset) not in set(work_items(settings)):
            raise BadWorkMessage(f"no {kind} {source!r} with dataset {dataset!r} is configured")
        return item


def work_items(settings: Settings) -> list[WorkItem]:
    """Every (source, dataset) of ``settings``, in the order a run collects them."""
    return [
        WorkItem(source.kind, source.name, spec.name)
        for source in sources_of(settings)
        for spec in source.datasets
    ]


def source_of(settings: Settings, item: WorkItem) -> Source:
    """The configured source ``item`` names.

    Raises:
        BadWorkMessage: no such source is configured.
    """
    for source in sources_of(settings):
        if source.kind == item.kind and source.name == item.source:
            return source
    raise BadWorkMessage(f"no {item.kind} {item.source!r} is configured")


def budget_limits(item: WorkItem) -> tuple[RateLimit, ...]:
    """The endpoint budgets ``item`` spends: its dataset's, or its appliance's (IoT)."""
    if item.kind in ("sensor", "console"):
        return (IOT_APPLIANCE_LIMIT,)
    return tuple(spec_of(item.kind, item.dataset).limits)


def narrowed(settings: Settings, item: WorkItem, state_dir: Path) -> Settings:
    """``settings`` with only ``item``'s source, asking only for its dataset, its state in
    ``state_dir``."""
    source = source_of(settings, item)
    only = source.config.model_copy(update={"datasets": (item.dataset,)})
    return settings.model_copy(
        update={
            "tenants": (only,) if item.kind == "tenant" else (),
            "sensors": (only,) if item.kind == "sensor" else (),
            "consoles": (only,) if item.kind == "console" else (),
            "feeds": only if item.kind == "feed" else None,
            "state": settings.state.model_copy(update={"dir": state_dir}),
        }
    )

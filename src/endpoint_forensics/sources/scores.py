"""The tenant's scores (defender-apis.md B.5.8): the exposure score and the Secure Score for
Devices (``configurationScore``), one row each per run, so the history shows how exposed and how
well configured the tenant was at any time.

Each endpoint answers one object, ``{"time": ..., "score": ...}``; an answer of another shape is
quarantined with its reason and the other score is still kept.
May import ``http``, ``config``, ``contracts``, ``tables`` and the other ``sources`` modules.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from endpoint_forensics.contracts import Row, Unit, batch_of
from endpoint_forensics.sources import FetchContext
from endpoint_forensics.sources.wire import Fields, Invalid, as_datetime, as_float
from endpoint_forensics.tables.catalogues import TENANT_SCORES

__all__ = ["SCORE_ENDPOINTS", "fetch_scores"]

# Score name -> endpoint under /api (Score.Read.All).
SCORE_ENDPOINTS = {"Exposure": "exposureScore", "Configuration": "configurationScore"}


def fetch_scores(ctx: FetchContext) -> Iterator[Unit]:
    """Both scores as of now, in one unit."""
    tenant = ctx.tenant
    answers = [
        (
            name,
            ctx.client.request_json(
                "GET",
                f"{tenant.mde_base_url}/api/{endpoint}",
                scope=tenant.mde_scope,
                budget=ctx.budget(endpoint),
            ),
        )
        for name, endpoint in SCORE_ENDPOINTS.items()
    ]
    yield Unit("scores", iter([batch_of(TENANT_SCORES, answers, _score_row)]))


def _score_row(answer: tuple[str, Any]) -> Row | str:
    name, body = answer
    endpoint = SCORE_ENDPOINTS[name]
    try:
        f = Fields(body)
        score = f.get_as("score", as_float)
        when = f.get_as("time", as_datetime)
    except Invalid as exc:
        return f"{endpoint}: {exc}"
    if score is None:
        return f"{endpoint}: no score"
    f.mark("@odata.context")
    return {"ScoreName": name, "Score": score, "ScoreTime": when, "AdditionalFields": f.rest()}

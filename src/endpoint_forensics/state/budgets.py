"""A source's endpoint budgets held across workers: one lease per (source, endpoint budget),
whose record is the budget's calls of the last hour.

Defender's limits are per tenant and application, per endpoint (the via-files exports' 5 a
minute and 20 an hour, hunting's calls). A worker takes the lease of every budget its unit
spends before it starts, and resumes each budget from its record, so the calls of workers
before it, on any machine, still count; it writes its own calls back when it gives the
lease up. Two workers of one tenant that need the same endpoint never run at once; two that
need different endpoints do.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

import orjson

from endpoint_forensics.http.ratelimit import RateBudget, RateLimit
from endpoint_forensics.state.store import Lease, StateStore

__all__ = ["budget_lease_name", "held_budgets"]


def budget_lease_name(scope: str, limit: RateLimit) -> str:
    return f"budgets/{scope}/{limit.name}"


@contextlib.contextmanager
def held_budgets(
    store: StateStore, scope: str, limits: Iterable[RateLimit]
) -> Iterator[dict[str, RateBudget] | None]:
    """The budgets of ``limits`` for the source ``scope``, each resumed from its record, while
    their leases are held; None when another worker holds one of them (nothing is held then).
    The leases are taken in name order, so two workers never hold one each of a pair."""
    leases: list[tuple[Lease, RateBudget]] = []
    try:
        for limit in sorted(set(limits), key=lambda limit: limit.name):
            lease = store.take(budget_lease_name(scope, limit))
            if lease is None:
                yield None
                return
            leases.append((lease, RateBudget.resumed(limit, _calls(lease.record))))
        yield {budget.limit.name: budget for _, budget in leases}
    finally:
        for lease, budget in reversed(leases):
            lease.release(orjson.dumps(budget.record()))


def _calls(record: bytes) -> list[float]:
    """The record's call times; a record that is not one (empty, damaged) counts none."""
    try:
        found = orjson.loads(record) if record else []
    except orjson.JSONDecodeError:
        return []
    return (
        [float(t) for t in found if isinstance(t, int | float)] if isinstance(found, list) else []
    )

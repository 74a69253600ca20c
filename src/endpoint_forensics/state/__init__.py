"""Where a fanned-out collection keeps what outlasts one worker: each unit of work's state
(checkpoints, change-only history, the outbox, quarantine), the leases that let one worker at
a time hold a unit or an endpoint's budget, and each budget's record of its calls.

One interface (``StateStore``), two backends: a local folder (``LocalStateStore``: the CLI's
workers, the tests) and a Blob Storage container (``BlobStateStore``: Azure Functions, where
instances share no disk). A worker takes the lease of its unit, pulls the unit's state into a
local folder, runs the ordinary pipeline on it, and pushes what changed back, checkpoints
last, while it still holds the lease.
May import ``errors`` and ``http.ratelimit``.
"""

from endpoint_forensics.state.blob import BlobStateStore
from endpoint_forensics.state.budgets import held_budgets
from endpoint_forensics.state.store import Lease, LeaseLost, LocalStateStore, StateStore

__all__ = [
    "BlobStateStore",
    "Lease",
    "LeaseLost",
    "LocalStateStore",
    "StateStore",
    "held_budgets",
]

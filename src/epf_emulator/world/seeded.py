"""Seeded randomness in SQL: the world's every choice depends only on the seed and its key.

Imports nothing of the emulator.
"""

from __future__ import annotations

__all__ = ["u"]


def u(seed: int, *parts: str) -> str:
    """SQL for a uniform [0, 1) number that depends only on the seed and ``parts``.

    Hashed twice: DuckDB's multi-argument ``hash`` combines its arguments so weakly that two
    tags of the same key come out correlated (r = 0.5); a second hash decorrelates them.
    """
    return f"(hash(hash({seed}, {', '.join(parts)})) / 18446744073709551616.0)"

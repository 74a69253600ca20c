"""A structural check of ARM template expressions (no evaluation, no Azure tooling).

Owns the rule for what counts as an expression string and whether it is well formed.
May import nothing of ours.
"""

from __future__ import annotations

from typing import Any

__all__ = ["expression_problems", "is_expression"]

_CLOSERS = {"(": ")", "[": "]"}


def is_expression(value: str) -> bool:
    """True if ARM evaluates ``value``: it starts with ``[`` (not ``[[``) and ends with ``]``."""
    return value.startswith("[") and not value.startswith("[[") and value.endswith("]")


def _balance_problem(body: str) -> str | None:
    """Say what is unbalanced in an expression body (between the outer brackets), or None."""
    if not body.strip():
        return "empty expression"
    stack: list[str] = []
    in_string = False
    i = 0
    while i < len(body):
        ch = body[i]
        if in_string:
            if ch == "'":
                # '' is an escaped quote inside an ARM string literal.
                if i + 1 < len(body) and body[i + 1] == "'":
                    i += 1
                else:
                    in_string = False
        elif ch == "'":
            in_string = True
        elif ch in _CLOSERS:
            stack.append(_CLOSERS[ch])
        elif ch in ")]":
            if not stack or stack.pop() != ch:
                return f"unexpected {ch!r} at {i}"
        i += 1
    if in_string:
        return "unterminated string literal"
    if stack:
        return f"missing {''.join(reversed(stack))!r}"
    return None


def expression_problems(node: Any, path: str = "$") -> list[str]:
    """Every malformed expression string in a JSON-like tree, as ``"<path>: <problem>"``.

    A string that starts with a single ``[`` but does not end with ``]`` is reported too:
    ARM would take it as a literal, which in a generated template is almost always a bug.
    """
    problems: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            problems.extend(expression_problems(value, f"{path}.{key}"))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            problems.extend(expression_problems(value, f"{path}[{index}]"))
    elif isinstance(node, str) and node.startswith("[") and not node.startswith("[["):
        if not node.endswith("]"):
            problems.append(f"{path}: starts with '[' but does not end with ']'")
        else:
            problem = _balance_problem(node[1:-1])
            if problem is not None:
                problems.append(f"{path}: {problem}")
    return problems

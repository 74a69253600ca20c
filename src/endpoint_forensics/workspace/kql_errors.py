"""What the local engine says about a query it refuses, in KQL's terms: the operator or
function by the name a KQL author writes (``make-series``, ``percentiles()``, ``*`` as an
argument), with its position, that it runs in Sentinel, and nothing of the translation
library's internals (its class names, its source files, its release waves). DuckDB's own
errors keep their hints ("Did you mean ...", candidate bindings). Imports nothing of ours.
"""

from __future__ import annotations

import re

__all__ = ["plain_kql_error"]

_UNSUPPORTED = re.compile(r"unsupported KQL construct '(?P<what>[^']+)'(?P<rest>.*)", re.DOTALL)
_AT = re.compile(r"\bat (\d+:\d+)")
# Names the parser's classes and kinds give an operator or argument, as KQL spells them.
_SPELLED = {
    "expression:Wildcard": "`*` as a function argument (as in take_any(*))",
    "MvApplyOperator": "mv-apply",
    "MakeSeriesOperator": "make-series",
    "ParseKvOperator": "parse-kv",
    "ParseWhereOperator": "parse-where",
}
_WORDS = re.compile(r"(?<!^)(?=[A-Z])")


def _spelled(what: str) -> str:
    if what in _SPELLED:
        return _SPELLED[what]
    kind, _, name = what.partition(":")
    if name and kind in ("aggregate", "function", "scalar"):
        return f"{name}()"
    if what.endswith("Operator"):
        return _WORDS.sub("-", what.removesuffix("Operator")).lower()
    return name or what


def plain_kql_error(message: str) -> str:
    """``message`` (the first line of an error of the local KQL engine) for a KQL author."""
    found = _UNSUPPORTED.search(message)
    if found is None:
        return message
    where = _AT.search(found["rest"])
    at = f" at {where.group(1)}" if where else ""
    return (
        f"{_spelled(found['what'])}{at} is not supported by the local engine;"
        ' the query runs in Sentinel as it is (the README\'s "KQL that runs locally" lists what'
        " does)"
    )

"""What the fuzz tests share: hostile wire values, records shaped like a parser's input, the
count of cases each parser was given, and the checks every parser's output must pass.

A parser of remote data may do three things with what it is given: return rows that both
sinks can write, set a record aside with a reason (quarantine), or raise one of our errors
(``EpfError``) with a message. Anything else (a ``KeyError``, a ``TypeError``, a row that
the sinks cannot encode) is a defect.
"""

from __future__ import annotations

import os
import string
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from endpoint_forensics.contracts import Batch, Reject
from endpoint_forensics.pipeline.checkpoints import Quarantine
from endpoint_forensics.sinks.rows import to_arrow
from endpoint_forensics.sinks.sentinel_writer import encode_rows
from endpoint_forensics.tables import Table

_EXAMPLES = int(os.environ.get("EPF_FUZZ_EXAMPLES", "0") or 0)
FUZZING = bool(_EXAMPLES)  # the harness (make fuzz), not make test

#: The settings of every fuzz test (put it under ``@given``). ``make test`` gives each parser a
#: couple of hundred cases, derandomized so that a run is repeatable; ``make fuzz`` gives each
#: 10,000 (``EPF_FUZZ_EXAMPLES``) from a fresh random seed, and prints the seed of a failure.
FUZZ = settings(
    max_examples=_EXAMPLES or 200,
    derandomize=not _EXAMPLES,
    deadline=None,
    database=None,
    print_blob=bool(_EXAMPLES),
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
        HealthCheck.function_scoped_fixture,
    ],
)

#: Cases each parser was given, and the test that gave them (for the summary table).
CASES: Counter[str] = Counter()
TESTS: dict[str, str] = {}
STARTED: dict[str, float] = {}
ENDED: dict[str, float] = {}


def tally(parser: str) -> None:
    """Count one case given to ``parser``; call it once in each example."""
    now = time.monotonic()
    CASES[parser] += 1
    STARTED.setdefault(parser, now)
    ENDED[parser] = now
    test = os.environ.get("PYTEST_CURRENT_TEST", "")
    TESTS.setdefault(parser, test.split(" ")[0])


# -- values ------------------------------------------------------------------------------------

_SPECIAL_TEXT = [
    "",
    " ",
    "null",
    "None",
    "true",
    "false",
    "True",
    "FALSE",
    "unknown",
    "0",
    "-1",
    "1e308",
    "1e999",
    "NaN",
    "Infinity",
    "-0",
    "9223372036854775808",
    "2147483648",
    "0x1F",
    "1_000",
    "2024-02-30T00:00:00Z",
    "2024-13-01",
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59.9999999Z",
    "2026-03-04T05:06:07",
    "2026-03-04T05:06:07.1234567Z",
    "2026-03-04 05:06:07",
    "3/4/2026 5:06:07 AM",
    "/Date(1700000000000)/",
    "1700000000000",
    "Mar 4 2026",
    "CVE-2024-0001",
    "cve-2024-0001",
    "\x00",
    "\u202e",
    "\ud7ff",
    "e\u0301",
    "\U0001f600",
    "../../etc/passwd",
    "'; DROP TABLE x; --",
    '"',
    "\\",
    "\n",
    "\r\n",
    "%s",
    "{}",
    "[]",
]

#: Text as a hostile service might send it: the special cases above, or anything at all.
wire_text = st.one_of(
    st.sampled_from(_SPECIAL_TEXT),
    st.text(max_size=40),
    st.text(alphabet=string.digits + "-:.TZ+ ", max_size=32),
    st.integers(min_value=0, max_value=70_000).map(lambda n: "x" * n),  # past a 64 KB field
)

#: Numbers as the JSON reader (orjson) hands them over: integers from -2**63 to 2**64 - 1 (past
#: that it reads a float), any finite float.
_INT_RANGE = {"min_value": -(2**63), "max_value": 2**64 - 1}
wire_numbers = st.one_of(
    st.integers(min_value=-1000, max_value=1000),
    st.integers(**_INT_RANGE),
    st.sampled_from([0, -1, 2**31 - 1, 2**31, -(2**31) - 1, 2**63 - 1, 2**63, -(2**63), 2**64 - 1]),
    st.floats(allow_nan=False, allow_infinity=False),
)

scalars = st.one_of(st.none(), st.booleans(), wire_numbers, wire_text)


def json_values(max_leaves: int = 12) -> st.SearchStrategy[Any]:
    """Any JSON value, nested a few levels."""
    return st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4),
            st.dictionaries(wire_text, inner, max_size=4),
        ),
        max_leaves=max_leaves,
    )


def drift(name: str) -> st.SearchStrategy[str]:
    """A field name as the service spells it today, or with its casing drifted."""
    return st.sampled_from([name, name.lower(), name.upper(), name[:1].lower() + name[1:]])


def records_like(
    fields: Iterable[str], *, values: st.SearchStrategy[Any] | None = None
) -> st.SearchStrategy[dict[str, Any]]:
    """Objects whose keys are mostly the parser's own field names (casing drifted, some left
    out), a few unknown ones, and whose values are any JSON at all."""
    names = sorted(set(fields))
    # Mostly a scalar: nested values cost more to draw than the parsers take to read them.
    value = values if values is not None else st.one_of(scalars, scalars, json_values(3))
    known = st.lists(st.sampled_from(names).flatmap(drift), unique=True, max_size=len(names))
    return st.tuples(
        known.flatmap(lambda keys: st.fixed_dictionaries({k: value for k in keys})),
        st.dictionaries(wire_text, value, max_size=3),
    ).map(lambda pair: {**pair[1], **pair[0]})


def top_level(record: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """What a page or a line may hold where an object is expected: mostly one, or not."""
    return st.one_of(record, record, record, json_values(4))


# -- checks ------------------------------------------------------------------------------------


def check_rows(table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Rows both sinks can write: columns of ``table`` only, typed so that the workspace's
    Arrow conversion and the Sentinel stream's JSON encoding both accept them."""
    known = set(table.column_names)
    for row in rows:
        unknown = set(row) - known
        assert not unknown, f"columns {sorted(unknown)} are not in {table.name}"
    to_arrow(table, list(rows), stamped=set())
    for line in encode_rows(table, Batch(table, rows=list(rows)), {}):
        orjson.loads(line)


def check_batch(batch: Batch, tmp: Path) -> None:
    """A batch's rows fit its table (Arrow batches are cast by their decoder), and its
    rejects can be written to quarantine, each with a reason."""
    check_rows(batch.table, batch.rows)
    if batch.arrow is not None:
        assert batch.arrow.schema.names == [
            c.name for c in batch.table.columns if c.name in batch.arrow.schema.names
        ]
    check_rejects(batch.rejects, tmp)


def check_rejects(rejects: Sequence[Reject], tmp: Path) -> None:
    for reject in rejects:
        assert isinstance(reject.reason, str) and reject.reason.strip(), reject
    Quarantine(tmp, "fuzz").add("tenant", "dataset", list(rejects))


def check_row_or_reason(table: Table, result: Any) -> None:
    """A record converter's answer: a row of ``table``, or a reason (text) to quarantine."""
    if isinstance(result, str):
        assert result.strip(), "an empty reason"
        return
    assert isinstance(result, Mapping), f"{type(result).__name__} is neither row nor reason"
    check_rows(table, [result])

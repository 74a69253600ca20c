"""``epf query`` (C.1): any KQL a user types, or any SQL with ``--sql``, gives rows or one of our
errors (``EpfError``) with a one-line plain message, never a traceback; the command prints
none either."""

from __future__ import annotations

import string
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from endpoint_forensics.analytics.functions import functions
from endpoint_forensics.cli.commands import answer_query
from endpoint_forensics.errors import EpfError
from endpoint_forensics.tables import TABLES
from endpoint_forensics.workspace import store

from .support import FUZZ, tally, wire_text

# -- the workspace -----------------------------------------------------------------------------

#: Rows kept per table: a join of two tables stays small enough to fetch in a blink.
_KEEP = 300


_BUILT: dict[str, Path] = {}


def shared_workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``build_workspace`` once a session: the dashboard's fuzz test reads the same one."""
    if "db" not in _BUILT:
        _BUILT["db"] = build_workspace(tmp_path_factory.mktemp("fuzz-workspace"))
    return _BUILT["db"]


def build_workspace(folder: Path) -> Path:
    """A small emulated tenant synced into a real workspace, each table cut to ``_KEEP`` rows."""
    from endpoint_forensics.config import load_settings
    from endpoint_forensics.pipeline.run import run_sync
    from endpoint_forensics.sinks.duckdb import DuckDBSink
    from epf_emulator import Emulator, EmulatorSettings

    with Emulator(EmulatorSettings(iot_sensors=0, devices=20, seed=1)) as emu:
        emu.write_config(folder / "epf.toml", iot="none")
        settings = load_settings(
            folder / "epf.toml",
            environ={},
            overrides={
                "store.path": str(folder / "ws.duckdb"),
                "state.dir": str(folder / "state"),
            },
        )
        sink = DuckDBSink(settings.store.path)
        try:
            run_sync(settings, [sink], now=emu.now)
        finally:
            sink.close()
    db = Path(settings.store.path)
    con = store.connect(db)
    try:
        for name in TABLES:
            con.execute(f'DELETE FROM "{name}" WHERE rowid >= {_KEEP}')
        con.execute("CHECKPOINT")
    finally:
        con.close()
    return db


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    db = shared_workspace(tmp_path_factory)
    # Held open, as the dashboard holds its copy: each query's connection then shares this
    # database instance instead of starting one (10 to 20 ms).
    held = store.connect(db, read_only=True)
    try:
        yield db
    finally:
        held.close()


# -- texts -------------------------------------------------------------------------------------

_TABLES = sorted(TABLES)
_COLUMNS = sorted({c for t in TABLES.values() for c in t.column_names})
_FUNCTIONS = sorted(functions())

HOSTILE_TOKENS = [
    "'",
    '"',
    "`",
    "\\",
    "|",
    "||",
    ";",
    "--",
    "//",
    "/*",
    "*/",
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    "==",
    "=~",
    "!=",
    "<>",
    "$",
    "@",
    "#",
    "%",
    "*",
    ",",
    ".",
    "..",
    "\x00",
    "\n",
    "\t",
    "\u202e",
    "\U0001f600",
    "e\u0301",
    "let",
    "datatable",
    "'; DROP TABLE EPF_Devices_CL; --",
    "\"; ATTACH ':memory:' AS x; --",
    "1e999",
    "-9223372036854775809",
    "18446744073709551616",
    "0x",
    "datetime(",
    "ago(",
    "now()",
    "null",
    "dynamic(",
    'dynamic({"a":[1,',
    "@'",
    "h'",
    "```",
    "EPF_Missing_CL",
    "NoSuchColumn",
]

ident = st.one_of(
    st.sampled_from(_COLUMNS),
    st.sampled_from(_COLUMNS).map(str.lower),
    st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,12}", fullmatch=True),
)

string_literal = st.one_of(
    wire_text.filter(lambda s: len(s) < 200).map(lambda s: "'" + s.replace("'", "\\'") + "'"),
    wire_text.filter(lambda s: len(s) < 200).map(lambda s: '"' + s + '"'),  # unescaped
    st.text(max_size=20).map(lambda s: "@'" + s + "'"),
)
number_literal = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["1e308", "1e999", "-0", "0.", ".5", "1_000", "0x1F", "long(null)"]),
)
datetime_literal = st.one_of(
    wire_text.filter(lambda s: len(s) < 60).map(lambda s: f"datetime({s})"),
    st.sampled_from(
        [
            "datetime(2026-11-05)",
            "datetime(2026-02-30)",
            "datetime(0001-01-01)",
            "datetime(9999-12-31T23:59:59.9999999Z)",
            "datetime(10000-01-01)",
            "datetime(null)",
            "ago(1d)",
            "ago(-100000000d)",
            "ago(99999999999999d)",
            "now()",
            "now(-1h)",
            "1d",
            "-1h",
            "9999999999999d",
            "timespan(1.2:3:4)",
            "totimespan('x')",
        ]
    ),
)
literal = st.one_of(
    string_literal,
    number_literal,
    datetime_literal,
    st.sampled_from(["true", "false", "dynamic(null)", "dynamic([1,2])"]),
)

_CALLS = [
    "count()",
    "dcount({c})",
    "sum({c})",
    "avg({c})",
    "min({c})",
    "max({c})",
    "arg_max({c}, *)",
    "make_set({c})",
    "tostring({c})",
    "toint({c})",
    "tolong({c})",
    "todouble({c})",
    "todatetime({c})",
    "tolower({c})",
    "strlen({c})",
    "isempty({c})",
    "isnull({c})",
    "bin({c}, 1d)",
    "startofday({c})",
    "parse_json({c})",
    "split({c}, ',')",
    "substring({c}, -1, 99999999999)",
    "iff({c} == '', 1, 0)",
    "case({c} > 1, 'a', 'b')",
    "coalesce({c}, '')",
    "strcat({c}, '-')",
    "extract('(', 1, {c})",
    "replace_regex({c}, '[', '')",
    "format_datetime({c}, 'yyyy')",
    "datetime_diff('day', {c}, now())",
    "hash({c})",
    "array_length({c})",
    "bag_keys({c})",
    "nosuchfunction({c})",
]


@st.composite
def expression(draw: st.DrawFn, depth: int = 0) -> str:
    choice = draw(st.integers(0, 5 if depth < 2 else 2))
    if choice == 0:
        return draw(ident)
    if choice == 1:
        return draw(literal)
    if choice == 2:
        return draw(st.sampled_from(HOSTILE_TOKENS))
    if choice == 3:
        return draw(st.sampled_from(_CALLS)).replace("{c}", draw(expression(depth + 1)))
    op = draw(
        st.sampled_from(
            [
                "==",
                "!=",
                "=~",
                "<",
                ">=",
                "+",
                "-",
                "*",
                "/",
                "%",
                "and",
                "or",
                "contains",
                "has",
                "!has",
                "startswith",
                "matches regex",
                "in",
                "between",
                "like",
            ]
        )
    )
    left, right = draw(expression(depth + 1)), draw(expression(depth + 1))
    if op == "in":
        return f"{left} in ({right}, {draw(literal)})"
    if op == "between":
        return f"{left} between ({right} .. {draw(literal)})"
    return f"{left} {op} {right}"


def _columns(draw: st.DrawFn) -> str:
    return ", ".join(draw(st.lists(ident, min_size=1, max_size=3)))


@st.composite
def operator(draw: st.DrawFn) -> str:
    kind = draw(st.integers(0, 13))
    if kind == 0:
        return f"where {draw(expression())}"
    if kind == 1:
        return f"project {_columns(draw)}"
    if kind == 2:
        return f"summarize count() by {_columns(draw)}"
    if kind == 3:
        agg = draw(st.sampled_from(_CALLS)).replace("{c}", draw(ident))
        return f"summarize {draw(ident)} = {agg} by {_columns(draw)}"
    if kind == 4:
        return f"extend {draw(ident)} = {draw(expression())}"
    if kind == 5:
        return f"take {draw(number_literal)}"
    if kind == 6:
        direction = draw(st.sampled_from(["", " asc", " desc", " nulls first", " sideways"]))
        return f"order by {draw(ident)}{direction}"
    if kind == 7:
        flavor = draw(
            st.sampled_from(["", "kind=inner ", "kind=leftouter ", "kind=anti ", "kind=x "])
        )
        right = draw(st.sampled_from(_TABLES))
        return f"join {flavor}({right} | take 50) on {draw(ident)}"
    if kind == 8:
        return f"union {draw(st.sampled_from(_TABLES))}"
    if kind == 9:
        return f"top {draw(number_literal)} by {draw(ident)}"
    if kind == 10:
        return f"distinct {_columns(draw)}"
    if kind == 11:
        return f"project-away {_columns(draw)}"
    if kind == 12:
        return draw(
            st.sampled_from(
                [
                    "count",
                    "mv-expand x = split('a,b', ',')",
                    "sort by x",
                    "limit 1",
                    "render table",
                    "evaluate bag_unpack(x)",
                    "parse x with * 'a' y",
                ]
            )
        )
    return draw(st.sampled_from(HOSTILE_TOKENS))


@st.composite
def kql(draw: st.DrawFn) -> str:
    source = draw(
        st.one_of(
            st.sampled_from(_TABLES),
            st.sampled_from(_FUNCTIONS).map(lambda f: f + "(now())"),
            st.sampled_from(_FUNCTIONS).map(lambda f: f + "()"),
            st.sampled_from(_FUNCTIONS),
            st.just("print x = 1"),
            ident,
        )
    )
    ops = draw(st.lists(operator(), max_size=5))
    text = " | ".join([source, *ops])
    if draw(st.booleans()):
        text = f"let v = {draw(literal)};\n{text}"
    if draw(st.integers(0, 4)) == 0:  # a hostile token somewhere
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.sampled_from(HOSTILE_TOKENS)) + text[at:]
    return text


kql_texts = st.one_of(
    kql(),
    kql(),
    kql(),
    st.text(max_size=80),
    st.text(alphabet=string.printable, max_size=80),
    wire_text.filter(lambda s: len(s) < 2000),
)

_SELECTS = st.builds(
    lambda cols, table, cond, tail: f'SELECT {cols} FROM "{table}"{cond}{tail}',
    st.one_of(st.just("*"), st.just("count(*)"), ident.map(lambda c: f'"{c}"'), ident),
    st.sampled_from(_TABLES),
    st.one_of(st.just(""), st.builds(lambda c, v: f" WHERE {c} = {v}", ident, literal)),
    st.sampled_from(
        ["", " LIMIT 5", " ORDER BY 1", " GROUP BY ALL", " LIMIT -1", ";", "; SELECT 1"]
    ),
)
sql_texts = st.one_of(_SELECTS, st.text(max_size=60), wire_text.filter(lambda s: len(s) < 2000))


# -- the property ------------------------------------------------------------------------------


def check_answer(db: Path, text: str, *, sql: bool = False) -> None:
    """What ``epf query`` does with ``text``: rows, or our error with a plain one-line message.
    Anything else raised (a ``duckdb`` error, a ``TypeError``) fails the test."""
    try:
        result = answer_query(db, text, sql=sql)
        assert isinstance(result, store.QueryResult)
        result.records()
    except EpfError as exc:
        message = str(exc)
        assert message.strip(), "an empty message"
        assert "\n" not in message, f"not one line: {message!r}"
        assert "Traceback" not in message, message


@FUZZ
@given(kql_texts)
def test_a_kql_query(workspace: Path, text: str) -> None:
    tally("epf query KQL text")
    check_answer(workspace, text)


@FUZZ
@given(sql_texts)
def test_a_sql_query(workspace: Path, text: str) -> None:
    tally("epf query --sql text")
    check_answer(workspace, text, sql=True)


# -- the command -------------------------------------------------------------------------------

_SAMPLED = [
    "EPF_Devices_CL | where DeviceName == '\x00' | take 1",
    "EPF_Devices_CL | take 1e999",
    "EPF_Devices_CL | where SnapshotTime > datetime(10000-01-01)",
    "EPF_Devices_CL | summarize count() by ",
    "'; DROP TABLE EPF_Devices_CL; --",
    "EPF_DevicesAt(datetime(0001-01-01))",
    "EPF_Missing_CL | count",
    "let x = ;",
    "EPF_Devices_CL | join kind=x (EPF_AvHealth_CL) on DeviceId",
    "\u202e\U0001f600",
]


@pytest.mark.parametrize("text", _SAMPLED)
def test_the_command_prints_no_traceback(
    workspace: Path, text: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import sys

    from endpoint_forensics.cli import commands

    argv = sys.argv
    sys.argv = ["epf", "query", "--db", str(workspace), "--format", "json", text]
    try:
        commands.main()
        code: object = 0
    except SystemExit as exc:
        code = exc.code
    finally:
        sys.argv = argv
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    assert code in (0, 2), (code, captured.err)
    if code:
        assert captured.err.startswith("error: ") and captured.err.count("\n") == 1, captured.err

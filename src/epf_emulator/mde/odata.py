"""A small, real OData v4 ``$filter`` parser and evaluator for ``GET /api/machines``.

Owns the grammar the MDE API documents and its samples use (defender-apis.md B.0, B.1):
``eq ne gt ge lt le``, ``and or not``, parentheses, ``startswith/endswith/contains(field,'x')``,
string literals in single quotes (``''`` escapes a quote), integers and decimals, ``true false
null``, datetimes (``2024-01-01T00:00:00Z``, ``2018-08-01Z``) compared as instants, and the
lambda ``machineTags/any(t: t eq 'x')`` (``all`` too). Only the documented filterable properties
are accepted; anything else is an ``ODataFilterError`` whose message says what is wrong.

Imports only ``mde.odata_lexer`` of the emulator: it shares no code with the collector.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

from epf_emulator.mde.odata_lexer import ODataFilterError, Token, parse_instant, tokenize

__all__ = ["FILTERABLE_FIELDS", "ODataFilterError", "Predicate", "compile_filter", "non_negative"]

Record = Mapping[str, Any]
Predicate = Callable[[Record], bool]
_Value = Callable[[Record, dict[str, Any]], Any]

_STRING = "Edm.String"
_NUMBER = "Edm.Int64"
_DATETIME = "Edm.DateTimeOffset"
_BOOL = "Edm.Boolean"
_STRINGS = "Collection(Edm.String)"

#: The properties get-machines.md lists as filterable, with their OData types.
FILTERABLE_FIELDS: dict[str, str] = {
    "computerDnsName": _STRING,
    "id": _STRING,
    "version": _STRING,
    "deviceValue": _STRING,
    "aadDeviceId": _STRING,
    "machineTags": _STRINGS,
    "lastSeen": _DATETIME,
    "exposureLevel": _STRING,
    "onboardingStatus": _STRING,
    "lastIpAddress": _STRING,
    "healthStatus": _STRING,
    "osPlatform": _STRING,
    "riskScore": _STRING,
    "rbacGroupId": _NUMBER,
}
# Properties of the machine entity that exist but cannot be filtered on.
_OTHER_FIELDS = frozenset(
    {
        "firstSeen",
        "osVersion",
        "osProcessor",
        "osArchitecture",
        "osBuild",
        "lastExternalIpAddress",
        "agentVersion",
        "rbacGroupName",
        "isAadJoined",
        "defenderAvStatus",
        "managedBy",
        "managedByStatus",
        "isPotentialDuplication",
        "mergedIntoMachineId",
        "isExcluded",
        "exclusionReason",
        "vmMetadata",
        "ipAddresses",
    }
)
_ENTITY = "microsoft.windowsDefenderATP.api.PublicMachine"
_COMPARISONS = {"eq", "ne", "gt", "ge", "lt", "le"}
_OPERATOR_KIND = {
    "eq": "Equal",
    "ne": "NotEqual",
    "gt": "GreaterThan",
    "ge": "GreaterThanOrEqual",
    "lt": "LessThan",
    "le": "LessThanOrEqual",
}
_KEYWORDS = _COMPARISONS | {"and", "or", "not"}
_STRING_FUNCTIONS: dict[str, Callable[[str, str], bool]] = {
    "startswith": str.startswith,
    "endswith": str.endswith,
    "contains": str.__contains__,
}
_FUNCTIONS = set(_STRING_FUNCTIONS)


@dataclass(frozen=True)
class _Expr:
    """A compiled sub-expression: how to compute it and its OData type (None = unknown/null)."""

    fn: _Value
    type: str | None
    field: str | None = None


def compile_filter(
    text: str,
    *,
    fields: Mapping[str, str] = FILTERABLE_FIELDS,
    other_fields: frozenset[str] = _OTHER_FIELDS,
    entity: str = _ENTITY,
) -> Predicate:
    """Parse ``text`` into a predicate over records (machine records by default).

    ``fields`` maps the filterable properties to their OData types (``Edm.String``,
    ``Edm.Int64``, ``Edm.Double``, ``Edm.DateTimeOffset``, ``Edm.Boolean``...); properties in
    ``other_fields`` exist but cannot be filtered on.

    Raises:
        ODataFilterError: the filter does not parse, names an unknown or non-filterable
            property, or compares incompatible types.
    """
    parser = _Parser(tokenize(text), text, fields, other_fields, entity)
    expr = parser.parse()
    if expr.type != _BOOL:
        kind = expr.type or "null"
        raise ODataFilterError(f"The $filter expression must evaluate to a boolean, not {kind}.")
    fn = expr.fn

    def predicate(record: Record) -> bool:
        try:
            return fn(record, {}) is True
        except (TypeError, AttributeError, ValueError):
            return False  # a malformed record (wrong value types) simply does not match

    return predicate


class _Parser:
    """Recursive descent: or > and > not > comparison > primary."""

    def __init__(
        self,
        tokens: list[Token],
        text: str,
        fields: Mapping[str, str],
        other_fields: frozenset[str],
        entity: str,
    ) -> None:
        self._tokens = tokens
        self._i = 0
        self._text = text
        self._fields = fields
        self._other_fields = other_fields
        self._entity = entity
        self._lambda_vars: dict[str, str] = {}

    def parse(self) -> _Expr:
        if self._peek().kind == "end":
            raise ODataFilterError("The $filter expression is empty.")
        expr = self._or()
        if self._peek().kind != "end":
            self._fail("end of expression")
        return expr

    # --- grammar -------------------------------------------------------------------------
    def _or(self) -> _Expr:
        left = self._and()
        while self._keyword("or"):
            right = self._and()
            left = self._logical("or", left, right)
        return left

    def _and(self) -> _Expr:
        left = self._not()
        while self._keyword("and"):
            right = self._not()
            left = self._logical("and", left, right)
        return left

    def _not(self) -> _Expr:
        if self._keyword("not"):
            inner = self._not()
            self._require_bool("not", inner)
            fn = inner.fn
            return _Expr(lambda r, env: fn(r, env) is not True, _BOOL)
        return self._comparison()

    def _comparison(self) -> _Expr:
        left = self._primary()
        token = self._peek()
        if token.kind == "ident" and token.text in _COMPARISONS:
            self._i += 1
            right = self._primary()
            return _compare(token.text, left, right)
        lower = token.text.lower()
        if token.kind == "ident" and token.text != lower and lower in _KEYWORDS:
            raise ODataFilterError(
                f"Syntax error at position {token.pos}: operators are lower case ('{lower}')."
            )
        return left

    def _primary(self) -> _Expr:
        token = self._next()
        if token.kind == "punct" and token.text == "(":
            expr = self._or()
            self._expect(")")
            return expr
        if token.kind == "string":
            value = token.text[1:-1].replace("''", "'")
            return _Expr(lambda r, env: value, _STRING)
        if token.kind == "number":
            number: float = float(token.text) if "." in token.text else int(token.text)
            return _Expr(lambda r, env: number, _NUMBER)
        if token.kind == "datetime":
            instant = parse_instant(token.text)
            if instant is None:
                message = f"'{token.text}' at position {token.pos} is not a valid DateTimeOffset."
                raise ODataFilterError(message)
            return _Expr(lambda r, env: instant, _DATETIME)
        if token.kind == "ident":
            if token.text in ("true", "false"):
                flag = token.text == "true"
                return _Expr(lambda r, env: flag, _BOOL)
            if token.text == "null":
                return _Expr(lambda r, env: None, None)
            if token.text in _KEYWORDS:
                self._fail("a value, property or '('", token)
            if token.text in _FUNCTIONS and self._peek().text == "(":
                return self._function(token)
            return self._member(token)
        self._fail("a value, property or '('", token)

    def _function(self, name: Token) -> _Expr:
        self._expect("(")
        subject = self._or()
        self._expect(",")
        prefix = self._or()
        self._expect(")")
        for arg in (subject, prefix):
            if arg.type not in (_STRING, None):
                raise ODataFilterError(
                    f"No function signature for '{name.text}' matches argument type {arg.type}; it takes strings."
                )
        op = _STRING_FUNCTIONS[name.text]
        sf, pf = subject.fn, prefix.fn

        def call(r: Record, env: dict[str, Any]) -> bool:
            s, p = sf(r, env), pf(r, env)
            return isinstance(s, str) and isinstance(p, str) and op(s, p)

        return _Expr(call, _BOOL)

    def _member(self, token: Token) -> _Expr:
        name = token.text
        if name in self._lambda_vars:
            return _Expr(lambda r, env: env[name], self._lambda_vars[name])
        if name not in self._fields:
            if name in self._other_fields:
                message = f"The property '{name}' cannot be used in the $filter query option."
                raise ODataFilterError(message)
            raise ODataFilterError(
                f"Could not find a property named '{name}' on type '{self._entity}'."
            )
        kind = self._fields[name]
        if self._peek().text == "/":
            return self._lambda(name, kind)
        if kind == _DATETIME:
            return _Expr(lambda r, env: parse_instant(r.get(name)), kind, name)
        return _Expr(lambda r, env: r.get(name), kind, name)

    def _lambda(self, name: str, kind: str) -> _Expr:
        self._expect("/")
        op = self._next()
        if op.text not in ("any", "all") or kind != _STRINGS:
            message = (
                f"'{name}/{op.text}' is not supported: only collection properties have any/all."
            )
            raise ODataFilterError(message)
        self._expect("(")
        var = self._next()
        if var.kind != "ident":
            self._fail("a lambda variable name", var)
        self._expect(":")
        self._lambda_vars[var.text] = _STRING
        body = self._or()
        del self._lambda_vars[var.text]
        self._expect(")")
        self._require_bool(op.text, body)
        quantifier = any if op.text == "any" else all
        bf, v = body.fn, var.text

        def evaluate(r: Record, env: dict[str, Any]) -> bool:
            items = r.get(name)
            if not isinstance(items, list):
                return False
            return quantifier(bf(r, {**env, v: item}) is True for item in items)

        return _Expr(evaluate, _BOOL)

    # --- helpers -------------------------------------------------------------------------
    def _logical(self, op: str, left: _Expr, right: _Expr) -> _Expr:
        self._require_bool(op, left)
        self._require_bool(op, right)
        lf, rf = left.fn, right.fn
        if op == "and":
            return _Expr(lambda r, env: lf(r, env) is True and rf(r, env) is True, _BOOL)
        return _Expr(lambda r, env: lf(r, env) is True or rf(r, env) is True, _BOOL)

    def _require_bool(self, op: str, expr: _Expr) -> None:
        if expr.type != _BOOL:
            kind = expr.type or "null"
            raise ODataFilterError(
                f"The operand of '{op}' must be a boolean expression, not {kind}."
            )

    def _peek(self) -> Token:
        return self._tokens[self._i]

    def _next(self) -> Token:
        token = self._tokens[self._i]
        if token.kind != "end":
            self._i += 1
        return token

    def _keyword(self, word: str) -> bool:
        token = self._peek()
        if token.kind == "ident" and token.text == word:
            self._i += 1
            return True
        return False

    def _expect(self, punct: str) -> None:
        token = self._next()
        if token.kind != "punct" or token.text != punct:
            self._fail(f"'{punct}'", token)

    def _fail(self, wanted: str, token: Token | None = None) -> NoReturn:
        token = token or self._peek()
        found = f"'{token.text}'" if token.kind != "end" else "the end of the expression"
        raise ODataFilterError(
            f"Syntax error at position {token.pos} in '{self._text}': expected {wanted}, found {found}."
        )


def _compare(op: str, left: _Expr, right: _Expr) -> _Expr:
    for side in (left, right):
        if side.type == _STRINGS:
            message = f"'{side.field}' is a collection; use {side.field}/any(t: t {op} 'value')."
            raise ODataFilterError(message)
    types = {t for t in (left.type, right.type) if t is not None}
    if len(types) > 1:
        lt, rt = left.type, right.type
        raise ODataFilterError(
            "A binary operator with incompatible types was detected. Found operand types "
            f"'{lt}' and '{rt}' for operator kind '{_OPERATOR_KIND[op]}'."
        )
    if op not in ("eq", "ne") and types == {_BOOL}:
        raise ODataFilterError(f"Operator '{op}' is not defined for boolean operands.")
    lf, rf = left.fn, right.fn
    test = _OPS[op]

    def compare(r: Record, env: dict[str, Any]) -> bool:
        a, b = lf(r, env), rf(r, env)
        if a is None or b is None:
            # OData null semantics: null eq null, null ne x; ordering against null is false.
            if op == "eq":
                return a is None and b is None
            if op == "ne":
                return not (a is None and b is None)
            return False
        if type(a) is bool or type(b) is bool:
            if type(a) is not type(b):
                return op == "ne"
        elif isinstance(a, str) != isinstance(b, str):
            return op == "ne"  # a record with a wrongly typed value: never equal
        return bool(test(a, b))

    return _Expr(compare, _BOOL)


_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "eq": lambda a, b: a == b,
    "ne": lambda a, b: a != b,
    "gt": lambda a, b: a > b,
    "ge": lambda a, b: a >= b,
    "lt": lambda a, b: a < b,
    "le": lambda a, b: a <= b,
}


def non_negative(value: str | None, name: str) -> int | None:
    """A $top or $skip value: a non-negative integer, or None when absent."""
    if value is None:
        return None
    try:
        number = int(value)
    except ValueError:
        message = f"The value '{value}' of the query option '{name}' is not a valid integer."
        raise ValueError(message) from None
    if number < 0:
        raise ValueError(
            f"Invalid value '{value}' for the {name} query option: it must not be negative."
        )
    return number

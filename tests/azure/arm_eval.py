"""A small evaluator of ARM template expressions, to check a generated template as Resource
Manager would deploy it: every resource's id, what each ``dependsOn`` and ``reference()`` names,
role assignment scopes, and the values of app settings and outputs.

It knows the functions the generated templates use and nothing more: any other function, or a
parameter or variable the template does not declare, fails loudly, as the deployment would.
``reference()`` is answered by a callback standing in for the deployed resources; every call is
recorded, so a test can check that a resource waits for what it reads. ``if()`` evaluates only
the branch its condition picks, as ARM's does.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

SUBSCRIPTION = "00000000-0000-0000-0000-000000000001"
RESOURCE_GROUP = "rg-epf"
RESOURCE_GROUP_ID = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}"
LOCATION = "westeurope"

_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<num>-?\d+)|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<punct>[(),.\[\]]))"
)

Reference = Callable[[str, tuple[Any, ...]], Any]


class ArmError(Exception):
    """What Resource Manager would refuse the template for."""


def is_expression(value: Any) -> bool:
    return (
        isinstance(value, str)
        and value.startswith("[")
        and not value.startswith("[[")
        and value.endswith("]")
    )


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        match = _TOKEN.match(text, pos)
        if match is None:
            raise ArmError(f"cannot read expression at {pos}: {text!r}")
        kind = match.lastgroup
        assert kind is not None
        out.append((kind, match.group(kind)))
        pos = match.end()
    return out


@dataclass
class _Call:
    name: str
    args: list[Any]


@dataclass
class _Member:
    target: Any
    key: Any  # a str (.name) or a node ([index])


@dataclass
class _Literal:
    value: Any


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokens(text)
        self.pos = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self, value: str | None = None) -> tuple[str, str]:
        token = self.peek()
        if token is None or (value is not None and token[1] != value):
            raise ArmError(f"expected {value!r}, found {token!r}")
        self.pos += 1
        return token

    def parse(self) -> Any:
        node = self.expression()
        if self.peek() is not None:
            raise ArmError(f"unexpected {self.peek()!r}")
        return node

    def expression(self) -> Any:
        kind, value = self.take()
        node: Any
        if kind == "str":
            node = _Literal(value[1:-1].replace("''", "'"))
        elif kind == "num":
            node = _Literal(int(value))
        elif kind == "name" and value in ("true", "false"):
            node = _Literal(value == "true")
        elif kind == "name":
            self.take("(")
            args = []
            if self.peek() != ("punct", ")"):
                args.append(self.expression())
                while self.peek() == ("punct", ","):
                    self.take(",")
                    args.append(self.expression())
            self.take(")")
            node = _Call(value, args)
        else:
            raise ArmError(f"unexpected {value!r}")
        while self.peek() in (("punct", "."), ("punct", "[")):
            if self.take()[1] == ".":
                node = _Member(node, self.take()[1])
            else:
                node = _Member(node, self.expression())
                self.take("]")
        return node


def resource_id(kind: str, *names: str, scope: str = RESOURCE_GROUP_ID) -> str:
    """``resourceId()``: the type's segments interleaved with the names."""
    namespace, *types = kind.split("/")
    if len(types) != len(names):
        raise ArmError(f"resourceId({kind!r}) takes {len(types)} names, got {names!r}")
    path = "/".join(f"{t}/{n}" for t, n in zip(types, names, strict=True))
    return f"{scope}/providers/{namespace}/{path}"


def _unique_string(*parts: str) -> str:
    digest = hashlib.sha256("|".join(parts).encode()).digest()
    return base64.b32encode(digest).decode().lower()[:13]


@dataclass
class Scope:
    """One template's parameters and variables, and the stand-in for ``reference()``."""

    template: dict[str, Any]
    given: dict[str, Any] = field(default_factory=dict)
    reference: Reference | None = None
    references: list[str] = field(default_factory=list)
    _parameters: dict[str, Any] = field(default_factory=dict)
    _variables: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        declared = self.template.get("parameters", {})
        unknown = set(self.given) - set(declared)
        if unknown:
            raise ArmError(f"parameters not declared: {sorted(unknown)}")
        for name, spec in declared.items():
            if name in self.given:
                value = self.given[name]
            elif "defaultValue" in spec:
                value = self.value(spec["defaultValue"])
            else:
                raise ArmError(f"parameter {name} has no value")
            if "allowedValues" in spec and value not in spec["allowedValues"]:
                raise ArmError(f"parameter {name}: {value!r} is not allowed")
            if "minValue" in spec and value < spec["minValue"]:
                raise ArmError(f"parameter {name}: {value!r} is below {spec['minValue']}")
            if "maxValue" in spec and value > spec["maxValue"]:
                raise ArmError(f"parameter {name}: {value!r} is above {spec['maxValue']}")
            if "minLength" in spec and len(value) < spec["minLength"]:
                raise ArmError(f"parameter {name}: {value!r} is shorter than allowed")
            if "maxLength" in spec and len(value) > spec["maxLength"]:
                raise ArmError(f"parameter {name}: {value!r} is longer than allowed")
            self._parameters[name] = value

    # --- values -----------------------------------------------------------------------------

    def value(self, node: Any) -> Any:
        """A JSON value of the template with every expression in it evaluated."""
        if isinstance(node, dict):
            return {k: self.value(v) for k, v in node.items()}
        if isinstance(node, list):
            return [self.value(v) for v in node]
        if isinstance(node, str) and node.startswith("[["):
            return node[1:]
        if is_expression(node):
            return self.evaluate(node[1:-1])
        return node

    def evaluate(self, body: str) -> Any:
        return self._eval(_Parser(body).parse())

    def _eval(self, node: Any) -> Any:
        if isinstance(node, _Literal):
            return node.value
        if isinstance(node, _Member):
            target = self._eval(node.target)
            key = node.key if isinstance(node.key, str) else self._eval(node.key)
            if isinstance(target, dict):
                # Property names are case-insensitive in ARM.
                for k, v in target.items():
                    if isinstance(key, str) and k.lower() == key.lower():
                        return v
                raise ArmError(f"no property {key!r} in {sorted(target)}")
            if isinstance(target, list) and isinstance(key, int):
                return target[key]
            raise ArmError(f"cannot take {key!r} of {target!r}")
        assert isinstance(node, _Call)
        if node.name == "if":
            condition, yes, no = node.args
            return self._eval(yes) if self._eval(condition) else self._eval(no)
        args = [self._eval(a) for a in node.args]
        function = getattr(self, f"_fn_{node.name.lower()}", None)
        if function is None:
            raise ArmError(f"function {node.name}() is not known here")
        return function(*args)

    # --- the functions the templates use ----------------------------------------------------

    def _fn_parameters(self, name: str) -> Any:
        if name not in self._parameters:
            raise ArmError(f"parameter {name!r} is not declared")
        return self._parameters[name]

    def _fn_variables(self, name: str) -> Any:
        if name not in self._variables:
            declared = self.template.get("variables", {})
            if name not in declared:
                raise ArmError(f"variable {name!r} is not declared")
            self._variables[name] = self.value(declared[name])
        return self._variables[name]

    def _fn_format(self, text: str, *args: Any) -> str:
        return re.sub(r"\{(\d+)\}", lambda m: str(args[int(m.group(1))]), text)

    def _fn_concat(self, *args: Any) -> Any:
        if args and isinstance(args[0], list):
            return [x for a in args for x in a]
        return "".join(str(a) for a in args)

    def _fn_take(self, value: Any, count: int) -> Any:
        return value[: max(count, 0)]

    def _fn_tolower(self, value: str) -> str:
        return value.lower()

    def _fn_empty(self, value: Any) -> bool:
        return value is None or len(value) == 0

    def _fn_not(self, value: bool) -> bool:
        return not value

    def _fn_first(self, value: Any) -> Any:
        return value[0]

    def _fn_string(self, value: Any) -> str:
        if isinstance(value, str):
            return value
        if isinstance(value, bool):
            return "True" if value else "False"
        if isinstance(value, (dict, list)):
            return json.dumps(value, separators=(",", ":"))
        return str(value)

    def _fn_createobject(self, *pairs: Any) -> dict[str, Any]:
        if len(pairs) % 2:
            raise ArmError("createObject() takes name, value pairs")
        keys = pairs[::2]
        if len({k.lower() for k in keys}) != len(keys):
            raise ArmError(f"createObject(): a name given twice in {keys!r}")
        return dict(zip(keys, pairs[1::2], strict=True))

    def _fn_union(self, *objects: Any) -> Any:
        if all(isinstance(o, dict) for o in objects):
            merged: dict[str, Any] = {}
            for o in objects:
                merged.update(o)  # the last object wins a clash
            return merged
        raise ArmError("union() of arrays is not used here")

    def _fn_resourcegroup(self) -> dict[str, Any]:
        return {"id": RESOURCE_GROUP_ID, "name": RESOURCE_GROUP, "location": LOCATION}

    def _fn_subscription(self) -> dict[str, Any]:
        return {"id": f"/subscriptions/{SUBSCRIPTION}", "subscriptionId": SUBSCRIPTION}

    def _fn_resourceid(self, kind: str, *names: str) -> str:
        return resource_id(kind, *names)

    def _fn_subscriptionresourceid(self, kind: str, *names: str) -> str:
        return resource_id(kind, *names, scope=f"/subscriptions/{SUBSCRIPTION}")

    def _fn_guid(self, *parts: str) -> str:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, "|".join(parts)))

    def _fn_uniquestring(self, *parts: str) -> str:
        return _unique_string(*parts)

    def _fn_reference(self, target: str, *rest: Any) -> Any:
        if self.reference is None:
            raise ArmError(f"reference({target!r}) where none may be")
        self.references.append(target)
        return self.reference(target, rest)


def resource_name_id(scope: Scope, resource: dict[str, Any]) -> str:
    """A resource's id, from its type and its evaluated name (an extension resource's under
    its scope)."""
    name = scope.value(resource["name"])
    if "scope" in resource:
        parent = f"{RESOURCE_GROUP_ID}/providers/{scope.value(resource['scope'])}"
        return resource_id(resource["type"], name, scope=parent)
    return resource_id(resource["type"], *name.split("/"))

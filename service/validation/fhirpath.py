"""FHIRPath invariants (ElementDefinition.constraint) evaluated with fhirpathpy, compiled once.

Results are memoised, since the same small elements (extensions, codings, references) and the same
resource shapes recur: FHIRPath reaches properties only by naming them, so the key is the element's
(and, if the expression uses ``%resource``, the resource's) properties that the expression names; an
expression with ``children()``/``descendants()``/``repeat()`` keys on the whole JSON, and one that
calls ``resolve()`` or uses another external constant is never memoised. fhirpathpy lacks
``hasValue()``, which this module supplies; ``ele-1`` is checked by the walker (validator.py). An
invariant fhirpathpy cannot evaluate is recorded in ``unsupported`` and skipped, never a false error.
"""

from __future__ import annotations

import functools
import re
import threading
from typing import Any

import orjson
from fhirpathpy import apply_parsed_path
from fhirpathpy.engine.nodes import ResourceNode
from fhirpathpy.models import models
from fhirpathpy.parser import parse

_MODEL = models["r4"]
_NEVER_MEMO = ("resolve(", "%ucum", "%us-zip", "%sct", "%loinc", "%vs-", "%ext-", "memberOf(", "conformsTo(")
_WHOLE = ("children()", "descendants()", "repeat(")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|`[^`]+`")
_MEMO_LIMIT = 200_000


def _has_value(inputs: list[Any]) -> list[bool]:
    """FHIRPath ``hasValue()``, which fhirpathpy lacks: one primitive with a value."""
    return [len(inputs) == 1 and inputs[0] is not None and not isinstance(inputs[0], dict | list)]


def _quiet(*_args: Any) -> None:
    """``trace()`` in base invariants (ref-1) must not print."""


_OPTIONS = {"userInvocationTable": {"hasValue": {"fn": _has_value, "arity": {0: []}}}, "traceFn": _quiet}


class Invariants:
    def __init__(self) -> None:
        self._parsed: dict[str, Any] = {}
        self._memo: dict[tuple[str, bytes], bool | None] = {}
        self._names: dict[str, _Plan | None] = {}
        self._lock = threading.Lock()
        self.unsupported: dict[str, str] = {}

    def holds(
        self,
        expression: str,
        node: Any,
        type_path: str,
        resource: dict[str, Any],
        root: dict[str, Any] | None = None,
    ) -> bool | None:
        """Does the invariant hold on ``node`` (an element of ``resource`` whose type is ``type_path``;
        ``root`` is ``%rootResource``, the container of a contained ``resource``)? None when fhirpathpy
        cannot evaluate it."""
        root = resource if root is None else root
        key = self._key(expression, node, type_path, resource, root)
        if key is not None and key in self._memo:
            return self._memo[key]
        result = self._evaluate(expression, node, type_path, resource, root)
        if key is not None:
            with self._lock:
                if len(self._memo) > _MEMO_LIMIT:
                    self._memo.clear()
                self._memo[key] = result
        return result

    def _key(
        self, expression: str, node: Any, type_path: str, resource: dict[str, Any], root: dict[str, Any]
    ) -> tuple[str, bytes] | None:
        plan = self._names.get(expression, _UNPLANNED)
        if plan is _UNPLANNED:
            plan = self._names[expression] = _plan(expression)
        if plan is None:
            return None
        names, with_resource, with_root = plan
        parts = [
            type_path,
            _project(node, names),
            _project(resource, names) if with_resource else None,
            _project(root, names) if with_root else None,
        ]
        return expression, orjson.dumps(parts, option=orjson.OPT_SORT_KEYS)

    def _evaluate(
        self, expression: str, node: Any, type_path: str, resource: dict[str, Any], root: dict[str, Any]
    ) -> bool | None:
        if expression in self.unsupported:
            return None
        try:
            parsed = self._parsed.get(expression)
            if parsed is None:
                parsed = parse(expression)  # type: ignore[no-untyped-call]
                self._parsed[expression] = parsed
            base = ResourceNode.create_node(node, type_path)  # type: ignore[no-untyped-call]
            env = {"resource": _typed(resource), "rootResource": _typed(root), "context": base}
            result = apply_parsed_path(base, parsed, env, _MODEL, _OPTIONS)  # type: ignore[no-untyped-call]
        except Exception as error:  # fhirpathpy raises bare Exceptions for unimplemented functions
            self.unsupported[expression] = f"{type(error).__name__}: {error}"
            return None
        if not result:
            return True  # an empty result is not a failure (FHIR invariants fail only on false)
        return all(r is True for r in result) if all(isinstance(r, bool) for r in result) else True


_Plan = tuple[frozenset[str], bool, bool]
_UNPLANNED: Any = object()


def _plan(expression: str) -> _Plan | None:
    """What the memo key of an expression holds: the property names it reaches (empty: the whole
    value), and whether it reads ``%resource`` / ``%rootResource``; None: never memoised."""
    if any(token in expression for token in _NEVER_MEMO):
        return None
    if any(token in expression for token in _WHOLE):
        names: frozenset[str] = frozenset()
    else:
        names = frozenset(n.strip("`") for n in _NAME.findall(expression))
    return names, "%resource" in expression, "%rootResource" in expression


def _typed(resource: dict[str, Any]) -> Any:
    """A resource as a typed FHIRPath node, so ``%resource.type().name`` is its resource type."""
    rtype = resource.get("resourceType") if isinstance(resource, dict) else None
    return ResourceNode.create_node(resource, rtype) if isinstance(rtype, str) else resource  # type: ignore[no-untyped-call]


def _project(data: Any, names: frozenset[str]) -> Any:
    """The properties of ``data`` an expression naming ``names`` can reach (all if ``names`` is empty);
    a choice property (``valueQuantity``) is reached through its stem (``value``)."""
    if not names or not isinstance(data, dict):
        return data
    return {k: v for k, v in data.items() if k == "resourceType" or _named(k.lstrip("_"), names)}


@functools.lru_cache(maxsize=1 << 16)
def _named(key: str, names: frozenset[str]) -> bool:
    """Bounded cache: the keys come from the input (a frozenset keeps its hash once computed)."""
    return key in names or any(p in names for p in _stems(key))


@functools.cache
def _stems(key: str) -> tuple[str, ...]:
    """``multipleBirthBoolean`` -> (``multiple``, ``multipleBirth``): every prefix a choice stem could be."""
    return tuple(key[:i] for i in range(1, len(key)) if key[i].isupper())

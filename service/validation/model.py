"""Snapshots compiled into element trees the validator walks without looking anything up by string.

A snapshot is a flat list of ElementDefinitions; the validator needs, per element, its children by
JSON name (choice elements under every allowed ``valueQuantity``-style name), its slices, and the
already-parsed min/max, fixed/pattern value, binding and invariants. Compiled once per profile.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

PRIMITIVE_TYPES = frozenset(
    {
        "boolean",
        "integer",
        "string",
        "decimal",
        "uri",
        "url",
        "canonical",
        "base64Binary",
        "instant",
        "date",
        "dateTime",
        "time",
        "code",
        "oid",
        "id",
        "markdown",
        "unsignedInt",
        "positiveInt",
        "uuid",
        "xhtml",
    }
)
_REGEX_EXT = "http://hl7.org/fhir/StructureDefinition/regex"
_FHIR_TYPE_EXT = "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type"


@dataclass(frozen=True)
class TypeRef:
    code: str
    profiles: tuple[str, ...] = ()
    targets: tuple[str, ...] = ()
    aggregation: tuple[str, ...] = ()
    """contained | referenced | bundled; empty = any (R4 ElementDefinition.type.aggregation)."""


@dataclass(frozen=True)
class Constraint:
    key: str
    severity: str
    human: str
    expression: str


@dataclass(eq=False)
class Elem:
    """One compiled ElementDefinition; ``children`` maps a JSON property name to (element, type)."""

    id: str
    path: str
    name: str
    min: int
    max: int | None
    repeats: bool
    types: tuple[TypeRef, ...]
    choice: bool
    slice_name: str | None = None
    fixed: Any = None
    pattern: Any = None
    binding: tuple[str, str] | None = None
    constraints: tuple[Constraint, ...] = ()
    content_ref: str | None = None
    slicing: dict[str, Any] | None = None
    slices: list[Elem] = field(default_factory=list)
    children: dict[str, tuple[Elem, TypeRef | None]] = field(default_factory=dict)
    own: list[Elem] = field(default_factory=list)
    required: list[Elem] = field(default_factory=list)  # own children with a minimum (or a slice with one)
    min_value: Any = None
    max_value: Any = None
    also_required: tuple[str, ...] = ()  # value sets of additional bindings with purpose "required"
    checks: tuple[Constraint, ...] = ()
    """``constraints`` less ``ele-1`` (the walker checks it structurally): what FHIRPath has to run."""
    sliced: bool = False
    """Values are matched to slices (it has slices or slicing, or is an extension list)."""
    fixed_or_pattern: bool = False
    limited: bool = False
    """It has a minValue[x] or maxValue[x]."""

    @property
    def type_codes(self) -> tuple[str, ...]:
        return tuple(t.code for t in self.types)


def _max(value: str | None) -> int | None:
    return None if value in (None, "*") else int(str(value))


def _type_code(t: dict[str, Any]) -> str:
    code = str(t.get("code", ""))
    if code.startswith("http://hl7.org/fhirpath/System."):
        for ext in t.get("extension", []):
            if ext.get("url") == _FHIR_TYPE_EXT:
                return str(ext["valueUrl"])
        return code.rsplit(".", 1)[1].lower()
    return code


def _prefixed(el: dict[str, Any], prefix: str) -> Any:
    for key, value in el.items():
        if key.startswith(prefix) and key != prefix:
            return value
    return None


def _elem(el: dict[str, Any]) -> Elem:
    path: str = el["path"]
    last = path.rsplit(".", 1)[-1]
    types = tuple(
        TypeRef(
            _type_code(t),
            tuple(t.get("profile", ())),
            tuple(t.get("targetProfile", ())),
            tuple(t.get("aggregation", ())),
        )
        for t in el.get("type", [])
    )
    base_max = el.get("base", {}).get("max", el.get("max"))
    binding = el.get("binding")
    ref = el.get("contentReference")
    return Elem(
        id=el["id"],
        path=path,
        name=last.removesuffix("[x]"),
        min=int(el.get("min", 0)),
        max=_max(el.get("max")),
        repeats=base_max != "1",
        types=types,
        choice=last.endswith("[x]"),
        slice_name=el.get("sliceName"),
        fixed=_prefixed(el, "fixed"),
        pattern=_prefixed(el, "pattern"),
        binding=(binding["strength"], binding["valueSet"].split("|", 1)[0])
        if binding and "valueSet" in binding
        else None,
        constraints=tuple(
            Constraint(c["key"], c.get("severity", "error"), c.get("human", ""), c["expression"])
            for c in el.get("constraint", [])
            if "expression" in c
        ),
        content_ref=ref.split("#", 1)[1] if ref else None,
        slicing=el.get("slicing"),
        min_value=_prefixed(el, "minValue"),
        max_value=_prefixed(el, "maxValue"),
        also_required=_additional_required(binding),
    )


_ADDITIONAL = (
    "http://hl7.org/fhir/5.0/StructureDefinition/extension-ElementDefinition.binding.additional",
    "http://hl7.org/fhir/tools/StructureDefinition/additional-binding",
)


def _additional_required(binding: Any) -> tuple[str, ...]:
    """Value sets of the binding's additional bindings (R5 ``binding.additional``, carried in R4 by an
    extension) whose purpose is ``required``: a code must be in each of them too."""
    if not isinstance(binding, dict):
        return ()
    out = []
    for ext in binding.get("extension", []):
        if isinstance(ext, dict) and ext.get("url") in _ADDITIONAL:
            parts = {e.get("url"): e for e in ext.get("extension", []) if isinstance(e, dict)}
            purpose = parts.get("purpose", {}).get("valueCode")
            vs = parts.get("valueSet", {})
            url = vs.get("valueCanonical") or vs.get("valueUri")
            if purpose == "required" and isinstance(url, str):
                out.append(url.split("|", 1)[0])
    return tuple(out)


def json_name(stem: str, code: str) -> str:
    """``value`` + ``dateTime`` -> ``valueDateTime``."""
    return stem + code[:1].upper() + code[1:]


def compile_snapshot(elements: list[dict[str, Any]]) -> Elem:
    """The root of the element tree of one snapshot."""
    by_id: dict[str, Elem] = {}
    root: Elem | None = None
    for el in elements:
        node = _elem(el)
        by_id[node.id] = node
        parent_id, _, last = node.id.rpartition(".")
        if not parent_id:
            root = node
            continue
        parent = by_id.get(parent_id)
        if parent is None:
            continue
        if ":" in last:
            sliced = by_id.get(f"{parent_id}.{last.split(':', 1)[0]}")
            if sliced is not None:
                sliced.slices.append(node)
            continue
        parent.own.append(node)
        if node.choice:
            for t in node.types:
                parent.children[json_name(node.name, t.code)] = (node, t)
        else:
            parent.children[node.name] = (node, node.types[0] if len(node.types) == 1 else None)
    if root is None:
        raise ValueError("snapshot without a root element")
    for node in by_id.values():
        node.required = [c for c in node.own if c.min > 0 or any(s.min > 0 for s in c.slices)]
        settle(node)
    for node in by_id.values():
        if node.content_ref:
            target = by_id.get(node.content_ref)
            if target is not None:
                node.children = target.children
                node.own = target.own
                node.required = target.required
    return root


_STRUCTURAL = "ele-1"
_EXTENSIONS = frozenset({"extension", "modifierExtension"})


def settle(node: Elem) -> None:
    """Derive the flags the walker tests on every value once, when the tree is compiled, instead of
    per value (the walker's hot path)."""
    node.checks = tuple(c for c in node.constraints if c.key != _STRUCTURAL)
    node.sliced = bool(node.slices or node.slicing or node.name in _EXTENSIONS)
    node.fixed_or_pattern = node.fixed is not None or node.pattern is not None
    node.limited = node.min_value is not None or node.max_value is not None


def primitive_regex(type_sd: dict[str, Any]) -> re.Pattern[str] | None:
    """The regex the R4 definition of a primitive type gives for its value (``T.value`` type extension)."""
    for el in type_sd["snapshot"]["element"]:
        if el["id"].endswith(".value"):
            for t in el.get("type", []):
                for ext in t.get("extension", []):
                    if ext.get("url") == _REGEX_EXT:
                        return re.compile(str(ext["valueString"]))
    return None

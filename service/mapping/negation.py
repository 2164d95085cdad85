"""Resources whose status or modifier denies the fact they look like (outside review, fix B).

A resource keeps its codes when it is withdrawn (``entered-in-error``), refuted, or says its act did not
happen (``not-done``); read by its codes alone it would store as true a fact the record denies. The
rules are data (``mappings/negations.yaml``); a value the resource's template writes itself is the case
model's fact (a drug not given, a refuted uncertain lesion) and stays readable. A ``modifierExtension``
the mapping does not read may change the meaning of anything in its resource, so it is refused too
(R4 extensibility.html: "Implementations processing the data in resources SHALL check for modifier
extensions"), as is a modifier extension of the mapping carried under plain ``extension``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from typing import Any

import yaml

from service.codes import MAPPINGS_DIR
from service.mapping.spec import Group, Template, fixed_value, spec

NEGATIONS_FILE = MAPPINGS_DIR / "negations.yaml"
_MODIFIER = re.compile(r"modifierExtension\(([^()]+)\)")


@dataclass(frozen=True)
class Denial:
    """One element of a resource that keeps it out of the case: where (from the resource) and why."""

    path: str
    rule: str


@cache
def negations() -> dict[str, Any]:
    """``mappings/negations.yaml``, read once per process."""
    with NEGATIONS_FILE.open(encoding="utf-8") as fh:
        loaded: dict[str, Any] = yaml.safe_load(fh)
    return loaded


def _codes(value: Any) -> set[str]:
    """The codes of a code, Coding or CodeableConcept value."""
    if isinstance(value, str):
        return {value}
    if not isinstance(value, dict):
        return set()
    items = value.get("coding") if "coding" in value else [value]
    if not isinstance(items, list):
        return set()
    return {str(c["code"]) for c in items if isinstance(c, dict) and c.get("code") is not None}


def _paths(group: Group) -> Iterator[str]:
    for fx in group.fixed:
        yield fx.path
    for f in group.fields:
        yield f.path
        yield from (p for p in (f.comparator, f.absent, f.range) if p)
        if f.items is not None:
            yield from _paths(f.items)


def writes(template: Template, element: str) -> set[str]:
    """The codes ``template`` may write at a top-level ``element``: fixed values and its map's values."""
    out: set[str] = set()
    for fx in template.group.fixed:
        if fx.path == element:
            out |= _codes(fixed_value(fx.value))
    for f in template.group.fields:
        if f.path == element and f.kind == "map" and f.arg:
            for target in spec().maps[f.arg].values():
                out |= _codes(fixed_value(target))
    return out


def modifiers_read(template: Template | None) -> set[str]:
    """URLs of the modifier extensions ``template`` reads (its element paths name them)."""
    if template is None:
        return set()
    return {url for path in _paths(template.group) for url in _MODIFIER.findall(path)}


@cache
def mapping_modifiers() -> frozenset[str]:
    """URLs of every modifier extension the mapping reads, in any template."""
    return frozenset(url for t in spec().templates for url in modifiers_read(t))


def _extensions(node: Any, path: str) -> Iterator[tuple[str, str, str]]:
    """(element path, ``extension`` or ``modifierExtension``, url) of every extension in ``node``."""
    if isinstance(node, list):
        for i, item in enumerate(node):
            yield from _extensions(item, f"{path}[{i}]")
        return
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        if key in ("extension", "modifierExtension") and isinstance(value, list):
            for i, ext in enumerate(value):
                if isinstance(ext, dict):
                    yield f"{path}.{key}[{i}]", key, str(ext.get("url"))
        if key != "contained":
            yield from _extensions(value, f"{path}.{key}")


def _what(template: Template | None) -> str:
    if template is None:
        return "an element of the case"
    title = template.title or template.name
    return f"a {title[0].lower()}{title[1:]} of the case ({template.profile})"


def denials(resource: dict[str, Any], template: Template | None) -> list[Denial]:
    """What in ``resource`` denies the fact ``template`` (the case element it looks like) would read,
    each with the element (relative to the resource) and the rule; empty when it may be read."""
    kind = str(resource.get("resourceType"))
    out: list[Denial] = []
    for element, values in negations()["statuses"].get(kind, {}).items():
        said = _codes(resource.get(element)) & set(values)
        allowed = writes(template, element) if template is not None else set()
        for code in sorted(said - allowed):
            rule = (
                f"a {kind} that {values[code]} ({element} {code}) cannot be {_what(template)}: "
                "the record denies the fact it would store"
            )
            out.append(Denial(element, rule))
    read = modifiers_read(template)
    for path, key, url in _extensions(resource, ""):
        path = path.removeprefix(".")
        if key == "modifierExtension" and url not in read:
            rule = (
                f"a modifierExtension this service does not read ({url}) may change what the {kind} "
                f"means, so it cannot be {_what(template)}"
            )
            out.append(Denial(path, rule))
        elif key == "extension" and url in mapping_modifiers():
            rule = (
                f"{url} must not be used as an extension (it's a modifierExtension): read as plain "
                f"data its bound would be taken for the value of {_what(template)}"
            )
            out.append(Denial(path, rule))
    return out


def deceased(patient: dict[str, Any]) -> bool | None:
    """What ``Patient.deceased[x]`` says: True (dead), False (alive), None (nothing)."""
    if patient.get("deceasedDateTime") is not None:
        return True
    flag = patient.get("deceasedBoolean")
    return flag if isinstance(flag, bool) else None


def vital_contradiction(patient: dict[str, Any], vital_status: Any) -> str | None:
    """Why ``Patient.deceased[x]`` contradicts the case's vital status, or None."""
    says = deceased(patient)
    rules = negations()["vital_status"]
    if says is None or vital_status is None:
        return None
    if says and vital_status in rules["alive"]:
        return f"the Patient is deceased but the vital status is {vital_status}"
    if not says and vital_status in rules["dead"]:
        return f"the Patient is not deceased (deceasedBoolean false) but the vital status is {vital_status}"
    return None


def bundle_denials(bundle: dict[str, Any]) -> list[str]:
    """``Bundle.entry[i].resource.<element>: <rule>`` for each entry of a Bundle of the service's profiles
    whose status or modifier denies the element its profile makes it (what ``POST /fhir`` refuses)."""
    out = []
    for i, entry in enumerate(bundle.get("entry") or []):
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict):
            continue
        denied = denials(resource, profiled_template(resource))
        out += [f"Bundle.entry[{i}].resource.{d.path}: {d.rule}" for d in denied]
    return out


def profiled_template(resource: dict[str, Any]) -> Template | None:
    """The template of the first of the resource's ``meta.profile`` that is one of the service's."""
    claimed = (resource.get("meta") or {}).get("profile") or []
    return next((t for p in claimed if isinstance(p, str) and (t := spec().by_profile(p))), None)

"""A case withdrawn as entered-in-error -> the Bundle that marks each of its resources so on the server.

The rules are data (``retraction:`` in ``mappings/case-fhir.yaml``); resources keep their business
identifiers and conditional requests, so the server updates the same resources instead of deleting.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

from service.mapping import paths
from service.mapping.spec import MappingError, fixed_value, spec


def _holds(actual: Any, expected: Any) -> bool:
    """``expected`` is in ``actual``: a CodeableConcept by system and code (servers add a display)."""
    if isinstance(expected, dict) and "coding" in expected:
        wanted = {(c.get("system"), c.get("code")) for c in expected["coding"]}
        found = actual.get("coding", []) if isinstance(actual, dict) else []
        return any((c.get("system"), c.get("code")) in wanted for c in found)
    return bool(actual == expected)


def withdrawn(resources: Iterable[dict[str, Any]]) -> bool:
    """Every resource a retraction marks carries the marks ``retract`` sets (and there is one)."""
    rules = spec().retraction
    marked = [
        (resource, changes)
        for resource in resources
        if (changes := rules.get(resource.get("resourceType", ""), {}).get("set"))
    ]
    return bool(marked) and all(
        _holds(paths.get(resource, c["path"]), fixed_value(c["value"]))
        for resource, changes in marked
        for c in changes
    )


def retract(bundle: dict[str, Any], *, now: str) -> dict[str, Any]:
    """A copy of ``bundle`` with every resource marked entered-in-error; Provenance recorded ``now``."""
    rules = spec().retraction
    out = copy.deepcopy(bundle)
    for entry in out["entry"]:
        resource = entry["resource"]
        kind = resource["resourceType"]
        if kind not in rules:
            raise MappingError(f"no retraction rule for {kind} in case-fhir.yaml")
        for path in rules[kind].get("remove", []):
            resource.pop(path, None)
        for change in rules[kind].get("set", []):
            paths.put(resource, change["path"], fixed_value(change["value"]))
        if kind == "Provenance":
            resource["recorded"] = now
    return out

"""Every Reference in a FHIR resource tree: what examples, Bundle intake and the search index follow."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


def references(node: Any, element: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """(name of the element holding it, the Reference object) for every object with a ``reference``."""
    if isinstance(node, dict):
        if isinstance(node.get("reference"), str):
            yield element, node
        for key, value in node.items():
            if isinstance(value, (dict, list)):
                yield from references(value, key)
    elif isinstance(node, list):
        for value in node:
            yield from references(value, element)

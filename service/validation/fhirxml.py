"""FHIR XML to FHIR JSON, for the base definitions HAPI publishes only as XML Bundles.

XML does not say which elements repeat, so conversion runs in two steps: every element is first read
into a neutral tree (name -> list of children), then shaped into JSON with the cardinalities and types
that the StructureDefinitions in the same files declare (their snapshots describe StructureDefinition,
ValueSet and CodeSystem themselves). Narrative XHTML is dropped: the validator never needs it.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import IO, Any

from service.validation.model import PRIMITIVE_TYPES

NS = "{http://hl7.org/fhir}"
PRIMITIVES = PRIMITIVE_TYPES - {"xhtml"}
_INTEGERS = frozenset({"integer", "unsignedInt", "positiveInt"})
_SYSTEM_TYPES = {"http://hl7.org/fhirpath/System.String": "string"}


@dataclass
class Raw:
    """One XML element: its ``value``/``url``/``id`` attributes and its children by name, in order."""

    attrs: dict[str, str]
    children: dict[str, list[Raw]] = field(default_factory=dict)


def read(stream: IO[bytes]) -> Raw:
    """The neutral tree of one XML document (namespaces dropped, XHTML skipped)."""
    root = ET.parse(stream).getroot()
    return _raw(root)


def _raw(el: ET.Element) -> Raw:
    node = Raw(dict(el.attrib))
    for child in el:
        tag = child.tag
        if not isinstance(tag, str) or not tag.startswith(NS):
            continue  # comments, XHTML narrative
        node.children.setdefault(tag[len(NS) :], []).append(_raw(child))
    return node


def entries(bundle: Raw) -> Iterable[tuple[str, Raw]]:
    """(resourceType, resource) of every entry of a Bundle read by ``read``."""
    for entry in bundle.children.get("entry", []):
        for holder in entry.children.get("resource", []):
            for rtype, (resource, *_rest) in holder.children.items():
                yield rtype, resource


@dataclass(frozen=True)
class Shape:
    """What JSON needs to know about one element path: repeats, its type codes, where it is defined."""

    repeats: bool
    types: tuple[str, ...]
    content_ref: str | None


class Shaper:
    """Turns neutral trees into FHIR JSON, using the element shapes of the definitions given."""

    def __init__(self, structure_definitions: Iterable[Raw]) -> None:
        self.shapes: dict[str, Shape] = {}
        for sd in structure_definitions:
            for snap in sd.children.get("snapshot", []):
                for el in snap.children.get("element", []):
                    self._add(el)
        self.choices: dict[str, list[tuple[str, Shape]]] = {}
        for key, shape in self.shapes.items():
            if key.endswith("[x]"):
                parent, stem = key.rsplit(".", 1)
                self.choices.setdefault(parent, []).append((stem[:-3], shape))
        self.backbones = {p.rsplit(".", 1)[0] for p in self.shapes}

    def _add(self, el: Raw) -> None:
        path = _value(el, "path")
        if path is None or "." not in path:
            return
        maximum = _value(el, "max") or "1"
        bases = el.children.get("base", [])
        base_max = _value(bases[0], "max") if bases else None
        codes: list[str] = []
        for t in el.children.get("type", []):
            code = _value(t, "code")
            if code is not None:
                codes.append(_SYSTEM_TYPES.get(code, code))
        ref = _value(el, "contentReference")
        self.shapes[path] = Shape((base_max or maximum) != "1", tuple(codes), ref[1:] if ref else None)

    def resource(self, rtype: str, raw: Raw) -> dict[str, Any]:
        out: dict[str, Any] = {"resourceType": rtype}
        out.update(self._complex(rtype, raw, rtype))
        return out

    def _complex(self, path: str, raw: Raw, type_root: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if "id" in raw.attrs:
            out["id"] = raw.attrs["id"]
        if "url" in raw.attrs:
            out["url"] = raw.attrs["url"]
        for name, items in raw.children.items():
            if name == "text" and type_root == path and path[:1].isupper() and "." not in path:
                continue  # resource narrative
            shape, type_code = self._find(path, name)
            if shape is None:
                continue  # not part of R4 (should not happen in the published definitions)
            values = [self._value(path, name, shape, type_code, item) for item in items]
            if type_code in PRIMITIVES:
                prims = [v[0] for v in values]
                exts = [v[1] for v in values]
                out[name] = prims if shape.repeats else prims[0]
                if any(e is not None for e in exts):
                    out[f"_{name}"] = exts if shape.repeats else exts[0]
            else:
                out[name] = values if shape.repeats else values[0]
        return out

    def _find(self, path: str, name: str) -> tuple[Shape | None, str]:
        shape = self.shapes.get(f"{path}.{name}")
        if shape is not None:
            return shape, shape.types[0] if len(shape.types) == 1 else ""
        if name in ("extension", "modifierExtension"):
            return Shape(True, ("Extension",), None), "Extension"
        if name == "id":
            return Shape(False, ("string",), None), "string"
        for stem, choice in self.choices.get(path, ()):
            if name.startswith(stem):
                suffix = name[len(stem) :]
                lower = suffix[:1].lower() + suffix[1:]
                return choice, lower if lower in PRIMITIVES else suffix
        return None, ""

    def _value(self, path: str, name: str, shape: Shape, type_code: str, raw: Raw) -> Any:
        if type_code in PRIMITIVES:
            value = _primitive(type_code, raw.attrs.get("value"))
            ext = self._complex("Element", raw, "Element") if raw.children or "id" in raw.attrs else None
            if ext is not None:
                ext.pop("url", None)
            return value, ext
        if type_code == "Resource":
            ((rtype, (inner, *_)),) = raw.children.items()
            return self.resource(rtype, inner)
        if shape.content_ref:
            return self._complex(shape.content_ref, raw, type_code)
        if type_code in ("BackboneElement", "Element") and f"{path}.{name}" in self.backbones:
            return self._complex(f"{path}.{name}", raw, type_code)
        return self._complex(type_code or f"{path}.{name}", raw, type_code)


def _value(raw: Raw, name: str) -> str | None:
    items = raw.children.get(name)
    return items[0].attrs.get("value") if items else None


def _primitive(type_code: str, text: str | None) -> Any:
    if text is None:
        return None
    if type_code == "boolean":
        return text == "true"
    if type_code in _INTEGERS:
        return int(text)
    if type_code == "decimal":
        return float(text) if any(c in text for c in ".eE") else int(text)
    return text

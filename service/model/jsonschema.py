"""JSON Schema (draft 2020-12) of the case input, generated from the marshmallow schemas.

``python -m service.model.jsonschema > docs/case.schema.json``. The schema describes the accepted
input (including measures in another unit); cross-field rules are not expressible here and are
listed in docs/case-model.md.
"""

from __future__ import annotations

import json
import re
from typing import Any

from marshmallow import Schema, fields

from service.codes import ABSENT_REASONS, CANONICAL, table
from service.model import dates
from service.model import fields as f
from service.model.schema import CaseSchema

DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_ID = f"{CANONICAL}/schema/case.schema.json"


def definition_name(schema: Schema | type[Schema]) -> str:
    cls = schema if isinstance(schema, type) else type(schema)
    return cls.__name__.removesuffix("Schema")


def case_json_schema() -> dict[str, Any]:
    defs: dict[str, Any] = {}
    root = _object(CaseSchema(), defs)
    return {
        "$schema": DIALECT,
        "$id": SCHEMA_ID,
        "title": "IVC-LMS case",
        "description": "One case of leiomyosarcoma of the inferior vena cava (IVC-LMS), data set v1.",
        **root,
        "$defs": dict(sorted(defs.items())),
    }


def _object(schema: Schema, defs: dict[str, Any]) -> dict[str, Any]:
    properties = {name: field_schema(field, defs, name) for name, field in schema.fields.items()}
    required = [name for name, field in schema.fields.items() if field.required]
    out: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        out["required"] = required
    out["additionalProperties"] = False
    return out


def _ref(field: fields.Nested, defs: dict[str, Any]) -> dict[str, Any]:
    schema = field.schema
    name = definition_name(schema)
    if name not in defs:
        defs[name] = {}  # reserve (recursion guard) before filling
        defs[name] = _object(schema, defs)
    return {"$ref": f"#/$defs/{name}"}


def field_schema(field: fields.Field[Any], defs: dict[str, Any], name: str = "") -> dict[str, Any]:
    """The JSON Schema of one field, nullable when the field is optional, with a ``title`` (the label a
    form shows: the field's ``title`` metadata, else the description's first clause)."""
    out = _bare(field, defs)
    if not field.required:
        out = _nullable(out)
    description = field.metadata.get("description")
    title = field.metadata.get("title") or title_of(description, name)
    named = {"title": title} if title else {}
    return {**named, "description": description, **out} if description else {**named, **out}


_CLAUSE = re.compile(r"[;.]| = |, (?:or|in|required|unique|as|with|only|derived)\b|: ")
_ASIDE = re.compile(r"\s*\([^)]*\)")
_UNIT = re.compile(r" \[[^\]]+\]")


def title_of(description: str | None, name: str) -> str:
    """A short label: the description without asides, up to its first clause break (``Date of
    diagnosis; `unknown` when ...`` -> ``Date of diagnosis``), keeping a `` [unit]`` that follows it;
    else the property name in words."""
    if description:
        text = _ASIDE.sub("", description)
        head = _CLAUSE.split(text, maxsplit=1)[0].strip()
        unit = _UNIT.search(text)
        if unit and unit.group(0) not in head and unit.start() <= len(head) + 40:
            head = f"{head}{unit.group(0)}"
        if head:
            return head
    return name.replace("_", " ").capitalize()


def _labels(table_name: str, values: list[Any]) -> dict[str, str]:
    """``x-labels``: the code table's display of each value (what a form's select shows)."""
    t = table(table_name)
    out = {}
    for value in values:
        key = str(value)
        out[key] = t.values[key].display if key in t.values else ABSENT_REASONS[key][1]
    return out


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    if "enum" in schema:
        return {**schema, "enum": [*schema["enum"], None]}
    if isinstance(schema.get("type"), str) and "anyOf" not in schema:
        return {**schema, "type": [schema["type"], "null"]}
    return {"anyOf": [schema, {"type": "null"}]}


def _bare(field: fields.Field[Any], defs: dict[str, Any]) -> dict[str, Any]:
    if isinstance(field, fields.Nested):
        return _ref(field, defs)
    if isinstance(field, fields.List):
        inner = _bare(field.inner, defs)
        return {"type": "array", "items": inner}
    if isinstance(field, f.BoundedCode):
        bound = {
            "type": "object",
            "properties": {
                "comparator": {"enum": list(f.COMPARATORS)},
                "value": {"enum": table(field.table_name).keys()},
            },
            "required": ["comparator", "value"],
            "additionalProperties": False,
        }
        allowed = field.allowed()
        return {
            "anyOf": [{"enum": allowed, "x-labels": _labels(field.table_name, allowed)}, bound],
            "x-code-table": field.table_name,
        }
    if isinstance(field, f.Code):
        allowed = field.allowed()
        return {
            "enum": allowed,
            "x-code-table": field.table_name,
            "x-labels": _labels(field.table_name, allowed),
        }
    if isinstance(field, f.Dimensions):
        size = {"type": "number", "exclusiveMinimum": 0}
        bound = {
            "type": "object",
            "properties": {"comparator": {"enum": list(f.COMPARATORS)}, "value": size},
            "required": ["comparator", "value"],
            "additionalProperties": False,
        }
        values = {
            "type": "array",
            # only the largest (first) may be a bound: the model checks it (prefixItems would say it,
            # but not every JSON Schema reader knows 2020-12's prefixItems)
            "items": {"anyOf": [size, bound]},
            "minItems": field.min_items,
            "maxItems": f.Dimensions.MAX,
        }
        return {
            "anyOf": [values, _measure_object(values, field.dimension.units)],
            "x-unit": field.unit,
        }
    if isinstance(field, f.Bounded):
        number = _number(field)
        plain = _measure_object(number, field.dimension.units) if field.dimension else None
        unit: dict[str, Any] = {"unit": {"enum": field.dimension.units}} if field.dimension else {}
        bound = {
            "type": "object",
            "properties": {"comparator": {"enum": list(f.COMPARATORS)}, "value": number, **unit},
            "required": ["comparator", "value"],
            "additionalProperties": False,
        }
        span = {
            "type": "object",
            "properties": {"low": number, "high": number, **unit},
            "required": ["low", "high"],
            "additionalProperties": False,
        }
        unit_name = field.unit or field.metadata.get("unit")
        named = {"x-unit": unit_name} if unit_name else {}
        return {"anyOf": [number, *([plain] if plain else []), bound, span], **named}
    if isinstance(field, f.Measure):
        number = _number(field)
        return {"anyOf": [number, _measure_object(number, field.dimension.units)], "x-unit": field.unit}
    if isinstance(field, f.Number):
        return _number(field)
    if isinstance(field, f.Bool):
        return {"type": "boolean"}
    if isinstance(field, f.Date):
        pattern = {"type": "string", "pattern": dates.PATTERN}
        return {"anyOf": [pattern, {"const": dates.UNKNOWN}]} if field.unknown else pattern
    if isinstance(field, f.Uri):
        return {"type": "string", "format": "uri", "minLength": 1, **_max_length(field)}
    if isinstance(field, f.Text):
        return {"type": "string", "minLength": 1, **_max_length(field)}
    raise TypeError(f"no JSON Schema for field type {type(field).__name__}")


def _max_length(field: f.Text) -> dict[str, Any]:
    return {} if field.max_length is None else {"maxLength": field.max_length}


def _number(field: f.Number) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "integer" if field.integer else "number"}
    if field.minimum is not None:
        out["exclusiveMinimum" if field.exclusive_minimum else "minimum"] = field.minimum
    if field.maximum is not None:
        out["maximum"] = field.maximum
    if "unit" in field.metadata and not isinstance(field, f.Measure):
        out["x-unit"] = field.metadata["unit"]
    return out


def _measure_object(value: dict[str, Any], units: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"value": value, "unit": {"enum": units}},
        "required": ["value", "unit"],
        "additionalProperties": False,
    }


def render() -> str:
    return json.dumps(case_json_schema(), indent=2, ensure_ascii=False) + "\n"


def main() -> None:
    print(render(), end="")


if __name__ == "__main__":
    main()

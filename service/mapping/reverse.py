"""FHIR R4 Bundle -> case, reading the same ``mappings/case-fhir.yaml`` templates backwards."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from service.codes import absent_primitive_key
from service.mapping import paths
from service.mapping.forward import Tokens, resolve
from service.mapping.spec import (
    CONVERTERS,
    IDENTIFIER_SYSTEM,
    Context,
    Field,
    Group,
    MappingError,
    case_set,
    case_tokens,
    quantity_range_back,
    quantity_system,
    spec,
    split_identifier,
)
from service.model import validate_case


def _business_value(resource: dict[str, Any]) -> str | None:
    for ident in resource.get("identifier", []):
        if ident.get("system") == IDENTIFIER_SYSTEM:
            return str(ident["value"])
    return None


def read_group(node: dict[str, Any], group: Group, out: dict[str, Any], item: Tokens, ctx: Context) -> None:
    for f in group.fields:
        tokens = resolve(f.field, item)
        if f.items is not None:
            nodes = paths.get_all(node, f.path)
            case_set(out, tokens, [])
            for i, child in enumerate(nodes):
                case_set(out, [*tokens, i], {})
                read_group(child, f.items, out, [*tokens, i], ctx)
            continue
        back = CONVERTERS[f.kind][1]
        try:
            if paths.has_every(f.path):
                case_set(out, tokens, [back(v, f.arg, ctx) for v in paths.get_all(node, f.path)])
                continue
            value = paths.get(node, f.path)
            if f.unit_field is not None:  # quantity(@unit): the unit is read back into its own field
                _read_with_unit(node, f, out, tokens, resolve(f.unit_field, item))
                continue
            if value is None and f.range is not None and (span := paths.get(node, f.range)) is not None:
                case_set(out, tokens, quantity_range_back(span, str(f.arg)))
                continue
            if value is None and f.absent is not None and f.kind == "date":
                value = absent_primitive_key(paths.get(node, f.absent))  # `unknown`, no value
                if value is not None:
                    case_set(out, tokens, value)
                continue
            if value is None and f.absent is not None:
                value = paths.get(node, f.absent)  # a data-absent reason written in its place
            if (
                value is not None
                and f.comparator is not None
                and ((comparator := paths.get(node, f.comparator)) is not None)
            ):
                case_set(out, tokens, {"comparator": comparator, "value": back(value, f.arg, ctx)})
                continue
            if value is not None:
                case_set(out, tokens, back(value, f.arg, ctx))
        except MappingError as error:
            raise MappingError(f"{node.get('resourceType', 'element')}.{f.path}: {error}") from None


def _read_with_unit(
    node: dict[str, Any], f: Field, out: dict[str, Any], tokens: Tokens, unit: Tokens
) -> None:
    """A ``quantity(@unit)`` field: its value (a number, a bound or a range) and, from the quantity's
    UCUM code, its unit field."""
    quantity = paths.get(node, f.path)
    span = paths.get(node, f.range) if f.range is not None else None
    if quantity is not None:
        carrier: dict[str, Any] = quantity
        number = quantity.get("value")
        bound = "comparator" in quantity
        value = {"comparator": quantity["comparator"], "value": number} if bound else number
    elif span is not None:
        carrier = span.get("low") or {}
        value = quantity_range_back(span, str(carrier.get("code")))
    else:
        return
    code = carrier.get("code")
    if not isinstance(code, str) or quantity_system(carrier) is None:
        raise MappingError("a result's quantity needs a UCUM code (system http://unitsofmeasure.org)")
    case_set(out, tokens, value)
    case_set(out, unit, code)


def _prune(node: Any) -> Any:
    """Objects left with nothing in them become null (the canonical form of an absent group)."""
    if isinstance(node, list):
        return [_prune(item) for item in node]
    if isinstance(node, dict):
        pruned = {k: _prune(v) for k, v in node.items()}
        if all(v is None or v == [] for v in pruned.values()):
            return None
        return pruned
    return node


def bundle_to_case(
    bundle: dict[str, Any], adjust: Callable[[dict[str, Any]], dict[str, Any]] | None = None
) -> dict[str, Any]:
    """The canonical case carried by a Bundle made by ``case_to_bundle`` (validated; ``adjust``, when
    given, sees the case just before validation: the pull's ``contact_at_visits``)."""
    s = spec()
    found: list[tuple[dict[str, Any], Any, str]] = []
    ctx = Context()
    source = case_id = None
    for entry in bundle.get("entry", []):
        resource = entry.get("resource", {})
        profiles = resource.get("meta", {}).get("profile", [])
        template = next((t for p in profiles if (t := s.by_profile(p)) is not None), None)
        if template is None:
            continue
        value = _business_value(resource)
        if value is None:
            raise MappingError(
                f"{resource.get('resourceType')} with profile {template.name!r} has no business identifier"
            )
        source, case_id, key = split_identifier(value)
        ctx.keys[entry.get("fullUrl", "")] = key
        if resource.get("id"):  # a relative reference (Type/id), as a FHIR server's search answers carry
            ctx.keys[f"{resource['resourceType']}/{resource['id']}"] = key
        found.append((resource, template, key))
    if source is None:
        raise MappingError("the bundle holds no IVC-LMS resource")
    out: dict[str, Any] = {"case_id": case_id, "source_system": source}
    for resource, template, key in found:
        item = case_tokens(key.split("#", 1)[0])
        read_group(resource, template.group, out, item, ctx)
    root = {k: _prune(v) for k, v in out.items()}
    return validate_case(adjust(root) if adjust is not None else root)

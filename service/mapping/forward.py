"""Case -> FHIR R4 transaction Bundle, driven by ``mappings/case-fhir.yaml`` (pure: ``now`` is passed in)."""

from __future__ import annotations

from typing import Any

from service.codes import CANONICAL, absent_primitive, table
from service.mapping import paths
from service.mapping.spec import (
    CONVERTERS,
    IDENTIFIER_SYSTEM,
    PROFILE_PREFIX,
    Condition,
    Context,
    Group,
    MappingError,
    Spec,
    Template,
    case_get,
    case_path,
    case_tokens,
    conditional_url,
    expand_each,
    fixed_value,
    full_url,
    identifier_value,
    quantity_range,
    spec,
)
from service.model import dates

Tokens = list[str | int]


def resolve(field: str, item: Tokens) -> Tokens:
    """A field's case path: ``$.x`` from the case root, ``^.x`` from the item's parent, else from the item."""
    if field.startswith("$."):
        return case_tokens(field[2:])
    if field.startswith("^."):
        parent = item[:-1]
        while parent and not isinstance(parent[-1], int):
            parent = parent[:-1]
        return [*parent, *case_tokens(field[2:])]
    if field in ("", "."):
        return list(item)
    return [*item, *case_tokens(field)]


def holds(cond: Condition | None, case: dict[str, Any], item: Tokens) -> bool:
    if cond is None:
        return True
    if cond.present:
        return any(case_get(case, resolve(f, item)) not in (None, []) for f in cond.present)
    if any(case_get(case, resolve(f, item)) not in (None, []) for f in cond.absent):
        return False
    value = case_get(case, resolve(cond.field, item))
    return (value in cond.values) != cond.negate


def instances(s: Spec, case: dict[str, Any]) -> list[tuple[Template, Tokens, str]]:
    """Every (template, item path, element key) the case gives rise to, in template order."""
    out: list[tuple[Template, Tokens, str]] = []
    for template in s.templates:
        for pattern in template.each:
            for item in expand_each(case, pattern):
                if holds(template.when, case, item):
                    out.append((template, item, case_path(item) + template.suffix))
    keys = [key for _, _, key in out]
    if len(set(keys)) != len(keys):
        raise MappingError("two resources share an element key; give one a suffix")
    return out


def write_group(node: dict[str, Any], group: Group, case: dict[str, Any], item: Tokens, ctx: Context) -> None:
    for fx in group.fixed:
        if holds(fx.when, case, item):
            paths.put(node, fx.path, fixed_value(fx.value))
    for f in group.fields:
        tokens = resolve(f.field, item)
        value = case_get(case, tokens)
        if f.items is not None:
            nodes = []
            for i in range(len(value or [])):
                child: dict[str, Any] = {}
                write_group(child, f.items, case, [*tokens, i], ctx)
                nodes.append(child)
            if nodes:  # FHIR forbids empty arrays
                paths.put_all(node, f.path, nodes)
            continue
        convert = CONVERTERS[f.kind][0]
        where = case_path(tokens)
        arg = f.arg
        if f.unit_field is not None:  # quantity(@unit): the unit is the item's own field
            arg = case_get(case, resolve(f.unit_field, item))
            if value is not None and not isinstance(arg, str):
                raise MappingError(f"{where}: no unit in {f.unit_field!r}")
        if f.absent is not None and f.kind == "date":
            if value == dates.UNKNOWN:  # the source gives no date: the extension, no value
                paths.put(node, f.absent, absent_primitive(value))
                continue
        elif f.absent is not None and isinstance(value, str) and table(str(f.arg)).is_absent(value):
            paths.put(node, f.absent, table(str(f.arg)).absent_concept(value))
            continue
        if f.comparator is not None and isinstance(value, dict) and "comparator" in value:
            paths.put(node, f.path, convert(value["value"], f.arg, ctx))
            paths.put(node, f.comparator, value["comparator"])
            continue
        if f.range is not None and isinstance(value, dict) and "low" in value:
            paths.put(node, f.range, quantity_range(value, str(arg)))
            continue
        try:
            if paths.has_every(f.path):
                if value:
                    paths.put_all(node, f.path, [convert(v, f.arg, ctx) for v in value])
            elif value is not None or f.kind == "map":
                converted = convert(value, arg, ctx)
                if converted is not None:
                    paths.put(node, f.path, converted)
        except MappingError as error:
            raise MappingError(f"{where}: {error}") from None


def case_to_bundle(case: dict[str, Any], *, now: str) -> dict[str, Any]:
    """The transaction Bundle for a canonical case (see ``service.model.validate_case``)."""
    s = spec()
    found = instances(s, case)
    ctx = Context()
    values = {key: identifier_value(case, key) for _, _, key in found}
    ctx.urls = {key: full_url(value) for key, value in values.items()}
    entries: list[dict[str, Any]] = []
    for template, item, key in found:
        value = values[key]
        resource: dict[str, Any] = {
            "resourceType": template.resource_type,
            "meta": {"profile": [template.profile]},
            "identifier": [{"system": IDENTIFIER_SYSTEM, "value": value}],
        }
        write_group(resource, template.group, case, item, ctx)
        indices = [t for t in item if isinstance(t, int)]
        for ref in template.refs:
            target = ref.to.format(*indices, item=case_path(item))
            if target in ctx.urls:
                paths.put(resource, ref.path, {"reference": ctx.urls[target]})
        entries.append(
            {
                "fullUrl": ctx.urls[key],
                "resource": resource,
                "request": {"method": "PUT", "url": conditional_url(template.resource_type, value)},
            }
        )
    entries.append(_provenance(case, s, entries, now))
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def _provenance(case: dict[str, Any], s: Spec, entries: list[dict[str, Any]], now: str) -> dict[str, Any]:
    url = full_url(identifier_value(case, "provenance"))
    rid = url.removeprefix("urn:uuid:")
    resource = {
        "resourceType": "Provenance",
        "id": rid,
        "meta": {"profile": [PROFILE_PREFIX + "provenance"]},
        "target": [{"reference": e["fullUrl"]} for e in entries],
        "recorded": now,
        "policy": [f"{CANONICAL}/mapping/case-fhir/{s.version}"],
        "agent": [{"who": {"display": case["source_system"]}}],
    }
    return {"fullUrl": url, "resource": resource, "request": {"method": "PUT", "url": f"Provenance/{rid}"}}

"""Case -> FHIR R4 transaction Bundle, driven by ``mappings/case-fhir.yaml`` (pure: ``now`` is passed in).

The definition is compiled once per loaded spec (``_plan``): each template's ``when``, and each of its
fixed values and fields, becomes a closure that reads its case value and writes its element path. The
interpretation (which kind of field path, which converter, whether the element path has ``[*]``, the
fixed value from the ``codes:`` section) has one answer per definition entry, so it is not redone for
every case; what a closure does per case is what the definition said to do, in the same order.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from service.codes import CANONICAL, absent_primitive, table
from service.mapping import paths
from service.mapping.spec import (
    CONVERTERS,
    IDENTIFIER_SYSTEM,
    PROFILE_PREFIX,
    Condition,
    Context,
    Field,
    Fixed,
    Group,
    MappingError,
    Spec,
    Template,
    case_get,
    case_path,
    case_tokens,
    expand_each,
    fixed_value,
    full_url,
    identifier_value,
    quantity_range,
    spec,
)
from service.model import dates

Tokens = list[str | int]
Getter = Callable[[dict[str, Any], Any, Tokens], Any]
"""(case, the item's own value, the item's path) -> a field's case value."""
Test = Callable[[dict[str, Any], Any, Tokens], bool]
Writer = Callable[[dict[str, Any], dict[str, Any], Any, Tokens, Context], None]
"""(FHIR node written, case, the item's own value, the item's path, context)."""


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


def _getter(field: str) -> Getter:
    """Reads what ``case_get(case, resolve(field, item))`` reads; a field relative to the item reads
    from the item's own value (the same value: ``case_get`` of a path is ``case_get`` of its tail from
    the value at its head)."""
    if field.startswith("$."):
        absolute = case_tokens(field[2:])
        return lambda case, node, item: case_get(case, absolute)
    if field.startswith("^."):
        return lambda case, node, item: case_get(case, resolve(field, item))
    if field in ("", "."):
        return lambda case, node, item: node
    relative = case_tokens(field)
    if len(relative) == 1 and isinstance(relative[0], str):
        name = relative[0]
        return lambda case, node, item: node.get(name) if isinstance(node, dict) else None
    return lambda case, node, item: case_get(node, relative)


def _filled(value: Any) -> bool:
    return value not in (None, [])


def _test(cond: Condition | None) -> Test | None:
    """``cond`` compiled; None when there is none (always holds)."""
    if cond is None:
        return None
    if cond.present:
        present = tuple(_getter(f) for f in cond.present)
        return lambda case, node, item: any(_filled(g(case, node, item)) for g in present)
    absent = tuple(_getter(f) for f in cond.absent)
    get, values, negate = _getter(cond.field), cond.values, cond.negate

    def test(case: dict[str, Any], node: Any, item: Tokens) -> bool:
        if any(_filled(g(case, node, item)) for g in absent):
            return False
        return (get(case, node, item) in values) != negate

    return test


def _fresh(value: Any) -> Any:
    """A copy of a JSON value (a fixed value is made once; every resource gets its own)."""
    if isinstance(value, dict):
        return {k: _fresh(v) if isinstance(v, (dict, list)) else v for k, v in value.items()}
    if isinstance(value, list):
        return [_fresh(v) if isinstance(v, (dict, list)) else v for v in value]
    return value


def _fixed_writer(fx: Fixed) -> Writer:
    test, path, made = _test(fx.when), fx.path, fixed_value(fx.value)

    def write(out: dict[str, Any], case: dict[str, Any], node: Any, item: Tokens, ctx: Context) -> None:
        if test is None or test(case, node, item):
            paths.put(out, path, _fresh(made))

    return write


def _items_writer(f: Field, inner: Writer) -> Writer:
    get, path = _getter(f.field), f.path

    def write(out: dict[str, Any], case: dict[str, Any], node: Any, item: Tokens, ctx: Context) -> None:
        value = get(case, node, item)
        count = len(value or [])
        if not count:  # FHIR forbids empty arrays
            return
        tokens = resolve(f.field, item)
        nodes = []
        for i in range(count):
            child: dict[str, Any] = {}
            # case_get(case, [*tokens, i]): the i-th item when the value is a list
            inner(child, case, value[i] if isinstance(value, list) else None, [*tokens, i], ctx)
            nodes.append(child)
        paths.put_all(out, path, nodes)

    return write


def _field_writer(f: Field) -> Writer:
    """One field's closure; the same steps, in the same order, as the definition's meaning in
    ``mappings/README.md`` (unit from the item, data-absent reason, comparator, range, value)."""
    if f.items is not None:
        return _items_writer(f, _group_writer(f.items))
    get, convert, arg, path = _getter(f.field), CONVERTERS[f.kind][0], f.arg, f.path
    unit = _getter(f.unit_field) if f.unit_field is not None else None
    every = paths.has_every(path)
    absent_date = f.absent is not None and f.kind == "date"
    absent_code = f.absent is not None and not absent_date
    may_be_none = f.kind == "map"

    def where(item: Tokens) -> str:
        return case_path(resolve(f.field, item))

    def write(out: dict[str, Any], case: dict[str, Any], node: Any, item: Tokens, ctx: Context) -> None:
        value = get(case, node, item)
        given = arg
        if unit is not None:  # quantity(@unit): the unit is the item's own field
            given = unit(case, node, item)
            if value is not None and not isinstance(given, str):
                raise MappingError(f"{where(item)}: no unit in {f.unit_field!r}")
        if absent_date:
            if value == dates.UNKNOWN:  # the source gives no date: the extension, no value
                paths.put(out, str(f.absent), absent_primitive(value))
                return
        elif absent_code and isinstance(value, str) and table(str(arg)).is_absent(value):
            paths.put(out, str(f.absent), table(str(arg)).absent_concept(value))
            return
        if f.comparator is not None and isinstance(value, dict) and "comparator" in value:
            paths.put(out, path, convert(value["value"], arg, ctx))
            paths.put(out, f.comparator, value["comparator"])
            return
        if f.range is not None and isinstance(value, dict) and "low" in value:
            paths.put(out, f.range, quantity_range(value, str(given)))
            return
        try:
            if every:
                if value:
                    paths.put_all(out, path, [convert(v, arg, ctx) for v in value])
            elif value is not None or may_be_none:
                converted = convert(value, given, ctx)
                if converted is not None:
                    paths.put(out, path, converted)
        except MappingError as error:
            raise MappingError(f"{where(item)}: {error}") from None

    return write


def _group_writer(group: Group) -> Writer:
    writers = [*(_fixed_writer(fx) for fx in group.fixed), *(_field_writer(f) for f in group.fields)]

    def write(out: dict[str, Any], case: dict[str, Any], node: Any, item: Tokens, ctx: Context) -> None:
        for w in writers:
            w(out, case, node, item, ctx)

    return write


Plan = list[tuple[Template, Test | None, Writer]]
_PLANS: dict[int, tuple[Spec, Plan]] = {}


def _plan(s: Spec) -> Plan:
    """The compiled templates of ``s``, made on first use (the spec is kept with it, so its id stays its)."""
    found = _PLANS.get(id(s))
    if found is None or found[0] is not s:
        found = (s, [(t, _test(t.when), _group_writer(t.group)) for t in s.templates])
        _PLANS[id(s)] = found
    return found[1]


Instance = tuple[Template, Tokens, str, str, Any, Writer]
"""(template, item path, item path text, element key, the item's value, its writer)."""


def _instances(s: Spec, case: dict[str, Any]) -> list[Instance]:
    out: list[Instance] = []
    for template, test, writer in _plan(s):
        for pattern in template.each:
            for item in expand_each(case, pattern):
                node = case_get(case, item)
                if test is None or test(case, node, item):
                    text = case_path(item)
                    out.append((template, item, text, text + template.suffix, node, writer))
    keys = [found[3] for found in out]
    if len(set(keys)) != len(keys):
        raise MappingError("two resources share an element key; give one a suffix")
    return out


def instances(s: Spec, case: dict[str, Any]) -> list[tuple[Template, Tokens, str]]:
    """Every (template, item path, element key) the case gives rise to, in template order."""
    return [(found[0], found[1], found[3]) for found in _instances(s, case)]


_QUOTED_SYSTEM = quote(IDENTIFIER_SYSTEM, safe="")


@functools.lru_cache(maxsize=65_536)
def _quoted_key(key: str) -> str:
    """An element key quoted for a URL: a few hundred keys recur in every case."""
    return quote(key, safe="")


def case_to_bundle(case: dict[str, Any], *, now: str) -> dict[str, Any]:
    """The transaction Bundle for a canonical case (see ``service.model.validate_case``)."""
    s = spec()
    found = _instances(s, case)
    ctx = Context()
    values = {key: identifier_value(case, key) for *_, key, _, _ in found}
    ctx.urls = {key: full_url(value) for key, value in values.items()}
    # conditional_url(type, value), with the value's case part quoted once (quoting is per character)
    head = quote(identifier_value(case, ""), safe="")
    entries: list[dict[str, Any]] = []
    for template, item, text, key, node, writer in found:
        value = values[key]
        resource: dict[str, Any] = {
            "resourceType": template.resource_type,
            "meta": {"profile": [template.profile]},
            "identifier": [{"system": IDENTIFIER_SYSTEM, "value": value}],
        }
        writer(resource, case, node, item, ctx)
        indices = [t for t in item if isinstance(t, int)]
        for ref in template.refs:
            target = ref.to.format(*indices, item=text)
            if target in ctx.urls:
                paths.put(resource, ref.path, {"reference": ctx.urls[target]})
        url = f"{template.resource_type}?identifier={_QUOTED_SYSTEM}%7C{head}{_quoted_key(key)}"
        request = {"method": "PUT", "url": url}
        entries.append({"fullUrl": ctx.urls[key], "resource": resource, "request": request})
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

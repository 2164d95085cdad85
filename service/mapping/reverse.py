"""FHIR R4 Bundle -> case, reading the same ``mappings/case-fhir.yaml`` templates backwards.

A parent's date is written by the parent and again by every child resource that repeats it (``^.date``:
the organ resection, IVC and renal vein management Procedures and intra-operative events of one
surgery). The case holds one date, so children that disagree are refused (``SharedDateConflict``)
rather than one date silently kept (issue 15, outside review). Dates agree when one contains the
other: ``2020`` contains ``2020-03-02`` (the data set's "Date rules compare at the coarser
precision"), and the case keeps the most precise of them; ``unknown`` (the resource does not say)
agrees with any date. ``2020-03`` and ``2020-04-10`` do not agree. A ``dateTime`` with a time is read
as its date as written and a ``Period`` as its start (``datetimes``); a conflict quotes the value as
the resource wrote it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from service.codes import absent_primitive_key
from service.mapping import datetimes, paths
from service.mapping.forward import Tokens, resolve
from service.mapping.spec import (
    CONVERTERS,
    IDENTIFIER_SYSTEM,
    Context,
    Field,
    Group,
    MappingError,
    case_path,
    case_set,
    case_tokens,
    quantity_range_back,
    quantity_system,
    spec,
    split_identifier,
)
from service.model import dates, validate_case


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
            value = datetimes.read_date(node, f.path)[0] if f.kind == "date" else paths.get(node, f.path)
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


@dataclass(frozen=True)
class DateWrite:
    """One resource's value for a case date: the Bundle entry and the FHIR element it came from."""

    entry: int
    element: str
    value: str
    shared: bool
    """Written through ``^.``: a child repeating its parent's date."""
    written: str = ""
    """The value as the resource wrote it, when it is not ``value`` (a dateTime with a time)."""


class SharedDateConflict(MappingError):
    """Resources of one item (a surgery and its procedures) give dates that do not agree.

    ``first``/``second`` name the entries of the Bundle that was read, so a caller that built that
    Bundle from another (plain intake, the pull) can point at the entries it was given."""

    def __init__(self, case_path: str, first: DateWrite, second: DateWrite, rule: str) -> None:
        self.case_path, self.first, self.second, self.rule = case_path, first, second, rule
        super().__init__(self.describe(lambda w: f"Bundle.entry[{w.entry}].resource.{w.element}"))

    def describe(self, where: Callable[[DateWrite], str]) -> str:
        """The message with each element named by ``where`` (its position in the caller's Bundle)."""
        return (
            f"{where(self.first)} ({self.first.written or self.first.value}) and "
            f"{where(self.second)} ({self.second.written or self.second.value}) "
            f"do not agree: {self.rule} ({self.case_path})"
        )


def _rule(tokens: list[str | int]) -> str:
    parent = next((str(t) for t in reversed(tokens) if isinstance(t, str) and t != tokens[-1]), "item")
    name = str(tokens[-1])
    if parent == "surgery":
        return f"procedures of one surgery must share its {name}"
    return f"resources of one {parent} must share its {name}"


def _date_writes(
    node: dict[str, Any],
    group: Group,
    item: Tokens,
    entry: int,
    out: dict[tuple[str | int, ...], list[DateWrite]],
) -> None:
    """The date values a resource gives (as ``read_group`` will read them), by case path."""
    for f in group.fields:
        if f.kind != "date" or f.items is not None or paths.has_every(f.path):
            continue
        value, element = datetimes.read_date(node, f.path)
        if value is None and f.absent is not None:
            value, element = absent_primitive_key(paths.get(node, f.absent)), f.absent
        if isinstance(value, str):
            tokens = tuple(resolve(f.field, item))
            raw = paths.get(node, element)
            written = raw if isinstance(raw, str) and raw != value else ""
            shared = f.field.startswith("^.")
            out.setdefault(tokens, []).append(DateWrite(entry, element, value, shared, written))


def _agree(a: str, b: str) -> bool:
    """Two values of one date agree: equal, either unknown, or one contains the other (a year its days)."""
    if a == b or dates.UNKNOWN in (a, b):
        return True
    try:
        return dates.agree(a, b)
    except dates.DateError:  # not a partial date: validate_case names it; here only equal text agrees
        return False


def _settle_shared_dates(out: dict[str, Any], writes: dict[tuple[str | int, ...], list[DateWrite]]) -> None:
    """Refuse disagreeing dates of one item written by several resources; keep the most precise."""
    for tokens, found in writes.items():
        if len(found) < 2 or not any(w.shared for w in found):
            continue
        for i, first in enumerate(found):
            for second in found[i + 1 :]:
                if not _agree(first.value, second.value):
                    path = case_path(list(tokens))
                    raise SharedDateConflict(path, first, second, _rule(list(tokens)))
        known = [w.value for w in found if w.value != dates.UNKNOWN]
        if known:
            case_set(out, list(tokens), max(known, key=len))


def bundle_to_case(
    bundle: dict[str, Any], adjust: Callable[[dict[str, Any]], dict[str, Any]] | None = None
) -> dict[str, Any]:
    """The canonical case carried by a Bundle made by ``case_to_bundle`` (validated; ``adjust``, when
    given, sees the case just before validation: the pull's ``contact_at_visits``)."""
    s = spec()
    found: list[tuple[dict[str, Any], Any, str, int]] = []
    ctx = Context()
    source = case_id = None
    for position, entry in enumerate(bundle.get("entry", [])):
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
        found.append((resource, template, key, position))
    if source is None:
        raise MappingError("the bundle holds no IVC-LMS resource")
    out: dict[str, Any] = {"case_id": case_id, "source_system": source}
    writes: dict[tuple[str | int, ...], list[DateWrite]] = {}
    for resource, template, key, position in found:
        item = case_tokens(key.split("#", 1)[0])
        read_group(resource, template.group, out, item, ctx)
        _date_writes(resource, template.group, item, position, writes)
    _settle_shared_dates(out, writes)
    root = {k: _prune(v) for k, v in out.items()}
    return validate_case(adjust(root) if adjust is not None else root)

"""Rules of a resource that need another resource the validator knows (HL7's reference validator
has them in code): a CapabilityStatement's search parameters and a derived SearchParameter against
the SearchParameter definitions, a QuestionnaireResponse against its Questionnaire, a MeasureReport
against its Measure.

Each rule runs only when the other resource is found (base R4's search parameters, or resources
given to ``Validator.with_resources``); an unknown one is not guessed at, so nothing is reported.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from service.validation import definitions

Add = Callable[[str, str, str, str], None]
"""``_Run.add``: severity, issue code, expression, message."""

MAX_DECIMAL_PLACES = "http://hl7.org/fhir/StructureDefinition/maxDecimalPlaces"
"""R4 core extension on Questionnaire.item: the most decimal places an answer may have."""
_ANY_BASE = frozenset({"Resource", "DomainResource"})
"""A SearchParameter on these bases applies to every resource type (DomainResource: all but Bundle,
Binary, Parameters, which no derived parameter names in practice: treated alike, never an error)."""


def check(res: dict[str, Any], expr: str, defs: definitions.Definitions, add: Add) -> None:
    rtype = res.get("resourceType")
    if rtype == "CapabilityStatement":
        capability_statement(res, expr, defs, add)
    elif rtype == "SearchParameter":
        search_parameter(res, expr, defs, add)
    elif rtype == "QuestionnaireResponse":
        questionnaire_response(res, expr, defs, add)
    elif rtype == "MeasureReport":
        measure_report(res, expr, defs, add)


@functools.lru_cache(maxsize=2)
def _base_search_parameters(directory: Path) -> dict[str, dict[str, Any]]:
    try:
        return definitions.base_search_parameters(directory)
    except definitions.DefinitionsMissing:
        return {}


def find_search_parameter(url: Any, defs: definitions.Definitions) -> dict[str, Any] | None:
    if not isinstance(url, str):
        return None
    url = url.split("|", 1)[0]
    found = defs.search_parameters.get(url)
    if found is None and defs.base_dir is not None:
        found = _base_search_parameters(defs.base_dir).get(url)
    return found


def capability_statement(cs: dict[str, Any], expr: str, defs: definitions.Definitions, add: Add) -> None:
    """``rest.resource.searchParam.type`` is the type of the SearchParameter its ``definition`` names."""
    for r, rest in _items(cs, "rest"):
        for i, resource in _items(rest, "resource"):
            for j, param in _items(resource, "searchParam"):
                sp = find_search_parameter(param.get("definition"), defs)
                if sp is None or not isinstance(param.get("type"), str):
                    continue
                if param["type"] != sp.get("type"):
                    add(
                        "error",
                        "business-rule",
                        f"{expr}.rest[{r}].resource[{i}].searchParam[{j}]",
                        f"Type mismatch - SearchParameter '{param['definition']}' type is {sp.get('type')},"
                        f" but type here is {param['type']}",
                    )


def search_parameter(sp: dict[str, Any], expr: str, defs: definitions.Definitions, add: Add) -> None:
    """A composite SearchParameter has two or more components (the reference's rule: a composite of
    one is that one parameter); one ``derivedFrom`` another keeps its type and searches only the
    other's bases."""
    components = sp.get("component")
    if sp.get("type") == "composite" and len(components if isinstance(components, list) else []) < 2:
        add(
            "error",
            "business-rule",
            expr,
            "When the SearchParameter has a type of 'composite', then the SearchParameter must define two"
            " or more components",
        )
    parent = find_search_parameter(sp.get("derivedFrom"), defs)
    if parent is None:
        return
    if isinstance(sp.get("type"), str) and sp["type"] != parent.get("type"):
        add(
            "error",
            "business-rule",
            expr,
            f"The type {sp['type']} is different to the type {parent.get('type')} of the derivedFrom"
            f" SearchParameter {sp['derivedFrom']}",
        )
    found = parent.get("base")
    bases: list[Any] = found if isinstance(found, list) else []
    if any(b in _ANY_BASE for b in bases):
        return
    for base in sp.get("base", []) if isinstance(sp.get("base"), list) else []:
        if isinstance(base, str) and base not in bases:
            add(
                "error",
                "business-rule",
                expr,
                f"The resource type {base} is not listed as a base in the SearchParameter this is"
                f" derived from ({sp['derivedFrom']})",
            )


def find_questionnaire(canonical: Any, defs: definitions.Definitions) -> dict[str, Any] | None:
    """The Questionnaire a canonical names; with ``|version``, only that version."""
    return _find(defs.questionnaires, canonical)


def _find(table: dict[str, dict[str, Any]], canonical: Any) -> dict[str, Any] | None:
    if not isinstance(canonical, str):
        return None
    url, _, version = canonical.partition("|")
    found = table.get(url)
    if found is None or (version and found.get("version") != version):
        return None
    return found


MEASURE_SCORING = "http://terminology.hl7.org/CodeSystem/measure-scoring"


def measure_report(mr: dict[str, Any], expr: str, defs: definitions.Definitions, add: Add) -> None:
    """A cohort Measure's report gives each group's score: the reference validator's rule, in its
    words "A measureScore is required when the Measure.scoring=cohort" (fhir-test-cases 1.7.69,
    measure-report-ihe); R4's definitions state no such invariant, so it lives here."""
    measure = _find(defs.measures, mr.get("measure"))
    if measure is None or not _codes(measure.get("scoring"), MEASURE_SCORING) & {"cohort"}:
        return
    for index, group in _items(mr, "group"):
        if "measureScore" not in group:
            add(
                "error",
                "required",
                f"{expr}.group[{index}]",
                "A measureScore is required when the Measure.scoring=cohort",
            )


def _codes(concept: Any, system: str) -> set[str]:
    if not isinstance(concept, dict):
        return set()
    return {
        str(c.get("code"))
        for c in concept.get("coding", [])
        if isinstance(c, dict) and c.get("system") == system
    }


def questionnaire_response(qr: dict[str, Any], expr: str, defs: definitions.Definitions, add: Add) -> None:
    """Every item's linkId is an item of the Questionnaire at that level, and a decimal or quantity
    answer has at most the item's ``maxDecimalPlaces``."""
    questionnaire = find_questionnaire(qr.get("questionnaire"), defs)
    if questionnaire is not None:
        _qr_items(qr, expr, _by_link(questionnaire), _all_links(questionnaire), add)


def _qr_items(
    node: dict[str, Any],
    expr: str,
    level: dict[str, dict[str, Any]],
    every: frozenset[str],
    add: Add,
) -> None:
    for i, item in _items(node, "item"):
        path = f"{expr}.item[{i}]"
        link = item.get("linkId")
        if not isinstance(link, str):
            continue  # que rules / cardinality report it
        q_item = level.get(link)
        if q_item is None:
            where = "in the questionnaire at this level" if link in every else "in questionnaire"
            add("error", "structure", path, f"LinkId '{link}' not found {where}")
            continue
        children = _by_link(q_item)
        places = _max_places(q_item)
        for j, answer in _items(item, "answer"):
            apath = f"{path}.answer[{j}]"
            if places is not None:
                if "valueDecimal" in answer:
                    _decimal_places(answer["valueDecimal"], places, f"{apath}.value.ofType(decimal)", add)
                quantity = answer.get("valueQuantity")
                if isinstance(quantity, dict) and "value" in quantity:
                    _decimal_places(quantity["value"], places, f"{apath}.value.ofType(Quantity)", add)
            _qr_items(answer, apath, children, every, add)
        _qr_items(item, path, children, every, add)


def _decimal_places(value: Any, limit: int, expr: str, add: Add) -> None:
    """Places as the value was read: a JSON number parsed to a float keeps its shortest form, so
    trailing zeros are not counted (a miss at worst, never a false error)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        return
    try:
        exponent = Decimal(str(value)).as_tuple().exponent
    except InvalidOperation:
        return
    places = -exponent if isinstance(exponent, int) and exponent < 0 else 0
    if places > limit:
        add("error", "value", expr, f"The value {value} has too many decimal places (limit = {limit})")


def _max_places(q_item: dict[str, Any]) -> int | None:
    for ext in q_item.get("extension", []) if isinstance(q_item.get("extension"), list) else []:
        if isinstance(ext, dict) and ext.get("url") == MAX_DECIMAL_PLACES:
            value = ext.get("valueInteger")
            if isinstance(value, int) and not isinstance(value, bool):
                return value
    return None


def _by_link(node: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        str(item["linkId"]): item for _, item in _items(node, "item") if isinstance(item.get("linkId"), str)
    }


def _all_links(node: dict[str, Any]) -> frozenset[str]:
    links: set[str] = set()
    stack = [node]
    while stack:
        for _, item in _items(stack.pop(), "item"):
            if isinstance(item.get("linkId"), str):
                links.add(item["linkId"])
            stack.append(item)
    return frozenset(links)


def _items(node: dict[str, Any], key: str) -> list[tuple[int, dict[str, Any]]]:
    value = node.get(key)
    if not isinstance(value, list):
        return []
    return [(i, item) for i, item in enumerate(value) if isinstance(item, dict)]
